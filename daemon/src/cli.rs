//! The command line: `tollbridge run`, `tollbridge check-config`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollbridge_config::Config;

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
}

/// Exit status for a config that is invalid or unreadable.
pub const EXIT_BAD_CONFIG: u8 = 2;

/// `tollbridge check-config PATH`.
pub fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(_) => {
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
