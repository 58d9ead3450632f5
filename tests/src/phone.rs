//! A softphone for the suite: one UDP socket on 127.0.0.1 that registers
//! with digest authentication and answers the calls that reach it (180,
//! 200 with SDP, and whatever the test says to CANCEL and BYE), recording
//! every message. Written here because SIPp runs one scenario per
//! Call-ID: it cannot register and then take a call that comes with
//! another Call-ID. It can also pretend to be behind a NAT: the Contact
//! and SDP it writes name a private address it is not at.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

/// One SIP message as received.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its text.
    pub text: String,
    /// Where it came from.
    pub source: SocketAddr,
}

impl Message {
    /// The first line.
    pub fn first_line(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let line = self.first_line();
        line.strip_prefix("SIP/2.0 ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        let line = self.first_line();
        (!line.starts_with("SIP/2.0")).then(|| line.split_whitespace().next())?
    }

    /// Every value of header `name` (any case).
    pub fn headers(&self, name: &str) -> Vec<&str> {
        self.text
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).into_iter().next()
    }

    /// The body.
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// A parameter of a `WWW-Authenticate` value.
fn parameter(value: &str, name: &str) -> Option<String> {
    let at = value.find(&format!("{name}="))? + name.len() + 1;
    let rest = &value[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?.to_owned(),
        None => rest.split([',', ' ']).next()?.to_owned(),
    })
}

/// How a phone talks SIP.
enum Link {
    /// Its own UDP socket.
    Udp(UdpSocket),
    /// One connection to the registrar, and what was read of it but not
    /// yet framed.
    Tcp(TcpStream, Vec<u8>),
}

/// One framed message at the front of `buffer` (headers and
/// Content-Length body), taken off it; CRLF keep-alives are dropped.
fn frame(buffer: &mut Vec<u8>) -> Option<String> {
    while buffer.starts_with(b"\r\n") {
        buffer.drain(..2);
    }
    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let length: usize = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0);
    if buffer.len() < end + length {
        return None;
    }
    let message: Vec<u8> = buffer.drain(..end + length).collect();
    Some(String::from_utf8_lossy(&message).into_owned())
}

/// A softphone registered (or registering) at a registrar.
pub struct Phone {
    link: Link,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its media socket (for the SDP it answers with).
    pub media: UdpSocket,
    user: String,
    registrar: SocketAddr,
    /// The host its Contact and SDP name (its own address, or a private
    /// one when it pretends to be behind a NAT).
    contact_host: String,
    call_id: String,
    cseq: u32,
    /// Every message it received, in order.
    pub received: Vec<Message>,
}

impl Phone {
    /// A phone for `user` that registers at `registrar` over UDP.
    pub fn new(user: &str, registrar: SocketAddr) -> Phone {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("phone socket");
        let addr = socket.local_addr().expect("phone address");
        Phone::on(Link::Udp(socket), addr, user, registrar)
    }

    /// A phone for `user` that registers at `registrar` over one TCP
    /// connection, and takes its calls on it (it listens nowhere, as
    /// behind a NAT).
    pub fn over_tcp(user: &str, registrar: SocketAddr) -> Phone {
        let stream = TcpStream::connect(registrar).expect("phone connection");
        let addr = stream.local_addr().expect("phone address");
        Phone::on(Link::Tcp(stream, Vec::new()), addr, user, registrar)
    }

    fn on(link: Link, addr: SocketAddr, user: &str, registrar: SocketAddr) -> Phone {
        let media = UdpSocket::bind("127.0.0.1:0").expect("phone media socket");
        media
            .set_read_timeout(Some(Duration::from_millis(500)))
            .expect("media timeout");
        Phone {
            contact_host: addr.to_string(),
            link,
            addr,
            media,
            user: user.to_owned(),
            registrar,
            call_id: format!("reg-{}-{}", user, addr.port()),
            cseq: 0,
            received: Vec::new(),
        }
    }

    /// Writes `host` (e.g. `10.0.0.7:5060`, an address behind a NAT) in
    /// its Contact and SDP instead of where it is.
    pub fn behind_nat(mut self, host: &str) -> Phone {
        self.contact_host = host.to_owned();
        self
    }

    /// Its Contact URI.
    pub fn contact(&self) -> String {
        match self.link {
            Link::Udp(_) => format!("sip:{}@{}", self.user, self.contact_host),
            Link::Tcp(..) => format!("sip:{}@{};transport=tcp", self.user, self.contact_host),
        }
    }

    fn transport(&self) -> &'static str {
        match self.link {
            Link::Udp(_) => "UDP",
            Link::Tcp(..) => "TCP",
        }
    }

    /// One message off the link within `timeout`.
    fn receive(&mut self, timeout: Duration) -> Option<(String, SocketAddr)> {
        let mut buf = vec![0u8; 65_535];
        match &mut self.link {
            Link::Udp(socket) => {
                socket.set_read_timeout(Some(timeout)).ok()?;
                let (n, source) = socket.recv_from(&mut buf).ok()?;
                Some((String::from_utf8_lossy(&buf[..n]).into_owned(), source))
            }
            Link::Tcp(stream, pending) => {
                let peer = stream.peer_addr().ok()?;
                let deadline = Instant::now() + timeout;
                loop {
                    if let Some(message) = frame(pending) {
                        return Some((message, peer));
                    }
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    stream.set_read_timeout(Some(left)).ok()?;
                    let n = stream.read(&mut buf).ok()?;
                    if n == 0 {
                        return None;
                    }
                    pending.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// The next message within `timeout`, kept in [`Phone::received`].
    pub fn next(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if let Some((text, source)) = self.receive(left.min(Duration::from_millis(200))) {
                if text.trim().is_empty() {
                    continue;
                }
                let message = Message { text, source };
                self.received.push(message.clone());
                return Some(message);
            }
        }
    }

    /// The next request of `method` within `timeout`; OPTIONS (our
    /// keep-alives) are answered 200 on the way.
    pub fn next_request(&mut self, method: &str, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.next(deadline.saturating_duration_since(Instant::now()))?;
            match message.method() {
                Some(m) if m == method => return Some(message),
                Some("OPTIONS") => self.respond(&message, 200, None),
                _ => {}
            }
        }
    }

    /// Sends `text` as it is to `to` (over TCP, on its connection): a
    /// request the phone does not build itself.
    pub fn send(&self, text: &str, to: SocketAddr) {
        match &self.link {
            Link::Udp(socket) => {
                let _ = socket.send_to(text.as_bytes(), to);
            }
            Link::Tcp(stream, _) => {
                let mut stream = stream;
                let _ = stream.write_all(text.as_bytes());
            }
        }
    }

    fn register_request(&mut self, expires: u32, authorization: Option<String>) -> String {
        self.cseq += 1;
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "REGISTER sip:{registrar} SIP/2.0\r\n\
             Via: SIP/2.0/{transport} {host};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:{user}@{registrar}>;tag=ph{port}\r\n\
             To: <sip:{user}@{registrar}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <{contact}>\r\n\
             Expires: {expires}\r\n\
             User-Agent: tollbridge-test-phone\r\n\
             {authorization}Content-Length: 0\r\n\r\n",
            registrar = self.registrar,
            transport = self.transport(),
            host = self.contact_host,
            branch = uuid_like(self.cseq, self.addr.port()),
            user = self.user,
            port = self.addr.port(),
            call_id = self.call_id,
            cseq = self.cseq,
            contact = self.contact(),
        )
    }

    /// Registers for `expires` seconds (0 unregisters) with `password`,
    /// answering the digest challenge; the final status, or `None` when
    /// nothing came back.
    pub fn register(&mut self, password: &str, expires: u32) -> Option<u16> {
        let request = self.register_request(expires, None);
        self.send(&request, self.registrar);
        let challenge = self.response(Duration::from_secs(5))?;
        if challenge.status() != Some(401) {
            return challenge.status();
        }
        let www = challenge.header("WWW-Authenticate")?.to_owned();
        let realm = parameter(&www, "realm")?;
        let nonce = parameter(&www, "nonce")?;
        let uri = format!("sip:{}", self.registrar);
        let ha1 = md5_hex(&format!("{}:{realm}:{password}", self.user));
        let ha2 = md5_hex(&format!("REGISTER:{uri}"));
        let cnonce = format!("{:08x}", self.addr.port());
        let response = md5_hex(&format!("{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}"));
        let authorization = format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{cnonce}\"",
            self.user
        );
        let request = self.register_request(expires, Some(authorization));
        self.send(&request, self.registrar);
        self.response(Duration::from_secs(5))?.status()
    }

    /// The last response received, once one comes within `timeout`.
    fn response(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let message = self.next(deadline.saturating_duration_since(Instant::now()))?;
            if message.status().is_some_and(|s| s >= 200) {
                return Some(message);
            }
            if message.method() == Some("OPTIONS") {
                self.respond(&message, 200, None);
            }
        }
    }

    /// Sends `code` in answer to `request`, with `sdp` when given (and a
    /// To tag on anything but 100).
    pub fn respond(&self, request: &Message, code: u16, sdp: Option<&str>) {
        let reason = match code {
            180 => "Ringing",
            200 => "OK",
            486 => "Busy Here",
            487 => "Request Terminated",
            _ => "Whatever",
        };
        let mut to = request.header("To").unwrap_or_default().to_owned();
        if code != 100 && !to.contains(";tag=") {
            to.push_str(&format!(";tag=ph{}", self.addr.port()));
        }
        let vias: String = request
            .headers("Via")
            .iter()
            .map(|via| format!("Via: {via}\r\n"))
            .collect();
        let body = sdp.unwrap_or_default();
        let content_type = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_owned()
        };
        let text = format!(
            "SIP/2.0 {code} {reason}\r\n{vias}From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n\
             Contact: <{}>\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            request.header("From").unwrap_or_default(),
            request.header("Call-ID").unwrap_or_default(),
            request.header("CSeq").unwrap_or_default(),
            self.contact(),
            body.len(),
        );
        self.send(&text, request.source);
    }

    /// The SDP it answers with: PCMU at its media socket, the address it
    /// claims (a private one behind a pretended NAT).
    pub fn answer_sdp(&self) -> String {
        let host = self
            .contact_host
            .rsplit_once(':')
            .map_or(self.contact_host.as_str(), |(host, _)| host);
        let port = self.media.local_addr().map(|a| a.port()).unwrap_or(0);
        format!(
            "v=0\r\no=phone 1 1 IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        )
    }
}

/// A branch parameter unique enough for a test.
fn uuid_like(cseq: u32, port: u16) -> String {
    format!("{port:x}{cseq:x}{:x}", std::process::id())
}
