//! One relay thread: a table of calls and the loop that serves them.
//!
//! The thread waits on one epoll instance for every socket of every call
//! it carries, for its inbox (an eventfd), and for the next timer. The
//! sockets are registered level-triggered and a readable one is read once
//! per turn: one `recvfrom`, the datagram relayed at once, and epoll
//! reports the socket again while more wait. Edge-triggered readiness (as
//! mio and tokio register) must read until the queue is empty, which costs
//! a last read that only learns so; at 50 packets a second a socket
//! almost never holds two, so that read was one more per packet (see
//! BENCHMARKS.md, "Level-triggered readiness"). The thread's one receive
//! buffer serves every call in turn.
//!
//! A call is an entry in the table, not a task: no stack, no waker, no
//! future per call, and a packet costs the system calls and the bridge's
//! decision. Prompt frames are timed by a heap of due instants; the
//! inactivity watch is one sweep of the table every half second, which
//! with the kernel fast path first retries routes the kernel refused and
//! folds in what the kernel forwarded for a call the watch could end.
//!
//! epoll and eventfd come through `nix`, the maintained safe binding of
//! the system calls (the workspace forbids `unsafe`); mio offers only
//! edge-triggered registration.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::call::{Call, Opening, PromptScratch, SOCKETS};
use super::fast_path::Routes;
use super::{Control, DATAGRAM};

/// The inbox's token; calls' sockets take the tokens below it.
const INBOX: u64 = u64::MAX;

/// The most readiness events taken from epoll in one wait.
const EVENTS: usize = 1024;

/// How often each call's inactivity watch is checked.
const INACTIVITY_TICK: Duration = Duration::from_millis(500);

/// What a relay thread is told.
pub(super) enum Message {
    /// Carry a new call.
    Open(Box<Opening>),
    /// A command for one call.
    Control(u64, Control),
    /// The call's owner is gone: end it.
    Gone(u64),
    /// Forward calls through the kernel where they allow it.
    FastPath(Box<Routes>),
    /// End every call and the thread.
    Stop,
}

/// Where a relay thread's messages go: a channel and the eventfd that makes
/// its loop look at it.
#[derive(Debug, Clone)]
pub(super) struct Inbox {
    sender: Sender<Message>,
    waker: Arc<EventFd>,
}

impl Inbox {
    /// Hands the thread `message`; false when it has stopped.
    pub fn send(&self, message: Message) -> bool {
        self.sender.send(message).is_ok() && self.waker.write(1).is_ok()
    }
}

/// A relay thread's state, owned by the thread.
pub(super) struct ShardLoop {
    poll: Epoll,
    waker: Arc<EventFd>,
    inbox: Receiver<Message>,
    /// Boxed: a call is 1.5 KiB, and a table that grows by doubling
    /// would keep up to as much again in empty slots.
    calls: Vec<Option<Box<Call>>>,
    free: Vec<usize>,
    slots: HashMap<u64, usize>,
    /// Prompt frame times: (when, slot, call id); stale entries are
    /// skipped when they come up.
    prompts: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_sweep: Instant,
    scratch: PromptScratch,
    /// The kernel fast path's routes, when `media.fast_path` is on.
    routes: Option<Box<Routes>>,
}

impl ShardLoop {
    /// A thread's loop and its inbox, before the thread starts.
    pub fn new() -> io::Result<(ShardLoop, Inbox)> {
        let poll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker = Arc::new(EventFd::from_flags(
            EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
        )?);
        poll.add(&*waker, EpollEvent::new(EpollFlags::EPOLLIN, INBOX))?;
        let (sender, inbox) = std::sync::mpsc::channel();
        let shard = ShardLoop {
            poll,
            waker: waker.clone(),
            inbox,
            calls: Vec::new(),
            free: Vec::new(),
            slots: HashMap::new(),
            prompts: BinaryHeap::new(),
            next_sweep: Instant::now() + INACTIVITY_TICK,
            scratch: PromptScratch::default(),
            routes: None,
        };
        Ok((shard, Inbox { sender, waker }))
    }

    /// Serves the calls until told to stop (or every inbox is gone).
    pub fn run(mut self) {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut buffer = Box::new([0; DATAGRAM]);
        // Two clock reads per turn, none per packet: every datagram epoll
        // reports arrived before it returned, so the time it returned is
        // their arrival time (and their cut is judged by it); the time
        // after the batch times the prompts and the next wait.
        let mut now = Instant::now();
        loop {
            let ready = match self.poll.wait(&mut events, self.timeout(now)) {
                Ok(ready) => ready,
                Err(Errno::EINTR) => {
                    now = Instant::now();
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "media relay thread cannot wait for its sockets");
                    return;
                }
            };
            let arrived = Instant::now();
            for event in events.iter().take(ready) {
                if event.data() == INBOX {
                    if !self.read_inbox() {
                        return;
                    }
                } else if let Ok(token) = usize::try_from(event.data()) {
                    self.readable(token, &mut buffer, arrived);
                }
            }
            now = Instant::now();
            self.play_prompts(now);
            if now >= self.next_sweep {
                for call in self.calls.iter_mut().flatten() {
                    if let Some(routes) = &mut self.routes {
                        call.sweep_fast_path(routes, now);
                    }
                    call.check_inactivity(now);
                }
                self.next_sweep = now + INACTIVITY_TICK;
            }
        }
    }

    /// How long the loop may sleep: until the next prompt frame or sweep,
    /// rounded up to epoll's millisecond (rounded down, the loop would
    /// wake before the frame is due and spin until it is).
    fn timeout(&self, now: Instant) -> EpollTimeout {
        let mut until = self.next_sweep;
        if let Some(Reverse((at, _, _))) = self.prompts.peek() {
            until = until.min(*at);
        }
        let millis = until
            .saturating_duration_since(now)
            .as_micros()
            .div_ceil(1000);
        EpollTimeout::from(u16::try_from(millis).unwrap_or(u16::MAX))
    }

    /// Relays a datagram waiting on the socket behind `token`. A packet
    /// never moves a call's prompt frames (only commands and the frames
    /// themselves do), so the prompt timer is not looked at here.
    fn readable(&mut self, token: usize, buffer: &mut [u8; DATAGRAM], now: Instant) {
        let slot = token / SOCKETS;
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        let routes = self.routes.as_deref_mut();
        call.on_readable(token % SOCKETS, buffer, now, &self.poll, routes);
    }

    /// Puts the call's next prompt frame on the heap when it changed.
    fn arm_prompt(
        prompts: &mut BinaryHeap<Reverse<(Instant, usize, u64)>>,
        slot: usize,
        call: &mut Call,
    ) {
        let next = call.next_prompt_at();
        if next != call.prompt_armed {
            if let Some(at) = next {
                prompts.push(Reverse((at, slot, call.id)));
            }
            call.prompt_armed = next;
        }
    }

    /// Sends the prompt frames due by `now`.
    fn play_prompts(&mut self, now: Instant) {
        while let Some(Reverse((at, slot, id))) = self.prompts.peek().copied() {
            if at > now {
                break;
            }
            self.prompts.pop();
            let Some(Some(call)) = self.calls.get_mut(slot) else {
                continue;
            };
            if call.id != id || call.prompt_armed.is_none_or(|armed| armed > now) {
                continue;
            }
            call.prompt_armed = None;
            call.play_prompts(now, &mut self.scratch);
            Self::arm_prompt(&mut self.prompts, slot, call);
        }
    }

    /// Takes every message waiting; false when the thread must stop.
    fn read_inbox(&mut self) -> bool {
        // Reset before reading the channel: a message sent after this
        // writes the eventfd again, so none waits unseen.
        let _ = self.waker.read();
        loop {
            match self.inbox.try_recv() {
                Ok(Message::Open(opening)) => self.open(*opening),
                Ok(Message::Control(id, control)) => self.control(id, control),
                Ok(Message::Gone(id)) => {
                    self.end(id);
                }
                Ok(Message::FastPath(routes)) => self.routes = Some(routes),
                Ok(Message::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn open(&mut self, opening: Opening) {
        let id = opening.id;
        let slot = self.free.pop().unwrap_or(self.calls.len());
        match Call::open(opening, &self.poll, slot) {
            Ok(call) => {
                if slot == self.calls.len() {
                    self.calls.push(Some(Box::new(call)));
                } else {
                    self.calls[slot] = Some(Box::new(call));
                }
                self.slots.insert(id, slot);
            }
            Err(e) => {
                // The ports go back with the opening; the owner hears the
                // call's media is gone.
                if slot < self.calls.len() {
                    self.free.push(slot);
                }
                tracing::error!(error = %e, "cannot register media sockets");
            }
        }
    }

    fn control(&mut self, id: u64, control: Control) {
        let Some(&slot) = self.slots.get(&id) else {
            return;
        };
        let Some(Some(call)) = self.calls.get_mut(slot) else {
            return;
        };
        // What the kernel forwarded is counted before the command looks at
        // the call, and the routes follow what it changed.
        let now = Instant::now();
        if let Some(routes) = &mut self.routes {
            call.sync_fast_path(routes, now);
        }
        if let Some(reply) = call.control(control) {
            if let Some(call) = self.end(id) {
                // The ports are back in the pool before the owner hears
                // the call is closed.
                let stats = call.stats();
                drop(call);
                let _ = reply.send(stats);
            }
            return;
        }
        if let Some(routes) = &mut self.routes {
            call.sync_fast_path(routes, now);
        }
        Self::arm_prompt(&mut self.prompts, slot, call);
    }

    /// Takes the call out of the table, the poll and the kernel's routes;
    /// the caller drops it.
    fn end(&mut self, id: u64) -> Option<Box<Call>> {
        let slot = self.slots.remove(&id)?;
        let mut call = self.calls.get_mut(slot)?.take()?;
        if let Some(routes) = &mut self.routes {
            call.withdraw(routes);
        }
        call.deregister(&self.poll);
        self.free.push(slot);
        Some(call)
    }
}
