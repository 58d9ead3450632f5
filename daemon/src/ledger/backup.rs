//! Copies of the SQLite ledger taken while the daemon runs, put back while
//! it does not (`tollbridge backup`, `tollbridge restore`).
//!
//! A backup goes through SQLite's online backup API in one step: a
//! consistent snapshot as of one read transaction, taken beside the
//! daemon's writer (WAL lets both run), written to a temporary file,
//! checked (`PRAGMA integrity_check`), synced and renamed into place. A
//! restore refuses while a daemon holds the ledger's [`DatabaseLock`],
//! checks the copy the same way, keeps the file it replaces, and puts
//! the copy in its place with the old file's owner, so the service user
//! can open it. PostgreSQL ledgers are backed up with PostgreSQL's own
//! tools (`pg_dump`, docs/cluster.md).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::sqlite_schema::LATEST_VERSION;

/// What a ledger file holds, for the operator to see what was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Its schema version.
    pub schema_version: i64,
    /// Bookings.
    pub bookings: i64,
    /// Call records.
    pub calls: i64,
    /// Of those, calls not closed (in progress when the copy was taken).
    pub open_calls: i64,
    /// Settlement rows.
    pub settlements: i64,
    /// The file's size in bytes.
    pub bytes: u64,
}

impl std::fmt::Display for LedgerSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema v{}, {} booking(s), {} call(s) ({} open), {} settlement row(s), {} bytes",
            self.schema_version,
            self.bookings,
            self.calls,
            self.open_calls,
            self.settlements,
            self.bytes
        )
    }
}

/// Held by a running daemon on its SQLite file, so that a restore (or a
/// second daemon) cannot replace the ledger under it. An advisory
/// `flock`, independent of SQLite's own locks, released by the kernel
/// when the process ends however it ends.
#[derive(Debug)]
pub struct DatabaseLock {
    _file: File,
}

impl DatabaseLock {
    /// Takes the lock on `path` (an empty file is created if there is
    /// none: SQLite takes it for a new database), or says who holds it.
    pub fn take(path: &Path) -> Result<DatabaseLock, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DatabaseLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(format!(
                "{} is in use by a running tollbridge (stop it first: systemctl stop tollbridge)",
                path.display()
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }
}

/// Copies the ledger at `from` to the new file `to` while a daemon may be
/// writing it.
pub fn backup(from: &Path, to: &Path) -> Result<LedgerSummary, String> {
    if to.exists() {
        return Err(format!(
            "{} exists; give a new file (nothing is overwritten)",
            to.display()
        ));
    }
    let source = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open the ledger {}: {e}", from.display()))?;
    let partial = partial_path(to);
    let _ = std::fs::remove_file(&partial);
    let result = (|| {
        let mut copy = Connection::open(&partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        {
            let backup = rusqlite::backup::Backup::new(&source, &mut copy)
                .map_err(|e| format!("cannot start the backup: {e}"))?;
            // One step: the whole file as of one read transaction. The
            // daemon's writer can hold the file for a moment: retry then.
            let mut tries = 0;
            loop {
                use rusqlite::backup::StepResult;
                match backup.step(-1) {
                    Ok(StepResult::Done) => break,
                    Ok(StepResult::Busy | StepResult::Locked | StepResult::More) if tries < 100 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                    Ok(other) => return Err(format!("the backup did not finish: {other:?}")),
                    Err(e) => return Err(format!("the backup failed: {e}")),
                }
            }
        }
        let summary = check(&copy, &partial)?;
        drop(copy);
        sync(&partial)?;
        std::fs::rename(&partial, to)
            .map_err(|e| format!("cannot move the copy to {}: {e}", to.display()))?;
        sync_directory(to);
        Ok(LedgerSummary {
            bytes: file_size(to),
            ..summary
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Puts the copy at `from` in place of the ledger at `to`, which no daemon
/// may be using; the replaced file is kept beside it, its name returned.
pub fn restore(from: &Path, to: &Path) -> Result<(LedgerSummary, Option<PathBuf>), String> {
    let copy = Connection::open_with_flags(
        from,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", from.display()))?;
    let summary = check(&copy, from)?;
    drop(copy);
    let existing = to.exists();
    let _lock = if existing {
        Some(DatabaseLock::take(to)?)
    } else {
        None
    };
    let partial = partial_path(to);
    // The copy is made whole beside the ledger before anything is moved;
    // a failure on the way leaves the ledger as it was.
    let prepared = (|| {
        std::fs::copy(from, &partial).map_err(|e| {
            format!(
                "cannot copy {} beside {}: {e}",
                from.display(),
                to.display()
            )
        })?;
        if existing {
            let metadata =
                std::fs::metadata(to).map_err(|e| format!("cannot read {}: {e}", to.display()))?;
            std::os::unix::fs::chown(&partial, Some(metadata.uid()), Some(metadata.gid()))
                .map_err(|e| format!("cannot give the copy the ledger's owner: {e}"))?;
            std::fs::set_permissions(&partial, metadata.permissions())
                .map_err(|e| format!("cannot give the copy the ledger's mode: {e}"))?;
        }
        sync(&partial)
    })();
    if let Err(e) = prepared {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    // The replaced file goes aside with its log and index, which belong
    // to it, not to the copy; if the copy then cannot take its place, it
    // comes back.
    let kept = PathBuf::from(format!(
        "{}.before-restore-{}",
        to.display(),
        crate::clock::now_ms()
    ));
    let moved: Vec<(PathBuf, PathBuf)> = if existing {
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| {
                (
                    PathBuf::from(format!("{}{suffix}", to.display())),
                    PathBuf::from(format!("{}{suffix}", kept.display())),
                )
            })
            .filter(|(side, _)| side.exists())
            .collect()
    } else {
        Vec::new()
    };
    let mut done: Vec<&(PathBuf, PathBuf)> = Vec::new();
    let mut failed = None;
    for pair in &moved {
        match std::fs::rename(&pair.0, &pair.1) {
            Ok(()) => done.push(pair),
            Err(e) => {
                failed = Some(format!(
                    "cannot keep {} as {}: {e}",
                    pair.0.display(),
                    pair.1.display()
                ));
                break;
            }
        }
    }
    if failed.is_none()
        && let Err(e) = std::fs::rename(&partial, to)
    {
        failed = Some(format!(
            "cannot put the copy in place at {}: {e}",
            to.display()
        ));
    }
    if let Some(e) = failed {
        for (original, aside) in done.iter().rev() {
            let _ = std::fs::rename(aside, original);
        }
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let kept = existing.then_some(kept);
    sync_directory(to);
    Ok((
        LedgerSummary {
            bytes: file_size(to),
            ..summary
        },
        kept,
    ))
}

/// Checks that `conn` is a whole Tollbridge ledger this build can open.
fn check(conn: &Connection, path: &Path) -> Result<LedgerSummary, String> {
    let bad = |reason: String| format!("{} is not a usable ledger: {reason}", path.display());
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if integrity != "ok" {
        return Err(bad(format!("integrity check: {integrity}")));
    }
    let schema_version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| bad(e.to_string()))?;
    if schema_version < 1 {
        return Err(bad("no Tollbridge schema in it".to_owned()));
    }
    if usize::try_from(schema_version).unwrap_or(usize::MAX) > LATEST_VERSION {
        return Err(bad(format!(
            "schema version {schema_version} is newer than this build's {LATEST_VERSION}"
        )));
    }
    let count = |sql: &str| -> Result<i64, String> {
        conn.query_row(sql, [], |row| row.get(0))
            .map_err(|e| bad(e.to_string()))
    };
    Ok(LedgerSummary {
        schema_version,
        bookings: count("SELECT COUNT(*) FROM bookings")?,
        calls: count("SELECT COUNT(*) FROM calls")?,
        open_calls: count("SELECT COUNT(*) FROM calls WHERE ended_ms IS NULL")?,
        settlements: count("SELECT COUNT(*) FROM settlements")?,
        bytes: file_size(path),
    })
}

fn partial_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.partial", path.display()))
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn sync(path: &Path) -> Result<(), String> {
    File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", path.display()))
}

/// Makes a rename in `path`'s directory durable (best effort).
fn sync_directory(path: &Path) {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(dir) = File::open(dir)
    {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ledger(dir: &Path) -> PathBuf {
        let path = dir.join("tollbridge.db");
        let ledger = crate::ledger::Ledger::open_sqlite(&path).unwrap();
        drop(ledger);
        path
    }

    #[test]
    fn a_backup_is_checked_and_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        let copy = dir.path().join("copy.db");
        let summary = backup(&db, &copy).unwrap();
        assert_eq!(summary.schema_version as usize, LATEST_VERSION);
        assert_eq!((summary.calls, summary.bookings), (0, 0));
        assert!(summary.bytes > 0);
        let error = backup(&db, &copy).unwrap_err();
        assert!(error.contains("exists"), "{error}");
        assert!(!partial_path(&copy).exists());
    }

    #[test]
    fn a_restore_refuses_what_is_not_a_ledger_and_a_locked_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let db = ledger(dir.path());
        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, b"not a database at all, not even close").unwrap();
        let error = restore(&garbage, &db).unwrap_err();
        assert!(error.contains("garbage.db"), "{error}");
        let empty = dir.path().join("empty.db");
        drop(Connection::open(&empty).unwrap());
        let error = restore(&empty, &db).unwrap_err();
        assert!(error.contains("no Tollbridge schema"), "{error}");

        let copy = dir.path().join("copy.db");
        backup(&db, &copy).unwrap();
        let lock = DatabaseLock::take(&db).unwrap();
        let error = restore(&copy, &db).unwrap_err();
        assert!(error.contains("in use by a running tollbridge"), "{error}");
        drop(lock);
        let (_, kept) = restore(&copy, &db).unwrap();
        let kept = kept.unwrap();
        assert!(kept.exists() && db.exists());
    }
}
