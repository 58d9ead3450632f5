//! What the config tests share: an environment, parsing a file's text,
//! the errors it must have, and the example file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tollbridge_config::{Config, ConfigError};

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(src, &env(&[]))
}

pub fn errors(src: &str) -> Vec<ConfigError> {
    match parse(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(errors) => errors,
    }
}

pub fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tollbridge.example.toml")
}
