//! What the call's shell does for each of the machine's commands: the
//! answers and INVITEs sent, media set up and prompts played, records
//! written, the callee dialled and hung up.

use super::*;

impl Shell {
    pub(super) async fn execute(&mut self, command: Command) {
        let gives_our_sdp = matches!(
            &command,
            Command::RingCaller(Some(_))
                | Command::AnswerCaller(_)
                | Command::DialCallee(_)
                | Command::AnswerReoffer(_, Ok(_))
        );
        if gives_our_sdp {
            self.announce().await;
        }
        match command {
            Command::RejectCaller { code } => {
                self.caller_open = false;
                self.shared.metrics.caller_refused(code);
                if let Err(e) = self.caller.reject(code) {
                    tracing::warn!(error = %e, code, "cannot refuse the caller");
                }
            }
            Command::RingCaller(early) => {
                if let Err(e) = self.caller.ring(early) {
                    tracing::warn!(error = %e, "cannot send ringing to the caller");
                }
            }
            Command::AnswerCaller(sdp) => match self.caller.answer(sdp) {
                Ok(()) => {
                    let record = self.caller.dialog_record();
                    self.store_dialog(Side::Caller, &record).await;
                }
                Err(e) => tracing::warn!(error = %e, "cannot answer the caller"),
            },
            Command::HangUpCaller => self.hang_up_caller = true,
            Command::HangUpCallee => self.hang_up_callee(),
            Command::DialCallee(offer) => self.dial(offer),
            Command::AnswerReoffer(side, answer) => {
                let pending = match side {
                    Side::Caller => self.caller_reoffer.take(),
                    Side::Callee => self.callee_reoffer.take(),
                };
                if let Some(reoffer) = pending {
                    let result = match answer {
                        Ok(sdp) => reoffer.accept(sdp).await,
                        Err(code) => reoffer.reject(code).await,
                    };
                    if let Err(e) = result {
                        tracing::warn!(error = %e, side = side.as_str(), "cannot answer a re-INVITE");
                    }
                    // A re-INVITE may move the remote target (RFC 3261
                    // §12.2.2): the stored dialog follows it.
                    let record = match side {
                        Side::Caller => Some(self.caller.dialog_record()),
                        Side::Callee => self.callee.as_deref().map(OutboundLeg::dialog_record),
                    };
                    if let Some(record) = record {
                        self.store_dialog(side, &record).await;
                    }
                }
            }
            Command::Srtp {
                side,
                receive,
                send,
            } => {
                if let Some(media) = &self.media {
                    let suite = receive.as_ref().or(send.as_ref()).map(|c| c.suite.name());
                    tracing::info!(
                        side = side.as_str(),
                        suite,
                        rekeyed = send.is_none(),
                        "srtp on the leg"
                    );
                    media.secure(
                        side,
                        crate::calls::srtp::contexts(receive.as_ref(), send.as_ref()),
                    );
                }
            }
            Command::SetPeer(side, peer) => {
                if let Some(media) = &self.media {
                    media.set_peer(side, peer);
                }
            }
            Command::WatchMedia(timeout) => {
                if let Some(media) = &self.media {
                    media.watch(Some(timeout));
                }
            }
            Command::ForwardUntil(at) => {
                if let Some(media) = &self.media {
                    media.forward_until(Some(at));
                }
            }
            Command::Play(side, prompt, mode) => {
                if let Some(media) = &self.media {
                    let prompts = self.control.prompts.prompts(self.language.as_deref());
                    let audio = match (&self.offer, prompt) {
                        (Some(offer), PromptName::ExtendOffer) => offer.clone(),
                        _ => prompts.get(prompt),
                    };
                    media.play(side, audio, mode);
                }
            }
            Command::StartRecording(origin) => self.start_recording(origin).await,
            Command::StopRecording(at) => self.stop_recording(at).await,
            Command::Extend {
                block,
                adds,
                covered,
            } => {
                let (Some(settler), Some(booking)) =
                    (self.control.settler.clone(), self.booking.clone())
                else {
                    self.extending = Some(Box::pin(async {
                        Err("no card to hold the block on".to_owned())
                    }));
                    return;
                };
                tracing::info!(block, adds_s = adds.as_secs(), "extending the paid time");
                let (ledger, id) = (self.shared.ledger.clone(), self.id.clone());
                self.extending = Some(Box::pin(async move {
                    crate::settle::place_extension_hold(
                        &ledger,
                        settler.gateway(),
                        &id,
                        &booking,
                        block,
                        covered,
                    )
                    .await
                    .map(|_| adds)
                }));
            }
            Command::RecordExtension { block, cap } => {
                match &cap {
                    Ok(cap) => tracing::info!(block, cap_s = cap.as_secs(), "paid time extended"),
                    Err(why) => tracing::warn!(block, reason = %why, "paid time not extended"),
                }
                let cap = cap.map(|cap| cap.as_secs());
                if let Err(e) = self
                    .shared
                    .ledger
                    .record_extension(self.id.clone(), block, cap, now_ms())
                    .await
                {
                    tracing::error!(error = %e, "cannot record the extension");
                }
            }
            Command::CheckPin(pin) => {
                let now = now_ms();
                self.lookup = Some(super::route_lookup(
                    self.shared.ledger.clone(),
                    self.config.clone(),
                    (self.id.clone(), self.called.clone(), now),
                    move |bookings| route::route_by_pin(bookings, &pin, now),
                ));
            }
            Command::RecordBooking(booking) => {
                tracing::info!(booking = %booking, "routed");
                self.booking = Some(booking);
            }
            Command::RecordCalleeCallId(sip_call_id) => {
                self.shared
                    .journal
                    .write(CallWrite::CalleeCallId {
                        call_id: self.id.clone(),
                        sip_call_id,
                    })
                    .await;
            }
            Command::Record(event) => {
                if event.status == Status::InProgress {
                    self.control.meters.start(&self.id);
                }
                tracing::info!(status = event.status.as_str(), code = ?event.sip_code, detail = ?event.detail, "call status");
                self.shared
                    .journal
                    .write(CallWrite::Event {
                        call_id: self.id.clone(),
                        status: event.status,
                        sip_code: event.sip_code,
                        detail: event.detail,
                        warning: event.warning,
                        at_ms: now_ms(),
                    })
                    .await;
            }
            Command::RecordEnd(end) => {
                tracing::info!(
                    status = end.status.as_str(),
                    reason = end.reason,
                    talk_ms = end.talk.as_millis() as u64,
                    "call ended"
                );
                self.shared.metrics.call_ended(end.status.as_str());
                if let Some(lateness) = end.cap_lateness {
                    self.shared.metrics.cap_reached(lateness);
                }
                self.control.meters.stop(&self.id);
                let end = CallEnd {
                    status: end.status,
                    reason: end.reason.to_owned(),
                    talk_ms: i64::try_from(end.talk.as_millis()).unwrap_or(i64::MAX),
                    connected: end.connected,
                };
                let written = self
                    .shared
                    .journal
                    .write(CallWrite::Close {
                        call_id: self.id.clone(),
                        end,
                        ended_ms: now_ms(),
                    })
                    .await;
                match written {
                    Written::Now(priced) => {
                        rated(&self.shared, priced);
                        if let Some(settler) = &self.control.settler {
                            settler.wake();
                        }
                    }
                    Written::Queued => tracing::warn!(
                        "the closed record waits in memory for the ledger; it is rated and settled once written"
                    ),
                    Written::Failed => {}
                }
            }
            Command::Finish => {}
        }
    }

    /// Before our SDP first names the relay's ports to a party: they are
    /// stored with the call (a restart after a crash holds them back) and
    /// will wait out the quarantine when the call ends. Ports of a call
    /// refused before this return to the pool at once.
    pub(super) async fn announce(&mut self) {
        if self.announced {
            return;
        }
        self.announced = true;
        let Some(media) = &self.media else {
            return;
        };
        media.announce();
        self.shared
            .journal
            .write(CallWrite::RtpPorts {
                call_id: self.id.clone(),
                ports: media.rtp_ports(),
            })
            .await;
    }

    /// Stores what it takes to end a leg's dialog after a crash.
    pub(super) fn store_dialog(
        &self,
        side: Side,
        record: &tollbridge_sip::edge::DialogRecord,
    ) -> impl Future<Output = ()> + Send + 'static {
        let json = serde_json::to_string(record).ok();
        let (journal, id) = (self.shared.journal.clone(), self.id.clone());
        async move {
            if let Some(dialog) = json {
                journal
                    .write(CallWrite::Dialog {
                        call_id: id,
                        side,
                        dialog,
                    })
                    .await;
            }
        }
    }

    /// Starts the outbound INVITE to the booking's callee.
    pub(super) fn dial(&mut self, offer: Vec<u8>) {
        let Some(booking) = self.booking.clone() else {
            return;
        };
        let ledger = self.shared.ledger.clone();
        let edge = self.control.edge.clone();
        let config = self.config.clone();
        let from_user = self
            .caller_number
            .clone()
            .unwrap_or_else(|| "tollbridge".into());
        self.placing = Some(Box::pin(async move {
            let callee = ledger
                .callee_of(booking)
                .await
                .map_err(|e| EdgeError::BadTarget(e.to_string()))?
                .ok_or_else(|| EdgeError::BadTarget("the booking has no callee".into()))?;
            let allowed = match &callee {
                crate::bookings::model::Callee::Number { trunk, .. } => {
                    media_allowed(&config, trunk)
                }
                crate::bookings::model::Callee::Uri { .. } => Vec::new(),
                crate::bookings::model::Callee::Expert { expert } => {
                    let devices = ledger
                        .devices(expert.clone(), now_ms())
                        .await
                        .map_err(|e| EdgeError::BadTarget(e.to_string()))?;
                    let targets = expert_targets(expert, &devices, &from_user, &offer)?;
                    tracing::info!(expert = %expert, devices = targets.len(), "ringing the expert's devices");
                    return Ok((Box::new(edge.place_fork(targets).await?), Vec::new()));
                }
            };
            let request = outbound_request(&config, &callee, from_user, offer)?;
            Ok((Box::new(edge.place_call(request).await?), allowed))
        }));
    }

    /// Ends the callee's leg in a task of its own (CANCEL while ringing,
    /// BYE once answered; an INVITE still being placed is ended once it
    /// exists), so a callee that never answers its BYE delays nothing.
    pub(super) fn hang_up_callee(&mut self) {
        let mut callee = self.callee.take();
        let placing = self.placing.take();
        self.hanging_up_callee = Some(tokio::spawn(
            async move {
                if callee.is_none()
                    && let Some(placing) = placing
                {
                    callee = placing.await.ok().map(|(leg, _)| leg);
                }
                if let Some(leg) = callee.as_mut() {
                    match tokio::time::timeout(HANG_UP_LIMIT, leg.hang_up()).await {
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot hang up the callee"),
                        Err(_) => tracing::warn!("the callee did not answer our BYE/CANCEL"),
                        Ok(Ok(())) => {}
                    }
                }
            }
            .in_current_span(),
        ));
    }
}

/// One INVITE per registered device of `expert`: to its Contact, sent
/// where its REGISTER came from (its NAT's public side) over the transport
/// it registered with.
fn expert_targets(
    expert: &str,
    devices: &[crate::ledger::Device],
    from_user: &str,
    offer: &[u8],
) -> Result<Vec<(OutboundRequest, std::net::SocketAddr)>, EdgeError> {
    let targets: Vec<_> = devices
        .iter()
        .filter_map(|device| {
            let address = device.received.parse().ok()?;
            let transport = match device.transport.as_str() {
                "tcp" => tollbridge_sip::edge::Transport::Tcp,
                "tls" => tollbridge_sip::edge::Transport::Tls,
                _ => tollbridge_sip::edge::Transport::Udp,
            };
            let request = OutboundRequest {
                request_uri: device.contact.clone(),
                from_user: from_user.to_owned(),
                offer: offer.to_vec(),
                credentials: None,
                trunk: None,
                transport: Some(transport),
            };
            Some((request, address))
        })
        .collect();
    if targets.is_empty() {
        return Err(EdgeError::Unreachable(format!(
            "expert {expert} has no registered device"
        )));
    }
    Ok(targets)
}

/// The INVITE for a booking's callee: a SIP URI as given (with the
/// credentials of its host's `[[callee]]`, for a PBX that challenges us),
/// or a number through its trunk's termination (URI template, credentials,
/// caller ID, calls-per-second limit).
fn outbound_request(
    config: &Config,
    callee: &crate::bookings::model::Callee,
    from_user: String,
    offer: Vec<u8>,
) -> Result<OutboundRequest, EdgeError> {
    use crate::bookings::model::Callee;
    match callee {
        Callee::Expert { expert } => Err(EdgeError::BadTarget(format!(
            "expert {expert}: rung through its devices"
        ))),
        Callee::Uri { uri } => Ok(OutboundRequest {
            request_uri: uri.clone(),
            from_user,
            offer,
            credentials: config
                .callees
                .iter()
                .find(|callee| callee.serves(uri))
                .and_then(|callee| callee.credentials.as_ref())
                .map(|(username, password)| (username.clone(), password.expose().to_owned())),
            trunk: None,
            transport: None,
        }),
        Callee::Number { number, trunk } => {
            let termination = config
                .trunks
                .iter()
                .find(|t| &t.name == trunk)
                .and_then(|t| t.termination.as_ref())
                .ok_or_else(|| EdgeError::BadTarget(format!("trunk {trunk} has no termination")))?;
            let credentials = match (&termination.username, &termination.password) {
                (Some(user), Some(password)) => Some((user.clone(), password.expose().to_owned())),
                _ => None,
            };
            Ok(OutboundRequest {
                request_uri: termination.uri.replace("{number}", number),
                from_user: termination.caller_id.clone().unwrap_or(from_user),
                offer,
                credentials,
                trunk: Some((
                    trunk.clone(),
                    std::num::NonZeroU32::new(termination.calls_per_second)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                )),
                transport: None,
            })
        }
    }
}
