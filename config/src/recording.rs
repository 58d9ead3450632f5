//! `[recording]`: where call recordings are kept, for how long, and how
//! much of the disk they must leave free.

use std::path::PathBuf;
use std::time::Duration;

use crate::schema::duration_in;
use crate::tree::{Node, TableReader};

/// `[recording]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingConfig {
    /// `recording.dir`: one WAV file per recorded call (default
    /// `recordings/` under the state directory).
    pub dir: PathBuf,
    /// `recording.retention`: recordings older than this are deleted (and
    /// the deletion recorded); unset keeps them until deleted through the
    /// API.
    pub retention: Option<Duration>,
    /// `recording.min_free_mb`: a call does not start recording while the
    /// disk holding `dir` has less free space than this (the call goes on
    /// and its record says why).
    pub min_free_mb: u64,
}

pub(crate) const RECORDING_KEYS: [&str; 3] = ["dir", "retention", "min_free_mb"];

/// The shortest and longest retention accepted.
const RETENTION: (Duration, Duration) = (
    Duration::from_secs(60 * 60),
    Duration::from_secs(10 * 366 * 24 * 60 * 60),
);

pub(crate) fn read_recording(mut t: TableReader, defaults: RecordingConfig) -> RecordingConfig {
    let dir = t.get_with("dir", |node| match node {
        Node::Str(s) if !s.trim().is_empty() => Ok(PathBuf::from(s)),
        _ => Err("expected a directory path".to_owned()),
    });
    let retention = duration_in(&mut t, "retention", RETENTION.0, RETENTION.1);
    let min_free_mb = t
        .get_with("min_free_mb", |node| match node {
            Node::Int(n) if (0..=100_000_000).contains(n) => Ok(*n as u64),
            _ => Err("expected a whole number of megabytes from 0 to 100000000".to_owned()),
        })
        .unwrap_or(defaults.min_free_mb);
    t.finish(&RECORDING_KEYS);
    RecordingConfig {
        dir: dir.unwrap_or(defaults.dir),
        retention: retention.or(defaults.retention),
        min_free_mb,
    }
}
