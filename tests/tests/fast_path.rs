//! The kernel fast path (`media.fast_path = ["lo"]`) in the real daemon:
//! a call bridged in SIP is handed to the kernel once both legs are
//! latched, its packets are counted on the call record as if the relay
//! thread had carried them, and a crash of the daemon leaves no kernel
//! forwarding behind (tcx links end with the process). SIPp plays the
//! phones, the test's sockets their media, on 127.0.0.1. Needs root.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

fn fast_path_daemon() -> Daemon {
    let config = daemon_config("ring_timeout = \"10s\"", "30s", "").replacen(
        "[media]\n",
        "[media]\nfast_path = [\"lo\"]\n",
        1,
    );
    start_daemon_as(tollbridge_e2e::DaemonOptions {
        config: Some(config),
        ..tollbridge_e2e::DaemonOptions::default()
    })
}

/// `tollbridge_media_kernel_routes` as `/metrics` says now.
fn kernel_routes(daemon: &Daemon) -> Option<u64> {
    daemon
        .metric("tollbridge_media_kernel_routes")
        .map(|routes| routes as u64)
}

/// Waits (three seconds at most) until the kernel forwards `routes`
/// directions.
fn wait_kernel_routes(daemon: &Daemon, routes: u64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while kernel_routes(daemon) != Some(routes) {
        assert!(
            Instant::now() < deadline,
            "kernel routes {:?}, not {routes}",
            kernel_routes(daemon)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Both parties speak `packets` packets each, numbered from `first`; each
/// must reach the other, untouched, from the relay's port on its leg.
fn talk(call: &Bridged, first: u16, packets: u16) {
    for seq in first..first + packets {
        let spoken = rtp(0, seq, 0x1111, &[0x11; 160]);
        let (got, from) = relay_one(
            &call.caller_media,
            call.caller_relay,
            &spoken,
            &call.expert_media,
        )
        .expect("the expert hears the caller");
        assert_eq!((got, from), (spoken, call.expert_relay));
        let answer = rtp(0, seq, 0x2222, &[0x22; 160]);
        let (got, from) = relay_one(
            &call.expert_media,
            call.expert_relay,
            &answer,
            &call.caller_media,
        )
        .expect("the caller hears the expert");
        assert_eq!((got, from), (answer, call.caller_relay));
    }
}

#[test]
fn a_bridged_call_is_forwarded_by_the_kernel_and_counted_on_its_record() {
    let daemon = fast_path_daemon();
    assert_eq!(kernel_routes(&daemon), Some(0));
    let call = bridged(&daemon, "caller_hangs_up.xml", &["-d", "4000"]);
    // The first packets latch the legs on the relay thread.
    talk(&call, 0, 1);
    wait_kernel_routes(&daemon, 2);
    talk(&call, 1, 50);
    let Bridged {
        caller,
        expert,
        booking,
        ..
    } = call;
    assert_passed("caller", caller);
    assert_passed("expert", expert);
    let ended = ended_call(&daemon, &booking);
    assert_eq!(ended["end_reason"], "caller-hangup");
    for side in ["caller", "callee"] {
        let media = &ended["legs"][side]["media"];
        assert_eq!(media["packets_received"], 51, "{side}: {media}");
        assert_eq!(media["packets_sent"], 51, "{side}: {media}");
        assert_eq!(media["packets_lost"], 0, "{side}: {media}");
    }
    wait_kernel_routes(&daemon, 0);
}

#[test]
fn a_crash_leaves_no_kernel_forwarding_behind() {
    let daemon = fast_path_daemon();
    let call = bridged(&daemon, "caller_hangs_up.xml", &["-d", "20000"]);
    talk(&call, 0, 1);
    wait_kernel_routes(&daemon, 2);
    talk(&call, 1, 5);
    let daemon = daemon.crash_and_restart();
    assert!(daemon.wait_for_log("sip listening", Duration::from_secs(10)));
    // The parties go on sending to the dead daemon's ports: the kernel no
    // longer carries them anywhere.
    for seq in 6..16 {
        let spoken = rtp(0, seq, 0x1111, &[0x11; 160]);
        assert_eq!(
            relay_one(
                &call.caller_media,
                call.caller_relay,
                &spoken,
                &call.expert_media
            ),
            None,
            "forwarded after the crash"
        );
    }
}
