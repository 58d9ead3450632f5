//! How a config file's mistakes are reported: every validation rule names
//! its key and why, several mistakes come together with their lines, and
//! a TOML syntax error has a location.

mod support;
use support::*;

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
        ("[media]\nthreads = 0", "media.threads", "from 1 to 256"),
        (
            "[media]\nfast_path = \"eth0\"",
            "media.fast_path",
            "expected an array of an interface name",
        ),
        (
            "[media]\nfast_path = [\"eth0\", \"eth0/1\"]",
            "media.fast_path[1]",
            "interface name",
        ),
        (
            "[media]\nfast_path = [\"an-interface-name\"]",
            "media.fast_path[0]",
            "1 to 15 characters",
        ),
        (
            "[media]\nfast_path = [\"lo\", \"lo\"]",
            "media.fast_path[1]",
            "listed twice",
        ),
        (
            "[media]\nthreads = \"all\"",
            "media.threads",
            "from 1 to 256",
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
        ("[media]\nsrtp = \"on\"", "media.srtp", "expected one of"),
        (
            "[[trunk]]\nname = \"t\"\nsrtp = true",
            "trunk[0].srtp",
            "\"optional\"",
        ),
        (
            "[[callee]]\nhost = \"pbx.example.com\"",
            "callee[0].username",
            "or only srtp",
        ),
        (
            "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]",
            "sip.tls",
            "required with a tls: listener",
        ),
        (
            "[sip]\nlisten = [\"tls:127.0.0.1:5061\"]\n[sip.tls]\nca = \"/etc/passwd\"",
            "sip.tls.certificate",
            "required with [sip.tls]",
        ),
        (
            "[sip.tls]\nprivate_key = \"/etc/passwd\"",
            "sip.tls.certificate",
            "required with [sip.tls]",
        ),
        (
            "[sip.tls]\nca = \"/nonexistent/ca.pem\"",
            "sip.tls.ca",
            "no such file",
        ),
        (
            "[sip.tls]\nca = \"/etc/passwd\"\nverify = false",
            "sip.tls.verify",
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
        ("[recording]\ndir = \"\"", "recording.dir", "directory path"),
        (
            "[recording]\nretention = \"10m\"",
            "recording.retention",
            "between 3600s and",
        ),
        (
            "[recording]\nretention = \"90 days\"",
            "recording.retention",
            "unknown unit",
        ),
        (
            "[recording]\nmin_free_mb = -1",
            "recording.min_free_mb",
            "whole number of megabytes",
        ),
        ("[recording]\nkeep = true", "recording.keep", "unknown"),
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
            "[prompts]\nlanguage = \"\"",
            "prompts.language",
            "a language tag",
        ),
        (
            "[prompts]\nlanguage = 81",
            "prompts.language",
            "a language tag",
        ),
        (
            "[prompts]\nwarning_before = \"1h\"",
            "prompts.warning_before",
            "between",
        ),
        (
            "[[callee]]\nusername = \"tb\"\npassword = \"x\"",
            "callee[0].host",
            "needs the host",
        ),
        (
            "[[callee]]\nhost = \"sip:pbx.example.com\"\nusername = \"tb\"\npassword = \"x\"",
            "callee[0].host",
            "the host (and port) of callee URIs",
        ),
        (
            "[[callee]]\nhost = \"pbx.example.com\"\nusername = \"tb\"",
            "callee[0].password",
            "both username and password",
        ),
        (
            "[[callee]]\nhost = \"pbx.example.com\"\nusername = \"tb\"\npassword = \"x\"\n[[callee]]\nhost = \"PBX.example.com\"\nusername = \"tb\"\npassword = \"y\"",
            "callee[1].host",
            "same host",
        ),
        (
            "[[callee]]\nhost = \"pbx.example.com\"\nusername = \"tb\"\npassword = \"x\"\nrealm = \"r\"",
            "callee[0].realm",
            "unknown key",
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
