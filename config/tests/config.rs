//! The config file as an operator writes it: defaults, the example file,
//! a full file read back, and secret sources. Every validation rule and
//! how mistakes are reported is `mistakes.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tollbridge_config::{
    Config, Latch, ListenAddr, LogFormat, SecretSource, StripeMode, Transport, TrunkProfile,
    UnknownSource, known_keys,
};

mod support;
use support::*;

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
    assert_eq!(config.media.threads, None, "one per core");
    assert!(config.media.fast_path.is_empty(), "no kernel fast path");
    assert_eq!(config.database.path, PathBuf::from("./tollbridge.db"));
    assert_eq!(config.stripe.mode(), StripeMode::LedgerOnly);
    assert_eq!(config.billing.checkpoint_interval, Duration::from_secs(2));
    assert_eq!(config.prompts.warning_before, Duration::from_secs(60));
    assert_eq!(config.prompts.language, "en");
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
    assert_eq!(
        config.recording.dir,
        PathBuf::from("/var/lib/tollbridge/recordings")
    );
    assert_eq!(config.recording.retention, None);
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
    assert_eq!(config.recording, defaults.recording);
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
threads = 4
fast_path = ["eth0", "lo"]

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
language = "ja"
warning_before = "30s"

[calls]
ring_timeout = "20s"
drain_timeout = "1h"

[log]
level = "debug,hyper=warn"
format = "json"

[recording]
dir = "/srv/recordings"
retention = "90d"
min_free_mb = 2048
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
    assert_eq!(config.media.threads, Some(4));
    assert_eq!(config.media.fast_path, ["eth0", "lo"]);
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
    assert_eq!(config.recording.dir, PathBuf::from("/srv/recordings"));
    assert_eq!(
        config.recording.retention,
        Some(Duration::from_secs(90 * 86_400))
    );
    assert_eq!(config.recording.min_free_mb, 2048);
}

/// Each rule: a file with one mistake, the key it must name, and a phrase of
/// the reason.
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
