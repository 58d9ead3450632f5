use super::*;

#[test]
fn renders_every_family_with_scraped_values() {
    let metrics = Metrics::new("tb-1");
    metrics.call_ended("busy");
    metrics.call_ended("busy");
    metrics.call_rated("jpy", 61, 102);
    metrics.call_rated("jpy", 6, 10);
    metrics.recording_finished("refused");
    let scrape = Scrape {
        uptime_seconds: 12.5,
        active_calls: 3,
        settlements: &[("pending".to_owned(), 4)],
        refunds: &[("succeeded".to_owned(), 2)],
        disputes: &[("needs_response".to_owned(), 1)],
        sip_turned_away: &[("malformed", 7)],
        media_port_pairs_in_use: 4,
        media_calls_per_thread: &[1, 2],
        media_kernel_routes: 2,
        sip_dialogs: 2,
        ledger_up: true,
        ledger_writes_waiting: 5,
        ledger_writes_dropped: 1,
        webhook_pending: 2,
        recording_frames_dropped: 9,
    };
    // A second scrape with the same totals must not add them again.
    let _ = metrics.render(&scrape);
    let text = metrics.render(&scrape);
    for line in [
        "tollbridge_build_info{version=\"",
        "node=\"tb-1\"",
        "tollbridge_ledger_up 1",
        "tollbridge_ledger_writes_waiting 5",
        "tollbridge_ledger_writes_dropped_total 1",
        "tollbridge_calls_taken_over_total 0",
        "tollbridge_uptime_seconds 12.5",
        "tollbridge_active_calls 3",
        "tollbridge_calls_total{status=\"busy\"} 2",
        "tollbridge_calls_total{status=\"completed\"} 0",
        "tollbridge_settlements{state=\"pending\"} 4",
        "tollbridge_refunds{state=\"succeeded\"} 2",
        "tollbridge_refunds{state=\"pending\"} 0",
        "tollbridge_disputes{status=\"needs_response\"} 1",
        "tollbridge_settlements{state=\"succeeded\"} 0",
        "tollbridge_sip_turned_away_total{reason=\"malformed\"} 7",
        "tollbridge_sip_turned_away_total{reason=\"rate-limited\"} 0",
        "tollbridge_media_port_pairs_in_use 4",
        "tollbridge_media_kernel_routes 2",
        "tollbridge_media_relay_calls{thread=\"0\"} 1",
        "tollbridge_media_relay_calls{thread=\"1\"} 2",
        "tollbridge_sip_dialogs 2",
        "tollbridge_talk_seconds_total{currency=\"jpy\"} 67",
        "tollbridge_billed_amount_total{currency=\"jpy\"} 112",
        "tollbridge_recordings_total{outcome=\"refused\"} 1",
        "tollbridge_recording_frames_dropped_total 9",
        "# EOF",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
}

/// Every family the daemon exports, with a sample in each, named as
/// Prometheus sees it (`_total` on counters, `_info` on info).
fn exported_names() -> std::collections::BTreeSet<String> {
    let metrics = Metrics::new("tb-1");
    metrics.call_ended("completed");
    metrics.callee_refused(486, None);
    metrics.calls_taken_over(1);
    metrics.call_rated("jpy", 6, 10);
    metrics.call_started();
    metrics.webhook_attempted("platform", "delivered");
    metrics.caller_refused(603);
    metrics.recording_finished("complete");
    metrics.register_answered("registered");
    metrics.register_auth_failed("wrong-password");
    metrics.register_lockout();
    metrics.cap_reached(std::time::Duration::from_millis(2));
    let mut stats = tollbridge_media::relay::CallStats::default();
    stats.caller.packets_received = 50;
    stats.caller.jitter_ms = 1.5;
    metrics.media_closed(&stats);
    metrics
        .stripe_latency()
        .get_or_create(&vec![
            ("operation", "capture".to_owned()),
            ("outcome", "ok".to_owned()),
        ])
        .observe(0.2);
    let scrape = Scrape {
        uptime_seconds: 1.0,
        active_calls: 0,
        settlements: &[("pending".to_owned(), 0)],
        refunds: &[],
        disputes: &[],
        sip_turned_away: &[("malformed", 0)],
        media_port_pairs_in_use: 0,
        media_calls_per_thread: &[0],
        media_kernel_routes: 0,
        sip_dialogs: 0,
        ledger_up: true,
        ledger_writes_waiting: 0,
        ledger_writes_dropped: 0,
        webhook_pending: 0,
        recording_frames_dropped: 0,
    };
    metrics
        .render(&scrape)
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|declaration| {
            let (name, kind) = declaration.split_once(' ')?;
            Some(match kind {
                "counter" => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            })
        })
        .collect()
}

/// operations.md's metrics table lists every family, and nothing else.
#[test]
fn operations_md_lists_every_metric() {
    let exported = exported_names();
    assert!(exported.len() >= 16, "{exported:?}");
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operations.md"),
    )
    .unwrap_or_default();
    let documented: std::collections::BTreeSet<String> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("| `tollbridge_"))
        .map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            format!("tollbridge_{name}")
        })
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty(),
        "not in operations.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "in operations.md, not exported: {stale:?}"
    );
}

/// The `tollbridge_...` metric names a text uses, histogram series
/// (`_bucket`, `_sum`, `_count`) under their family's name.
fn metric_names_in(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("tollbridge_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(family.to_owned());
    }
    names
}

fn contrib(path: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../contrib")
            .join(path),
    )
    .unwrap_or_default()
}

/// Every metric the alert rules and the dashboard query is one the
/// daemon exports (a renamed metric would leave a panel blank and an
/// alert that can never fire).
#[test]
fn contrib_queries_only_exported_metrics() {
    let exported = exported_names();
    for file in ["prometheus/tollbridge.rules.yml", "grafana/tollbridge.json"] {
        let used = metric_names_in(&contrib(file));
        assert!(used.len() >= 8, "{file}: {used:?}");
        let unknown: Vec<_> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{file} queries unknown metrics: {unknown:?}"
        );
    }
}

/// The dashboard is one Grafana imports: the fields its dashboard
/// model requires, panels with unique ids inside the 24-column grid,
/// each query with an expression, a refId and the templated data
/// source.
#[test]
fn the_grafana_dashboard_has_the_shape_grafana_imports() {
    let text = contrib("grafana/tollbridge.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key}"
        );
    }
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(dashboard["templating"]["list"].is_array());
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 20, "{}", panels.len());
    let mut ids = std::collections::BTreeSet::new();
    let mut queries = 0;
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{panel}");
        assert!(
            ids.insert(panel["id"].as_u64().unwrap_or(0)),
            "duplicate id: {title}"
        );
        let grid = &panel["gridPos"];
        let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
        assert!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if x + w <= 24 && w > 0 && h > 0)
                && grid["y"].is_u64(),
            "{title}: {grid}"
        );
        let kind = panel["type"].as_str().unwrap_or_default();
        assert!(
            ["row", "timeseries", "stat"].contains(&kind),
            "{title}: {kind}"
        );
        if kind == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            queries += 1;
            assert!(
                target["expr"]
                    .as_str()
                    .is_some_and(|e| e.contains("tollbridge_")),
                "{title}"
            );
            assert!(
                target["refId"].as_str().is_some_and(|r| !r.is_empty()),
                "{title}"
            );
        }
    }
    assert!(queries >= 25, "{queries}");
}
