//! What a leg knows of the stream it receives: RFC 3550 sequence
//! bookkeeping (A.1, A.3: extended highest sequence number, loss across
//! wraps and source changes) and interarrival jitter (A.8), including the
//! packets the kernel fast path forwarded and counted elsewhere.

/// RFC 3550 A.1/A.3 sequence bookkeeping and A.8 jitter for one stream.
#[derive(Debug, Clone, Default)]
pub(super) struct Reception {
    ssrc: Option<u32>,
    base: u32,
    max_seq: u16,
    cycles: u32,
    received: u64,
    lost_earlier: u64,
    transit: Option<i64>,
    /// Jitter in timestamp units × 16 (the A.8 fixed-point form).
    jitter16: u64,
}

impl Reception {
    /// Packets lost so far, over every source the stream had.
    pub fn lost(&self) -> u64 {
        self.lost_earlier + self.lost_now()
    }

    /// Interarrival jitter in ms.
    pub fn jitter_ms(&self) -> f64 {
        (self.jitter16 as f64) / 16.0 / 8.0
    }

    /// The SSRC of the stream as last received.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    fn lost_now(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        let extended_max = u64::from(self.cycles) + u64::from(self.max_seq);
        let expected = extended_max + 1 - u64::from(self.base);
        expected.saturating_sub(self.received)
    }

    /// Counts `count` packets of the current source that the kernel
    /// forwarded, the last with sequence number `last_seq`: the extended
    /// sequence advances by the step to `last_seq` plus as many whole
    /// cycles as bring it nearest `count` (more than half a cycle of
    /// packets can pass between two folds).
    pub fn fold(&mut self, count: u64, last_seq: u16) {
        if self.ssrc.is_none() || count == 0 {
            return;
        }
        self.received += count;
        let step = i64::from(last_seq.wrapping_sub(self.max_seq));
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let cycles = (count.saturating_sub(step).saturating_add(0x8000)).div_euclid(0x1_0000);
        let advance = step.saturating_add(cycles.saturating_mul(0x1_0000));
        if advance <= 0 {
            // The last one forwarded was older than what we had seen.
            return;
        }
        let extended = i64::from(self.cycles) + i64::from(self.max_seq) + advance;
        self.cycles = u32::try_from(extended & !0xffff).unwrap_or(!0xffff);
        self.max_seq = last_seq;
    }

    /// Counts one packet; `arrival` in 8 kHz units, `audio` false for
    /// events (whose timestamps say nothing about jitter).
    pub fn on_packet(&mut self, ssrc: u32, seq: u16, timestamp: u32, arrival: u32, audio: bool) {
        if self.ssrc != Some(ssrc) {
            // A new source (a phone restarting its stream): keep what the
            // old one lost, start counting afresh.
            self.lost_earlier += self.lost_now();
            *self = Reception {
                ssrc: Some(ssrc),
                base: u32::from(seq),
                max_seq: seq,
                lost_earlier: self.lost_earlier,
                jitter16: self.jitter16,
                ..Reception::default()
            };
        } else {
            let delta = seq.wrapping_sub(self.max_seq);
            if delta != 0 && delta < 0x8000 {
                if seq < self.max_seq {
                    self.cycles += 1 << 16;
                }
                self.max_seq = seq;
            }
        }
        self.received += 1;
        if audio {
            let transit = i64::from(arrival.wrapping_sub(timestamp) as i32);
            if let Some(previous) = self.transit {
                let d = (transit - previous).unsigned_abs();
                self.jitter16 = (self.jitter16 + d).saturating_sub((self.jitter16 + 8) >> 4);
            }
            self.transit = Some(transit);
        }
    }
}
