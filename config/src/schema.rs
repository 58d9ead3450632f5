//! The config schema: the whole [`Config`], its defaults, the list of every
//! key, and the readers of the small sections (`[http]`, `[billing]`,
//! `[prompts]`, `[calls]`, `[log]`, `[export]`). The larger sections have
//! modules of their own: `network` (`[sip]`, `[media]`), `storage`
//! (`[database]`, `[node]`, `[cluster]`), `trunks`, `callees`, `stripe`,
//! `webhooks`.

use crate::stripe::StripeConfig;
use crate::trunks::{TERMINATION_KEYS, TRUNK_KEYS, TrunkConfig, loopback_trunk, read_trunks};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, LoadError};
use crate::network::{MEDIA_KEYS, MediaConfig, SIP_KEYS, SipConfig, read_media, read_sip};
use crate::secret::{Environment, ProcessEnvironment, Secret};
use crate::storage::{
    CLUSTER_KEYS, ClusterConfig, DATABASE_KEYS, DatabaseConfig, NODE_KEYS, NodeConfig,
    default_node_name, read_cluster, read_database, read_node,
};
use crate::tree::{Diagnostics, Item, TableReader};
use crate::values::{
    DurationSetting, Latch, ListenAddr, LogFormat, PortRange, Transport, UnknownSource,
    check_log_level,
};
use crate::webhooks::{WEBHOOK_KEYS, WebhookConfig, read_webhooks};

/// The whole configuration of one daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[sip]`: listeners and how we name ourselves.
    pub sip: SipConfig,
    /// `[[trunk]]`: who may send us calls and how we reach the PSTN.
    pub trunks: Vec<TrunkConfig>,
    /// `[media]`: the RTP relay.
    pub media: MediaConfig,
    /// `[http]`: the API, health and metrics listener.
    pub http: HttpConfig,
    /// `[database]`: where the ledger lives.
    pub database: DatabaseConfig,
    /// `[node]`: this daemon among several.
    pub node: NodeConfig,
    /// `[cluster]`: how the nodes sharing a ledger watch each other.
    pub cluster: ClusterConfig,
    /// `[stripe]`: payments; no secret key means ledger-only mode.
    pub stripe: StripeConfig,
    /// `[billing]`: metering.
    pub billing: BillingConfig,
    /// `[prompts]`: announcements.
    pub prompts: PromptsConfig,
    /// `[calls]`: call timing.
    pub calls: CallsConfig,
    /// `[log]`: logging.
    pub log: LogConfig,
    /// `[[webhook]]`: where the booking platform is told of events.
    /// `[[callee]]`: digest credentials for SIP-URI callees, by host.
    pub callees: Vec<crate::callees::CalleeConfig>,
    pub webhooks: Vec<WebhookConfig>,
    /// `[export]`: the accounting export.
    pub export: ExportConfig,
    /// `[recording]`: where recordings are kept and for how long.
    pub recording: crate::recording::RecordingConfig,
    /// `[registrar]`: experts' softphones registering with us.
    pub registrar: crate::registrar::RegistrarConfig,
}

/// `[export]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// `export.timezone`: an IANA time zone (`Asia/Tokyo`); the export
    /// shows every time in UTC and in this zone.
    pub timezone: String,
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// `http.listen`: the API, health and metrics listener.
    pub listen: SocketAddr,
    /// `http.api_token`: bearer token for `/v1`; when unset the API refuses
    /// every request.
    pub api_token: Option<Secret>,
    /// `[http.tls]`: serve HTTPS instead of plain HTTP (Stripe delivers
    /// webhooks only over HTTPS).
    pub tls: Option<TlsFiles>,
}

/// A TLS listener's certificate chain and key (`[http.tls]`,
/// `[sip.tls]`), PEM files read at start and again on every reload (a
/// renewed certificate takes effect without a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// `certificate`: the certificate chain, leaf first.
    pub certificate: PathBuf,
    /// `private_key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// `[billing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BillingConfig {
    /// `billing.checkpoint_interval`: how often running meters are saved; the
    /// most a crash can under-bill.
    pub checkpoint_interval: Duration,
    /// `billing.late_cancellation`: a booking canceled less than this
    /// before its window opens pays its cancellation fee.
    pub late_cancellation: Duration,
}

/// `[prompts]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptsConfig {
    /// `prompts.dir`: WAV files overriding the built-in prompts, and
    /// `<language>/` directories of them.
    pub dir: Option<PathBuf>,
    /// `prompts.language`: the language of calls whose booking names none
    /// (and of the PIN prompts, played before a booking is known).
    pub language: String,
    /// `prompts.warning_before`: how long before the cap both parties hear
    /// the warning.
    pub warning_before: Duration,
}

/// `[calls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CallsConfig {
    /// `calls.ring_timeout`: how long the callee may ring.
    pub ring_timeout: Duration,
    /// `calls.drain_timeout`: on SIGTERM, how long calls in progress may go on.
    pub drain_timeout: Duration,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `log.level`: a `tracing` filter such as `"info,tollbridge=debug"`.
    pub level: String,
    /// `log.format`.
    pub format: LogFormat,
}

const SECTIONS: [&str; 17] = [
    "sip",
    "trunk",
    "callee",
    "media",
    "http",
    "database",
    "node",
    "cluster",
    "stripe",
    "billing",
    "prompts",
    "calls",
    "log",
    "webhook",
    "export",
    "recording",
    "registrar",
];
const EXPORT_KEYS: [&str; 1] = ["timezone"];
const HTTP_KEYS: [&str; 3] = ["listen", "api_token", "tls"];
const HTTP_TLS_KEYS: [&str; 2] = ["certificate", "private_key"];
const BILLING_KEYS: [&str; 2] = ["checkpoint_interval", "late_cancellation"];
const PROMPTS_KEYS: [&str; 3] = ["dir", "language", "warning_before"];
const CALLS_KEYS: [&str; 2] = ["ring_timeout", "drain_timeout"];
const LOG_KEYS: [&str; 2] = ["level", "format"];

/// Every dotted key the schema knows, for documentation checks.
pub fn known_keys() -> Vec<String> {
    let sections: [(&str, &[&str]); 20] = [
        ("sip", &SIP_KEYS),
        ("sip.tls", &crate::network::SIP_TLS_KEYS),
        ("trunk", &TRUNK_KEYS),
        ("trunk.termination", &TERMINATION_KEYS),
        ("callee", &crate::callees::CALLEE_KEYS),
        ("media", &MEDIA_KEYS),
        ("http", &HTTP_KEYS),
        ("http.tls", &HTTP_TLS_KEYS),
        ("database", &DATABASE_KEYS),
        ("node", &NODE_KEYS),
        ("cluster", &CLUSTER_KEYS),
        ("stripe", &crate::stripe::STRIPE_KEYS),
        ("billing", &BILLING_KEYS),
        ("prompts", &PROMPTS_KEYS),
        ("calls", &CALLS_KEYS),
        ("log", &LOG_KEYS),
        ("webhook", &WEBHOOK_KEYS),
        ("export", &EXPORT_KEYS),
        ("recording", &crate::recording::RECORDING_KEYS),
        ("registrar", &crate::registrar::REGISTRAR_KEYS),
    ];
    sections
        .iter()
        .flat_map(|(section, keys)| keys.iter().map(move |key| format!("{section}.{key}")))
        .collect()
}

impl Config {
    /// The configuration used when no file is given. `$STATE_DIRECTORY`
    /// (set by systemd's `StateDirectory=`) decides where the database goes.
    pub fn defaults(env: &dyn Environment) -> Config {
        let database_dir = env
            .var("STATE_DIRECTORY")
            .and_then(|dirs| dirs.split(':').next().map(PathBuf::from))
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Config {
            sip: SipConfig {
                listen: vec![
                    ListenAddr {
                        transport: Transport::Udp,
                        addr: SocketAddr::new(loopback, 5060),
                    },
                    ListenAddr {
                        transport: Transport::Tcp,
                        addr: SocketAddr::new(loopback, 5060),
                    },
                ],
                public_address: None,
                unknown_source: UnknownSource::Drop,
                invites_per_second: 30,
                user_agent: "Tollbridge".to_owned(),
                tls: crate::network::SipTls::default(),
            },
            trunks: vec![loopback_trunk()],
            media: MediaConfig {
                address: loopback,
                public_address: None,
                ports: PortRange {
                    first: 20000,
                    last: 20999,
                },
                timeout: Duration::from_secs(30),
                latch: Latch::Learn,
                port_quarantine: Duration::from_secs(60),
                threads: None,
                srtp: crate::values::Srtp::Optional,
                fast_path: Vec::new(),
            },
            http: HttpConfig {
                listen: SocketAddr::new(loopback, 8080),
                api_token: None,
                tls: None,
            },
            database: DatabaseConfig {
                path: database_dir.join("tollbridge.db"),
                url: None,
                password: None,
                pool_size: 4,
                outage_buffer: 10_000,
            },
            node: NodeConfig {
                name: default_node_name(env),
            },
            cluster: ClusterConfig {
                node_timeout: Duration::from_secs(10),
            },
            stripe: StripeConfig {
                secret_key: None,
                webhook_secret: None,
                api_base: "https://api.stripe.com".to_owned(),
                request_timeout: Duration::from_secs(10),
                settlement_currency: None,
                minimum_charge: Vec::new(),
            },
            billing: BillingConfig {
                checkpoint_interval: Duration::from_secs(2),
                late_cancellation: Duration::from_secs(24 * 60 * 60),
            },
            prompts: PromptsConfig {
                dir: None,
                language: "en".into(),
                warning_before: Duration::from_secs(60),
            },
            calls: CallsConfig {
                ring_timeout: Duration::from_secs(30),
                drain_timeout: Duration::from_secs(300),
            },
            log: LogConfig {
                level: "info".to_owned(),
                format: LogFormat::Auto,
            },
            webhooks: Vec::new(),
            callees: Vec::new(),
            export: ExportConfig {
                timezone: "UTC".to_owned(),
            },
            recording: crate::recording::RecordingConfig {
                dir: database_dir.join("recordings"),
                retention: None,
                min_free_mb: 512,
            },
            registrar: crate::registrar::RegistrarConfig::defaults(),
        }
    }

    /// Loads `path` with the process environment.
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        Config::load_with(path, &ProcessEnvironment)
    }

    /// Loads `path`, resolving `env:` secrets and `$STATE_DIRECTORY` through `env`.
    pub fn load_with(path: &Path, env: &dyn Environment) -> Result<Config, LoadError> {
        let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&source, env).map_err(|errors| LoadError::Invalid {
            path: path.to_owned(),
            errors,
        })
    }

    /// Parses and validates a config document; every mistake is returned.
    pub fn from_toml(source: &str, env: &dyn Environment) -> Result<Config, Vec<ConfigError>> {
        let root: Item = match toml::from_str(source) {
            Ok(root) => root,
            Err(e) => return Err(vec![syntax_error(source, &e)]),
        };
        let diagnostics = Diagnostics::new(source);
        let config = read_config(root, env, &diagnostics);
        let errors = diagnostics.into_errors();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(errors)
        }
    }
}

fn syntax_error(source: &str, error: &toml::de::Error) -> ConfigError {
    ConfigError {
        key: String::new(),
        value: None,
        reason: format!("not valid TOML: {}", error.message().trim()),
        location: error
            .span()
            .map(|s| crate::tree::line_column(source, s.start)),
    }
}

fn read_config(root: Item, env: &dyn Environment, diagnostics: &Diagnostics) -> Config {
    let defaults = Config::defaults(env);
    let mut root = TableReader::new("", Some(root), diagnostics);
    let section =
        |root: &mut TableReader, name: &str| TableReader::new(name, root.take(name), diagnostics);

    let sip = read_sip(section(&mut root, "sip"), defaults.sip);
    let trunk_tables = root.tables("trunk");
    let trunks = if trunk_tables.is_empty() {
        defaults.trunks
    } else {
        read_trunks(trunk_tables, env, diagnostics)
    };
    let callees = crate::callees::read_callees(root.tables("callee"), env, diagnostics);
    let media = read_media(section(&mut root, "media"), defaults.media);
    let http = read_http(section(&mut root, "http"), env, defaults.http);
    let database = read_database(section(&mut root, "database"), env, defaults.database);
    let node = read_node(section(&mut root, "node"), defaults.node);
    let cluster = read_cluster(section(&mut root, "cluster"), defaults.cluster);
    let stripe = crate::stripe::read_stripe(section(&mut root, "stripe"), env, defaults.stripe);
    let billing = read_billing(section(&mut root, "billing"), defaults.billing);
    let prompts = read_prompts(section(&mut root, "prompts"), defaults.prompts);
    let calls = read_calls(section(&mut root, "calls"), defaults.calls);
    let log = read_log(section(&mut root, "log"), defaults.log);
    let webhooks = read_webhooks(root.tables("webhook"), env, diagnostics);
    let export = read_export(section(&mut root, "export"), defaults.export);
    let recording =
        crate::recording::read_recording(section(&mut root, "recording"), defaults.recording);
    let registrar =
        crate::registrar::read_registrar(section(&mut root, "registrar"), defaults.registrar);
    root.finish(&SECTIONS);

    Config {
        sip,
        trunks,
        callees,
        media,
        http,
        database,
        node,
        cluster,
        stripe,
        billing,
        prompts,
        calls,
        log,
        webhooks,
        export,
        recording,
        registrar,
    }
}

fn read_export(mut t: TableReader, defaults: ExportConfig) -> ExportConfig {
    let timezone = t
        .get_with("timezone", |node| match node {
            crate::tree::Node::Str(name) if jiff::tz::TimeZone::get(name).is_ok() => {
                Ok(name.clone())
            }
            _ => Err("expected an IANA time zone name, like \"Asia/Tokyo\" or \"UTC\"".to_owned()),
        })
        .unwrap_or(defaults.timezone);
    t.finish(&EXPORT_KEYS);
    ExportConfig { timezone }
}

/// Reads a duration key and checks it lies in `min..=max`.
pub(crate) fn duration_in(
    t: &mut TableReader,
    key: &str,
    min: Duration,
    max: Duration,
) -> Option<Duration> {
    let item = t.take(key)?;
    let full = t.key(key);
    let parsed =
        crate::tree::FromScalar::from_scalar(item.get_ref()).and_then(|DurationSetting(d)| {
            if d < min || d > max {
                Err(format!(
                    "must be between {} and {}",
                    show_duration(min),
                    show_duration(max)
                ))
            } else {
                Ok(d)
            }
        });
    match parsed {
        Ok(d) => Some(d),
        Err(reason) => {
            t.diagnostics().report_item(&full, &item, reason);
            None
        }
    }
}

fn show_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

/// Reads a secret key: the value is resolved now and never shown in errors.
pub(crate) fn secret(t: &mut TableReader, key: &str, env: &dyn Environment) -> Option<Secret> {
    let item = t.take(key)?;
    let full = t.key(key);
    let result = match item.get_ref() {
        crate::tree::Node::Str(spec) => Secret::resolve(spec, env),
        _ => Err(
            "expected a string: the secret, \"env:NAME\", \"file:PATH\" or \"credential:NAME\""
                .to_owned(),
        ),
    };
    match result {
        Ok(secret) => Some(secret),
        Err(reason) => {
            t.diagnostics()
                .report(&full, None, Some(item.span()), reason);
            None
        }
    }
}

/// Reports `reason` about `key` when a resolved secret fails `check`.
pub(crate) fn check_secret(
    t: &TableReader,
    key: &str,
    secret: &Option<Secret>,
    check: impl Fn(&str) -> Result<(), String>,
) {
    if let Some(Err(reason)) = secret.as_ref().map(|s| check(s.expose())) {
        t.diagnostics().report(&t.key(key), None, None, reason);
    }
}

fn read_http(mut t: TableReader, env: &dyn Environment, defaults: HttpConfig) -> HttpConfig {
    let listen = t.get("listen").unwrap_or(defaults.listen);
    let api_token = secret(&mut t, "api_token", env);
    check_secret(&t, "api_token", &api_token, |token| {
        if token.len() < 16 {
            Err("must be at least 16 characters long".to_owned())
        } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("must not contain whitespace".to_owned())
        } else {
            Ok(())
        }
    });
    let tls = t.take("tls").and_then(|item| {
        read_http_tls(TableReader::new(&t.key("tls"), Some(item), t.diagnostics()))
    });
    t.finish(&HTTP_KEYS);
    HttpConfig {
        listen,
        api_token,
        tls,
    }
}

fn read_http_tls(mut t: TableReader) -> Option<TlsFiles> {
    let files = read_tls_files(&mut t, "[http.tls]");
    t.finish(&HTTP_TLS_KEYS);
    files
}

/// `certificate` and `private_key` of a TLS table (`[http.tls]`,
/// `[sip.tls]`): both required, both existing files. The caller finishes
/// the table.
pub(crate) fn read_tls_files(t: &mut TableReader, table: &str) -> Option<TlsFiles> {
    let certificate = pem_file(t, "certificate", table);
    let private_key = pem_file(t, "private_key", table);
    Some(TlsFiles {
        certificate: certificate?,
        private_key: private_key?,
    })
}

/// A PEM file the table needs: reported when missing or not a file.
pub(crate) fn pem_file(t: &mut TableReader, key: &str, table: &str) -> Option<PathBuf> {
    if t.span(key).is_none() {
        t.diagnostics().report(
            &t.key(key),
            None,
            None,
            format!("required with {table}: a PEM file"),
        );
        return None;
    }
    existing_file(t, key)
}

/// An optional file path: `None` when absent, reported when not a file.
pub(crate) fn existing_file(t: &mut TableReader, key: &str) -> Option<PathBuf> {
    t.get_with(key, |node| match node {
        crate::tree::Node::Str(s) if Path::new(s).is_file() => Ok(PathBuf::from(s)),
        crate::tree::Node::Str(_) => Err("no such file".to_owned()),
        _ => Err("expected a file path".to_owned()),
    })
}

fn read_billing(mut t: TableReader, defaults: BillingConfig) -> BillingConfig {
    let checkpoint_interval = duration_in(
        &mut t,
        "checkpoint_interval",
        Duration::from_millis(100),
        Duration::from_secs(60),
    )
    .unwrap_or(defaults.checkpoint_interval);
    let late_cancellation = duration_in(
        &mut t,
        "late_cancellation",
        Duration::ZERO,
        Duration::from_secs(30 * 24 * 60 * 60),
    )
    .unwrap_or(defaults.late_cancellation);
    t.finish(&BILLING_KEYS);
    BillingConfig {
        checkpoint_interval,
        late_cancellation,
    }
}

fn read_prompts(mut t: TableReader, defaults: PromptsConfig) -> PromptsConfig {
    let dir = t.get_with("dir", |node| match node {
        crate::tree::Node::Str(s) if Path::new(s).is_dir() => Ok(PathBuf::from(s)),
        crate::tree::Node::Str(_) => Err("is not a directory".to_owned()),
        _ => Err("expected a directory path".to_owned()),
    });
    let language = t.get_with("language", |node| match node {
        // Whether it has prompts is the prompt library's to say, at load.
        crate::tree::Node::Str(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err("expected a language tag such as \"en\", \"ja\" or \"pt-BR\"".to_owned()),
    });
    let warning_before = duration_in(
        &mut t,
        "warning_before",
        Duration::ZERO,
        Duration::from_secs(600),
    )
    .unwrap_or(defaults.warning_before);
    t.finish(&PROMPTS_KEYS);
    PromptsConfig {
        dir: dir.or(defaults.dir),
        language: language.unwrap_or(defaults.language),
        warning_before,
    }
}

fn read_calls(mut t: TableReader, defaults: CallsConfig) -> CallsConfig {
    let calls = CallsConfig {
        ring_timeout: duration_in(
            &mut t,
            "ring_timeout",
            Duration::from_secs(1),
            Duration::from_secs(300),
        )
        .unwrap_or(defaults.ring_timeout),
        drain_timeout: duration_in(
            &mut t,
            "drain_timeout",
            Duration::ZERO,
            Duration::from_secs(24 * 3600),
        )
        .unwrap_or(defaults.drain_timeout),
    };
    t.finish(&CALLS_KEYS);
    calls
}

fn read_log(mut t: TableReader, defaults: LogConfig) -> LogConfig {
    let level = t
        .get_with("level", |node| match node {
            crate::tree::Node::Str(s) => check_log_level(s).map(|()| s.clone()),
            _ => Err("expected a string such as \"info\"".to_owned()),
        })
        .unwrap_or(defaults.level);
    let format = t.get("format").unwrap_or(defaults.format);
    t.finish(&LOG_KEYS);
    LogConfig { level, format }
}
