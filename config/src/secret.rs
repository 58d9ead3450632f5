//! Secrets in the config file: where they come from and how they are kept
//! out of logs.
//!
//! A secret setting is written as one of:
//! - `"env:NAME"`: the value of environment variable `NAME`;
//! - `"file:PATH"`: the contents of a file (one trailing newline dropped);
//! - `"credential:NAME"`, or under systemd a bare `"NAME"` that names a file
//!   in `$CREDENTIALS_DIRECTORY` (`LoadCredential=NAME:...`);
//! - anything else: the secret itself, inline.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where the loader reads environment variables from; tests give a map
/// instead of touching the process environment.
pub trait Environment {
    /// The value of variable `name`, if set and valid UTF-8.
    fn var(&self, name: &str) -> Option<String>;

    /// The machine's host name (the default node name).
    fn host_name(&self) -> Option<String> {
        system_host_name()
    }
}

/// The kernel's host name, as `hostname` prints it.
fn system_host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> Environment for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }

    /// `HOSTNAME` in the map, else the machine's.
    fn host_name(&self) -> Option<String> {
        self.get("HOSTNAME").cloned().or_else(system_host_name)
    }
}

/// A resolved secret. Its `Debug` and `Display` never show the value; only
/// [`Secret::expose`] does, at the point of use.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    source: SecretSource,
}

/// Where a secret was read from, safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config file.
    Inline,
    /// From the named environment variable.
    Env(String),
    /// From the named file.
    File(PathBuf),
    /// From the named systemd credential.
    Credential(String),
}

impl Secret {
    /// The secret value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Where it came from (for start-up logs).
    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// A secret given directly, for tests and built-in defaults.
    pub fn inline(value: impl Into<String>) -> Self {
        Secret {
            value: value.into(),
            source: SecretSource::Inline,
        }
    }

    /// Resolves a secret setting as written in the config file.
    pub(crate) fn resolve(spec: &str, env: &dyn Environment) -> Result<Secret, String> {
        let credentials_dir = env.var("CREDENTIALS_DIRECTORY").filter(|d| !d.is_empty());
        let (value, source) = if let Some(name) = spec.strip_prefix("env:") {
            let value = env
                .var(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?;
            (value, SecretSource::Env(name.to_owned()))
        } else if let Some(path) = spec.strip_prefix("file:") {
            let path = PathBuf::from(path);
            (read_secret_file(&path)?, SecretSource::File(path))
        } else if let Some(name) = spec.strip_prefix("credential:") {
            let dir = credentials_dir.ok_or_else(|| {
                format!("credential {name:?} asked for, but $CREDENTIALS_DIRECTORY is not set (use LoadCredential= in the unit)")
            })?;
            (
                read_credential(&dir, name)?,
                SecretSource::Credential(name.to_owned()),
            )
        } else if let Some(dir) = credentials_dir
            .filter(|dir| is_credential_name(spec) && Path::new(dir).join(spec).is_file())
        {
            (
                read_credential(&dir, spec)?,
                SecretSource::Credential(spec.to_owned()),
            )
        } else {
            (spec.to_owned(), SecretSource::Inline)
        };
        if value.is_empty() {
            return Err("the secret is empty".to_owned());
        }
        Ok(Secret { value, source })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<redacted>, from {:?})", self.source)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// systemd credential names are plain file names.
fn is_credential_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn read_credential(dir: &str, name: &str) -> Result<String, String> {
    if !is_credential_name(name) {
        return Err(format!(
            "{name:?} is not a credential name (letters, digits, '.', '_', '-')"
        ));
    }
    read_secret_file(&Path::new(dir).join(name))
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn inline_env_file_and_credential_sources() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file\n").unwrap();
        std::fs::write(dir.path().join("stripe_key"), "from-credential\r\n").unwrap();
        let creds = dir.path().to_str().unwrap();
        let file_spec = format!("file:{}", dir.path().join("token").display());
        let e = env(&[("TOKEN", "from-env"), ("CREDENTIALS_DIRECTORY", creds)]);

        let cases = [
            ("plain-value", "plain-value", SecretSource::Inline),
            ("env:TOKEN", "from-env", SecretSource::Env("TOKEN".into())),
            (
                file_spec.as_str(),
                "from-file",
                SecretSource::File(dir.path().join("token")),
            ),
            (
                "credential:stripe_key",
                "from-credential",
                SecretSource::Credential("stripe_key".into()),
            ),
            (
                "stripe_key",
                "from-credential",
                SecretSource::Credential("stripe_key".into()),
            ),
            ("not_a_credential", "not_a_credential", SecretSource::Inline),
        ];
        for (spec, value, source) in cases {
            let secret = Secret::resolve(spec, &e).unwrap();
            assert_eq!(secret.expose(), value, "{spec}");
            assert_eq!(secret.source(), &source, "{spec}");
        }
    }

    #[test]
    fn a_bare_name_is_inline_outside_systemd() {
        let secret = Secret::resolve("stripe_key", &env(&[])).unwrap();
        assert_eq!(secret.source(), &SecretSource::Inline);
    }

    #[test]
    fn unresolvable_secrets_say_why() {
        let e = env(&[("EMPTY", "")]);
        let missing = Secret::resolve("env:NOPE", &e).unwrap_err();
        assert!(missing.contains("NOPE is not set"), "{missing}");
        let no_file = Secret::resolve("file:/nonexistent/secret", &e).unwrap_err();
        assert!(no_file.contains("/nonexistent/secret"), "{no_file}");
        let no_dir = Secret::resolve("credential:x", &e).unwrap_err();
        assert!(no_dir.contains("CREDENTIALS_DIRECTORY"), "{no_dir}");
        assert!(
            Secret::resolve("env:EMPTY", &e)
                .unwrap_err()
                .contains("empty")
        );
        let dir = tempfile::tempdir().unwrap();
        let creds = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        assert!(Secret::resolve("credential:../etc/passwd", &creds).is_err());
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::inline("sk_test_supersecret");
        assert!(!format!("{secret:?}").contains("supersecret"));
        assert!(!format!("{secret}").contains("supersecret"));
    }
}
