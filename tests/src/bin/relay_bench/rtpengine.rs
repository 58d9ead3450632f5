//! rtpengine (Debian's `rtpengine-daemon`, Sipwise's media relay) as the
//! bench's peer: started by the bench in userspace only (`--table=-1`: no
//! kernel forwarding), on loopback, with as many threads as our relay
//! has, and steered over its ng control protocol (bencoded dictionaries
//! over UDP) as Kamailio's rtpengine module steers it: an `offer` with the
//! caller's SDP and an `answer` with the callee's per call.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// rtpengine, running.
pub struct Rtpengine {
    child: Child,
    control: UdpSocket,
    ng: SocketAddr,
    cookies: AtomicU64,
}

/// Whether the `rtpengine` binary is installed.
pub fn installed() -> bool {
    Command::new("rtpengine")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// A bencoded string.
fn string(out: &mut Vec<u8>, value: &str) {
    out.extend_from_slice(format!("{}:", value.len()).as_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// A bencoded dictionary of strings (keys must come sorted).
fn dictionary(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![b'd'];
    for (key, value) in entries {
        string(&mut out, key);
        string(&mut out, value);
    }
    out.push(b'e');
    out
}

/// The value of the string `key` in a bencoded reply (flat enough for
/// rtpengine's offer and answer replies).
fn reply_string(reply: &[u8], key: &str) -> Option<String> {
    let needle = format!("{}:{}", key.len(), key);
    let at = reply
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?
        + needle.len();
    let colon = reply[at..].iter().position(|&b| b == b':')? + at;
    let len: usize = std::str::from_utf8(&reply[at..colon]).ok()?.parse().ok()?;
    let value = reply.get(colon + 1..colon + 1 + len)?;
    String::from_utf8(value.to_vec()).ok()
}

fn sdp(party: SocketAddr) -> String {
    format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
        party.port()
    )
}

fn audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|line| line.strip_prefix("m=audio "))?
        .split(' ')
        .next()?
        .parse()
        .ok()
}

impl Rtpengine {
    /// Starts rtpengine with `threads` worker threads and RTP ports in
    /// `ports`.
    pub fn start(threads: usize, ports: (u16, u16)) -> Rtpengine {
        let ng = {
            let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let mut child = Command::new("rtpengine")
            .args([
                "--config-file=none",
                "--table=-1",
                "--interface=127.0.0.1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                "--delete-delay=0",
            ])
            .arg(format!("--listen-ng={ng}"))
            .arg(format!("--num-threads={threads}"))
            .arg(format!("--port-min={}", ports.0))
            .arg(format!("--port-max={}", ports.1))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rtpengine (apt-get install rtpengine-daemon)");
        super::pinning::floor(child.id());
        // Its log goes on in a thread of its own, so a full pipe never
        // stops it.
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stderr).lines() {});
        let control = UdpSocket::bind("127.0.0.1:0").unwrap();
        control
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let rtpengine = Rtpengine {
            child,
            control,
            ng,
            cookies: AtomicU64::new(0),
        };
        // Ready once it answers a ping.
        for _ in 0..50 {
            if rtpengine.request(&[("command", "ping")]).is_some() {
                return rtpengine;
            }
        }
        panic!("rtpengine did not answer on its ng port");
    }

    /// One ng request; the reply's dictionary, or `None` on timeout.
    /// Each request has its own cookie, so a late reply to an earlier one
    /// (a ping sent before rtpengine was up) is not taken for this one's.
    fn request(&self, entries: &[(&str, &str)]) -> Option<Vec<u8>> {
        let cookie = format!("{} ", self.cookies.fetch_add(1, Ordering::Relaxed));
        let mut message = cookie.as_bytes().to_vec();
        message.extend(dictionary(entries));
        self.control.send_to(&message, self.ng).unwrap();
        let mut reply = vec![0; 65_536];
        loop {
            let len = self.control.recv(&mut reply).ok()?;
            if let Some(dictionary) = reply[..len].strip_prefix(cookie.as_bytes()) {
                return Some(dictionary.to_vec());
            }
        }
    }

    /// One side of call `call`'s offer/answer (`command` with the
    /// party's SDP and the tags it needs): the port rtpengine gives the
    /// other party to send to.
    fn negotiate(
        &self,
        call: &str,
        command: &str,
        tags: &[(&str, &str)],
        party: SocketAddr,
    ) -> u16 {
        let sdp = sdp(party);
        let mut entries = vec![
            ("call-id", call),
            ("command", command),
            ("sdp", sdp.as_str()),
        ];
        entries.extend_from_slice(tags);
        // Bencoded dictionaries keep their keys sorted.
        entries.sort_by_key(|(key, _)| *key);
        let reply = self
            .request(&entries)
            .unwrap_or_else(|| panic!("rtpengine did not answer the {command}"));
        assert_eq!(
            reply_string(&reply, "result").as_deref(),
            Some("ok"),
            "{command} refused"
        );
        audio_port(&reply_string(&reply, "sdp").unwrap()).unwrap()
    }

    /// Opens call `index` between parties `a` and `b`: where `a` sends
    /// (to reach `b`) and where `b` sends.
    pub fn route(&self, index: usize, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
        let call = format!("bench-{index}");
        // The offer carries a's SDP and gives b the port to send to; the
        // answer carries b's and gives a its port.
        let to_a_from_b = self.negotiate(&call, "offer", &[("from-tag", "a")], a);
        let to_b_from_a = self.negotiate(&call, "answer", &[("from-tag", "a"), ("to-tag", "b")], b);
        (
            SocketAddr::from(([127, 0, 0, 1], to_b_from_a)),
            SocketAddr::from(([127, 0, 0, 1], to_a_from_b)),
        )
    }

    /// Its user+sys CPU seconds so far (all its threads).
    pub fn cpu_seconds(&self, ticks: f64) -> f64 {
        let stat = format!("/proc/{}/stat", self.child.id());
        super::procfs::cpu_seconds(std::path::Path::new(&stat), ticks)
            .expect("rtpengine's /proc stat")
            .1
    }

    /// Its resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        super::procfs::rss_kib(self.child.id()).expect("rtpengine's /proc status")
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bencode_round_trip_of_what_rtpengine_answers() {
        assert_eq!(dictionary(&[("command", "ping")]), b"d7:command4:pinge");
        let reply = b"d3:sdp5:m=x y6:result2:oke";
        assert_eq!(reply_string(reply, "result").as_deref(), Some("ok"));
        assert_eq!(reply_string(reply, "sdp").as_deref(), Some("m=x y"));
        assert_eq!(reply_string(reply, "missing"), None);
        assert_eq!(
            audio_port("v=0\r\nm=audio 30012 RTP/AVP 0\r\n"),
            Some(30012)
        );
    }
}
