//! The config schema: sections, their defaults, and the rules each key must
//! meet.

use crate::stripe::StripeConfig;
use crate::trunks::{TERMINATION_KEYS, TRUNK_KEYS, TrunkConfig, loopback_trunk, read_trunks};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, LoadError};
use crate::secret::{Environment, ProcessEnvironment, Secret};
use crate::tree::{Diagnostics, Item, TableReader};
use crate::values::{
    DurationSetting, Latch, ListenAddr, LogFormat, PortRange, PublicAddress, Transport,
    UnknownSource, check_log_level,
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
}

/// `[export]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// `export.timezone`: an IANA time zone (`Asia/Tokyo`); the export
    /// shows every time in UTC and in this zone.
    pub timezone: String,
}

/// `[sip]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SipConfig {
    /// `sip.listen`: where SIP is received.
    pub listen: Vec<ListenAddr>,
    /// `sip.public_address`: the host in our Contact and Via; when unset, the
    /// listener's own address.
    pub public_address: Option<PublicAddress>,
    /// `sip.unknown_source`: answer 403 or stay silent to sources no trunk allows.
    pub unknown_source: UnknownSource,
    /// `sip.invites_per_second`: new INVITEs (and other out-of-dialog
    /// requests but CANCEL/ACK) accepted per source address per second
    /// (bursts up to twice that); over it, 503 with Retry-After.
    pub invites_per_second: u32,
    /// `sip.user_agent`: our `User-Agent` and `Server` header. Without the
    /// version by default: a version tells a scanner what to try.
    pub user_agent: String,
}

/// `[media]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// `media.address`: local address the RTP sockets bind to.
    pub address: IpAddr,
    /// `media.public_address`: the address written in our SDP; when unset,
    /// `media.address`.
    pub public_address: Option<IpAddr>,
    /// `media.ports`: RTP/RTCP port range.
    pub ports: PortRange,
    /// `media.timeout`: a call with no RTP for this long ends (not while on hold).
    pub timeout: Duration,
    /// `media.latch`: which sources RTP may be latched to.
    pub latch: Latch,
    /// `media.port_quarantine`: how long a released port pair (and the
    /// ports of calls a crash left open, once their parties are hung up)
    /// stays out of use, so late packets never reach another call.
    pub port_quarantine: Duration,
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
    pub tls: Option<HttpTls>,
}

/// `[http.tls]`: the listener's certificate chain and key, PEM files read
/// at start and again on every reload (a renewed certificate takes effect
/// without a restart).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTls {
    /// `http.tls.certificate`: the certificate chain, leaf first.
    pub certificate: PathBuf,
    /// `http.tls.private_key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key: PathBuf,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// `database.path`: the SQLite file (used when `url` is unset).
    pub path: PathBuf,
    /// `database.url`: a PostgreSQL server shared by several nodes, as a
    /// `postgres://` URL without its password; replaces the SQLite file.
    pub url: Option<String>,
    /// `database.password`: the PostgreSQL role's password.
    pub password: Option<Secret>,
    /// `database.pool_size`: connections to PostgreSQL.
    pub pool_size: u32,
    /// `database.outage_buffer`: how many call writes (checkpoints,
    /// closed records) are kept in memory while the ledger is unreachable.
    pub outage_buffer: u32,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// `node.name`: names this daemon on every call row, in logs and
    /// metrics; unique among the nodes sharing a ledger.
    pub name: String,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `cluster.node_timeout`: a node unseen this long is taken for dead
    /// and another takes over its calls.
    pub node_timeout: Duration,
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

const SECTIONS: [&str; 15] = [
    "sip", "trunk", "callee", "media", "http", "database", "node", "cluster", "stripe", "billing",
    "prompts", "calls", "log", "webhook", "export",
];
const EXPORT_KEYS: [&str; 1] = ["timezone"];
const SIP_KEYS: [&str; 5] = [
    "listen",
    "public_address",
    "unknown_source",
    "invites_per_second",
    "user_agent",
];
const MEDIA_KEYS: [&str; 6] = [
    "address",
    "public_address",
    "ports",
    "timeout",
    "latch",
    "port_quarantine",
];
const HTTP_KEYS: [&str; 3] = ["listen", "api_token", "tls"];
const HTTP_TLS_KEYS: [&str; 2] = ["certificate", "private_key"];
const DATABASE_KEYS: [&str; 5] = ["path", "url", "password", "pool_size", "outage_buffer"];
const NODE_KEYS: [&str; 1] = ["name"];
const CLUSTER_KEYS: [&str; 1] = ["node_timeout"];
const BILLING_KEYS: [&str; 2] = ["checkpoint_interval", "late_cancellation"];
const PROMPTS_KEYS: [&str; 3] = ["dir", "language", "warning_before"];
const CALLS_KEYS: [&str; 2] = ["ring_timeout", "drain_timeout"];
const LOG_KEYS: [&str; 2] = ["level", "format"];

/// Every dotted key the schema knows, for documentation checks.
pub fn known_keys() -> Vec<String> {
    let sections: [(&str, &[&str]); 17] = [
        ("sip", &SIP_KEYS),
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

fn read_sip(mut t: TableReader, defaults: SipConfig) -> SipConfig {
    let listen = match t.span("listen") {
        Some(span) => {
            let list = t.list::<ListenAddr>("listen").unwrap_or_default();
            check_listeners(&t, &list, span);
            list
        }
        None => defaults.listen,
    };
    let public_address = t.get::<PublicAddress>("public_address");
    if public_address.is_none() && listen.iter().any(|l| l.addr.ip().is_unspecified()) {
        t.diagnostics().report(
            &t.key("public_address"),
            None,
            None,
            "required when a sip.listen address is 0.0.0.0 or [::]: peers must be told an address they can reach",
        );
    }
    let unknown_source = t.get("unknown_source").unwrap_or(defaults.unknown_source);
    let invites_per_second = t
        .get_with("invites_per_second", |node| match node {
            crate::tree::Node::Int(n) if (1..=10_000).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 1 to 10000".to_owned()),
        })
        .unwrap_or(defaults.invites_per_second);
    let user_agent = t
        .get_with("user_agent", |node| match node {
            crate::tree::Node::Str(s) if is_header_text(s) => Ok(s.clone()),
            _ => Err(
                "expected 1 to 128 printable ASCII characters, like \"Tollbridge\" or \"Tollbridge/0.1.0\""
                    .to_owned(),
            ),
        })
        .unwrap_or(defaults.user_agent);
    t.finish(&SIP_KEYS);
    SipConfig {
        listen,
        public_address,
        unknown_source,
        invites_per_second,
        user_agent,
    }
}

fn check_listeners(t: &TableReader, list: &[ListenAddr], span: std::ops::Range<usize>) {
    let key = t.key("listen");
    if list.is_empty() {
        t.diagnostics().report(
            &key,
            Some("[]".to_owned()),
            Some(span.clone()),
            "at least one listener is needed",
        );
    }
    for (i, listener) in list.iter().enumerate() {
        if list[..i].contains(listener) {
            t.diagnostics().report(
                &key,
                Some(format!("\"{listener}\"")),
                Some(span.clone()),
                "listed twice",
            );
        }
    }
}

fn read_media(mut t: TableReader, defaults: MediaConfig) -> MediaConfig {
    let address = t.get::<IpAddr>("address").unwrap_or(defaults.address);
    let public_address = t.get::<IpAddr>("public_address");
    if public_address.is_none() && address.is_unspecified() {
        t.diagnostics().report(
            &t.key("public_address"),
            None,
            None,
            "required when media.address is 0.0.0.0 or ::, because it is the address written into SDP",
        );
    }
    let media = MediaConfig {
        address,
        public_address,
        ports: t.get("ports").unwrap_or(defaults.ports),
        timeout: duration_in(
            &mut t,
            "timeout",
            Duration::from_secs(1),
            Duration::from_secs(3600),
        )
        .unwrap_or(defaults.timeout),
        latch: t.get("latch").unwrap_or(defaults.latch),
        port_quarantine: duration_in(
            &mut t,
            "port_quarantine",
            Duration::ZERO,
            Duration::from_secs(3600),
        )
        .unwrap_or(defaults.port_quarantine),
    };
    t.finish(&MEDIA_KEYS);
    media
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

fn read_http_tls(mut t: TableReader) -> Option<HttpTls> {
    let file = |t: &mut TableReader, key: &str| {
        if t.span(key).is_none() {
            t.diagnostics().report(
                &t.key(key),
                None,
                None,
                "required with [http.tls]: a PEM file",
            );
            return None;
        }
        t.get_with(key, |node| match node {
            crate::tree::Node::Str(s) if Path::new(s).is_file() => Ok(PathBuf::from(s)),
            crate::tree::Node::Str(_) => Err("no such file".to_owned()),
            _ => Err("expected a file path".to_owned()),
        })
    };
    let certificate = file(&mut t, "certificate");
    let private_key = file(&mut t, "private_key");
    t.finish(&HTTP_TLS_KEYS);
    Some(HttpTls {
        certificate: certificate?,
        private_key: private_key?,
    })
}

fn read_database(
    mut t: TableReader,
    env: &dyn Environment,
    defaults: DatabaseConfig,
) -> DatabaseConfig {
    let path_given = t.span("path").is_some();
    let path = t
        .get_with("path", |node| match node {
            crate::tree::Node::Str(s) if !s.trim().is_empty() => Ok(PathBuf::from(s)),
            _ => Err("expected a file path".to_owned()),
        })
        .unwrap_or(defaults.path);
    let url = t.get_with("url", |node| match node {
        crate::tree::Node::Str(s) => check_postgres_url(s).map(|()| s.clone()),
        _ => Err("expected a postgres:// URL".to_owned()),
    });
    if url.is_some() && path_given {
        t.diagnostics().report(
            &t.key("url"),
            None,
            None,
            "database.path and database.url are both set: the ledger is either a SQLite file or a PostgreSQL server",
        );
    }
    let password = secret(&mut t, "password", env);
    if password.is_some() && url.is_none() {
        t.diagnostics().report(
            &t.key("password"),
            None,
            None,
            "only used with database.url (SQLite has no password)",
        );
    }
    let pool_size = t
        .get_with("pool_size", |node| match node {
            crate::tree::Node::Int(n) if (1..=64).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 1 to 64".to_owned()),
        })
        .unwrap_or(defaults.pool_size);
    let outage_buffer = t
        .get_with("outage_buffer", |node| match node {
            crate::tree::Node::Int(n) if (100..=1_000_000).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 100 to 1000000".to_owned()),
        })
        .unwrap_or(defaults.outage_buffer);
    t.finish(&DATABASE_KEYS);
    DatabaseConfig {
        path,
        url,
        password,
        pool_size,
        outage_buffer,
    }
}

/// A PostgreSQL connection URL as libpq reads it, without a password (that
/// is `database.password`, a secret kept out of logs).
fn check_postgres_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err("expected a postgres:// or postgresql:// URL".to_owned());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters".to_owned());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let user_info = authority.rsplit_once('@').map(|(user, _)| user);
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    if user_info.is_some_and(|user| user.contains(':'))
        || query.split('&').any(|pair| pair.starts_with("password="))
    {
        return Err(
            "the URL holds a password: put it in database.password (a secret) instead".to_owned(),
        );
    }
    if query.split('&').any(|pair| {
        matches!(
            pair,
            "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
        )
    }) {
        return Err(
            "TLS to PostgreSQL is not supported by this build: reach the server on a private network, a Unix socket or a tunnel, with sslmode=disable or prefer".to_owned(),
        );
    }
    let has_host = !authority.rsplit('@').next().unwrap_or_default().is_empty()
        || query.split('&').any(|pair| pair.starts_with("host="));
    if !has_host {
        return Err("the URL names no host (a name, an address, or ?host=/socket/dir)".to_owned());
    }
    Ok(())
}

/// Whether `text` can stand as a SIP header value as it is: printable
/// ASCII (spaces inside), no line breaks, not blank.
fn is_header_text(text: &str) -> bool {
    (1..=128).contains(&text.len())
        && text.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !text.trim().is_empty()
        && text.trim() == text
}

/// The machine's host name, made a valid node name; "tollbridge" if none.
fn default_node_name(env: &dyn Environment) -> String {
    let name: String = env
        .host_name()
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if is_node_name_char(c) { c } else { '-' })
        .take(NODE_NAME_MAX)
        .collect();
    if name.is_empty() {
        "tollbridge".to_owned()
    } else {
        name
    }
}

const NODE_NAME_MAX: usize = 63;

fn is_node_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn read_node(mut t: TableReader, defaults: NodeConfig) -> NodeConfig {
    let name = t
        .get_with("name", |node| match node {
            crate::tree::Node::Str(s)
                if !s.is_empty()
                    && s.len() <= NODE_NAME_MAX
                    && s.chars().all(is_node_name_char) =>
            {
                Ok(s.clone())
            }
            _ => Err(format!(
                "expected 1 to {NODE_NAME_MAX} letters, digits, '-', '_' or '.'"
            )),
        })
        .unwrap_or(defaults.name);
    t.finish(&NODE_KEYS);
    NodeConfig { name }
}

fn read_cluster(mut t: TableReader, defaults: ClusterConfig) -> ClusterConfig {
    let node_timeout = duration_in(
        &mut t,
        "node_timeout",
        Duration::from_secs(2),
        Duration::from_secs(600),
    )
    .unwrap_or(defaults.node_timeout);
    t.finish(&CLUSTER_KEYS);
    ClusterConfig { node_timeout }
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
