//! How a call ends: refusals, either party hanging up, the operator's
//! hang-up, silence on the media, the daemon draining; and what the call
//! still hears while it closes.

use super::*;

impl Call {
    /// Refuses the unanswered caller and ends the call.
    pub(super) fn refuse(&mut self, reason: RejectReason, word: &'static str, detail: &str) {
        let (code, _) = reason.response();
        let status = match reason {
            RejectReason::BookingInCall | RejectReason::CalleeBusy => Status::Busy,
            RejectReason::CalleeNoAnswer => Status::NoAnswer,
            _ => Status::Failed,
        };
        self.end(status, word, Some(code), detail, Some(code));
    }

    /// Ends the call: the record first (its end time is now), then both
    /// legs, whatever state each is in.
    pub(super) fn end(
        &mut self,
        status: Status,
        reason: &'static str,
        sip_code: Option<u16>,
        detail: &str,
        caller_code: Option<u16>,
    ) {
        self.end_with(status, reason, sip_code, detail, caller_code, None);
    }

    /// [`Call::end`], with a prompt the caller hears before the hang-up
    /// when we had answered it (PIN entry) and it is still there.
    pub(super) fn end_with(
        &mut self,
        status: Status,
        reason: &'static str,
        sip_code: Option<u16>,
        detail: &str,
        caller_code: Option<u16>,
        farewell: Option<(PromptName, Instant)>,
    ) {
        if self.is_over() {
            return;
        }
        self.phase = Phase::Over;
        self.deadline = None;
        self.warning_at = None;
        self.time_up_at = None;
        self.cap_at = None;
        self.extend_at = None;
        self.record(status, sip_code, Some(detail.to_owned()));
        if self.recording_started
            && let Some(started) = self.answered_at
        {
            // Its instant becomes the talk's end, set with the talk time.
            self.push(Command::StopRecording(started));
        }
        let now_talk = Duration::ZERO;
        self.push(Command::RecordEnd(End {
            status,
            reason,
            sip_code,
            talk: now_talk,
            connected: self.answered_at.is_some(),
            cap_lateness: None,
        }));
        if matches!(self.callee, CalleeLeg::Placing | CalleeLeg::Placed) {
            self.callee = CalleeLeg::Gone;
            self.push(Command::HangUpCallee);
        }
        if let Some((prompt, now)) = farewell
            && self.caller_answered
            && !self.caller_gone
        {
            self.push(Command::Play(Side::Caller, prompt, PromptMode::Replace));
            self.phase = Phase::Closing;
            self.deadline = Some(now + self.settings.prompt_length(prompt));
            return;
        }
        self.finish_now(caller_code);
    }

    /// Hangs up (or refuses) the caller if still there, and finishes.
    pub(super) fn finish_now(&mut self, caller_code: Option<u16>) {
        self.phase = Phase::Over;
        self.deadline = None;
        if !self.caller_gone {
            self.caller_gone = true;
            match caller_code {
                Some(code) if !self.caller_answered => self.push(Command::RejectCaller { code }),
                _ => self.push(Command::HangUpCaller),
            }
        }
        self.push(Command::Finish);
    }

    /// While the farewell plays, only the caller leaving matters.
    pub(super) fn on_input_while_closing(&mut self, input: Input) {
        match input {
            Input::CallerHungUp | Input::CallerCancelled | Input::CallerFailed(_) => {
                self.caller_gone = true;
                self.finish_now(None);
            }
            Input::CalleePlaced(Ok(call_id)) => self.push(Command::RecordCalleeCallId(call_id)),
            _ => {}
        }
    }

    /// A party went quiet: the call ends, billed only up to the last RTP
    /// that party sent (never for the silent tail), and the record says
    /// what the relay saw.
    pub(super) fn on_media_inactive(&mut self, quiet: Inactivity) {
        if self.phase != Phase::Connected {
            return;
        }
        let side = quiet.side.as_str();
        let answered = self.answered_at;
        let foreign = match quiet.dropped_foreign {
            0 => String::new(),
            n => format!(
                "; {n} packets from another source were dropped as foreign on its leg (a NAT the latch did not take? see media.latch)"
            ),
        };
        let detail = match (quiet.last_received, answered) {
            (Some(last), Some(answered)) => format!(
                "no RTP from the {side} for {:?}; talk billed to its last packet, {} s into the call{foreign}",
                self.settings.media_timeout,
                last.saturating_duration_since(answered).as_secs()
            ),
            _ => format!("no RTP ever arrived from the {side}; no talk time billed{foreign}"),
        };
        self.talk_until = quiet.last_received.or(answered);
        self.end(Status::Completed, "media-timeout", None, &detail, None);
    }

    /// An operator ends the call. A talking call ends at once (or after
    /// the time-up prompt, with `announce`), billed to now; a call not yet
    /// connected is canceled, its caller refused with 603 Decline (a 5xx
    /// would make Twilio ring the expert again through another host).
    pub(super) fn on_hang_up(&mut self, announce: bool, now: Instant) {
        if self.is_over() {
            return;
        }
        if self.phase == Phase::Connected {
            if announce {
                self.end_with_time_up("hung-up", now);
                return;
            }
            self.end(
                Status::Completed,
                "hung-up",
                None,
                "hung up by the operator",
                None,
            );
            self.stamp_talk(now);
            return;
        }
        self.end(
            Status::Canceled,
            "hung-up",
            None,
            "hung up by the operator before the call was connected",
            Some(603),
        );
    }

    /// Plays the time-up prompt to both parties now and ends the talk as it
    /// finishes, recorded with `reason`; nothing when the cap comes first
    /// anyway, with its own prompt.
    fn end_with_time_up(&mut self, reason: &'static str, now: Instant) {
        let ends = now + self.settings.prompt_length(PromptName::TimeUp);
        if self.cap_at.is_some_and(|cap| cap <= ends) {
            return;
        }
        self.warning_at = None;
        self.extend_at = None;
        self.time_up_at = Some(now);
        self.cap_at = Some(ends);
        self.cap_reason = reason;
        self.push(Command::ForwardUntil(ends));
        self.run_meter(now);
    }

    /// The drain time is over: a talking call hears the time-up prompt and
    /// ends as it finishes; anything else ends now, an unanswered caller
    /// with 503 so the trunk can try another host.
    pub(super) fn on_drain(&mut self, now: Instant) {
        if self.is_over() {
            return;
        }
        if self.phase == Phase::Connected {
            self.end_with_time_up("drained", now);
            return;
        }
        let status = if self.caller_answered {
            Status::Failed
        } else {
            Status::Canceled
        };
        self.end(
            status,
            "drained",
            None,
            "the daemon stopped before the call was connected",
            Some(RejectReason::Draining.response().0),
        );
    }
}
