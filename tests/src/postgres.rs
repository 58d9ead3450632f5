//! A throwaway PostgreSQL server for tests: `initdb` into a temporary
//! directory, listening only on a Unix socket in that directory, stopped
//! (and its files removed) when dropped.
//!
//! PostgreSQL refuses to run as root; when the tests do, the server runs
//! as the unprivileged `postgres` user the Debian package creates. The
//! binaries come from `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
//! A machine without them fails the test with what to install: no test is
//! skipped quietly.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running PostgreSQL server of our own.
pub struct PostgresServer {
    /// Removed with the server, unless the server is shared.
    owned: Option<tempfile::TempDir>,
    dir: PathBuf,
    bin: PathBuf,
    /// Run the server's programs as this user (we are root).
    run_as: Option<&'static str>,
    running: bool,
}

/// The server's TCP port is never opened; it names the socket file.
const PORT: u16 = 5432;

impl PostgresServer {
    /// Creates a cluster in a temporary directory and starts it.
    pub fn start() -> PostgresServer {
        let bin = postgres_bin();
        let run_as = if running_as_root() {
            Some("postgres")
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("tb-pg")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        if let Some(user) = run_as {
            let status = Command::new("chown")
                .arg(format!("{user}:"))
                .arg(dir.path())
                .status()
                .expect("chown runs");
            assert!(status.success(), "cannot give {user} the server directory");
        }
        let server = PostgresServer {
            dir: dir.path().to_owned(),
            owned: Some(dir),
            bin,
            run_as,
            running: false,
        };
        let data = server.data_dir();
        server.run_checked(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
        );
        let mut server = server;
        server.start_again();
        server
    }

    /// One server for the whole test process, for tests that each take a
    /// database of their own. It is stopped and removed by a watcher
    /// process once this process is gone, however it ends.
    pub fn shared() -> &'static PostgresServer {
        static SHARED: std::sync::OnceLock<PostgresServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| {
            let mut server = PostgresServer::start();
            if let Some(dir) = server.owned.take() {
                let _ = dir.keep();
            }
            server.watch_for_exit();
            server
        })
    }

    /// Starts a detached watcher that stops the server and removes its
    /// files when this process exits (statics are never dropped).
    fn watch_for_exit(&self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let as_user = self
            .run_as
            .map(|user| format!("runuser -u {user} -- "))
            .unwrap_or_default();
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {as_user}{pg_ctl} stop -w -m immediate -D {data} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            pg_ctl = pg_ctl.display(),
            data = self.data_dir().display(),
            dir = self.dir.display(),
        );
        // `setsid -f` forks the watcher off and returns at once.
        let status = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("setsid starts the PostgreSQL watcher");
        assert!(status.success(), "setsid failed: {status}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A `database.url` for `database` on this server (as the superuser;
    /// trust authentication, so no password).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql://postgres@/{database}?host={}&port={PORT}",
            self.socket_dir().display()
        )
    }

    /// Creates a new, empty database and returns its `database.url`.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("tb_{}", NEXT.fetch_add(1, Ordering::SeqCst));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        self.url(&name)
    }

    /// Creates a login role with `password` (SCRAM-SHA-256, as production
    /// servers use), a database it owns, and a `pg_hba.conf` line that
    /// makes the role give its password on the socket; returns the
    /// database's `database.url` as that role.
    pub fn create_role_and_database(&self, role: &str, password: &str) -> String {
        self.psql(
            "postgres",
            &format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN PASSWORD '{password}'"
            ),
        );
        self.psql("postgres", &format!("CREATE DATABASE {role} OWNER {role}"));
        let hba = self.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("pg_hba.conf is readable");
        std::fs::write(&hba, format!("local {role} {role} scram-sha-256\n{rules}"))
            .expect("pg_hba.conf is writable");
        self.psql("postgres", "SELECT pg_reload_conf()");
        format!(
            "postgresql://{role}@/{role}?host={}&port={PORT}",
            self.socket_dir().display()
        )
    }

    /// Runs `sql` in `database` with psql; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = self.run_checked(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                path_str(self.socket_dir()),
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: sessions are cut, as in a restart
    /// or a failover).
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let data = self.data_dir();
        self.run_checked(
            "pg_ctl",
            &["stop", "-w", "-m", "fast", "-D", path_str(&data)],
        );
    }

    /// Starts the server (again) on the same files and socket.
    pub fn start_again(&mut self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log");
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c max_connections=200 -c shared_buffers=32MB",
            self.socket_dir().display()
        );
        self.run_checked(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
            ],
        );
        self.running = true;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.try_psql("postgres", "SELECT 1").is_none() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_psql(&self, database: &str, sql: &str) -> Option<String> {
        let mut command = self.command("psql");
        command.args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-h",
            path_str(self.socket_dir()),
            "-p",
            &PORT.to_string(),
            "-U",
            "postgres",
            "-d",
            database,
            "-c",
            sql,
        ]);
        let output = command.output().ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// The server's log so far (for failing tests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    fn run_checked(&self, program: &str, args: &[&str]) -> Output {
        let output = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
        output
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if self.running && self.owned.is_some() {
            let data = self.data_dir();
            let _ = self
                .command("pg_ctl")
                .args(["stop", "-w", "-m", "immediate", "-D", path_str(&data)])
                .output();
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Where `initdb`, `pg_ctl` and `psql` are.
fn postgres_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((version, bin)) if version >= 15 => bin,
        Some((version, _)) => panic!("PostgreSQL {version} found; Tollbridge needs 15 or newer"),
        None => panic!(
            "PostgreSQL is not installed (apt-get install postgresql; scripts/test does it), or set PG_BIN"
        ),
    }
}
