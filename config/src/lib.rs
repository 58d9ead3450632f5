//! Tollbridge's configuration: one TOML file, every key with a default.
//!
//! With no file at all the daemon runs on loopback in ledger-only mode
//! (no Stripe). A file only needs the keys that differ from the defaults;
//! `config/tollbridge.example.toml` lists them all. Loading validates every
//! key and reports every mistake at once, each naming its dotted key, the
//! value, the reason and the line:column ([`ConfigError`]). Secrets are
//! resolved while loading (see [`secret`]) and never printed.

mod callees;
mod error;
mod network;
mod recording;
mod registrar;
mod schema;
pub mod secret;
mod storage;
mod stripe;
mod tree;
mod trunks;
mod values;
mod webhooks;

pub use callees::CalleeConfig;
pub use error::{ConfigError, LoadError};
pub use network::{MediaConfig, SipConfig, SipTls};
pub use recording::RecordingConfig;
pub use registrar::RegistrarConfig;
pub use schema::{
    BillingConfig, CallsConfig, Config, ExportConfig, HttpConfig, LogConfig, PromptsConfig,
    TlsFiles, known_keys,
};
pub use secret::{Environment, ProcessEnvironment, Secret, SecretSource};
pub use storage::{ClusterConfig, DatabaseConfig, NodeConfig};
pub use stripe::{CURRENCIES, StripeConfig, StripeMode};
pub use trunks::{Termination, TrunkConfig};
pub use values::{
    Latch, ListenAddr, LogFormat, PortRange, PublicAddress, Srtp, TWILIO_MEDIA_RANGE,
    TWILIO_SIGNALLING_RANGES, Transport, TrunkProfile, UnknownSource, parse_duration,
};
pub use webhooks::{WEBHOOK_EVENT_TYPES, WebhookConfig};
