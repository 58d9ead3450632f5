//! Nodes sharing the ledger: each one's heartbeat, taking over the calls
//! of a node that fell silent, and leases for work that one node at a
//! time does.
//!
//! Heartbeats and leases are stamped and compared on the ledger's clock
//! ([`super::db::Dialect::now_ms`]), so nodes whose clocks drift apart
//! never take each other for dead. Exactly-once is the database's: a
//! call is closed by an `UPDATE ... WHERE ended_ms IS NULL`, which one
//! transaction wins; the silent node's row is locked while its calls are
//! taken (`FOR UPDATE SKIP LOCKED`), so a second node looking at the same
//! moment passes it by.

use std::time::Duration;

use super::recovery::unfinished;
use super::recovery::{Recovering, recover_open};
use super::{Ledger, LedgerError, Unfinished};
use crate::args;

/// The calls a node took over from one that fell silent.
#[derive(Debug, Clone)]
pub struct TakenOver {
    /// The silent node.
    pub node: String,
    /// How long it had been silent, on the ledger's clock.
    pub silent_ms: i64,
    /// Its calls, now closed (`recovered`), whose parties this node owes
    /// a BYE.
    pub calls: Vec<Unfinished>,
    /// How many calls were closed (some may have had no party to hang up).
    pub closed: usize,
}

/// A node as the ledger sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// `node.name`.
    pub name: String,
    /// When it last started, Unix ms (its own clock).
    pub started_ms: i64,
    /// Milliseconds since its last heartbeat (the ledger's clock).
    pub silent_ms: i64,
    /// Whether it is draining (refusing new calls).
    pub draining: bool,
    /// Its Tollbridge version.
    pub version: String,
    /// Calls it carries now.
    pub open_calls: i64,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Ledger {
    /// Records that this node is alive (and whether it is draining); the
    /// first heartbeat registers it. `started_ms` is when it started.
    pub async fn heartbeat(&self, started_ms: i64, draining: bool) -> Result<(), LedgerError> {
        let node = self.node.clone();
        self.run(move |db| {
            let now = db.dialect().now_ms();
            db.execute(
                &format!(
                    "INSERT INTO nodes (name, started_ms, seen_ms, draining, version)
                     VALUES (?1, ?2, {now}, ?3, ?4)
                     ON CONFLICT (name) DO UPDATE SET started_ms = excluded.started_ms,
                         seen_ms = excluded.seen_ms, draining = excluded.draining,
                         version = excluded.version"
                ),
                args![&*node, started_ms, draining, env!("CARGO_PKG_VERSION")],
            )?;
            Ok(())
        })
        .await
    }

    /// Takes over the open calls of every other node not heard from for
    /// longer than `timeout`: each is closed at its last checkpoint
    /// (`recovered`, settled like any call, marked as ended by this node)
    /// in one transaction per silent node. Returns what was taken, with
    /// the parties now owed a BYE by this node.
    pub async fn take_over_silent_nodes(
        &self,
        timeout: Duration,
        now_ms: i64,
    ) -> Result<Vec<TakenOver>, LedgerError> {
        let me = self.node.clone();
        let silent: Vec<String> = self
            .run({
                let me = me.clone();
                move |db| {
                    let now = db.dialect().now_ms();
                    db.query(
                        &format!(
                            "SELECT n.name FROM nodes n
                             WHERE n.name <> ?1 AND n.seen_ms < {now} - ?2
                               AND EXISTS (SELECT 1 FROM calls c WHERE c.node = n.name AND c.ended_ms IS NULL)
                             ORDER BY n.name"
                        ),
                        args![&*me, millis(timeout)],
                    )?
                    .iter()
                    .map(|row| row.text(0))
                    .collect()
                }
            })
            .await?;
        let mut taken = Vec::new();
        for node in silent {
            let me = me.clone();
            let one = self
                .run(move |db| {
                    let dialect = db.dialect();
                    let now = dialect.now_ms();
                    // Locked while its calls are taken; still silent?
                    let Some(row) = db.query_opt(
                        &format!(
                            "SELECT {now} - seen_ms FROM nodes WHERE name = ?1 AND seen_ms < {now} - ?2{}",
                            dialect.skip_locked()
                        ),
                        args![node.as_str(), millis(timeout)],
                    )?
                    else {
                        return Ok(None);
                    };
                    let silent_ms = row.int(0)?;
                    let closed = recover_open(
                        db,
                        &Recovering::Silent {
                            node: &node,
                            taker: &me,
                        },
                        now_ms,
                    )?;
                    let mut calls = unfinished(db, &me, Some(&closed))?;
                    // Their relay ports are the silent node's, not ours.
                    for call in &mut calls {
                        call.rtp_ports.clear();
                    }
                    Ok(Some(TakenOver {
                        node,
                        silent_ms,
                        calls,
                        closed: closed.len(),
                    }))
                })
                .await?;
            taken.extend(one.filter(|t| t.closed > 0));
        }
        Ok(taken)
    }

    /// Holds (takes or renews) the lease `name` for `ttl`: true when this
    /// node holds it now. Work under a lease runs on one node at a time;
    /// a holder that dies loses it when `ttl` runs out.
    pub async fn hold_lease(&self, name: &str, ttl: Duration) -> Result<bool, LedgerError> {
        let (me, name) = (self.node.clone(), name.to_owned());
        self.run(move |db| {
            let now = db.dialect().now_ms();
            let held = db.query_opt(
                &format!(
                    "INSERT INTO leases (name, holder, until_ms) VALUES (?1, ?2, {now} + ?3)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms
                     WHERE leases.holder = excluded.holder OR leases.until_ms < {now}
                     RETURNING holder"
                ),
                args![name.as_str(), &*me, millis(ttl)],
            )?;
            Ok(held.is_some())
        })
        .await
    }

    /// Every node the ledger has heard of, by name.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, LedgerError> {
        self.run(|db| {
            let now = db.dialect().now_ms();
            db.query(
                &format!(
                    "SELECT n.name, n.started_ms, {now} - n.seen_ms, n.draining, n.version,
                            (SELECT COUNT(*) FROM calls c WHERE c.node = n.name AND c.ended_ms IS NULL)
                     FROM nodes n ORDER BY n.name"
                ),
                &[],
            )?
            .iter()
            .map(|row| {
                Ok(NodeView {
                    name: row.text(0)?,
                    started_ms: row.int(1)?,
                    silent_ms: row.int(2)?,
                    draining: row.flag(3)?,
                    version: row.text(4)?,
                    open_calls: row.int(5)?,
                })
            })
            .collect()
        })
        .await
    }
}
