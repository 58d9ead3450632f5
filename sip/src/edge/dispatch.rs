//! The dispatcher: every transaction the stack hands the edge that no
//! dialog claims, turned into an answer (OPTIONS, stray BYE/CANCEL, 405),
//! a REGISTER for the registrar, or a new call for the daemon.

use super::*;

/// Turns incoming transactions into answers or calls.
pub(super) struct Dispatcher {
    pub(super) gate: Arc<Gate>,
    pub(super) dialogs: Arc<DialogLayer>,
    pub(super) contacts: Contacts,
    pub(super) refusal: Arc<Refusal>,
    pub(super) calls: mpsc::Sender<InboundCall>,
    pub(super) registers: Option<mpsc::Sender<RegisterRequest>>,
}

/// Why new calls are refused with 503, if they are.
#[derive(Debug, Default)]
pub(super) struct Refusal {
    /// For good: the daemon is stopping.
    pub(super) draining: AtomicBool,
    /// For now: the daemon cannot take calls.
    pub(super) unavailable: AtomicBool,
}

impl Refusal {
    pub(super) fn refuses(&self) -> bool {
        self.draining.load(Ordering::SeqCst) || self.unavailable.load(Ordering::SeqCst)
    }
}

impl Dispatcher {
    pub(super) async fn run(self, mut incoming: TransactionReceiver) {
        while let Some(mut tx) = incoming.recv().await {
            if let Some(mut dialog) = self.dialogs.match_dialog(&tx) {
                tokio::spawn(async move {
                    if let Err(e) = dialog.handle(&mut tx).await {
                        tracing::debug!(error = %e, "in-dialog request failed");
                    }
                });
                continue;
            }
            match tx.original.method {
                Method::Invite => self.new_call(tx),
                // A dispatcher (Kamailio) probes with OPTIONS: while
                // draining we must drop out of its rotation, as for INVITE.
                Method::Options if self.refusal.refuses() => {
                    tokio::spawn(async move { tx.reply(StatusCode::ServiceUnavailable).await });
                }
                Method::Options => {
                    let headers = vec![
                        Header::Other("Allow".into(), allow(self.registers.is_some()).into()),
                        Header::Other("Accept".into(), "application/sdp".into()),
                    ];
                    tokio::spawn(async move { tx.reply_with(StatusCode::OK, headers, None).await });
                }
                Method::Register if self.registers.is_some() => self.register(tx),
                Method::Ack => {}
                Method::Bye | Method::Cancel => {
                    tokio::spawn(
                        async move { tx.reply(StatusCode::CallTransactionDoesNotExist).await },
                    );
                }
                _ => {
                    let allow = allow(self.registers.is_some());
                    let headers = vec![Header::Other("Allow".into(), allow.into())];
                    tokio::spawn(async move {
                        tx.reply_with(StatusCode::MethodNotAllowed, headers, None)
                            .await
                    });
                }
            }
        }
    }

    /// Hands a REGISTER to the registrar (503 when it is behind).
    fn register(&self, tx: Transaction) {
        let Some(registers) = &self.registers else {
            return;
        };
        let transport = Transport::of(tx.connection.as_ref());
        let source = describe(&tx).source;
        let request = RegisterRequest::read(tx, source, transport);
        if let Err(
            mpsc::error::TrySendError::Full(request) | mpsc::error::TrySendError::Closed(request),
        ) = registers.try_send(request)
        {
            tokio::spawn(request.slow_down(5));
        }
    }

    fn contact_for(&self, tx: &Transaction) -> &rsipstack::sip::Uri {
        self.contacts
            .for_transport(Transport::of(tx.connection.as_ref()))
    }

    fn new_call(&self, mut tx: Transaction) {
        if self.refusal.refuses() {
            tokio::spawn(async move { tx.reply(StatusCode::ServiceUnavailable).await });
            return;
        }
        // An INVITE with a To tag that matched no dialog: RFC 3261 §12.2.2.
        if tx
            .original
            .to_header()
            .ok()
            .and_then(|to| to.tag().ok().flatten())
            .is_some()
        {
            tokio::spawn(async move { tx.reply(StatusCode::CallTransactionDoesNotExist).await });
            return;
        }
        let (states, receiver) = self.dialogs.new_dialog_state_channel();
        let mut dialog = match self.dialogs.get_or_create_server_invite(
            &tx,
            states,
            None,
            Some(self.contact_for(&tx).clone()),
        ) {
            Ok(dialog) => dialog,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a dialog for an INVITE");
                tokio::spawn(async move { tx.reply(StatusCode::ServerInternalError).await });
                return;
            }
        };
        let dialog_for_leg = dialog.clone();
        let transport = Transport::of(tx.connection.as_ref());
        let mut details = describe(&tx);
        details.trunk = self.gate.trunk_for(details.source.ip()).unwrap_or_default();
        // The dialog task sends 100 Trying first, then runs the transaction.
        tokio::spawn(async move {
            if let Err(e) = dialog.handle(&mut tx).await {
                tracing::debug!(error = %e, "invite transaction ended with an error");
            }
        });
        // Hand the call over only once the dialog task has taken the INVITE:
        // it reports Calling, then sends the 100 before it reads anything
        // the daemon queues. So 100 Trying always goes out first, and a
        // daemon that rings at once cannot make the dialog skip it.
        let calls = self.calls.clone();
        let dialogs = self.dialogs.clone();
        tokio::spawn(async move {
            let mut receiver = receiver;
            let first = tokio::time::timeout(std::time::Duration::from_secs(2), receiver.recv())
                .await
                .map(|state| state.map(|boxed| *boxed));
            let pending = match first {
                Ok(Some(DialogState::Calling(_))) => None,
                Ok(Some(other)) => Some(other),
                Ok(None) => return,
                Err(_) => {
                    tracing::warn!(call_id = %details.call_id, "the INVITE transaction was slow to start");
                    None
                }
            };
            let leg = InboundLeg::new(leg::Leg::new(
                dialog_for_leg,
                receiver,
                pending,
                dialogs,
                transport,
            ));
            let call = details.into_call(leg);
            if let Err(
                mpsc::error::TrySendError::Full(call) | mpsc::error::TrySendError::Closed(call),
            ) = calls.try_send(call)
            {
                // Nobody can take the call now: let the trunk try another host.
                let mut leg = call.leg;
                let _ = leg.reject(503);
            }
        });
    }
}

/// What the edge learned of a new call before it has a leg to hand over.
struct CallDetails {
    trunk: String,
    source: SocketAddr,
    call_id: String,
    called: Option<String>,
    caller: Option<String>,
    asserted_identity: Option<String>,
    twilio_call_sid: Option<String>,
    offer: Vec<u8>,
}

impl CallDetails {
    fn into_call(self, leg: InboundLeg) -> InboundCall {
        InboundCall {
            trunk: self.trunk,
            source: self.source,
            call_id: self.call_id,
            called: self.called,
            caller: self.caller,
            asserted_identity: self.asserted_identity,
            twilio_call_sid: self.twilio_call_sid,
            offer: self.offer,
            leg,
        }
    }
}

fn describe(tx: &Transaction) -> CallDetails {
    let request = &tx.original;
    let source = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr())
        .and_then(|a| a.get_socketaddr().ok())
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    CallDetails {
        trunk: String::new(),
        source,
        call_id: header_value(&request.headers, "Call-ID").unwrap_or_default(),
        called: request.uri.user().map(str::to_owned),
        caller: header_value(&request.headers, "From")
            .as_deref()
            .and_then(user_part),
        asserted_identity: header_value(&request.headers, "P-Asserted-Identity")
            .as_deref()
            .and_then(user_part),
        twilio_call_sid: header_value(&request.headers, "X-Twilio-CallSid"),
        offer: request.body.clone(),
    }
}
