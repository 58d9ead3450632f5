//! Ringing every device of an expert at once (parallel forking, RFC 3261
//! §16.7 done by a B2BUA): one outbound leg to the daemon, one INVITE per
//! device behind it. The first device to ring makes the leg ring; the
//! first to answer is the leg, and every other gets CANCEL (a device whose
//! 200 crosses our CANCEL is sent BYE); when every device has refused,
//! the leg fails with the response that says most ([`best_final`]).

use std::net::SocketAddr;

use super::outbound::{Branch, OutboundEvent, OutboundLeg, OutboundRequest};
use super::{EdgeError, SipEdge, Transport};

/// How long a cancelled device is watched for a 200 that crossed our
/// CANCEL (Timer B, 64 × T1), to send it BYE.
const CROSSED_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(32);

/// How a fork stands.
#[derive(Debug, Default)]
pub(crate) struct Fork {
    /// The leg has told the daemon it rings.
    ringing_told: bool,
    /// The final refusals so far, in arrival order.
    refusals: Vec<u16>,
}

/// The refusal a forked leg reports once every device has refused (RFC
/// 3261 §16.7 step 6): a 6xx if any (a global refusal), else the lowest
/// class; among 4xx, 486 Busy Here over 480 over the first that came,
/// since the caller is better told the expert is busy than unavailable.
pub fn best_final(refusals: &[u16]) -> Option<u16> {
    if let Some(global) = refusals.iter().find(|code| (600..700).contains(*code)) {
        return Some(*global);
    }
    let lowest_class = refusals.iter().map(|code| code / 100).min()?;
    let class: Vec<u16> = refusals
        .iter()
        .copied()
        .filter(|code| code / 100 == lowest_class)
        .collect();
    [486, 480]
        .into_iter()
        .find(|preferred| class.contains(preferred))
        .or_else(|| class.first().copied())
}

impl SipEdge {
    /// Rings every target at once (each a Request-URI, the address to send
    /// it to, and the transport it registered over; the dialog's later
    /// requests go to that address too, see `nat`) and returns one leg
    /// that rings when the first rings and answers when the first answers.
    /// Fails only when no target could be placed at all.
    pub async fn place_fork(
        &self,
        targets: Vec<(OutboundRequest, SocketAddr)>,
    ) -> Result<OutboundLeg, EdgeError> {
        let placed = futures_util::future::join_all(targets.into_iter().map(
            |(request, address)| async move {
                let transport = request.transport.unwrap_or(Transport::Udp);
                // Its ACK, BYE and re-INVITEs go where the INVITE goes.
                self.nat.remember(&request.request_uri, address, transport);
                self.place_on(request, transport, vec![address]).await
            },
        ))
        .await;
        let mut branches = Vec::new();
        let mut last_error = None;
        for leg in placed {
            match leg {
                Ok(leg) => branches.push(leg.main),
                Err(e) => last_error = Some(e),
            }
        }
        let mut branches = branches.into_iter();
        let Some(main) = branches.next() else {
            return Err(last_error.unwrap_or(EdgeError::Unreachable("no device to ring".into())));
        };
        let others: Vec<Branch> = branches.collect();
        let fork = (!others.is_empty()).then(Fork::default);
        Ok(OutboundLeg {
            call_id: main.call_id.clone(),
            main,
            others,
            fork,
        })
    }
}

impl OutboundLeg {
    /// The next event of a leg that rang several devices.
    pub(crate) async fn next_forked_event(&mut self) -> Option<OutboundEvent> {
        loop {
            let Some(fork) = self.fork.as_mut() else {
                return self.main.next_event().await;
            };
            // Which device spoke: 0 is `main`, i > 0 is `others[i - 1]`.
            let (event, index) = {
                let mut all: Vec<&mut Branch> = Vec::with_capacity(1 + self.others.len());
                all.push(&mut self.main);
                all.extend(self.others.iter_mut());
                let waits = all.into_iter().map(|branch| Box::pin(branch.next_event()));
                let (event, index, _) = futures_util::future::select_all(waits).await;
                (event, index)
            };
            match event {
                Some(OutboundEvent::Ringing { .. }) if fork.ringing_told => {}
                Some(OutboundEvent::Ringing { .. }) => {
                    fork.ringing_told = true;
                    // Early media from one of several phones is not the
                    // call's: the caller hears ringing from us.
                    return Some(OutboundEvent::Ringing { early_media: None });
                }
                Some(OutboundEvent::Answered { answer }) => {
                    if index > 0 {
                        let winner = self.others.swap_remove(index - 1);
                        let loser = std::mem::replace(&mut self.main, winner);
                        self.others.push(loser);
                    }
                    for other in self.others.drain(..) {
                        tokio::spawn(abandon(other));
                    }
                    self.fork = None;
                    self.call_id = self.main.call_id.clone();
                    return Some(OutboundEvent::Answered { answer });
                }
                Some(OutboundEvent::Failed { code, .. }) => {
                    fork.refusals.push(code);
                    if let Some(event) = self.drop_branch(index) {
                        return Some(event);
                    }
                }
                Some(OutboundEvent::Ended(why)) => {
                    tracing::debug!(%why, "a forked INVITE ended without an answer");
                    if let Some(event) = self.drop_branch(index) {
                        return Some(event);
                    }
                }
                None => {
                    if let Some(event) = self.drop_branch(index) {
                        return Some(event);
                    }
                }
                // A device that has not answered cannot hang up or
                // re-INVITE: nothing to tell.
                Some(OutboundEvent::HungUp | OutboundEvent::Reoffer(_)) => {}
            }
        }
    }

    /// Forgets a device that refused or ended; when it was the last, the
    /// leg's own end: the best refusal, or the end of the last one.
    fn drop_branch(&mut self, index: usize) -> Option<OutboundEvent> {
        if self.others.is_empty() {
            let fork = self.fork.take()?;
            return Some(match best_final(&fork.refusals) {
                Some(code) => OutboundEvent::Failed {
                    code,
                    twilio_error: None,
                },
                None => OutboundEvent::Ended("no device answered".into()),
            });
        }
        if index == 0 {
            // Keep a ringing device as the leg's main one.
            let next = self.others.swap_remove(0);
            self.main = next;
        } else {
            self.others.swap_remove(index - 1);
        }
        None
    }
}

/// Cancels a device that lost the race, and sends BYE should its answer
/// have crossed the CANCEL.
async fn abandon(mut branch: Branch) {
    if let Err(e) = branch.hang_up().await {
        tracing::debug!(error = %e, call_id = %branch.call_id, "cannot cancel a forked INVITE");
    }
    let crossed = tokio::time::timeout(CROSSED_ANSWER_WAIT, async {
        while let Some(event) = branch.next_event().await {
            if matches!(event, OutboundEvent::Answered { .. }) {
                return true;
            }
        }
        false
    })
    .await;
    if crossed == Ok(true) {
        tracing::info!(call_id = %branch.call_id, "a second device answered after the first: sending it BYE");
        let _ = branch.hang_up().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (refusals in arrival order, what the leg reports)
    #[test]
    fn the_refusal_that_says_most_is_reported() {
        let table: [(&[u16], Option<u16>); 9] = [
            (&[], None),
            (&[480], Some(480)),
            (&[480, 486], Some(486)),
            (&[486, 480], Some(486)),
            (&[404, 408], Some(404)),
            (&[503, 480], Some(480)),
            (&[500, 503], Some(500)),
            (&[486, 603], Some(603)),
            (&[408, 480, 487], Some(480)),
        ];
        for (refusals, reported) in table {
            assert_eq!(best_final(refusals), reported, "{refusals:?}");
        }
    }
}
