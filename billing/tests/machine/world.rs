//! The ledger's row, Stripe and the clock, and the driver loop that is
//! the daemon's in miniature: pick up what is due, carry out the
//! machine's commands, feed back the answers, die at any command.

use tollbridge_billing::settlement::machine::{
    Answer, Command, Event, Facts, Movement, Outcome, Request, SettlementState,
};
use tollbridge_billing::stripe::GatewayError;

use super::stripe::Stripe;

/// A settlement row as the ledger keeps it.
#[derive(Debug, Clone)]
pub struct Row {
    pub facts: Facts,
    pub state: SettlementState,
    pub tries: u32,
    pub next_at: Option<i64>,
    pub outcome: Option<Outcome>,
}

/// The ledger's rows, Stripe and the clock.
pub struct World {
    pub stripe: Stripe,
    pub row: Row,
    pub now: i64,
    /// Whether another node holds the row's claim.
    pub claimed_elsewhere: bool,
}

/// Where a pick-up of the row stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// The machine had nothing more to do.
    Quiet,
    /// The process died before carrying out command number `n`.
    Crashed,
}

impl World {
    pub fn new(stripe: Stripe, facts: Facts, state: SettlementState) -> World {
        World {
            stripe,
            row: Row {
                facts,
                state,
                tries: 0,
                next_at: None,
                outcome: None,
            },
            now: 1_800_000_000_000,
            claimed_elsewhere: false,
        }
    }

    /// One pick-up of the row by the worker, carrying out at most
    /// `crash_before` commands (all when `None`) before the process dies.
    pub fn pick_up(&mut self, crash_before: Option<usize>) -> (Stop, Vec<Command>) {
        let mut movement = Movement::new(self.row.facts.clone(), self.row.state, self.row.tries);
        movement.handle(Event::Due, self.now);
        self.drive(movement, crash_before)
    }

    pub fn drive(
        &mut self,
        mut movement: Movement,
        crash_before: Option<usize>,
    ) -> (Stop, Vec<Command>) {
        let mut done = Vec::new();
        while let Some(command) = movement.poll() {
            if crash_before.is_some_and(|n| done.len() >= n) {
                return (Stop::Crashed, done);
            }
            done.push(command.clone());
            match command {
                Command::Claim if self.claimed_elsewhere => {
                    movement.handle(Event::ClaimRefused, self.now)
                }
                Command::Claim => {
                    self.row.state = SettlementState::Sent;
                    self.row.tries += 1;
                    movement.handle(Event::Claimed, self.now);
                }
                Command::Send(request) => {
                    let answer = match self.stripe.handle(request.clone()) {
                        Ok(answer) => answer,
                        Err(why) => lost(&request, why),
                    };
                    // Stripe takes a little virtual time.
                    self.now += 300;
                    movement.handle(Event::Answered(answer), self.now);
                }
                Command::Record(outcome) => {
                    self.row.state = outcome.state();
                    self.row.next_at = movement.poll_timeout();
                    self.row.outcome = Some(outcome);
                }
            }
        }
        (Stop::Quiet, done)
    }

    /// Moves the clock to the row's next look, if it has one.
    pub fn advance_to_timer(&mut self) -> Option<i64> {
        let at = self.row.next_at?;
        let waited = at - self.now;
        self.now = self.now.max(at);
        Some(waited)
    }

    /// Picks the row up until it concludes (or `rounds` run out),
    /// advancing the clock to each look again; returns the waits.
    pub fn settle(&mut self, rounds: usize) -> Vec<i64> {
        let mut waits = Vec::new();
        for _ in 0..rounds {
            if !self.row.state.is_open() {
                break;
            }
            self.pick_up(None);
            if let Some(waited) = self.advance_to_timer() {
                waits.push(waited);
            }
        }
        waits
    }
}

/// The answer a driver gives when the request got no answer.
pub fn lost(request: &Request, why: String) -> Answer {
    let error = GatewayError::Unknown(why);
    match request {
        Request::Hold(_)
        | Request::Capture { .. }
        | Request::Cancel { .. }
        | Request::Increment { .. }
        | Request::Retrieve { .. } => Answer::Intent(Err(error)),
        Request::Find { .. } => Answer::Found(Err(error)),
        Request::Refund(_) => Answer::Refund(Err(error)),
        Request::FindRefund { .. } => Answer::FoundRefund(Err(error)),
    }
}
