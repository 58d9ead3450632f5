//! The callee's leg: dialling, ringing and early media, the answer that
//! bridges the parties, refusals, and re-INVITEs from either side.

use super::*;

impl Call {
    /// INVITEs the callee with an offer the caller can take.
    pub(super) fn dial(&mut self, now: Instant) {
        // `Call::new` keeps an offer only when it has a G.711 codec, so
        // these hold; were they not to, the call ends instead of hanging.
        let Some(caller) = self.caller_offer.clone() else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        let Ok(mut offer) = sdp::offer_for_callee(&caller, self.settings.relay[1]) else {
            self.refuse(
                RejectReason::NoCommonCodec,
                "no-common-codec",
                "the caller's offer cannot be answered",
            );
            return;
        };
        if let Some(codec) = self.codec {
            // The caller already talks to us (PIN): keep its codec.
            offer.codecs = vec![codec];
        }
        if self.callee_srtp == SrtpPolicy::Required {
            offer.secure = true;
            offer.crypto = sdp::offered_crypto(&self.settings.srtp_keys[1]);
        }
        let body = self.callee_sdp.render(&offer);
        self.callee_offer = Some(offer);
        self.callee = CalleeLeg::Placing;
        self.phase = Phase::Dialing;
        self.deadline = Some(now + self.settings.ring_timeout);
        self.push(Command::DialCallee(body));
        self.record(Status::Initiated, None, None);
    }

    pub(super) fn on_placed(&mut self, result: Result<String, String>, now: Instant) {
        match result {
            Ok(call_id) => {
                self.push(Command::RecordCalleeCallId(call_id));
                if self.callee == CalleeLeg::Placing {
                    self.callee = CalleeLeg::Placed;
                }
            }
            Err(why) => {
                if self.callee == CalleeLeg::Placing {
                    self.callee = CalleeLeg::None;
                    self.end_with(
                        Status::Failed,
                        "callee-unreachable",
                        None,
                        &format!("cannot reach the callee: {why}"),
                        Some(RejectReason::CalleeRejected.response().0),
                        Some((PromptName::CalleeUnavailable, now)),
                    );
                }
            }
        }
    }

    /// Our answer to the caller for the codec the callee took, made once
    /// and reused for 183 and 200 so the caller sees one answer.
    pub(super) fn caller_answer(&mut self, codec: Codec) -> Option<Vec<u8>> {
        if self.codec == Some(codec)
            && let Some(body) = &self.caller_answer
        {
            return Some(body.clone());
        }
        let crypto = self.caller_answer_crypto();
        let offer = self.caller_offer.as_ref()?;
        let answer = sdp::answer_to(
            offer,
            codec,
            self.callee_has_dtmf,
            self.settings.relay[0],
            crypto,
        )
        .ok()?;
        let body = self.caller_sdp.render(&answer);
        self.codec = Some(codec);
        self.caller_answer = Some(body.clone());
        Some(body)
    }

    /// Reads the callee's SDP: the codec it took, and its media address.
    pub(super) fn take_callee_sdp(&mut self, body: &[u8]) -> Result<Codec, String> {
        let stream = AudioStream::parse(body).map_err(|e| e.to_string())?;
        stream
            .reachable_from(self.settings.relay[1])
            .map_err(|e| e.to_string())?;
        let offer = self.callee_offer.as_ref().ok_or("no offer was sent")?;
        let codec = sdp::chosen_codec(offer, &stream).map_err(|e| e.to_string())?;
        let keys = sdp::answered_crypto(offer, &stream).map_err(|e| e.to_string())?;
        self.callee_has_dtmf = stream.telephone_event.is_some() && offer.telephone_event.is_some();
        // Early media and the 200 may both carry the answer: keys once,
        // and again only when the callee's changed.
        if let Some((ours, theirs)) = keys
            && self.callee_crypto.as_ref().map(|(_, t)| t) != Some(&theirs)
        {
            let first = self.callee_crypto.is_none();
            self.push(Command::Srtp {
                side: Side::Callee,
                receive: Some(theirs.clone()),
                send: first.then(|| ours.clone()),
            });
            self.callee_crypto = Some((ours, theirs));
        }
        self.push(Command::SetPeer(
            Side::Callee,
            peer_of(&stream, Some(codec)),
        ));
        Ok(codec)
    }

    pub(super) fn on_ringing(&mut self, early: Option<Vec<u8>>) {
        if self.phase != Phase::Dialing {
            return;
        }
        let code = if early.is_some() { 183 } else { 180 };
        if !self.ringing_recorded {
            self.ringing_recorded = true;
            self.record(Status::Ringing, Some(code), None);
        }
        let early_answer = match early {
            Some(body) if !self.caller_answered => self
                .take_callee_sdp(&body)
                .ok()
                .and_then(|codec| self.caller_answer(codec)),
            Some(body) => {
                let _ = self.take_callee_sdp(&body);
                None
            }
            None => None,
        };
        if !self.caller_answered {
            self.push(Command::RingCaller(early_answer));
        }
    }

    pub(super) fn on_answered(&mut self, answer: &[u8], now: Instant) {
        if self.phase != Phase::Dialing {
            return;
        }
        match self.take_callee_sdp(answer) {
            Ok(codec) if self.hold == Hold::Pending => {
                // Nobody talks unpaid: the callee waits (in silence) for
                // the hold, the caller keeps ringing.
                self.phase = Phase::AwaitingHold;
                self.deadline = None;
                self.codec_awaiting_hold = Some(codec);
                self.record(
                    Status::Ringing,
                    Some(200),
                    Some("the callee answered; waiting for the card hold".into()),
                );
            }
            Ok(codec) if !self.caller_answered || Some(codec) == self.codec => {
                self.connect(codec, now)
            }
            unusable => {
                let (code, _) = RejectReason::NoCommonCodec.response();
                let detail = match unusable {
                    Err(why) => format!("the callee's answer cannot be used: {why}"),
                    Ok(_) => "the callee's answer has no codec the caller offered".to_owned(),
                };
                self.end(
                    Status::Failed,
                    "no-common-codec",
                    Some(code),
                    &detail,
                    Some(code),
                );
            }
        }
    }

    /// Bridges the parties: answers the caller (unless a PIN already did)
    /// and starts the meter.
    pub(super) fn connect(&mut self, codec: Codec, now: Instant) {
        if !self.caller_answered {
            let Some(body) = self.caller_answer(codec) else {
                let (code, _) = RejectReason::NoCommonCodec.response();
                self.end(
                    Status::Failed,
                    "no-common-codec",
                    Some(code),
                    "the caller's offer cannot be answered",
                    Some(code),
                );
                return;
            };
            self.caller_answered = true;
            self.push(Command::AnswerCaller(body));
        }
        if let Some(offer) = self.caller_offer.clone() {
            self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        }
        self.phase = Phase::Connected;
        self.deadline = None;
        self.answered_at = Some(now);
        self.record(Status::InProgress, Some(200), None);
        self.push(Command::WatchMedia(self.settings.media_timeout));
        if let Some(announce) = self.recording {
            // The recording starts with the talk, the notice in it.
            self.recording_started = true;
            self.push(Command::StartRecording(now));
            if announce {
                for side in [Side::Caller, Side::Callee] {
                    self.push(Command::Play(
                        side,
                        PromptName::RecordingNotice,
                        PromptMode::Replace,
                    ));
                }
            }
        }
        self.start_meter(now);
    }

    pub(super) fn on_refused(&mut self, code: u16, twilio_error: Option<&str>, now: Instant) {
        if self.phase != Phase::Dialing {
            return;
        }
        self.callee = CalleeLeg::Gone;
        let (reason, word, status) = match code {
            486 | 600 => (RejectReason::CalleeBusy, "callee-busy", Status::Busy),
            408 | 480 | 487 => (RejectReason::CalleeNoAnswer, "no-answer", Status::NoAnswer),
            488 | 606 => (
                RejectReason::NoCommonCodec,
                "no-common-codec",
                Status::Failed,
            ),
            _ => (
                RejectReason::CalleeRejected,
                "callee-rejected",
                Status::Failed,
            ),
        };
        let (caller_code, _) = reason.response();
        let detail = match twilio_error {
            Some(error) => format!("the callee answered {code} (Twilio error {error})"),
            None => format!("the callee answered {code}"),
        };
        self.end_with(
            status,
            word,
            Some(code),
            &detail,
            Some(caller_code),
            Some((PromptName::CalleeUnavailable, now)),
        );
    }

    pub(super) fn on_reoffer(&mut self, side: Side, offer: &[u8]) {
        let relay = match side {
            Side::Caller => self.settings.relay[0],
            Side::Callee => self.settings.relay[1],
        };
        let other_has_dtmf = match side {
            Side::Caller => self.callee_has_dtmf,
            Side::Callee => self
                .caller_offer
                .as_ref()
                .is_some_and(|o| o.telephone_event.is_some()),
        };
        let (policy, current) = match side {
            Side::Caller => (self.settings.caller_srtp, self.caller_crypto.clone()),
            Side::Callee => (
                self.callee_srtp,
                self.callee_crypto
                    .as_ref()
                    .map(|(_, theirs)| theirs.clone()),
            ),
        };
        let parsed = AudioStream::parse_with(offer, current.is_some())
            .and_then(|s| s.reachable_from(relay).map(|()| s))
            .and_then(|s| sdp::negotiate_crypto(&s, policy).map(|crypto| (s, crypto)));
        // A leg stays SRTP or plain for the whole call: switching would
        // need our own key renegotiated, and a downgrade is an attack.
        let answer = match (parsed, self.codec) {
            (Ok((stream, crypto)), Some(codec)) if crypto.is_some() == current.is_some() => {
                let ours = crypto.as_ref().map(|theirs| {
                    sdp::answering_crypto(theirs, &self.settings.srtp_keys[side.index()])
                });
                sdp::answer_to(&stream, codec, other_has_dtmf, relay, ours)
                    .ok()
                    .map(|answer| (stream, answer, crypto))
            }
            _ => None,
        };
        let Some((stream, answer, crypto)) = answer else {
            self.push(Command::AnswerReoffer(side, Err(488)));
            return;
        };
        if let Some(theirs) = crypto
            && current.as_ref() != Some(&theirs)
        {
            self.push(Command::Srtp {
                side,
                receive: Some(theirs.clone()),
                send: None,
            });
            match side {
                Side::Caller => self.caller_crypto = Some(theirs),
                Side::Callee => {
                    if let Some((_, known)) = &mut self.callee_crypto {
                        *known = theirs;
                    }
                }
            }
        }
        let body = match side {
            Side::Caller => self.caller_sdp.render(&answer),
            Side::Callee => self.callee_sdp.render(&answer),
        };
        self.push(Command::SetPeer(side, peer_of(&stream, self.codec)));
        self.push(Command::AnswerReoffer(side, Ok(body)));
        if self.phase == Phase::Connected {
            let detail = format!("{} re-INVITE: {:?}", side.as_str(), stream.direction);
            self.record(Status::InProgress, Some(200), Some(detail));
        }
    }
}

/// The relay's view of a party's SDP.
pub(super) fn peer_of(stream: &AudioStream, codec: Option<Codec>) -> Peer {
    Peer {
        rtp: stream.rtp,
        rtcp: stream.rtcp,
        direction: stream.direction,
        telephone_event: stream.telephone_event,
        codec,
    }
}
