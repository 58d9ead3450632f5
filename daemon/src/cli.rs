//! The command line: `tollbridge run`, `tollbridge check-config`,
//! `tollbridge settlements`, and `tollbridge calls` / `tollbridge hangup`
//! against the running daemon's API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollbridge_config::Config;
use tollbridge_media::prompt::PromptLibrary;

use crate::run::ConfigSource;

/// Tollbridge: bridges calls from a SIP trunk to experts, meters them per
/// second and settles them with Stripe.
#[derive(Debug, Parser)]
#[command(name = "tollbridge", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (on the built-in loopback defaults when no config is given).
    Run {
        /// The config file.
        #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
    },
    /// Check a config file: prints `ok` and exits 0, or prints every error and exits 2.
    CheckConfig {
        /// The config file to check.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// List settlements (holds, captures, releases) from the database,
    /// e.g. `--state unknown` for what needs a look.
    Settlements {
        /// The config file (for `database.path`).
        #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// Only this state: pending, sent, succeeded, failed or unknown.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
    },
    /// List calls from the running daemon's API: those in progress (the
    /// default, with talk time, time left, codec and loss), or those of a
    /// booking or a dialled number.
    Calls {
        #[command(flatten)]
        api: ApiArgs,
        /// Calls in progress on every node (the default without --booking or --called).
        #[arg(long)]
        active: bool,
        /// Calls of this booking.
        #[arg(long, value_name = "ID")]
        booking: Option<String>,
        /// Calls to this number (E.164).
        #[arg(long, value_name = "+E164")]
        called: Option<String>,
        /// At most this many (1-500).
        #[arg(long, default_value_t = 100, value_name = "N")]
        limit: u16,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the accounting export to stdout: one line per call that
    /// started in [from, to), times in UTC and in export.timezone.
    Export {
        /// The config file (for the ledger and export.timezone).
        #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// The first instant, RFC 3339 with an offset (2026-12-01T00:00:00+09:00).
        #[arg(long, value_name = "TIME")]
        from: String,
        /// The instant after the last, RFC 3339 with an offset.
        #[arg(long, value_name = "TIME")]
        to: String,
        /// csv (a header line first) or jsonl.
        #[arg(long, default_value = "csv", value_name = "FORMAT")]
        format: String,
    },
    /// Copy the SQLite ledger to a new file while the daemon runs (for
    /// PostgreSQL use pg_dump).
    Backup {
        /// The config file (for `database.path`).
        #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// The new file to write.
        #[arg(value_name = "FILE")]
        to: PathBuf,
    },
    /// Put a backup in place of the SQLite ledger; refused while a daemon
    /// uses it. The replaced file is kept beside it.
    Restore {
        /// The config file (for `database.path`).
        #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
        config: Option<PathBuf>,
        /// The backup to restore.
        #[arg(value_name = "FILE")]
        from: PathBuf,
    },
    /// Write the man pages (tollbridge.1 and one per subcommand) into DIR;
    /// for packaging.
    #[command(hide = true)]
    Manpages {
        /// Where to write them.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// End a call in progress: BYE to both parties, recorded `hung-up`.
    Hangup {
        #[command(flatten)]
        api: ApiArgs,
        /// The call's id (`call_...`).
        #[arg(value_name = "CALL")]
        id: String,
        /// Both parties hear the time-up prompt before the BYEs.
        #[arg(long)]
        announce: bool,
    },
}

/// How `calls` and `hangup` reach the running daemon.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The daemon's config file: its http.listen and http.api_token.
    #[arg(long, short, env = "TOLLBRIDGE_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Another node's API (http://HOST:PORT) instead of http.listen.
    #[arg(long, value_name = "URL")]
    pub api: Option<String>,
    /// Where credential names in the config are read from outside the
    /// systemd unit.
    #[arg(long, value_name = "DIR", default_value = crate::ctl::DEFAULT_CREDENTIALS)]
    pub credentials: PathBuf,
}

/// `tollbridge settlements [--state S]`: one line per row, oldest first,
/// read from the database without writing to it (safe beside a running
/// daemon).
pub fn settlements(config: Option<PathBuf>, state: Option<String>) -> ExitCode {
    use crate::ledger::SettlementState;
    let state = match state.as_deref().map(SettlementState::parse) {
        Some(None) => {
            let words: Vec<&str> = SettlementState::ALL.iter().map(|s| s.as_str()).collect();
            eprintln!(
                "tollbridge: --state {}: not a settlement state (one of {})",
                state.unwrap_or_default(),
                words.join(", ")
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Some(state) => state,
        None => None,
    };
    let (_, config) = match load_for_run(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let rows = (|| {
        let ledger = crate::ledger::Ledger::open_read_only(&config.database)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| crate::ledger::LedgerError::Query(e.to_string()))?;
        runtime.block_on(async {
            let rows = ledger.settlements(state).await;
            ledger.close().await;
            rows
        })
    })();
    match rows {
        Ok(rows) => {
            println!(
                "{:<36} {:<10} {:>10} {:<4} {:<10} {:>5}  {:<22} last_error / call",
                "settlement", "operation", "amount", "cur", "state", "tries", "payment_intent"
            );
            for row in &rows {
                let or_dash = |text: &Option<String>| text.clone().unwrap_or_else(|| "-".into());
                println!(
                    "{:<36} {:<10} {:>10} {:<4} {:<10} {:>5}  {:<22} {} / {}",
                    row.id,
                    row.operation,
                    row.amount,
                    row.currency,
                    row.state,
                    row.tries,
                    or_dash(&row.payment_intent),
                    or_dash(&row.last_error),
                    or_dash(&row.call),
                );
            }
            eprintln!("{} settlement(s)", rows.len());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollbridge: cannot read the ledger: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tollbridge export --from --to [--format]`: the accounting export on
/// stdout, read from the ledger beside a running daemon (read-only).
pub fn export(config: Option<PathBuf>, from: &str, to: &str, format: &str) -> ExitCode {
    use crate::export::{Export, Format};
    let format = match format {
        "csv" => Format::Csv,
        "jsonl" => Format::Jsonl,
        other => {
            eprintln!("tollbridge: --format {other}: expected csv or jsonl");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let (from_ms, to_ms) = match crate::http::export_range(Some(from), Some(to)) {
        Ok(range) => range,
        Err(errors) => {
            for e in errors {
                eprintln!("tollbridge: --{}: {}", e.field, e.message);
            }
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let (_, config) = match load_for_run(config) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let export = Export::new(format, &config.export.timezone, crate::clock::now_ms());
    let result = (|| {
        let ledger = crate::ledger::Ledger::open_read_only(&config.database)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| crate::ledger::LedgerError::Query(e.to_string()))?;
        runtime.block_on(async {
            let (pages, mut receiver) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
            let writer = async {
                use std::io::Write;
                let mut stdout = std::io::stdout().lock();
                while let Some(page) = receiver.recv().await {
                    // A closed pipe (| head) ends the export.
                    if stdout.write_all(&page).is_err() {
                        break;
                    }
                }
                let _ = stdout.flush();
            };
            let (written, ()) = tokio::join!(
                crate::export::stream(&ledger, &export, from_ms, to_ms, pages),
                writer
            );
            ledger.close().await;
            written
        })
    })();
    match result {
        Ok(calls) => {
            eprintln!("{calls} call(s)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollbridge: cannot read the ledger: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `tollbridge backup FILE`: a consistent copy of the running ledger.
pub fn backup(config: Option<PathBuf>, to: &Path) -> ExitCode {
    let Some(path) = sqlite_path(config) else {
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    match crate::ledger::backup::backup(&path, to) {
        Ok(summary) => {
            println!("{}: {summary}", to.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollbridge: backup of {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// `tollbridge restore FILE`: the backup in place of the ledger, with the
/// daemon stopped.
pub fn restore(config: Option<PathBuf>, from: &Path) -> ExitCode {
    let Some(path) = sqlite_path(config) else {
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    match crate::ledger::backup::restore(from, &path) {
        Ok((summary, kept)) => {
            println!(
                "{}: restored from {}: {summary}",
                path.display(),
                from.display()
            );
            if let Some(kept) = kept {
                println!("the replaced ledger is kept as {}", kept.display());
            }
            println!(
                "calls open in the backup are closed (recovered) and their parties hung up at the next start"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tollbridge: restore to {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

/// The SQLite ledger's path from the config; `None` (said why) for a
/// config that cannot be read or a PostgreSQL ledger.
fn sqlite_path(config: Option<PathBuf>) -> Option<PathBuf> {
    let (_, config) = load_for_run(config).ok()?;
    if config.database.url.is_some() {
        eprintln!(
            "tollbridge: the ledger is PostgreSQL (database.url): back it up with pg_dump and restore with pg_restore (docs/cluster.md#backups)"
        );
        return None;
    }
    Some(config.database.path)
}

/// `tollbridge manpages DIR`: man pages generated from this command line,
/// so they never disagree with `--help`.
pub fn manpages(dir: &Path) -> ExitCode {
    use clap::CommandFactory;
    let write = |command: clap::Command, name: &str| -> std::io::Result<()> {
        let mut page = Vec::new();
        clap_mangen::Man::new(command).render(&mut page)?;
        std::fs::write(dir.join(format!("{name}.1")), page)
    };
    let top = Cli::command();
    let mut result = write(top.clone(), "tollbridge");
    for sub in top.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        let name = format!("tollbridge-{}", sub.get_name());
        let sub = sub
            .clone()
            .name(name.clone())
            .version(env!("CARGO_PKG_VERSION"));
        result = result.and_then(|()| write(sub, &name));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "tollbridge: cannot write man pages to {}: {e}",
                dir.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// Exit status for a config that is invalid or unreadable.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// `tollbridge check-config PATH`.
pub fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // The files must hold a certificate and the key that fits it.
            if let Some(tls) = &config.http.tls
                && let Err(e) = crate::tls::load("http.tls", tls)
            {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            if let Err(e) = crate::edge::SipTls::open(&config) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            // Every prompt file must be one the relay can play.
            let prompts = match PromptLibrary::load(
                config.prompts.dir.as_deref(),
                &config.prompts.language,
            ) {
                Ok(prompts) => prompts,
                Err(e) => {
                    eprintln!("{}: {e}", path.display());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            for line in missing_prompts(&prompts) {
                println!("{line}");
            }
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.errors() {
                eprintln!("{}: {line}", path.display());
            }
            ExitCode::from(EXIT_BAD_CONFIG)
        }
    }
}

/// One line per language that lacks prompts, naming them and what plays
/// instead.
fn missing_prompts(prompts: &PromptLibrary) -> Vec<String> {
    let mut lines = Vec::new();
    for language in prompts.languages() {
        let lacking: Vec<&str> = prompts
            .missing()
            .iter()
            .filter(|(l, _)| l == language)
            .map(|(_, stem)| stem.as_str())
            .collect();
        if !lacking.is_empty() {
            let instead = if language == prompts.default_language() {
                "en"
            } else {
                prompts.default_language()
            };
            lines.push(format!(
                "prompts: {language} lacks {}; the {instead} prompts play instead",
                lacking.join(", ")
            ));
        }
    }
    lines
}

/// Loads the config for `tollbridge run`, printing every error on failure.
pub fn load_for_run(path: Option<PathBuf>) -> Result<(ConfigSource, Config), ExitCode> {
    match path {
        None => Ok((
            ConfigSource::Defaults,
            Config::defaults(&tollbridge_config::ProcessEnvironment),
        )),
        Some(path) => match Config::load(&path) {
            Ok(config) => Ok((ConfigSource::File(path), config)),
            Err(e) => {
                for line in e.errors() {
                    eprintln!("{}: {line}", path.display());
                }
                Err(ExitCode::from(EXIT_BAD_CONFIG))
            }
        },
    }
}
