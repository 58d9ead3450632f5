//! Wall-clock time for records: Unix milliseconds, and their RFC 3339
//! form for the API. The state machines take time as an argument; only
//! the async shells and the API read it here.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    ms_of(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch of `time`.
pub fn ms_of(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Unix ms as RFC 3339 UTC, as the API writes times.
pub fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_read_back_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        let now = now_ms();
        assert!(now > 1_767_225_600_000);
    }
}
