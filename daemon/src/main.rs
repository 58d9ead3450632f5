//! `tollbridge`: parses the command line and runs the daemon.

use std::process::ExitCode;

use clap::Parser;
use tollbridge_daemon::cli::{self, Cli, Command};
use tollbridge_daemon::ctl;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { path } => cli::check_config(&path),
        Command::Settlements { config, state } => cli::settlements(config, state),
        Command::Calls {
            api,
            active,
            booking,
            called,
            limit,
            json,
        } => {
            let query = ctl::CallsQuery {
                active,
                booking,
                called,
                limit,
            };
            ctl::calls(&api, &query, json)
        }
        Command::Hangup { api, id, announce } => ctl::hang_up(&api, &id, announce),
        Command::Backup { config, to } => cli::backup(config, &to),
        Command::Export {
            config,
            from,
            to,
            format,
        } => cli::export(config, &from, &to, &format),
        Command::Manpages { dir } => cli::manpages(&dir),
        Command::Restore { config, from } => cli::restore(config, &from),
        Command::Run { config } => {
            let (source, config) = match cli::load_for_run(config) {
                Ok(loaded) => loaded,
                Err(code) => return code,
            };
            let log = match tollbridge_daemon::logging::init(&config.log) {
                Ok(log) => log,
                Err(e) => {
                    eprintln!("tollbridge: cannot start logging: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(tollbridge_daemon::run::run(source, config, log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "tollbridge stopped on an error");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
