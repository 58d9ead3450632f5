//! The accounting export (`tollbridge export`, `GET /v1/exports/calls.csv`):
//! one line per call that started in a time range, as CSV (RFC 4180, the
//! `csv` crate) or JSON Lines, with every time in UTC and in the
//! operator's `export.timezone`. The ledger is read a page at a time and
//! each page is written out before the next is read, so any number of
//! calls is exported in the memory of one page.

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::json;

use crate::ledger::{ExportCursor, ExportRow, Ledger, LedgerError};

/// Calls read from the ledger per page.
pub const PAGE: i64 = 500;

/// The export's columns, in order (new ones are added at the end, so a
/// reader by position keeps working).
pub const COLUMNS: [&str; 29] = [
    "call",
    "booking",
    "caller",
    "called",
    "status",
    "end_reason",
    "started_utc",
    "started_local",
    "answered_utc",
    "answered_local",
    "ended_utc",
    "ended_local",
    "talk_ms",
    "billed_seconds",
    "price_per_minute",
    "increment_seconds",
    "minimum_seconds",
    "amount",
    "currency",
    "payment_intent",
    "captured",
    "refunded",
    "settlement_state",
    "dispute_status",
    "node",
    "timezone",
    "exported_at",
    "recording_price_per_minute",
    "recording_amount",
];

/// An export file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated, a header line first.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// What one export writes: its format, zone and when it was made.
#[derive(Debug, Clone)]
pub struct Export {
    format: Format,
    zone: TimeZone,
    zone_name: String,
    exported_at: String,
}

impl Export {
    /// An export in `format` with times also in `timezone` (an IANA name,
    /// checked when the config was read; UTC if it has vanished since).
    pub fn new(format: Format, timezone: &str, now_ms: i64) -> Export {
        let zone = TimeZone::get(timezone).unwrap_or(TimeZone::UTC);
        Export {
            format,
            zone,
            zone_name: timezone.to_owned(),
            exported_at: utc(Some(now_ms)),
        }
    }

    /// The bytes before the first row (the CSV header).
    pub fn header(&self) -> Vec<u8> {
        match self.format {
            Format::Csv => {
                let mut writer = csv_writer();
                let _ = writer.write_record(COLUMNS);
                writer.into_inner().unwrap_or_default()
            }
            Format::Jsonl => Vec::new(),
        }
    }

    /// The bytes of a page of rows.
    pub fn rows(&self, rows: &[ExportRow]) -> Vec<u8> {
        match self.format {
            Format::Csv => {
                let mut writer = csv_writer();
                for row in rows {
                    let fields = self.values(row).into_iter().map(|value| match value {
                        serde_json::Value::Null => String::new(),
                        serde_json::Value::String(text) => text,
                        other => other.to_string(),
                    });
                    // Writing into a Vec cannot fail.
                    let _ = writer.write_record(fields);
                }
                writer.into_inner().unwrap_or_default()
            }
            Format::Jsonl => {
                let mut out = Vec::new();
                for row in rows {
                    let object: serde_json::Map<String, serde_json::Value> = COLUMNS
                        .iter()
                        .map(|column| (*column).to_owned())
                        .zip(self.values(row))
                        .collect();
                    out.extend(serde_json::Value::Object(object).to_string().into_bytes());
                    out.push(b'\n');
                }
                out
            }
        }
    }

    /// A row's values in [`COLUMNS`] order: numbers as numbers, unknowns
    /// as null.
    fn values(&self, row: &ExportRow) -> Vec<serde_json::Value> {
        let time = |ms: Option<i64>, local: bool| match ms {
            Some(ms) if local => json!(self.local(Some(ms))),
            Some(ms) => json!(utc(Some(ms))),
            None => serde_json::Value::Null,
        };
        vec![
            json!(row.call),
            json!(row.booking),
            json!(row.caller),
            json!(row.called),
            json!(row.status),
            json!(row.end_reason),
            time(Some(row.created_ms), false),
            time(Some(row.created_ms), true),
            time(row.answered_ms, false),
            time(row.answered_ms, true),
            time(row.ended_ms, false),
            time(row.ended_ms, true),
            json!(row.talk_ms),
            json!(row.billed_seconds),
            json!(row.price_per_minute),
            json!(row.increment_seconds),
            json!(row.minimum_seconds),
            json!(row.amount),
            json!(row.currency),
            json!(row.payment_intent),
            json!(row.captured),
            json!(row.refunded),
            json!(row.settlement_state),
            json!(row.dispute_status),
            json!(row.node),
            json!(self.zone_name),
            json!(self.exported_at),
            json!(row.recording_price_per_minute),
            json!(row.recording_amount),
        ]
    }

    fn local(&self, ms: Option<i64>) -> String {
        ms.and_then(|ms| Timestamp::from_millisecond(ms).ok())
            .map(|t| {
                t.to_zoned(self.zone.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// A time in UTC with milliseconds always written (spreadsheets sort
/// these as text); empty for none.
pub fn utc(ms: Option<i64>) -> String {
    ms.and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// A CSV writer into memory, records ended by CRLF (RFC 4180).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

/// Reads every call that started in `from_ms..to_ms`, a page at a time,
/// sending each page's bytes (the header first) to `pages`, which holds
/// at most a page or two; stops early when the reader went away. Returns
/// the calls written.
pub async fn stream(
    ledger: &Ledger,
    export: &Export,
    from_ms: i64,
    to_ms: i64,
    pages: tokio::sync::mpsc::Sender<Vec<u8>>,
) -> Result<u64, LedgerError> {
    if pages.send(export.header()).await.is_err() {
        return Ok(0);
    }
    let mut after: Option<ExportCursor> = None;
    let mut written = 0u64;
    loop {
        let rows = ledger
            .export_page(from_ms, to_ms, after.clone(), PAGE)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(written);
        };
        after = Some(ExportCursor {
            created_ms: last.created_ms,
            call: last.call.clone(),
        });
        written += rows.len() as u64;
        let full = rows.len() as i64 == PAGE;
        if pages.send(export.rows(&rows)).await.is_err() {
            return Ok(written);
        }
        if !full {
            return Ok(written);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row() -> ExportRow {
        ExportRow {
            call: "call_1".into(),
            booking: Some("bk_1".into()),
            caller: Some("+819012345678".into()),
            called: Some("+815012345678".into()),
            status: "completed".into(),
            end_reason: Some("caller-hangup, \"odd\"".into()),
            created_ms: 1_764_547_200_000, // 2025-12-01T00:00:00Z
            answered_ms: Some(1_764_547_202_000),
            ended_ms: Some(1_764_547_267_500),
            talk_ms: Some(65_500),
            billed_seconds: Some(66),
            amount: Some(1_320),
            currency: Some("jpy".into()),
            price_per_minute: Some(1_200),
            increment_seconds: Some(1),
            minimum_seconds: Some(0),
            payment_intent: None,
            captured: 0,
            refunded: 0,
            settlement_state: None,
            dispute_status: None,
            node: "tb1".into(),
            recording_price_per_minute: Some(300),
            recording_amount: Some(330),
        }
    }

    #[test]
    fn csv_has_a_header_quotes_what_needs_it_and_shows_both_clocks() {
        let export = Export::new(Format::Csv, "Asia/Tokyo", 1_764_550_000_000);
        let header = String::from_utf8(export.header()).unwrap();
        assert!(header.starts_with(
            "call,booking,caller,called,status,end_reason,started_utc,started_local,"
        ));
        assert!(
            header
                .ends_with("timezone,exported_at,recording_price_per_minute,recording_amount\r\n")
        );
        let line = String::from_utf8(export.rows(&[row()])).unwrap();
        assert!(
            line.starts_with(
                "call_1,bk_1,+819012345678,+815012345678,completed,\"caller-hangup, \"\"odd\"\"\","
            ),
            "{line}"
        );
        assert!(
            line.contains(",2025-12-01T00:00:00.000Z,2025-12-01T09:00:00.000+09:00,"),
            "{line}"
        );
        assert!(
            line.contains(",65500,66,1200,1,0,1320,jpy,,0,0,,,tb1,Asia/Tokyo,"),
            "{line}"
        );
        assert!(line.ends_with(",300,330\r\n"), "{line}");
        // One record per call, split by CSV readers as it was written.
        let file = format!("{header}{line}");
        let mut reader = csv::Reader::from_reader(file.as_bytes());
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].len(), COLUMNS.len());
        assert_eq!(&records[0][5], "caller-hangup, \"odd\"");
    }

    #[test]
    fn jsonl_has_numbers_as_numbers_and_nulls_for_the_unknown() {
        let export = Export::new(Format::Jsonl, "Europe/Berlin", 0);
        assert!(export.header().is_empty());
        let text = String::from_utf8(export.rows(&[row(), row()])).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["amount"], 1320);
        assert_eq!(lines[0]["payment_intent"], serde_json::Value::Null);
        // Winter in Berlin: UTC+1.
        assert_eq!(lines[0]["started_local"], "2025-12-01T01:00:00.000+01:00");
    }
}
