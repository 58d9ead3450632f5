//! What is wrong with a config file, said so an operator can fix it.

use std::fmt;
use std::path::PathBuf;

/// One mistake in a config file: the dotted key (`media.ports`), the value
/// as written (never for secrets), why it is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, with an index for arrays: `trunk[0].allow[1]`.
    pub key: String,
    /// The offending value as written in the file, if it may be shown.
    pub value: Option<String>,
    /// Why the value is not accepted.
    pub reason: String,
    /// 1-based line and column in the file, when the TOML parser knows it.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str("config")?;
        } else {
            f.write_str(&self.key)?;
        }
        if let Some(value) = &self.value {
            write!(f, " = {value}")?;
        }
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file was read and has one or more mistakes, all listed.
    #[error("{} has {} error(s):\n{}", path.display(), errors.len(), Errors(errors))]
    Invalid {
        /// The file that was read (`<defaults>` when none was given).
        path: PathBuf,
        /// Every mistake found, in document order.
        errors: Vec<ConfigError>,
    },
}

impl LoadError {
    /// Every mistake, for callers that print them one per line.
    pub fn errors(&self) -> Vec<String> {
        match self {
            LoadError::Read { .. } => vec![self.to_string()],
            LoadError::Invalid { errors, .. } => errors.iter().map(ToString::to_string).collect(),
        }
    }
}

struct Errors<'a>(&'a [ConfigError]);

impl fmt::Display for Errors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {error}")?;
        }
        Ok(())
    }
}
