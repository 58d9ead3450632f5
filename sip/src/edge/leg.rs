//! What inbound and outbound legs share: the dialog, its state stream
//! (with a state the edge read before handing the leg over), answers to
//! in-dialog OPTIONS/INFO, and ending a leg its owner forgot.

use std::sync::Arc;

use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::StatusCode;

use super::EdgeError;

/// One dialog owned by a leg.
pub(crate) struct Leg {
    pub(crate) dialog: InviteDialog,
    states: DialogStateReceiver,
    pending: Option<DialogState>,
    dialogs: Arc<DialogLayer>,
    id: DialogId,
    transport: super::Transport,
    ended: bool,
}

impl Leg {
    pub(crate) fn new(
        dialog: InviteDialog,
        states: DialogStateReceiver,
        pending: Option<DialogState>,
        dialogs: Arc<DialogLayer>,
        transport: super::Transport,
    ) -> Self {
        let id = dialog.id();
        Leg {
            dialog,
            states,
            pending,
            dialogs,
            id,
            transport,
            ended: false,
        }
    }

    /// What it takes to end this dialog after a restart.
    pub(crate) fn record(&self) -> super::DialogRecord {
        super::DialogRecord::of(&self.dialog, self.transport)
    }

    /// The dialog's id, for `Debug`.
    pub(crate) fn id(&self) -> String {
        self.id.to_string()
    }

    /// The next state the owner must see. In-dialog OPTIONS and INFO are
    /// answered 200 here; a terminated dialog is forgotten by the layer.
    pub(crate) async fn next_state(&mut self) -> Option<DialogState> {
        // Nothing but the channel's receive is held while waiting: this
        // future sits in every call's task for the whole call.
        loop {
            if self.pending.is_none() {
                self.pending = Some(*self.states.recv().await?);
            }
            let handle = match self.pending.take()? {
                DialogState::Options(_, _, handle) | DialogState::Info(_, _, handle) => handle,
                state @ DialogState::Terminated(..) => {
                    self.ended = true;
                    self.dialogs.remove_dialog(&self.id);
                    return Some(state);
                }
                other => return Some(other),
            };
            let _ = Box::pin(handle.reply(StatusCode::OK)).await;
        }
    }

    /// Marks the leg ended by its owner (a final response was sent).
    pub(crate) fn mark_ended(&mut self) {
        self.ended = true;
    }

    /// Ends the dialog (see [`end_dialog`]).
    pub(crate) async fn end(&mut self) -> Result<(), EdgeError> {
        self.ended = true;
        end_dialog(&self.dialog).await
    }
}

impl Drop for Leg {
    /// A leg dropped before it ended is ended, so nobody is left ringing,
    /// or talking to nobody, by a forgotten leg.
    fn drop(&mut self) {
        if self.ended {
            // rsipstack keeps every dialog it registered until it is told
            // to forget it: one never removed holds its channels and
            // transaction state for the life of the process.
            self.dialogs.remove_dialog(&self.id);
            return;
        }
        let dialog = self.dialog.clone();
        let dialogs = self.dialogs.clone();
        let id = self.id.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = end_dialog(&dialog).await;
                dialogs.remove_dialog(&id);
            });
        }
    }
}

/// Ends a dialog whichever side it is: an unanswered incoming INVITE gets
/// 603 (Twilio does not fail over on it), anything else CANCEL (ringing
/// outbound) or BYE (answered).
async fn end_dialog(dialog: &InviteDialog) -> Result<(), EdgeError> {
    let unanswered_uas = dialog.role() == rsipstack::transaction::key::TransactionRole::Server
        && matches!(
            dialog.state(),
            DialogState::Calling(_) | DialogState::Trying(_) | DialogState::Early(..)
        );
    let result = if unanswered_uas {
        dialog.reject(Some(StatusCode::Decline), None)
    } else {
        dialog.hangup().await
    };
    result.map_err(|e| EdgeError::Dialog(e.to_string()))
}
