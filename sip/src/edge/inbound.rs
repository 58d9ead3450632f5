//! Inbound legs: a call offered to us, which the daemon rings, answers,
//! rejects or ends.

use rsipstack::dialog::dialog::{DialogState, TerminatedReason, TransactionHandle};
use rsipstack::sip::{Header, StatusCode};
use std::net::SocketAddr;

use super::EdgeError;
use super::leg::Leg;

/// A new call, as the edge received it. The edge has already answered
/// `100 Trying`.
#[derive(Debug)]
pub struct InboundCall {
    /// The trunk whose ACL admitted the source.
    pub trunk: String,
    /// Where the INVITE came from.
    pub source: SocketAddr,
    /// The SIP Call-ID.
    pub call_id: String,
    /// The Request-URI's user part: the dialled number.
    pub called: Option<String>,
    /// The From URI's user part: the caller ID as presented.
    pub caller: Option<String>,
    /// The P-Asserted-Identity URI's user part, when present.
    pub asserted_identity: Option<String>,
    /// Twilio's `X-Twilio-CallSid`, when present.
    pub twilio_call_sid: Option<String>,
    /// The offer (SDP), possibly empty.
    pub offer: Vec<u8>,
    /// Control of the leg.
    pub leg: InboundLeg,
}

/// What happened on an inbound leg.
#[derive(Debug)]
pub enum LegEvent {
    /// The caller ACKed our 200: the leg is up (reported once).
    Confirmed,
    /// The caller cancelled before we answered (they got 487).
    Cancelled,
    /// The caller hung up (sent BYE; we answered 200).
    HungUp,
    /// The caller sent a re-INVITE (hold, unhold, new media address);
    /// answer it with [`Reoffer::accept`] or [`Reoffer::reject`].
    Reoffer(Reoffer),
    /// The leg ended for another reason (no ACK, transport failure, our own
    /// final response); the text says which.
    Ended(String),
}

/// A re-INVITE waiting for our answer.
#[derive(Debug)]
pub struct Reoffer {
    /// The new offer (SDP), possibly empty.
    pub offer: Vec<u8>,
    handle: TransactionHandle,
}

impl Reoffer {
    pub(crate) fn new(offer: Vec<u8>, handle: TransactionHandle) -> Self {
        Reoffer { offer, handle }
    }

    /// Answers 200 with our SDP.
    pub async fn accept(self, answer: Vec<u8>) -> Result<(), EdgeError> {
        self.handle
            .respond(StatusCode::OK, Some(vec![sdp_content_type()]), Some(answer))
            .await
            .map_err(|e| EdgeError::Dialog(e.to_string()))
    }

    /// Answers with a failure code (488 when the offer is unacceptable).
    pub async fn reject(self, code: u16) -> Result<(), EdgeError> {
        self.handle
            .reply(StatusCode::from(code))
            .await
            .map_err(|e| EdgeError::Dialog(e.to_string()))
    }
}

/// Control of one inbound leg.
pub struct InboundLeg {
    leg: Leg,
    confirmed: bool,
}

impl std::fmt::Debug for InboundLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundLeg")
            .field("dialog", &self.leg.id())
            .finish()
    }
}

fn sdp_content_type() -> Header {
    Header::ContentType("application/sdp".into())
}

impl InboundLeg {
    pub(crate) fn new(leg: Leg) -> Self {
        InboundLeg {
            leg,
            confirmed: false,
        }
    }

    /// Sends `180 Ringing`, or `183 Session Progress` with early media SDP.
    pub fn ring(&self, early_media: Option<Vec<u8>>) -> Result<(), EdgeError> {
        let headers = early_media.as_ref().map(|_| vec![sdp_content_type()]);
        self.leg
            .dialog
            .ringing(headers, early_media)
            .map_err(|e| EdgeError::Dialog(e.to_string()))
    }

    /// Sends `200 OK` with our SDP answer; [`LegEvent::Confirmed`] follows
    /// when the caller ACKs.
    pub fn answer(&self, sdp: Vec<u8>) -> Result<(), EdgeError> {
        self.leg
            .dialog
            .accept(Some(vec![sdp_content_type()]), Some(sdp))
            .map_err(|e| EdgeError::Dialog(e.to_string()))
    }

    /// Sends a final failure response (see [`crate::reject`] for which).
    pub fn reject(&mut self, code: u16) -> Result<(), EdgeError> {
        self.leg.mark_ended();
        self.leg
            .dialog
            .reject(Some(StatusCode::from(code)), None)
            .map_err(|e| EdgeError::Dialog(e.to_string()))
    }

    /// Ends the leg: an answered one with BYE (to the caller's Contact,
    /// with the Record-Route set as Route headers), an unanswered one with
    /// 603 (a code Twilio does not fail over on).
    pub async fn hang_up(&mut self) -> Result<(), EdgeError> {
        self.leg.end().await
    }

    /// What it takes to end this leg's dialog after a restart; meaningful
    /// once [`InboundLeg::answer`] has been called.
    pub fn dialog_record(&self) -> super::DialogRecord {
        self.leg.record()
    }

    /// The next event, or `None` once the leg is over and nothing more
    /// will happen.
    pub async fn next_event(&mut self) -> Option<LegEvent> {
        loop {
            let event = match self.leg.next_state().await? {
                // The ACK of a re-INVITE's 200 confirms again; report once.
                DialogState::Confirmed(..) if self.confirmed => continue,
                DialogState::Confirmed(..) => {
                    self.confirmed = true;
                    LegEvent::Confirmed
                }
                DialogState::Updated(_, request, handle) => {
                    LegEvent::Reoffer(Reoffer::new(request.body, handle))
                }
                DialogState::Terminated(_, reason) => match reason {
                    TerminatedReason::UacCancel => LegEvent::Cancelled,
                    TerminatedReason::UacBye => LegEvent::HungUp,
                    other => LegEvent::Ended(format!("{other:?}")),
                },
                _ => continue,
            };
            return Some(event);
        }
    }
}
