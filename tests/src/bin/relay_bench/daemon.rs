//! Ours as an operator runs it (`relay-bench daemon`): the real daemon
//! (release build, SQLite, its own `tb-media-N` threads, the unit's
//! `MALLOC_ARENA_MAX=2`), one booking per
//! call made through its API, and every call set up in SIP as Twilio
//! would: the caller's INVITE with an SDP offer naming the generator's
//! party socket, the daemon's INVITE to the expert answered with an SDP
//! naming the other party socket, ACKs both ways. The generator then
//! sends to the relay ports the daemon wrote in its two SDPs.
//!
//! The caller's requests are written here, not by SIPp: the bench must
//! learn, call by call, which relay port the daemon chose for each leg,
//! which SIPp's screen does not say. Both parties are the suite's test
//! phone.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tollbridge_e2e::phone::{Message, Phone};
use tollbridge_e2e::{Daemon, DaemonOptions, rfc3339, test_config};

const TOKEN: &str = "relay-bench-token-0123456789abcdef";

/// How long one SIP step may take before the bench gives up.
const STEP: Duration = Duration::from_secs(5);

/// The daemon's relay ports (5,000 pairs): below the floor's (20000), and
/// below the kernel's ephemeral ports the generator's sockets take.
const MEDIA_PORTS: &str = "2000-11999";

/// The real daemon with `calls` bookings and the two SIP parties.
pub struct DaemonRelay {
    daemon: Daemon,
    sip: SocketAddr,
    /// Both borrowed by [`DaemonRelay::route`], one call at a time.
    caller: RefCell<Phone>,
    expert: RefCell<Phone>,
    /// The daemon's VmRSS once the bookings were made, before any call.
    pub idle_rss_kib: u64,
}

fn called(index: usize) -> String {
    format!("+8150{index:09}")
}

fn calling(index: usize) -> String {
    format!("+8190{index:09}")
}

/// An SDP naming `party` for PCMU with telephone-event on 101.
fn sdp(origin: &str, party: SocketAddr) -> String {
    format!(
        "v=0\r\no={origin} 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
         a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n",
        ip = party.ip(),
        port = party.port(),
    )
}

/// The RTP address an SDP names (its first `c=` and first audio `m=`).
fn media_address(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
        .expect("a c= line in the daemon's SDP");
    let port = sdp
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|m| m.split_whitespace().next())
        .expect("an m=audio line in the daemon's SDP");
    format!("{}:{}", ip.trim(), port).parse().unwrap()
}

impl DaemonRelay {
    /// Starts the daemon with `threads` relay threads (pinned to the
    /// relay's CPU with `PIN=1`) and books `calls` calls to one expert.
    pub fn start(calls: usize, threads: usize) -> DaemonRelay {
        DaemonRelay::start_with(calls, threads, false)
    }

    /// [`DaemonRelay::start`], with the kernel fast path on `lo` when
    /// `fast_path` (`media.fast_path`; the bench must run as root).
    pub fn start_with(calls: usize, threads: usize, fast_path: bool) -> DaemonRelay {
        let fast_path = if fast_path {
            "fast_path = [\"lo\"]\n"
        } else {
            ""
        };
        let config = test_config(
            &format!("api_token = \"{TOKEN}\""),
            &format!(
                "[media]\naddress = \"127.0.0.1\"\nports = \"{MEDIA_PORTS}\"\nthreads = {threads}\n{fast_path}"
            ),
        )
        .replace("[sip]\n", "[sip]\ninvites_per_second = 10000\n");
        // The environment the systemd unit gives it (see BENCHMARKS.md,
        // "Memory per live bridged call").
        let daemon = Daemon::start_with(DaemonOptions {
            config: Some(config),
            env: vec![("MALLOC_ARENA_MAX".into(), "2".into())],
            ..DaemonOptions::default()
        });
        assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));
        let sip = daemon.sip_udp().unwrap();
        super::pinning::process(daemon.pid());
        let expert = Phone::new("expert", sip);
        let expert_uri = expert.contact();
        let (start, end) = (
            rfc3339(time::Duration::minutes(-5)),
            rfc3339(time::Duration::hours(12)),
        );
        for index in 0..calls {
            let booking = serde_json::json!({
                "called": called(index),
                "callers": [calling(index)],
                "callee": {"uri": expert_uri},
                "tariff": {"currency": "jpy", "price_per_minute": 100},
                "cap_seconds": 3600,
                "window": {"start": start, "end": end},
            });
            let (status, body) =
                daemon.api("POST", "/v1/bookings", TOKEN, Some(&booking.to_string()));
            assert_eq!(status, 201, "{body}");
        }
        let idle_rss_kib = tollbridge_e2e::procfs::rss_kib(daemon.pid()).unwrap();
        DaemonRelay {
            daemon,
            sip,
            caller: RefCell::new(Phone::new("caller", sip)),
            expert: RefCell::new(expert),
            idle_rss_kib,
        }
    }

    /// Sets up call `index` in SIP, the caller party at `a` and the
    /// expert's at `b`: where `a` sends and where `b` sends.
    pub fn route(&self, index: usize, a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
        let mut caller = self.caller.borrow_mut();
        let local = caller.addr;
        let call_id = format!("bench-{index}-{}", std::process::id());
        let (to, from) = (called(index), calling(index));
        let offer = sdp("caller", a);
        let invite = format!(
            "INVITE sip:{to}@{sip} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-inv-{index};rport\r\n\
             Max-Forwards: 69\r\n\
             From: <sip:{from}@trunk.example>;tag=caller-{index}\r\n\
             To: <sip:{to}@{sip}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:{from}@{local}>\r\n\
             Content-Type: application/sdp\r\n\
             Content-Length: {length}\r\n\r\n{offer}",
            sip = self.sip,
            length = offer.len(),
        );
        caller.send(&invite, self.sip);

        let mut expert = self.expert.borrow_mut();
        let to_expert = expert
            .next_request("INVITE", STEP)
            .expect("the daemon's INVITE to the expert");
        let callee_port = media_address(to_expert.body());
        expert.respond(&to_expert, 200, Some(&sdp("expert", b)));

        let answer = final_response(&mut caller, &call_id);
        assert_eq!(answer.status(), Some(200), "{}", answer.text);
        let caller_port = media_address(answer.body());
        let contact = answer
            .header("Contact")
            .and_then(|c| c.split('<').nth(1)?.split('>').next())
            .expect("a Contact in the daemon's 200")
            .to_owned();
        let ack = format!(
            "ACK {contact} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-ack-{index};rport\r\n\
             Max-Forwards: 69\r\n\
             From: <sip:{from}@trunk.example>;tag=caller-{index}\r\n\
             To: {answered_to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n",
            answered_to = answer.header("To").unwrap_or_default(),
        );
        caller.send(&ack, self.sip);
        expert
            .next_request("ACK", STEP)
            .expect("the daemon's ACK to the expert");
        (caller_port, callee_port)
    }

    /// The `tb-media-N` threads' user+sys CPU seconds so far.
    pub fn cpu_seconds(&self, ticks: f64) -> f64 {
        let tasks = format!("/proc/{}/task", self.daemon.pid());
        std::fs::read_dir(tasks)
            .expect("the daemon's /proc tasks")
            .flatten()
            .filter_map(|task| {
                tollbridge_e2e::procfs::cpu_seconds(&task.path().join("stat"), ticks)
            })
            .filter(|(name, _)| name.starts_with("tb-media"))
            .map(|(_, used)| used)
            .sum()
    }

    /// `tollbridge_media_kernel_routes` on the daemon's `/metrics` now.
    pub fn kernel_routes(&self) -> u64 {
        self.daemon
            .metric("tollbridge_media_kernel_routes")
            .map_or(0, |routes| routes as u64)
    }

    /// The daemon's VmRSS now.
    pub fn rss_kib(&self) -> u64 {
        tollbridge_e2e::procfs::rss_kib(self.daemon.pid()).unwrap()
    }
}

/// The final response to the INVITE of `call_id` that reaches `caller`.
fn final_response(caller: &mut Phone, call_id: &str) -> Message {
    let deadline = Instant::now() + STEP;
    while let Some(message) = caller.next(deadline.saturating_duration_since(Instant::now())) {
        if message.header("Call-ID") == Some(call_id) && message.status().is_some_and(|s| s >= 200)
        {
            return message;
        }
    }
    panic!("no final answer to {call_id} within {STEP:?}");
}
