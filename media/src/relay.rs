//! The relay's IO shell: `media.threads` dedicated threads, each a loop
//! over one epoll instance and a table of the calls it carries
//! ([`shard`]). A call is placed on the thread with the fewest calls when
//! it opens and stays there: its packets, its prompts and its cap never
//! cross threads, and no lock is shared on the packet path (the
//! per-thread call count is touched at open and close only). The
//! per-packet path is one `recv_from` per readable socket (registered
//! level-triggered) into the thread's one buffer, the bridge's decision,
//! and one non-blocking `send` out of the other leg's connected sender
//! ([`sender`]): no allocation, no lock, no log line, no task to wake.
//! Prompt frames go out from the thread's timer heap only while a prompt
//! plays. The call's owner steers it with messages through the thread's
//! inbox and hears back DTMF keys and inactivity. With `media.fast_path`
//! the thread hands each direction of a call that needs nothing but
//! forwarding to a tc program in the kernel ([`fast_path`], [`offload`])
//! and keeps every decision: the kernel forwards by the routes the thread
//! installs, and leaves it everything else.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::bridge::{Inactivity, Side};
use crate::leg::{LatchPolicy, LegStats, Peer};
use crate::ports::PortPool;
use crate::prompt::Prompt;
use crate::recording::RecordingTap;
use crate::stream::PromptMode;

use call::{OnShard, Opening};
pub use fast_path::{FastPath, FastPathError};
use shard::{Inbox, Message, ShardLoop};

/// The largest datagram relayed; anything longer is truncated by the
/// kernel and then fails the RTP length checks. G.711 at 20 ms is 172.
const DATAGRAM: usize = 2048;

/// Why a relay call could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The port range is full.
    #[error(transparent)]
    Exhausted(#[from] crate::ports::Exhausted),
    /// The relay thread is gone.
    #[error("the media relay has stopped")]
    Stopped,
    /// A socket could not be set up.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    /// The kernel fast path could not be handed to a thread.
    #[error(transparent)]
    FastPath(#[from] FastPathError),
}

/// Something the relay noticed on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// A party pressed a DTMF key (RFC 4733).
    Key(Side, char),
    /// A party sent no RTP for the armed timeout.
    Inactive(Inactivity),
}

/// Final or running counters of both legs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    /// The caller's leg.
    pub caller: LegStats,
    /// The callee's leg.
    pub callee: LegStats,
}

pub(crate) enum Control {
    SetPeer(Side, Peer),
    RestrictSources(Side, Vec<ipnet::IpNet>),
    ForwardUntil(Option<Instant>),
    Play(Side, Arc<Prompt>, PromptMode),
    Watch(Option<Duration>),
    Record(RecordingTap),
    StopRecording(Instant),
    Stats(oneshot::Sender<CallStats>),
    Close(oneshot::Sender<CallStats>),
    Srtp(Side, Box<LegSrtp>),
}

/// SRTP on one leg: what checks and decrypts the party's packets, what
/// encrypts ours to it. A part left `None` stays as it was (a re-INVITE
/// with a new key of the party's replaces only `receive`: our own
/// context must go on, or its keystream would repeat).
pub struct LegSrtp {
    /// The party's key.
    pub receive: Option<crate::srtp::Unprotector>,
    /// Our key.
    pub send: Option<crate::srtp::Protector>,
}

/// The media relay: a port pool and the threads that move the packets.
pub struct Relay {
    pool: Arc<PortPool>,
    shards: Vec<Shard>,
    /// After the shards: the threads stop before the program detaches.
    fast_path: Option<FastPath>,
    policy: LatchPolicy,
    public_ip: IpAddr,
    next_call: AtomicU64,
}

/// One relay thread: its inbox, how many calls it carries, and its
/// handle.
struct Shard {
    inbox: Inbox,
    calls: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Shard {
    fn start(index: usize) -> Result<Shard, RelayError> {
        let (shard, inbox) = ShardLoop::new()?;
        let thread = std::thread::Builder::new()
            .name(format!("tb-media-{index}"))
            .spawn(move || shard.run())?;
        Ok(Shard {
            inbox,
            calls: Arc::new(AtomicUsize::new(0)),
            thread: Some(thread),
        })
    }
}

impl Drop for Shard {
    /// Ends the thread and every call on it (their ports go back). A
    /// shard, not the relay, so that threads started before one that
    /// failed to start are stopped too.
    fn drop(&mut self) {
        self.inbox.send(Message::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("pool", &self.pool)
            .field("public_ip", &self.public_ip)
            .finish()
    }
}

impl Relay {
    /// Starts `threads` relay threads (at least one). `public_ip` is what
    /// our SDP says.
    pub fn start(
        pool: PortPool,
        policy: LatchPolicy,
        public_ip: IpAddr,
        threads: usize,
    ) -> Result<Relay, RelayError> {
        let shards = (0..threads.max(1))
            .map(Shard::start)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Relay {
            pool: Arc::new(pool),
            shards,
            fast_path: None,
            policy,
            public_ip,
            next_call: AtomicU64::new(0),
        })
    }

    /// Hands every thread the kernel fast path: from then on a call's
    /// plain RTP is forwarded by the kernel while the call allows it.
    pub fn use_fast_path(&mut self, fast_path: FastPath) -> Result<(), RelayError> {
        for shard in &self.shards {
            let routes = fast_path.routes()?;
            if !shard.inbox.send(Message::FastPath(Box::new(routes))) {
                return Err(RelayError::Stopped);
            }
        }
        self.fast_path = Some(fast_path);
        Ok(())
    }

    /// How many directions of calls the kernel forwards now (0 without
    /// the fast path).
    pub fn kernel_routes(&self) -> usize {
        self.fast_path
            .as_ref()
            .map_or(0, FastPath::routes_installed)
    }

    /// How many calls each relay thread carries now.
    pub fn calls_per_thread(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|shard| shard.calls.load(Ordering::Relaxed))
            .collect()
    }

    /// RTP/RTCP pairs in use (two per open call).
    pub fn pairs_in_use(&self) -> usize {
        self.pool.in_use()
    }

    /// Pairs the port range holds.
    pub fn capacity(&self) -> u32 {
        self.pool.capacity()
    }

    /// Keeps these RTP ports (and their RTCP ports) from new calls until
    /// `until`: ports of calls a crash left open, whose parties may still
    /// be sending.
    pub fn hold_back(&self, rtp_ports: &[u16], until: Instant) {
        self.pool.hold_back(rtp_ports, until);
    }

    /// Opens a call: two port pairs and the task that relays between them.
    /// The ports return to the pool when the [`CallMedia`] is closed or
    /// dropped.
    pub fn open_call(&self) -> Result<CallMedia, RelayError> {
        let now = Instant::now();
        let caller = self.pool.allocate(now)?;
        let callee = self.pool.allocate(now)?;
        let addresses = [
            SocketAddr::new(self.public_ip, caller.rtp_addr()?.port()),
            SocketAddr::new(self.public_ip, callee.rtp_addr()?.port()),
        ];
        let (events_tx, events) = futures_channel::mpsc::unbounded();
        let announced = Arc::new(AtomicBool::new(false));
        let (thread, shard) = self
            .shards
            .iter()
            .enumerate()
            .min_by_key(|(_, shard)| shard.calls.load(Ordering::Relaxed))
            .ok_or(RelayError::Stopped)?;
        let id = self.next_call.fetch_add(1, Ordering::Relaxed);
        let opening = Opening {
            id,
            caller,
            callee,
            announced: announced.clone(),
            policy: self.policy,
            events: events_tx,
            on_shard: OnShard::new(&shard.calls),
        };
        if !shard.inbox.send(Message::Open(Box::new(opening))) {
            return Err(RelayError::Stopped);
        }
        Ok(CallMedia {
            id,
            inbox: shard.inbox.clone(),
            events,
            addresses,
            announced,
            thread,
        })
    }
}

/// One call's media, as its owner sees it.
#[derive(Debug)]
pub struct CallMedia {
    id: u64,
    inbox: Inbox,
    /// A `futures-channel` one: it allocates per event, where tokio's
    /// allocates 32 slots and cache-padded state up front (0.7 KiB held
    /// per live call) for the few events a call has.
    events: futures_channel::mpsc::UnboundedReceiver<MediaEvent>,
    addresses: [SocketAddr; 2],
    announced: Arc<AtomicBool>,
    thread: usize,
}

impl CallMedia {
    fn send(&self, control: Control) -> bool {
        self.inbox.send(Message::Control(self.id, control))
    }

    /// The relay thread (`tb-media-N`) that carries this call, all its
    /// life.
    pub fn thread(&self) -> usize {
        self.thread
    }

    /// Records that our SDP with these ports is going out to a party: from
    /// now on they wait out the quarantine when the call ends. Ports never
    /// announced return to the pool at once.
    pub fn announce(&self) {
        self.announced.store(true, Ordering::Relaxed);
    }

    /// Both legs' RTP ports (caller, callee), stored with the call so a
    /// restart after a crash can keep them from new calls.
    pub fn rtp_ports(&self) -> [u16; 2] {
        [self.addresses[0].port(), self.addresses[1].port()]
    }

    /// The address our SDP gives a party: its leg's RTP port.
    pub fn address(&self, side: Side) -> SocketAddr {
        match side {
            Side::Caller => self.addresses[0],
            Side::Callee => self.addresses[1],
        }
    }

    /// Sets what a party's SDP said (again after a re-INVITE).
    pub fn set_peer(&self, side: Side, peer: Peer) {
        self.send(Control::SetPeer(side, peer));
    }

    /// Admits a party's media only from these networks (a trunk's media
    /// range); none admits any source.
    pub fn restrict_sources(&self, side: Side, allowed: Vec<ipnet::IpNet>) {
        self.send(Control::RestrictSources(side, allowed));
    }

    /// Stops forwarding between the parties at `at` (by the relay's clock,
    /// packet by packet), however late anything else is.
    pub fn forward_until(&self, at: Option<Instant>) {
        self.send(Control::ForwardUntil(at));
    }

    /// Plays a prompt to one party, replacing any prompt playing to it.
    pub fn play(&self, side: Side, prompt: Arc<Prompt>, mode: PromptMode) {
        self.send(Control::Play(side, prompt, mode));
    }

    /// Records both parties (and the prompts each hears) through `tap`
    /// from now on, replacing any recording running.
    pub fn record(&self, tap: RecordingTap) {
        self.send(Control::Record(tap));
    }

    /// Ends the recording at `at` (its file is as long as the talk); the
    /// recording also ends when the call's media closes.
    pub fn stop_recording(&self, at: Instant) {
        self.send(Control::StopRecording(at));
    }

    /// Makes `side` an SRTP leg, or changes its keys (see [`LegSrtp`]).
    pub fn secure(&self, side: Side, leg: LegSrtp) {
        self.send(Control::Srtp(side, Box::new(leg)));
    }

    /// Arms (or with `None` disarms) the inactivity watch.
    pub fn watch(&self, timeout: Option<Duration>) {
        self.send(Control::Watch(timeout));
    }

    /// The counters so far.
    pub async fn stats(&self) -> Option<CallStats> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Control::Stats(reply)) {
            return None;
        }
        answer.await.ok()
    }

    /// The next event; `None` once the call's relay has ended.
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await.ok()
    }

    /// Ends the call's relay, releases its ports, and returns the final
    /// counters.
    pub async fn close(self) -> Option<CallStats> {
        let (reply, answer) = oneshot::channel();
        if !self.send(Control::Close(reply)) {
            return None;
        }
        answer.await.ok()
    }
}

impl Drop for CallMedia {
    /// An owner that goes away without closing ends the call: its thread
    /// drops it and its ports return to the pool.
    fn drop(&mut self) {
        self.inbox.send(Message::Gone(self.id));
    }
}

mod call;
mod fast_path;
mod offload;
mod sender;
mod shard;

#[cfg(test)]
mod tests;
