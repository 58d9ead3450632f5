//! Log setup: `tracing` to stderr in the configured format, with a level
//! filter that a config reload can change.

use std::io::IsTerminal;

use tollbridge_config::{LogConfig, LogFormat};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

/// rsipstack logs every message it receives, with its text, at `info`:
/// that belongs at `debug` for a daemon, so its logs start at `warn` unless
/// the configured filter names it.
fn filter_for(level: &str) -> Result<EnvFilter, tracing_subscriber::filter::ParseError> {
    if level.contains("rsipstack") {
        EnvFilter::try_new(level)
    } else {
        EnvFilter::try_new(format!("{level},rsipstack=warn"))
    }
}

/// Changes the level filter of the running logger.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    format: LogFormat,
}

impl LogHandle {
    /// Applies a reloaded `[log]` section. The format cannot change while
    /// running; that is logged.
    pub fn apply(&self, log: &LogConfig) {
        match filter_for(&log.level) {
            Ok(filter) => {
                if let Err(e) = self.filter.reload(filter) {
                    tracing::warn!(error = %e, "cannot change the log level");
                }
            }
            Err(e) => tracing::warn!(error = %e, level = %log.level, "cannot change the log level"),
        }
        if log.format != self.format {
            tracing::warn!(
                running = %self.format,
                configured = %log.format,
                "log.format changed; it takes effect after a restart"
            );
        }
    }
}

/// Installs the global logger. Fails only if the level was invalid (config
/// validation prevents that) or a logger was already installed.
pub fn init(log: &LogConfig) -> anyhow::Result<LogHandle> {
    let filter = filter_for(&log.level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let format = match log.format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
        LogFormat::Auto => LogFormat::Logfmt,
        other => other,
    };
    let output = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Logfmt => tracing_logfmt::builder()
            .with_span_path(false)
            .layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Human | LogFormat::Auto => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()?;
    Ok(LogHandle {
        filter: handle,
        format: log.format,
    })
}
