//! One call's kernel routes ([`super::fast_path`]): per direction, the
//! route the kernel forwards it by, what the route was made from, and how
//! much of what it forwarded the bridge has been told; and the route last
//! tried, so a packet does not try again one the kernel refused.

use super::fast_path::{KernelClock, Key, Route, RouteCounters, Routes};
use crate::bridge::{Bridge, Forwarded, Offload, Side};

/// What a direction's route is made from: where it applies and what the
/// bridge allowed.
pub(super) type Wanted = Option<(Key, Offload)>;

/// A route installed for one direction.
struct Offloaded {
    key: Key,
    /// What it was made from; a change makes a new route.
    offload: Offload,
    /// What it had forwarded at the last fold.
    folded: RouteCounters,
}

/// A call's routes, per side of the party whose RTP they forward.
#[derive(Default)]
pub(super) struct CallRoutes {
    offloaded: [Option<Offloaded>; 2],
    tried: [Wanted; 2],
}

impl CallRoutes {
    /// Whether the kernel forwards either direction now.
    pub fn any(&self) -> bool {
        self.offloaded.iter().any(Option::is_some)
    }

    /// Whether `side`'s route is other than `wanted` (none is, or another).
    pub fn differs(&self, side: Side, wanted: &Wanted) -> bool {
        let installed = self.offloaded[side.index()]
            .as_ref()
            .map(|o| (o.key, o.offload));
        installed != *wanted
    }

    /// Whether `wanted` for `side` is a route not tried since it changed.
    pub fn untried(&self, side: Side, wanted: &Wanted) -> bool {
        wanted.is_some() && *wanted != self.tried[side.index()]
    }

    /// Folds what each route forwarded into `bridge`, then installs,
    /// replaces or removes each to match `wanted`; `route` makes the
    /// kernel's route for a direction (`None`: it cannot be made).
    pub fn sync(
        &mut self,
        wanted: [Wanted; 2],
        bridge: &mut Bridge,
        routes: &mut Routes,
        clock: KernelClock,
        mut route: impl FnMut(Side, Key, &Offload) -> Option<Route>,
    ) {
        for side in [Side::Caller, Side::Callee] {
            let index = side.index();
            self.fold(side, bridge, routes, clock);
            let installed = self.offloaded[index].as_ref().map(|o| (o.key, o.offload));
            if wanted[index] == installed {
                continue;
            }
            if let Some(old) = self.offloaded[index].take() {
                routes.remove(old.key);
            }
            if let Some((key, offload)) = wanted[index]
                && let Some(made) = route(side, key, &offload)
            {
                match routes.install(key, &made) {
                    Ok(()) => {
                        self.offloaded[index] = Some(Offloaded {
                            key,
                            offload,
                            folded: RouteCounters::default(),
                        });
                    }
                    // Once per route: the sweep tries again every half second.
                    Err(e) if self.tried[index] != wanted[index] => {
                        tracing::warn!(error = %e, "cannot install a fast path route; the thread relays the call");
                    }
                    Err(_) => {}
                }
            }
            self.tried[index] = wanted[index];
        }
    }

    /// Folds what the routes forwarded into `bridge` and removes them.
    pub fn withdraw(&mut self, bridge: &mut Bridge, routes: &mut Routes) {
        let clock = KernelClock::now();
        for side in [Side::Caller, Side::Callee] {
            if let Some(clock) = clock {
                self.fold(side, bridge, routes, clock);
            }
            if let Some(old) = self.offloaded[side.index()].take() {
                routes.remove(old.key);
            }
        }
    }

    /// Tells `bridge` what `side`'s route forwarded since the last fold.
    fn fold(&mut self, side: Side, bridge: &mut Bridge, routes: &Routes, clock: KernelClock) {
        let Some(offloaded) = &mut self.offloaded[side.index()] else {
            return;
        };
        let Some(counted) = routes.counters(offloaded.key) else {
            return;
        };
        let packets = counted.packets.saturating_sub(offloaded.folded.packets);
        if packets == 0 {
            return;
        }
        let forwarded = Forwarded {
            packets,
            bytes: counted.bytes.saturating_sub(offloaded.folded.bytes),
            last_seq: counted.last_seq,
            last_timestamp: counted.last_timestamp,
            last_at: clock.instant_of(counted.last_ns),
        };
        offloaded.folded = counted;
        bridge.fold(side, &offloaded.offload, forwarded);
    }
}
