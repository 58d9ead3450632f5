//! The floor a relay is measured against (issue 14): the least a UDP relay
//! can do, in C, built by the bench itself with the system's `cc`. Per
//! call two sockets on consecutive ports from a base; what arrives on one
//! goes out of the other to the address that one last heard from. One
//! `recvfrom` per readiness report and one `sendto`: epoll is
//! level-triggered, so a socket with more waiting is reported again, and
//! no read is spent learning a queue is empty (until 2026-12-03 the floor
//! read until `EAGAIN`, one failed `recvfrom` more per packet). No RTP
//! parsing, no latching rules, no statistics: a relay costs at least this.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// The C program.
const SOURCE: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    int base = atoi(argv[1]), calls = atoi(argv[2]), n = calls * 2;
    int *fd = calloc(n, sizeof *fd);
    int *known = calloc(n, sizeof *known);
    struct sockaddr_in *peer = calloc(n, sizeof *peer);
    int ep = epoll_create1(0);
    for (int i = 0; i < n; i++) {
        fd[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        struct sockaddr_in at = {0};
        at.sin_family = AF_INET;
        at.sin_port = htons(base + i);
        at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (bind(fd[i], (struct sockaddr *)&at, sizeof at) != 0) { perror("bind"); return 1; }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (unsigned)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd[i], &ev);
    }
    printf("ready\n");
    fflush(stdout);
    struct epoll_event events[256];
    char buf[2048];
    for (;;) {
        int ready = epoll_wait(ep, events, 256, -1);
        for (int e = 0; e < ready; e++) {
            int i = (int)events[e].data.u32, j = i ^ 1;
            struct sockaddr_in from;
            socklen_t length = sizeof from;
            ssize_t got = recvfrom(fd[i], buf, sizeof buf, 0, (struct sockaddr *)&from, &length);
            if (got < 0) continue;
            peer[i] = from;
            known[i] = 1;
            if (known[j]) sendto(fd[j], buf, (size_t)got, 0, (struct sockaddr *)&peer[j], sizeof peer[j]);
        }
    }
}
"#;

/// The floor relay, running.
pub struct Floor {
    child: Child,
    base: u16,
    _dir: tempfile::TempDir,
}

impl Floor {
    /// Builds the C relay and starts it for `calls` calls on ports from
    /// `base` (two per call).
    pub fn start(base: u16, calls: usize) -> Floor {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("floor.c");
        let binary = dir.path().join("floor");
        std::fs::write(&source, SOURCE).unwrap();
        let built = Command::new("cc")
            .args(["-O2", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("cc (gcc) to build the floor relay");
        assert!(built.success(), "the floor relay does not compile");
        let mut child = Command::new(&binary)
            .arg(base.to_string())
            .arg(calls.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        super::pinning::floor(child.id());
        let mut line = String::new();
        let stdout = child.stdout.take().unwrap();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the floor relay did not start");
        Floor {
            child,
            base,
            _dir: dir,
        }
    }

    /// Call `index`'s two addresses: where its caller and callee send.
    pub fn addresses(&self, index: usize) -> (SocketAddr, SocketAddr) {
        let port = |offset: usize| self.base + u16::try_from(2 * index + offset).unwrap();
        (
            SocketAddr::from(([127, 0, 0, 1], port(0))),
            SocketAddr::from(([127, 0, 0, 1], port(1))),
        )
    }

    /// Its user+sys CPU seconds so far.
    pub fn cpu_seconds(&self, ticks: f64) -> f64 {
        super::procfs::cpu_seconds(
            std::path::Path::new(&format!("/proc/{}/stat", self.child.id())),
            ticks,
        )
        .expect("the floor relay's /proc stat")
        .1
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
