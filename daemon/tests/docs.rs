//! operations.md against the code: every error code the HTTP API can
//! answer with is in its table, and nothing in the table is gone. (The
//! metrics table is checked beside the registry, in `metrics.rs`.)

use std::collections::BTreeSet;
use std::path::Path;

fn repository() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn operations() -> String {
    std::fs::read_to_string(repository().join("docs/operations.md")).unwrap_or_default()
}

/// Every code the HTTP layer answers with: the string after a status in
/// `ApiError::new(StatusCode::..., "code", ...)`.
fn answered_codes() -> BTreeSet<String> {
    let mut codes = BTreeSet::new();
    let dir = repository().join("daemon/src/http");
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    for entry in entries {
        let source = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut rest = source.as_str();
        while let Some(at) = rest.find("StatusCode::") {
            rest = &rest[at + "StatusCode::".len()..];
            let after_status =
                rest.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_');
            let Some(after_comma) = after_status.strip_prefix(',') else {
                continue;
            };
            let Some(literal) = after_comma.trim_start().strip_prefix('"') else {
                continue;
            };
            let code: String = literal
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if literal[code.len()..].starts_with('"') && !code.is_empty() {
                codes.insert(code);
            }
        }
    }
    codes
}

/// The codes in the error table of operations.md.
fn documented_codes(text: &str) -> BTreeSet<String> {
    let table = text.split("## API error codes").nth(1).unwrap_or_default();
    table
        .lines()
        .skip_while(|line| !line.starts_with("| code |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn operations_md_lists_every_api_error_code() {
    let answered = answered_codes();
    assert!(answered.contains("ledger_unavailable"), "{answered:?}");
    assert!(answered.len() >= 15, "{answered:?}");
    let documented = documented_codes(&operations());
    let undocumented: Vec<_> = answered.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&answered).collect();
    assert!(
        undocumented.is_empty(),
        "not in operations.md: {undocumented:?}"
    );
    assert!(
        stale.is_empty(),
        "in operations.md but never answered: {stale:?}"
    );
}
