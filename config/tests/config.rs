//! The config file as an operator writes it: defaults, every validation
//! rule, secret sources and how mistakes are reported.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tollbridge_config::{
    Config, ConfigError, Latch, ListenAddr, LogFormat, SecretSource, StripeMode, Transport,
    TrunkProfile, UnknownSource, known_keys,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse(src: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(src, &env(&[]))
}

fn errors(src: &str) -> Vec<ConfigError> {
    match parse(src) {
        Ok(_) => panic!("expected errors for:\n{src}"),
        Err(errors) => errors,
    }
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tollbridge.example.toml")
}

#[test]
fn an_empty_file_runs_on_loopback_in_ledger_only_mode() {
    let config = parse("").unwrap();
    assert_eq!(
        config.sip.listen,
        vec![
            ListenAddr {
                transport: Transport::Udp,
                addr: "127.0.0.1:5060".parse().unwrap()
            },
            ListenAddr {
                transport: Transport::Tcp,
                addr: "127.0.0.1:5060".parse().unwrap()
            },
        ]
    );
    assert_eq!(config.sip.unknown_source, UnknownSource::Drop);
    assert_eq!(
        config.http.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(config.http.api_token, None);
    assert_eq!(config.media.address.to_string(), "127.0.0.1");
    assert_eq!(
        (config.media.ports.first, config.media.ports.last),
        (20000, 20999)
    );
    assert_eq!(config.media.timeout, Duration::from_secs(30));
    assert_eq!(config.media.latch, Latch::Learn);
    assert_eq!(config.media.port_quarantine, Duration::from_secs(60));
    assert_eq!(config.database.path, PathBuf::from("./tollbridge.db"));
    assert_eq!(config.stripe.mode(), StripeMode::LedgerOnly);
    assert_eq!(config.billing.checkpoint_interval, Duration::from_secs(2));
    assert_eq!(config.prompts.warning_before, Duration::from_secs(60));
    assert_eq!(config.calls.ring_timeout, Duration::from_secs(30));
    assert_eq!(config.log.format, LogFormat::Auto);
    assert_eq!(config.trunks.len(), 1);
    assert_eq!(config.trunks[0].name, "loopback");
    let sources: Vec<String> = config.trunks[0]
        .allowed_sources()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(sources, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(config, Config::defaults(&env(&[])));
}

#[test]
fn a_cluster_node_shares_a_postgresql_ledger() {
    let src = r#"
[database]
url = "postgres://tollbridge@db1.example.net:5433/tollbridge?sslmode=disable"
password = "env:TB_DB_PASSWORD"
pool_size = 8
outage_buffer = 500

[node]
name = "tb-2.tokyo"

[cluster]
node_timeout = "15s"
"#;
    let config = Config::from_toml(src, &env(&[("TB_DB_PASSWORD", "s3cret")])).unwrap();
    assert_eq!(
        config.database.url.as_deref(),
        Some("postgres://tollbridge@db1.example.net:5433/tollbridge?sslmode=disable")
    );
    let password = config.database.password.as_ref().unwrap();
    assert_eq!(password.expose(), "s3cret");
    assert!(!format!("{config:?}").contains("s3cret"));
    assert_eq!(config.database.pool_size, 8);
    assert_eq!(config.database.outage_buffer, 500);
    assert_eq!(config.node.name, "tb-2.tokyo");
    assert_eq!(config.cluster.node_timeout, Duration::from_secs(15));

    // A Unix socket directory instead of a host.
    let socket = Config::from_toml(
        "[database]\nurl = \"postgresql:///tollbridge?host=/run/postgresql\"",
        &env(&[]),
    )
    .unwrap();
    assert!(socket.database.url.is_some());
}

#[test]
fn the_node_is_named_after_the_host_unless_told() {
    let config = Config::from_toml("", &env(&[("HOSTNAME", "tb1.example.net")])).unwrap();
    assert_eq!(config.node.name, "tb1.example.net");
    assert_eq!(config.cluster.node_timeout, Duration::from_secs(10));
    let odd = Config::from_toml("", &env(&[("HOSTNAME", "tb 1/x")])).unwrap();
    assert_eq!(odd.node.name, "tb-1-x");
    assert_eq!(config.database.url, None);
    assert_eq!(config.database.pool_size, 4);
    assert_eq!(config.database.outage_buffer, 10_000);
}

#[test]
fn under_systemd_the_database_goes_to_the_state_directory() {
    let e = env(&[("STATE_DIRECTORY", "/var/lib/tollbridge:/var/lib/other")]);
    let config = Config::from_toml("", &e).unwrap();
    assert_eq!(
        config.database.path,
        PathBuf::from("/var/lib/tollbridge/tollbridge.db")
    );
}

#[test]
fn the_example_file_parses_and_shows_the_defaults() {
    let config = Config::load_with(&example_path(), &env(&[])).unwrap();
    let defaults = Config::defaults(&env(&[]));
    assert_eq!(config.sip, defaults.sip);
    assert_eq!(config.media, defaults.media);
    assert_eq!(config.http, defaults.http);
    assert_eq!(config.database, defaults.database);
    assert_eq!(config.stripe, defaults.stripe);
    assert_eq!(config.billing, defaults.billing);
    assert_eq!(config.prompts, defaults.prompts);
    assert_eq!(config.calls, defaults.calls);
    assert_eq!(config.log, defaults.log);
    assert_eq!(config.trunks.len(), 1);
    assert_eq!(config.trunks[0].profile, TrunkProfile::Twilio);
    assert_eq!(config.trunks[0].allowed_sources().len(), 8);
}

#[test]
fn the_example_file_documents_every_key() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    for key in known_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        let section = key.split('.').next().unwrap();
        assert!(
            text.contains(&format!("{leaf} = ")) || text.contains(&format!("{leaf} =")),
            "the example does not show {key}"
        );
        let header = if section == "trunk" || section == "webhook" {
            format!("[[{section}]]")
        } else {
            format!("[{section}]")
        };
        assert!(
            text.contains(&header),
            "the example has no {header} section"
        );
    }
}

#[test]
fn a_full_config_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let src = format!(
        r#"
[sip]
listen = ["udp:0.0.0.0:5060", "tcp:[::]:5060"]
public_address = "sip.example.com:5060"
unknown_source = "reject"

[[trunk]]
name = "twilio-jp"
allow = ["192.0.2.0/24", "198.51.100.7"]
media_allow = ["168.86.128.0/18"]
termination = {{ uri = "sip:{{number}}@acme.pstn.tokyo.twilio.com", username = "u", password = "env:TRUNK_PW", caller_id = "+815012345678" }}

[[trunk]]
name = "lab"
profile = "none"
allow = ["10.0.0.0/8"]

[media]
address = "0.0.0.0"
public_address = "203.0.113.7"
ports = "30000-30099"
timeout = "1m"
latch = "any"
port_quarantine = "90s"

[http]
listen = "[::1]:9000"
api_token = "0123456789abcdef0123"

[database]
path = "/tmp/x.db"

[stripe]
secret_key = "sk_test_abc"
webhook_secret = "whsec_abc"
api_base = "http://127.0.0.1:12111/"
settlement_currency = "usd"
minimum_charge = {{ jpy = 80, eur = 50 }}

[billing]
checkpoint_interval = "500ms"

[prompts]
dir = "{dir}"
warning_before = "30s"

[calls]
ring_timeout = "20s"
drain_timeout = "1h"

[log]
level = "debug,hyper=warn"
format = "json"
"#,
        dir = dir.path().display()
    );
    let config = Config::from_toml(&src, &env(&[("TRUNK_PW", "pw")])).unwrap();
    assert_eq!(
        config.sip.public_address.as_ref().map(|p| p.host.as_str()),
        Some("sip.example.com")
    );
    assert_eq!(config.sip.unknown_source, UnknownSource::Reject);
    assert_eq!(config.trunks.len(), 2);
    assert_eq!(config.trunks[0].allowed_sources().len(), 8 + 2);
    assert_eq!(config.trunks[1].allowed_sources().len(), 1);
    let termination = config.trunks[0].termination.as_ref().unwrap();
    assert_eq!(termination.password.as_ref().unwrap().expose(), "pw");
    assert_eq!(termination.caller_id.as_deref(), Some("+815012345678"));
    assert_eq!(termination.calls_per_second, 1);
    assert_eq!(config.media.latch, Latch::Any);
    assert_eq!(config.media.port_quarantine, Duration::from_secs(90));
    assert_eq!(
        config.trunks[0].media_allow,
        vec!["168.86.128.0/18".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(config.trunks[1].media_allow.is_empty());
    assert_eq!(config.media.timeout, Duration::from_secs(60));
    assert_eq!(config.stripe.mode(), StripeMode::Test);
    assert_eq!(config.stripe.api_base, "http://127.0.0.1:12111");
    assert_eq!(config.stripe.settlement_currency.as_deref(), Some("usd"));
    assert_eq!(
        config.stripe.minimum_charge,
        [("jpy".to_owned(), 80), ("eur".to_owned(), 50)]
    );
    assert_eq!(
        config.billing.checkpoint_interval,
        Duration::from_millis(500)
    );
    assert_eq!(config.calls.drain_timeout, Duration::from_secs(3600));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.prompts.dir.as_deref(), Some(dir.path()));
}

/// Each rule: a file with one mistake, the key it must name, and a phrase of
/// the reason.
#[test]
fn every_validation_rule_names_its_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("[sip]\nlisten = []", "sip.listen", "at least one"),
        ("[sip]\nlisten = [\"udp:1.2.3.4\"]", "sip.listen[0]", "port"),
        (
            "[sip]\nlisten = [\"sctp:1.2.3.4:5060\"]",
            "sip.listen[0]",
            "unknown transport",
        ),
        (
            "[sip]\nlisten = [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]",
            "sip.listen",
            "twice",
        ),
        (
            "[sip]\nlisten = \"udp:127.0.0.1:5060\"",
            "sip.listen",
            "expected an array",
        ),
        (
            "[sip]\nlisten = [\"udp:0.0.0.0:5060\"]",
            "sip.public_address",
            "required",
        ),
        (
            "[sip]\npublic_address = \"sip://x\"",
            "sip.public_address",
            "host name",
        ),
        (
            "[sip]\nunknown_source = \"ignore\"",
            "sip.unknown_source",
            "\"drop\", \"reject\"",
        ),
        ("[[trunk]]\nallow = []", "trunk[0].name", "needs a name"),
        ("[[trunk]]\nname = \"Bad Name\"", "trunk[0].name", "a-z"),
        (
            "[[trunk]]\nname = \"a\"\n[[trunk]]\nname = \"a\"",
            "trunk[1].name",
            "same name",
        ),
        (
            "[[trunk]]\nname = \"a\"\nprofile = \"aws\"",
            "trunk[0].profile",
            "\"twilio\", \"none\"",
        ),
        (
            "[[trunk]]\nname = \"a\"\nallow = [\"10.0.0.0/33\"]",
            "trunk[0].allow[0]",
            "CIDR",
        ),
        (
            "[[trunk]]\nname = \"a\"\nprofile = \"none\"",
            "trunk[0].allow",
            "at least one",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"sip:x@y\" }",
            "trunk[0].termination.uri",
            "{number}",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"tel:{number}\" }",
            "trunk[0].termination.uri",
            "sip: URI",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { caller_id = \"+1555\" }",
            "trunk[0].termination.uri",
            "required",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"sip:{number}@x\", username = \"u\" }",
            "trunk[0].termination.password",
            "go together",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"sip:{number}@x\", caller_id = \"0312345678\" }",
            "trunk[0].termination.caller_id",
            "E.164",
        ),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"sip:{number}@x\", realm = \"r\" }",
            "trunk[0].termination.realm",
            "unknown key",
        ),
        ("trunk = 3", "trunk", "array of tables"),
        (
            "[[trunk]]\nname = \"a\"\ntermination = { uri = \"sip:{number}@x\", calls_per_second = 0 }",
            "trunk[0].termination.calls_per_second",
            "1 to 100",
        ),
        (
            "[media]\naddress = \"localhost\"",
            "media.address",
            "not an IP",
        ),
        (
            "[media]\naddress = \"0.0.0.0\"",
            "media.public_address",
            "required",
        ),
        (
            "[media]\nports = \"20999-20000\"",
            "media.ports",
            "above the last",
        ),
        ("[media]\nports = \"20001-20999\"", "media.ports", "even"),
        (
            "[media]\nports = \"20000-20001\"",
            "media.ports",
            "two RTP/RTCP pairs",
        ),
        ("[media]\ntimeout = 30", "media.timeout", "unit"),
        (
            "[media]\ntimeout = \"0s\"",
            "media.timeout",
            "between 1s and 3600s",
        ),
        ("[media]\nlatch = \"first\"", "media.latch", "\"learn\""),
        (
            "[media]\nport_quarantine = \"2h\"",
            "media.port_quarantine",
            "between",
        ),
        (
            "[[trunk]]\nname = \"t\"\nmedia_allow = [\"168.86.128.0/33\"]",
            "trunk[0].media_allow[0]",
            "CIDR",
        ),
        ("[http]\nlisten = \"8080\"", "http.listen", "port"),
        (
            "[http]\napi_token = \"short\"",
            "http.api_token",
            "16 characters",
        ),
        (
            "[http]\napi_token = \"env:NOT_SET_ANYWHERE\"",
            "http.api_token",
            "NOT_SET_ANYWHERE is not set",
        ),
        (
            "[http.tls]\ncertificate = \"/nonexistent/cert.pem\"\nprivate_key = \"/etc/passwd\"",
            "http.tls.certificate",
            "no such file",
        ),
        (
            "[http.tls]\ncertificate = \"/etc/passwd\"",
            "http.tls.private_key",
            "required",
        ),
        (
            "[http.tls]\ncertificate = 5\nprivate_key = \"/etc/passwd\"",
            "http.tls.certificate",
            "file path",
        ),
        (
            "[http.tls]\ncertificate = \"/etc/passwd\"\nprivate_key = \"/etc/passwd\"\nciphers = \"all\"",
            "http.tls.ciphers",
            "unknown key",
        ),
        (
            "[sip]\nuser_agent = \"\"",
            "sip.user_agent",
            "printable ASCII",
        ),
        (
            "[sip]\nuser_agent = \"Tollbridge\\r\\nX-Evil: 1\"",
            "sip.user_agent",
            "printable ASCII",
        ),
        ("[sip]\nuser_agent = 1", "sip.user_agent", "printable ASCII"),
        (
            "[[webhook]]\nurl = \"https://p.example/h\"\nsecret = \"0123456789abcdef\"",
            "webhook[0].name",
            "needs a name",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"ftp://p.example/h\"\nsecret = \"0123456789abcdef\"",
            "webhook[0].url",
            "https://",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"https://p.example/h\"",
            "webhook[0].secret",
            "required",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"https://p.example/h\"\nsecret = \"short\"",
            "webhook[0].secret",
            "16 characters",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"https://p.example/h\"\nsecret = \"0123456789abcdef\"\nevents = [\"call.exploded\"]",
            "webhook[0].events",
            "not an event type",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"https://p.example/h\"\nsecret = \"0123456789abcdef\"\nfirst_retry = \"1ms\"",
            "webhook[0].first_retry",
            "between 100ms and 3600s",
        ),
        (
            "[[webhook]]\nname = \"p\"\nurl = \"https://a.example/h\"\nsecret = \"0123456789abcdef\"\n\n[[webhook]]\nname = \"p\"\nurl = \"https://b.example/h\"\nsecret = \"0123456789abcdef\"",
            "webhook[1].name",
            "a second [[webhook]]",
        ),
        (
            "[export]\ntimezone = \"Mars/Olympus\"",
            "export.timezone",
            "IANA time zone",
        ),
        (
            "[export]\ntimezone = 9",
            "export.timezone",
            "IANA time zone",
        ),
        ("[database]\npath = \"\"", "database.path", "file path"),
        (
            "[database]\nurl = \"mysql://db/x\"",
            "database.url",
            "postgres://",
        ),
        (
            "[database]\nurl = \"postgres://tb:hunter2@db/tb\"",
            "database.url",
            "database.password",
        ),
        (
            "[database]\nurl = \"postgres://db/tb?password=hunter2\"",
            "database.url",
            "database.password",
        ),
        (
            "[database]\nurl = \"postgres://db/tb?sslmode=verify-full\"",
            "database.url",
            "TLS to PostgreSQL is not supported",
        ),
        (
            "[database]\nurl = \"postgres:///tb\"",
            "database.url",
            "no host",
        ),
        (
            "[database]\npath = \"/tmp/x.db\"\nurl = \"postgres://db/tb\"",
            "database.url",
            "both set",
        ),
        (
            "[database]\npassword = \"pw\"",
            "database.password",
            "only used with database.url",
        ),
        (
            "[database]\nurl = \"postgres://db/tb\"\npassword = \"env:NOT_SET_ANYWHERE\"",
            "database.password",
            "NOT_SET_ANYWHERE is not set",
        ),
        ("[database]\npool_size = 0", "database.pool_size", "1 to 64"),
        (
            "[database]\noutage_buffer = 5",
            "database.outage_buffer",
            "100 to 1000000",
        ),
        ("[node]\nname = \"a b\"", "node.name", "letters, digits"),
        ("[node]\nname = \"\"", "node.name", "letters, digits"),
        ("[node]\nname = 7", "node.name", "letters, digits"),
        (
            "[cluster]\nnode_timeout = \"1s\"",
            "cluster.node_timeout",
            "between 2s and 600s",
        ),
        (
            "[cluster]\nheartbeat = \"1s\"",
            "cluster.heartbeat",
            "unknown key",
        ),
        (
            "[stripe]\nsecret_key = \"pk_test_123\"",
            "stripe.secret_key",
            "sk_",
        ),
        (
            "[stripe]\nwebhook_secret = \"abc\"",
            "stripe.webhook_secret",
            "whsec_",
        ),
        (
            "[stripe]\napi_base = \"api.stripe.com\"",
            "stripe.api_base",
            "URL",
        ),
        (
            "[stripe]\nsettlement_currency = \"yen\"",
            "stripe.settlement_currency",
            "one of jpy, usd",
        ),
        (
            "[stripe]\nminimum_charge = { btc = 5 }",
            "stripe.minimum_charge",
            "not a currency",
        ),
        (
            "[stripe]\nminimum_charge = { jpy = 0 }",
            "stripe.minimum_charge",
            "from 1 to 99999999",
        ),
        (
            "[stripe]\nminimum_charge = 80",
            "stripe.minimum_charge",
            "a table of currency",
        ),
        (
            "[billing]\ncheckpoint_interval = \"10ms\"",
            "billing.checkpoint_interval",
            "between 100ms and 60s",
        ),
        (
            "[prompts]\ndir = \"/nonexistent/prompts\"",
            "prompts.dir",
            "not a directory",
        ),
        (
            "[prompts]\nwarning_before = \"1h\"",
            "prompts.warning_before",
            "between",
        ),
        (
            "[calls]\nring_timeout = \"10m\"",
            "calls.ring_timeout",
            "between 1s and 300s",
        ),
        (
            "[calls]\ndrain_timeout = \"2x\"",
            "calls.drain_timeout",
            "unknown unit",
        ),
        ("[log]\nlevel = \"chatty\"", "log.level", "not a level"),
        ("[log]\nformat = \"xml\"", "log.format", "\"json\""),
        ("[mdia]\nports = \"1-2\"", "mdia", "unknown key"),
        (
            "[media]\nport = \"20000-20999\"",
            "media.port",
            "expected one of: address",
        ),
        ("media = 1", "media", "expected a table"),
    ];
    for (src, key, reason) in cases {
        let found = errors(src);
        assert!(
            found
                .iter()
                .any(|e| e.key == *key && e.reason.contains(reason)),
            "for {src:?} expected an error on {key} saying {reason:?}, got {found:#?}"
        );
    }
}

#[test]
fn three_mistakes_are_reported_together_with_their_lines() {
    let src = "[media]\nports = \"20999-20000\"\n\n[http]\nlisten = \"nowhere\"\n\n[log]\nformat = \"xml\"\n";
    let found = errors(src);
    let summary: Vec<(&str, Option<(usize, usize)>)> =
        found.iter().map(|e| (e.key.as_str(), e.location)).collect();
    assert_eq!(
        summary,
        [
            ("media.ports", Some((2, 9))),
            ("http.listen", Some((5, 10))),
            ("log.format", Some((8, 10)))
        ]
    );
    let shown = found[0].to_string();
    assert_eq!(
        shown,
        "media.ports = \"20999-20000\" (line 2, column 9): the first port 20999 is above the last port 20000"
    );
}

#[test]
fn a_toml_syntax_error_has_a_location() {
    let found = errors("[media]\nports = \"20000-20999\nlatch = \"any\"\n");
    assert_eq!(found.len(), 1);
    assert!(
        found[0].reason.starts_with("not valid TOML"),
        "{:?}",
        found[0]
    );
    assert_eq!(found[0].location.map(|(line, _)| line), Some(2));
}

#[test]
fn secrets_come_from_env_file_and_credentials_and_are_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-from-a-file-0001\n").unwrap();
    std::fs::write(
        dir.path().join("stripe_secret_key"),
        "sk_live_from_credential",
    )
    .unwrap();
    let src = format!(
        "[http]\napi_token = \"file:{}\"\n[stripe]\nsecret_key = \"stripe_secret_key\"\nwebhook_secret = \"env:WH\"\n",
        token_file.display()
    );
    let e = env(&[
        ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
        ("WH", "whsec_from_env"),
    ]);
    let config = Config::from_toml(&src, &e).unwrap();
    let token = config.http.api_token.as_ref().unwrap();
    assert_eq!(token.expose(), "token-from-a-file-0001");
    assert_eq!(token.source(), &SecretSource::File(token_file));
    let key = config.stripe.secret_key.as_ref().unwrap();
    assert_eq!(key.expose(), "sk_live_from_credential");
    assert_eq!(
        key.source(),
        &SecretSource::Credential("stripe_secret_key".into())
    );
    assert_eq!(config.stripe.mode(), StripeMode::Live);
    assert_eq!(
        config.stripe.webhook_secret.as_ref().unwrap().expose(),
        "whsec_from_env"
    );

    let debug = format!("{config:?}");
    for secret in [
        "token-from-a-file-0001",
        "sk_live_from_credential",
        "whsec_from_env",
    ] {
        assert!(
            !debug.contains(secret),
            "Debug output shows a secret: {debug}"
        );
    }
}

#[test]
fn a_bad_secret_is_reported_without_its_value() {
    let found = errors(
        "[stripe]\nsecret_key = \"pk_live_mistakenly_public\"\n[http]\napi_token = \"tiny-secret\"\n",
    );
    assert_eq!(found.len(), 2, "{found:#?}");
    for error in &found {
        assert_eq!(error.value, None);
        let shown = error.to_string();
        assert!(
            !shown.contains("mistakenly") && !shown.contains("tiny-secret"),
            "{shown}"
        );
    }
}

#[test]
fn a_missing_file_is_a_read_error() {
    let error = Config::load(Path::new("/nonexistent/tollbridge.toml")).unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/tollbridge.toml"),
        "{error}"
    );
}
