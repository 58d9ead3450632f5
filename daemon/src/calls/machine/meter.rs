//! The meter: talk time stamped, the warning and time-up played at their
//! instants, the cap enforced (and moved by extension blocks), and a
//! declined card hold ended politely.

use super::*;

/// How long before the meter's first prompt (the warning, or the time-up
/// when there is none) an extension block's hold is placed: room for
/// Stripe's answer, so that nobody hears a warning the block makes moot.
const EXTEND_LEAD: Duration = Duration::from_secs(10);

/// In ask mode, the time left after the offer for the caller to press `1`
/// and for the block's hold to land before the time-up prompt begins.
const ANSWER_WINDOW: Duration = Duration::from_secs(5);

impl Call {
    /// Sets the talk time on the `RecordEnd` just queued: from the
    /// callee's answer to now (or to `talk_until`), never beyond the cap.
    pub(super) fn stamp_talk(&mut self, now: Instant) {
        let until = self.talk_until.map_or(now, |t| t.min(now));
        let talk = self
            .answered_at
            .map_or(Duration::ZERO, |t| until.saturating_duration_since(t));
        let talk = self.cap.map_or(talk, |cap| talk.min(cap));
        let talk_end = self.answered_at.map(|t| t + talk);
        for command in self.commands.iter_mut() {
            match command {
                Command::RecordEnd(end) => end.talk = talk,
                Command::StopRecording(at) => *at = talk_end.unwrap_or(*at),
                _ => {}
            }
        }
    }

    /// The meter's instants that have come: warning, time-up, cap.
    pub(super) fn run_meter(&mut self, now: Instant) {
        if self.phase != Phase::Connected {
            return;
        }
        if self.extend_at.is_some_and(|at| now >= at) {
            self.extend_at = None;
            self.extend();
        }
        if self.warning_at.is_some_and(|at| now >= at) {
            self.warning_at = None;
            if self.offers_a_block() {
                // The caller hears the offer in the warning's place.
                self.offer_open = true;
                self.push(Command::Play(
                    Side::Caller,
                    PromptName::ExtendOffer,
                    PromptMode::Mix,
                ));
                self.push(Command::Play(
                    Side::Callee,
                    PromptName::Warning,
                    PromptMode::Mix,
                ));
                self.push(Command::Record(Event {
                    status: Status::InProgress,
                    sip_code: None,
                    detail: Some(
                        "warning played to both parties; the caller was offered an extension"
                            .into(),
                    ),
                    warning: true,
                }));
            } else {
                self.play_both(
                    PromptName::Warning,
                    PromptMode::Mix,
                    "warning played to both parties",
                );
            }
        }
        if self.time_up_at.is_some_and(|at| now >= at) {
            self.time_up_at = None;
            self.offer_open = false;
            self.play_both(
                PromptName::TimeUp,
                PromptMode::Replace,
                "time-up played to both parties",
            );
        }
        if let Some(cap_at) = self.cap_at.filter(|at| now >= *at) {
            let (reason, detail) = match self.cap_reason {
                "drained" => (
                    "drained",
                    "the daemon stopped: its drain time ran out during the call",
                ),
                "hung-up" => (
                    "hung-up",
                    "hung up by the operator after the time-up prompt",
                ),
                _ => ("cap-reached", "the paid time ran out"),
            };
            self.end(Status::Completed, reason, None, detail, None);
            self.stamp_talk(now);
            if reason == "cap-reached" {
                for command in self.commands.iter_mut() {
                    if let Command::RecordEnd(end) = command {
                        end.cap_lateness = Some(now.saturating_duration_since(cap_at));
                    }
                }
            }
        }
    }

    pub(super) fn play_both(&mut self, prompt: PromptName, mode: PromptMode, detail: &str) {
        self.push(Command::Play(Side::Caller, prompt, mode));
        self.push(Command::Play(Side::Callee, prompt, mode));
        self.push(Command::Record(Event {
            status: Status::InProgress,
            sip_code: None,
            detail: Some(detail.to_owned()),
            warning: prompt == PromptName::Warning,
        }));
    }

    /// Sets the meter's instants from the answer (at the answer, and again
    /// when an extension moves the cap): the cap, the time-up prompt that
    /// ends at it, the warning before it, and the next extension block's
    /// hold before both. Each prompt is heard whole: the warning starts
    /// early enough to end before the time-up begins, and is skipped when
    /// there is no room for it (or the cap is not longer than its lead).
    pub(super) fn start_meter(&mut self, now: Instant) {
        let Some(cap) = self.cap else {
            return;
        };
        let cap_at = self.answered_at.unwrap_or(now) + cap;
        self.cap_at = Some(cap_at);
        self.push(Command::ForwardUntil(cap_at));
        let time_up = self.settings.prompt_length(PromptName::TimeUp);
        let time_up_at = cap_at.checked_sub(time_up).unwrap_or(now).max(now);
        self.time_up_at = Some(time_up_at);
        let lead = self.settings.warning_before;
        let mut warning = self.settings.prompt_length(PromptName::Warning);
        if self.offers_a_block() {
            // The caller's offer plays in the warning's slot, and is
            // answered before the time-up.
            warning =
                warning.max(self.settings.prompt_length(PromptName::ExtendOffer)) + ANSWER_WINDOW;
        }
        if !lead.is_zero() && cap > lead {
            let latest = time_up_at.checked_sub(warning);
            self.warning_at = latest
                .map(|latest| (cap_at - lead).min(latest))
                .filter(|at| *at >= now);
        }
        self.extend_at = self
            .extension
            .filter(|growth| !growth.ask && cap < growth.most && !self.extending)
            .map(|_| {
                let first_prompt = self.warning_at.unwrap_or(time_up_at);
                first_prompt
                    .checked_sub(EXTEND_LEAD)
                    .unwrap_or(now)
                    .max(now)
            });
    }

    /// Whether the caller is offered the next block with the warning: the
    /// booking asks, and there is a block left to buy.
    fn offers_a_block(&self) -> bool {
        self.extension.is_some_and(|growth| {
            growth.ask && !self.extending && self.cap.is_some_and(|cap| cap < growth.most)
        })
    }

    /// A key the caller pressed while talking: `1` takes an open offer.
    pub(super) fn on_talking_key(&mut self, key: char) {
        if key == '1' && self.offer_open && !self.extending {
            self.offer_open = false;
            self.push(Command::Record(Event {
                status: Status::InProgress,
                sip_code: None,
                detail: Some("the caller pressed 1 to extend".into()),
                warning: false,
            }));
            self.extend();
        }
    }

    /// Asks for the next extension block's hold: a block, or what is left
    /// to the call's most.
    fn extend(&mut self) {
        let (Some(growth), Some(cap)) = (self.extension, self.cap) else {
            return;
        };
        let adds = growth.block.min(growth.most.saturating_sub(cap));
        if adds.is_zero() {
            return;
        }
        self.extending = true;
        self.blocks += 1;
        self.push(Command::Extend {
            block: self.blocks,
            adds,
            covered: cap + adds,
        });
    }

    /// An extension block's hold came back: the cap moves and the meter is
    /// timed again (the warning, already heard or not, comes before the
    /// new cap), or the paid time stays and no block is asked again. A
    /// hold that lands once the time-up prompt has begun, or the call is
    /// ending for another reason, moves nothing: the call never talks on
    /// it, and it is released after the call.
    pub(super) fn on_extended(&mut self, result: Result<Duration, String>, now: Instant) {
        self.extending = false;
        let block = self.blocks;
        let applies = self.phase == Phase::Connected
            && self.cap_reason == "cap-reached"
            && self.time_up_at.is_some();
        let asked = self.extension.is_some_and(|growth| growth.ask);
        // The caller who asked hears how it went (not over the time-up).
        let tell = |call: &mut Call, prompt: PromptName| {
            if asked && applies {
                call.push(Command::Play(Side::Caller, prompt, PromptMode::Mix));
            }
        };
        match result {
            Ok(adds) if applies => {
                let cap = self.cap.unwrap_or_default() + adds;
                self.cap = Some(cap);
                self.push(Command::RecordExtension {
                    block,
                    cap: Ok(cap),
                });
                tell(self, PromptName::Extended);
                self.start_meter(now);
            }
            Ok(_) => {
                self.extension = None;
                self.push(Command::RecordExtension {
                    block,
                    cap: Err("the hold succeeded after the call had begun to end".into()),
                });
            }
            Err(why) => {
                tell(self, PromptName::NotExtended);
                self.extension = None;
                self.push(Command::RecordExtension {
                    block,
                    cap: Err(why),
                });
            }
        }
    }

    /// The hold failed: the callee's leg ends, the caller hears why
    /// (answered for it when it was still ringing), and the call ends.
    pub(super) fn on_hold_declined(&mut self, why: &str, now: Instant) {
        if self.is_over() {
            return;
        }
        if !self.caller_answered
            && let Some(offer) = self.caller_offer.clone()
            && let Some(codec) = offer.codecs.first().copied()
            && let Ok(answer) = sdp::answer_to(
                &offer,
                codec,
                false,
                self.settings.relay[0],
                self.caller_answer_crypto(),
            )
        {
            let body = self.caller_sdp.render(&answer);
            self.caller_answered = true;
            self.codec = Some(codec);
            self.push(Command::AnswerCaller(body));
            self.push(Command::SetPeer(Side::Caller, peer_of(&offer, Some(codec))));
        }
        self.end_with(
            Status::Failed,
            "payment-declined",
            None,
            &format!("the card hold failed: {why}"),
            Some(RejectReason::PaymentDeclined.response().0),
            Some((PromptName::PaymentDeclined, now)),
        );
    }
}
