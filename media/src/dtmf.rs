//! RFC 4733 telephone-events: reading DTMF digits from RTP payloads.
//!
//! A key press is a run of packets sharing one RTP timestamp; the last
//! three carry the end bit. A digit is reported once, at its first end
//! packet, so the retransmitted ends and a lost start change nothing.

/// One telephone-event payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The event code: 0–9 digits, 10 `*`, 11 `#`, 12–15 A–D.
    pub code: u8,
    /// Whether this packet ends the event.
    pub end: bool,
    /// Duration so far, in timestamp units (1/8000 s).
    pub duration: u16,
}

impl Event {
    /// Reads the 4-byte event payload; `None` when it is too short.
    pub fn parse(payload: &[u8]) -> Option<Event> {
        let [code, flags, high, low, ..] = *payload else {
            return None;
        };
        Some(Event {
            code,
            end: flags & 0x80 != 0,
            duration: u16::from_be_bytes([high, low]),
        })
    }

    /// The key as a character, when the event is a DTMF key.
    pub fn key(self) -> Option<char> {
        match self.code {
            0..=9 => Some(char::from(b'0' + self.code)),
            10 => Some('*'),
            11 => Some('#'),
            12..=15 => Some(char::from(b'A' + self.code - 12)),
            _ => None,
        }
    }
}

/// Turns a stream of event packets into key presses, each reported once.
#[derive(Debug, Default, Clone)]
pub struct KeyDetector {
    last_reported: Option<u32>,
}

impl KeyDetector {
    /// Feeds one telephone-event packet (its RTP timestamp and payload);
    /// returns the key when this packet ends a press not yet reported.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = Event::parse(payload)?;
        if !event.end || self.last_reported == Some(timestamp) {
            return None;
        }
        self.last_reported = Some(timestamp);
        event.key()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_read_from_event_codes() {
        let keys: String = (0..16)
            .map(|code| Event::parse(&[code, 0x0a, 0, 160]).unwrap().key().unwrap())
            .collect();
        assert_eq!(keys, "0123456789*#ABCD");
        assert_eq!(Event::parse(&[16, 0, 0, 0]).unwrap().key(), None);
        assert_eq!(Event::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn a_press_is_reported_once_at_its_first_end_packet() {
        let mut detector = KeyDetector::default();
        let start = [5, 0x0a, 0, 160];
        let end = [5, 0x8a, 3, 32];
        assert_eq!(detector.on_packet(1000, &start), None);
        assert_eq!(detector.on_packet(1000, &start), None);
        assert_eq!(detector.on_packet(1000, &end), Some('5'));
        // RFC 4733 §2.5.1.4: the end packet is sent three times.
        assert_eq!(detector.on_packet(1000, &end), None);
        assert_eq!(detector.on_packet(1000, &end), None);
        // The same key again is a new press with a new timestamp.
        assert_eq!(detector.on_packet(2600, &end), Some('5'));
        // Garbage is ignored.
        assert_eq!(detector.on_packet(4000, &[0x80]), None);
    }
}
