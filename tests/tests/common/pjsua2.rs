//! PJSIP (`pjsua2-python` from PyPI, put in `target/pjsua2` by
//! `scripts/test`) driven by `softphones/pjsua2_expert.py`: an expert's
//! softphone or a caller, over UDP or TLS, with or without SRTP, saying a
//! tone and recording what it hears; and what that recording holds.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use tollbridge_e2e::tls::{Issued, TestCa};

use super::experts::{PASSWORD, pjsua2_path, tone_at};

/// How to start one.
pub struct Setup<'a> {
    /// Where it registers (`host:port`), or `"-"` for nowhere.
    pub registrar: String,
    /// Its user: the registered name, or the caller number of its From.
    pub user: &'a str,
    /// SIP over TLS trusting this CA, serving this certificate when given.
    pub tls: Option<(&'a TestCa, Option<&'a Issued>)>,
    /// `off`, `optional` or `mandatory`.
    pub srtp: &'a str,
    /// A call it places itself, to this URI.
    pub call: Option<String>,
    /// The tone it says, Hz.
    pub tone_hz: f64,
}

/// A running PJSIP phone, killed when dropped.
pub struct Pjsua2 {
    child: Child,
    /// Its listener's port.
    pub port: u16,
    heard: PathBuf,
    log: PathBuf,
}

impl Pjsua2 {
    /// Starts it as `setup` says, for up to 30 s, its files in `dir`.
    pub fn start(dir: &Path, setup: Setup<'_>) -> Pjsua2 {
        let says = dir.join(format!("says-{}.wav", setup.user));
        tone_at(&says, setup.tone_hz);
        let heard = dir.join(format!("heard-{}.wav", setup.user));
        let log = dir.join(format!("pjsua2-{}.log", setup.user));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("softphones/pjsua2_expert.py");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .arg(&setup.registrar)
            .arg(setup.user)
            .arg(PASSWORD)
            .arg(&says)
            .arg(&heard)
            .arg("30")
            .args(["--srtp", setup.srtp])
            .arg("--log")
            .arg(&log);
        if let Some((ca, own)) = setup.tls {
            command.arg("--tls").arg(ca.ca_file());
            if let Some(own) = own {
                command.arg(&own.certificate).arg(&own.private_key);
            }
        }
        if let Some(uri) = &setup.call {
            command.args(["--call", uri]);
        }
        let mut child = command
            .env("PYTHONPATH", pjsua2_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::create(log.with_extension("err"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn()
            .expect("python3 with pjsua2 (scripts/test installs pjsua2-python)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        // PJSIP logs its start on stdout before its log level applies.
        let port = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("listening ")?.trim().parse().ok())
            .expect("pjsua2 says where it listens");
        // The rest of its output is not read; drain it so it never blocks.
        std::thread::spawn(move || for _ in lines {});
        Pjsua2 {
            child,
            port,
            heard,
            log,
        }
    }

    /// The end of PJSIP's own log, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let state: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("state changed") || l.contains("SRTP") || l.contains("rror"))
            .collect();
        let errors = std::fs::read_to_string(self.log.with_extension("err")).unwrap_or_default();
        format!(
            "{}\n{errors}",
            state[state.len().saturating_sub(40)..].join("\n")
        )
    }

    /// Waits for it to end; whether it answered a call that then ended.
    pub fn answered_and_ended(&mut self) -> bool {
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// What it heard, as [`Heard`].
    pub fn heard(&self) -> Heard {
        Heard::read(&self.heard)
    }
}

impl Drop for Pjsua2 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A phone's recording cut into 100 ms windows.
pub struct Heard {
    rate: f64,
    windows: Vec<Vec<f64>>,
}

impl Heard {
    fn read(path: &Path) -> Heard {
        let mut reader = hound::WavReader::open(path).expect("the phone's recording");
        let rate = f64::from(reader.spec().sample_rate);
        let samples: Vec<f64> = reader
            .samples::<i16>()
            .map_while(Result::ok)
            .map(f64::from)
            .collect();
        let size = (rate / 10.0) as usize;
        Heard {
            rate,
            windows: samples.chunks_exact(size).map(<[f64]>::to_vec).collect(),
        }
    }

    /// The loudest sample.
    pub fn loudest(&self) -> f64 {
        self.windows
            .iter()
            .flatten()
            .fold(0.0, |most: f64, s| most.max(s.abs()))
    }

    /// Windows of loud sound, and how many of them are mostly a tone at
    /// `hz` (Goertzel: its power over the window's): (loud, tone).
    pub fn loud_and_tone(&self, hz: f64) -> (usize, usize) {
        let mut loud = 0;
        let mut tone = 0;
        for window in &self.windows {
            let energy: f64 = window.iter().map(|s| s * s).sum();
            let rms = (energy / window.len() as f64).sqrt();
            if rms < 1_000.0 {
                continue;
            }
            loud += 1;
            let coefficient = 2.0 * (2.0 * std::f64::consts::PI * hz / self.rate).cos();
            let (mut previous, mut before) = (0.0, 0.0);
            for sample in window {
                let current = sample + coefficient * previous - before;
                before = previous;
                previous = current;
            }
            let power = previous * previous + before * before - coefficient * previous * before;
            // A pure tone's Goertzel power is energy × N / 2.
            if power / (energy * window.len() as f64 / 2.0) > 0.5 {
                tone += 1;
            }
        }
        (loud, tone)
    }
}
