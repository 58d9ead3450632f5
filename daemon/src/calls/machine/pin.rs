//! The PIN dialogue: asking, collecting DTMF keys, checking, retrying.

use super::*;

impl Call {
    /// Answers the caller ourselves to collect a PIN by DTMF.
    pub(super) fn ask_pin(&mut self, now: Instant) {
        let Some(offer) = self.caller_offer.clone() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        if offer.telephone_event.is_none() {
            self.refuse(
                RejectReason::NoBooking,
                "no-booking",
                "a PIN is needed but the caller cannot send DTMF (no telephone-event)",
            );
            return;
        }
        let Some(codec) = offer.codecs.first().copied() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        let crypto = self.caller_answer_crypto();
        let Ok(answer) = sdp::answer_to(&offer, codec, true, self.settings.relay[0], crypto) else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        self.codec = Some(codec);
        let body = self.caller_sdp.render(&answer);
        self.caller_answer = Some(body.clone());
        self.caller_answered = true;
        self.push(Command::AnswerCaller(body));
        self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        self.push(Command::Play(
            Side::Caller,
            PromptName::Pin,
            PromptMode::Replace,
        ));
        self.record(
            Status::Queued,
            Some(200),
            Some("answered to collect a PIN".into()),
        );
        self.phase = Phase::Pin;
        self.pin.clear();
        self.deadline = Some(now + self.settings.pin_first_digit);
    }

    pub(super) fn on_key(&mut self, key: char, now: Instant) {
        if self.phase != Phase::Pin {
            return;
        }
        if key == '#' {
            self.submit_pin();
        } else if self.pin.len() < 16 {
            self.pin.push(key);
            self.deadline = Some(now + self.settings.pin_inter_digit);
        }
    }

    pub(super) fn submit_pin(&mut self) {
        let pin = std::mem::take(&mut self.pin);
        self.phase = Phase::CheckingPin;
        self.deadline = None;
        self.push(Command::CheckPin(pin));
    }

    pub(super) fn pin_failed(&mut self, now: Instant) {
        self.pin_tries += 1;
        if self.pin_tries >= self.settings.pin_tries {
            self.end_with(
                Status::Failed,
                "pin-failed",
                None,
                "no booking matched the PIN entries",
                None,
                Some((PromptName::NoBooking, now)),
            );
        } else {
            self.record(
                Status::Queued,
                None,
                Some(format!("PIN entry {} did not match", self.pin_tries)),
            );
            self.phase = Phase::Pin;
            self.pin.clear();
            self.push(Command::Play(
                Side::Caller,
                PromptName::WrongPin,
                PromptMode::Replace,
            ));
            self.deadline = Some(now + self.settings.pin_first_digit);
        }
    }
}
