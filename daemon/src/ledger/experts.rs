//! Experts as SIP accounts, and the devices they register: the accounts
//! (password as HA1 only), each REGISTER's bindings applied in one
//! transaction (RFC 3261 §10.3: refresh, remove, `*`, Call-ID/CSeq order,
//! a most per expert), the devices a call to an expert rings, and the
//! registrar's nonce secret the nodes share.

use super::db::{Db, Row};
use super::{Ledger, LedgerError};
use crate::args;

/// An expert's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpertRow {
    /// The name bookings use (`{"expert": "name"}`).
    pub name: String,
    /// The SIP user name the devices register as.
    pub username: String,
    /// The realm its HA1 was computed in.
    pub realm: String,
    /// When it was made, Unix ms.
    pub created_ms: i64,
    /// When its password last changed, Unix ms.
    pub updated_ms: i64,
}

/// One registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its Contact URI: the Request-URI of the calls to it.
    pub contact: String,
    /// Where its REGISTER came from (`ip:port`): where calls are sent.
    pub received: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// The node the REGISTER came through.
    pub node: String,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// When it registered, Unix ms.
    pub registered_ms: i64,
    /// When the binding lapses, Unix ms.
    pub expires_ms: i64,
}

/// A REGISTER's bindings, as the registrar applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registering {
    /// The expert (its account authenticated the REGISTER).
    pub expert: String,
    /// Where it came from, `ip:port`.
    pub received: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Its Call-ID.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: i64,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// `None` removes every binding (`Contact: *`); otherwise each Contact
    /// with the seconds asked (0 removes it); empty only asks.
    pub contacts: Option<Vec<(String, i64)>>,
    /// Devices an expert may have at most.
    pub max_devices: i64,
}

/// Why a REGISTER's bindings were not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterRefused {
    /// A refresh older than (or as old as) the one applied, from the same
    /// Call-ID (RFC 3261 §10.3 step 7): a reordered retransmission.
    #[error("out of order: CSeq {0} after {1}")]
    OutOfOrder(i64, i64),
    /// The expert would have more devices than `registrar.max_devices`.
    #[error("the expert already has {0} devices")]
    TooManyDevices(i64),
    /// The expert's account was deleted meanwhile.
    #[error("no such expert")]
    NoExpert,
}

/// Why an account could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ExpertWrite {
    /// The name or the user name is taken.
    #[error("{0} is taken")]
    Taken(&'static str),
    /// The database failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

const EXPERT_COLUMNS: &str = "name, username, realm, created_ms, updated_ms";
const DEVICE_COLUMNS: &str =
    "contact, received, transport, node, user_agent, registered_ms, expires_ms";

fn expert_of(row: &Row) -> Result<ExpertRow, LedgerError> {
    Ok(ExpertRow {
        name: row.text(0)?,
        username: row.text(1)?,
        realm: row.text(2)?,
        created_ms: row.int(3)?,
        updated_ms: row.int(4)?,
    })
}

fn device_of(row: &Row) -> Result<Device, LedgerError> {
    Ok(Device {
        contact: row.text(0)?,
        received: row.text(1)?,
        transport: row.text(2)?,
        node: row.text(3)?,
        user_agent: row.opt_text(4)?,
        registered_ms: row.int(5)?,
        expires_ms: row.int(6)?,
    })
}

/// An expert's devices whose bindings have not lapsed at `now_ms`.
fn devices(db: &mut dyn Db, expert: &str, now_ms: i64) -> Result<Vec<Device>, LedgerError> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM registrations WHERE expert = ?1 AND expires_ms > ?2
         ORDER BY registered_ms, contact"
    );
    db.query(&sql, args![expert, now_ms])?
        .iter()
        .map(device_of)
        .collect()
}

/// Applies a REGISTER's bindings as `node` (see [`Ledger::register`]):
/// everything is checked before anything is written, so a refused
/// REGISTER changes nothing.
fn apply(
    db: &mut dyn Db,
    registering: &Registering,
    node: &str,
    now_ms: i64,
) -> Result<Result<Vec<Device>, RegisterRefused>, LedgerError> {
    let r = registering;
    // The account's row, locked: two REGISTERs of one expert at once
    // count its devices one after the other.
    let sql = format!(
        "SELECT name FROM experts WHERE name = ?1{}",
        db.dialect().for_update()
    );
    if db.query_opt(&sql, args![r.expert.as_str()])?.is_none() {
        return Ok(Err(RegisterRefused::NoExpert));
    }
    db.execute(
        "DELETE FROM registrations WHERE expert = ?1 AND expires_ms <= ?2",
        args![r.expert.as_str(), now_ms],
    )?;
    let Some(contacts) = &r.contacts else {
        db.execute(
            "DELETE FROM registrations WHERE expert = ?1",
            args![r.expert.as_str()],
        )?;
        return Ok(Ok(Vec::new()));
    };
    let bound: Vec<(String, String, i64)> = db
        .query(
            "SELECT contact, call_id, cseq FROM registrations WHERE expert = ?1",
            args![r.expert.as_str()],
        )?
        .iter()
        .map(|row| Ok((row.text(0)?, row.text(1)?, row.int(2)?)))
        .collect::<Result<_, LedgerError>>()?;
    for (contact, _) in contacts {
        if let Some((_, call_id, cseq)) = bound.iter().find(|(c, _, _)| c == contact)
            && *call_id == r.call_id
            && *cseq >= r.cseq
        {
            return Ok(Err(RegisterRefused::OutOfOrder(r.cseq, *cseq)));
        }
    }
    let is_bound = |contact: &String| bound.iter().any(|(c, _, _)| c == contact);
    let added = contacts
        .iter()
        .filter(|(contact, seconds)| *seconds > 0 && !is_bound(contact))
        .count() as i64;
    let removed = contacts
        .iter()
        .filter(|(contact, seconds)| *seconds == 0 && is_bound(contact))
        .count() as i64;
    let devices_after = bound.len() as i64 + added - removed;
    if added > 0 && devices_after > r.max_devices {
        return Ok(Err(RegisterRefused::TooManyDevices(bound.len() as i64)));
    }
    for (contact, seconds) in contacts {
        if *seconds == 0 {
            db.execute(
                "DELETE FROM registrations WHERE expert = ?1 AND contact = ?2",
                args![r.expert.as_str(), contact.as_str()],
            )?;
            continue;
        }
        db.execute(
            "INSERT INTO registrations (expert, contact, received, transport, node, call_id, cseq,
                 user_agent, registered_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (expert, contact) DO UPDATE SET received = ?3, transport = ?4, node = ?5,
                 call_id = ?6, cseq = ?7, user_agent = ?8, registered_ms = ?9, expires_ms = ?10",
            args![
                r.expert.as_str(),
                contact.as_str(),
                r.received.as_str(),
                r.transport.as_str(),
                node,
                r.call_id.as_str(),
                r.cseq,
                r.user_agent.clone(),
                now_ms,
                now_ms.saturating_add(seconds.saturating_mul(1000))
            ],
        )?;
    }
    devices(db, &r.expert, now_ms).map(Ok)
}

impl Ledger {
    /// Creates an expert's account with the HA1 of its password in
    /// `realm`.
    pub async fn create_expert(
        &self,
        name: String,
        username: String,
        realm: String,
        ha1: String,
        now_ms: i64,
    ) -> Result<ExpertRow, ExpertWrite> {
        self.run(move |db| {
            for (field, sql) in [
                ("name", "SELECT 1 FROM experts WHERE name = ?1"),
                ("username", "SELECT 1 FROM experts WHERE username = ?1"),
            ] {
                let value = if field == "name" { &name } else { &username };
                if db.query_opt(sql, args![value.as_str()])?.is_some() {
                    return Ok(Err(ExpertWrite::Taken(field)));
                }
            }
            let inserted = db.execute(
                "INSERT INTO experts (name, username, realm, ha1, created_ms, updated_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                args![name.as_str(), username.as_str(), realm, ha1, now_ms],
            );
            match inserted {
                Ok(_) => {}
                Err(LedgerError::UniqueViolation(_)) => return Ok(Err(ExpertWrite::Taken("name"))),
                Err(e) => return Err(e),
            }
            let sql = format!("SELECT {EXPERT_COLUMNS} FROM experts WHERE name = ?1");
            Ok(Ok(expert_of(&db.query_one(&sql, args![name])?)?))
        })
        .await
        .map_err(ExpertWrite::Ledger)?
    }

    /// An expert's account and its devices registered now.
    pub async fn expert(
        &self,
        name: String,
        now_ms: i64,
    ) -> Result<Option<(ExpertRow, Vec<Device>)>, LedgerError> {
        self.run(move |db| {
            let sql = format!("SELECT {EXPERT_COLUMNS} FROM experts WHERE name = ?1");
            let Some(row) = db.query_opt(&sql, args![name.as_str()])? else {
                return Ok(None);
            };
            Ok(Some((expert_of(&row)?, devices(db, &name, now_ms)?)))
        })
        .await
    }

    /// Every expert, by name, with its devices registered now.
    pub async fn experts(&self, now_ms: i64) -> Result<Vec<(ExpertRow, Vec<Device>)>, LedgerError> {
        self.run(move |db| {
            let sql = format!("SELECT {EXPERT_COLUMNS} FROM experts ORDER BY name LIMIT 1000");
            let experts: Vec<ExpertRow> = db
                .query(&sql, &[])?
                .iter()
                .map(expert_of)
                .collect::<Result<_, _>>()?;
            experts
                .into_iter()
                .map(|expert| {
                    let devices = devices(db, &expert.name, now_ms)?;
                    Ok((expert, devices))
                })
                .collect()
        })
        .await
    }

    /// Sets an expert's password (as its HA1 in `realm`); false when there
    /// is no such expert.
    pub async fn set_expert_password(
        &self,
        name: String,
        realm: String,
        ha1: String,
        now_ms: i64,
    ) -> Result<bool, LedgerError> {
        self.run(move |db| {
            let changed = db.execute(
                "UPDATE experts SET realm = ?2, ha1 = ?3, updated_ms = ?4 WHERE name = ?1",
                args![name, realm, ha1, now_ms],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    /// Deletes an expert's account and its devices; false when there was
    /// none.
    pub async fn delete_expert(&self, name: String) -> Result<bool, LedgerError> {
        self.run(move |db| {
            db.execute(
                "DELETE FROM registrations WHERE expert = ?1",
                args![name.as_str()],
            )?;
            Ok(db.execute("DELETE FROM experts WHERE name = ?1", args![name])? == 1)
        })
        .await
    }

    /// The account a SIP user name belongs to: (expert, realm, HA1).
    pub async fn credentials(
        &self,
        username: String,
    ) -> Result<Option<(String, String, String)>, LedgerError> {
        self.run(move |db| {
            db.query_opt(
                "SELECT name, realm, ha1 FROM experts WHERE username = ?1",
                args![username],
            )?
            .map(|row| Ok((row.text(0)?, row.text(1)?, row.text(2)?)))
            .transpose()
        })
        .await
    }

    /// Applies an authenticated REGISTER's bindings as this node; the
    /// expert's devices after it, or why nothing was changed.
    pub async fn register(
        &self,
        registering: Registering,
        now_ms: i64,
    ) -> Result<Result<Vec<Device>, RegisterRefused>, LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| apply(db, &registering, &node, now_ms))
            .await
    }

    /// The devices a call to `expert` rings now.
    pub async fn devices(&self, expert: String, now_ms: i64) -> Result<Vec<Device>, LedgerError> {
        self.run(move |db| devices(db, &expert, now_ms)).await
    }

    /// The devices registered through this node, for keep-alives.
    pub async fn devices_through_this_node(&self, now_ms: i64) -> Result<Vec<Device>, LedgerError> {
        let node = self.node().to_owned();
        self.run(move |db| {
            let sql = format!(
                "SELECT {DEVICE_COLUMNS} FROM registrations
                 WHERE node = ?1 AND expires_ms > ?2
                 ORDER BY received"
            );
            db.query(&sql, args![node, now_ms])?
                .iter()
                .map(device_of)
                .collect()
        })
        .await
    }

    /// Forgets bindings that lapsed before `now_ms`; how many.
    pub async fn expire_devices(&self, now_ms: i64) -> Result<u64, LedgerError> {
        self.run(move |db| {
            db.execute(
                "DELETE FROM registrations WHERE expires_ms <= ?1",
                args![now_ms],
            )
        })
        .await
    }

    /// The registrar's nonce secret, made on first use; every node sharing
    /// the ledger gets the same.
    pub async fn registrar_secret(&self, fresh: String) -> Result<String, LedgerError> {
        self.run(move |db| {
            db.execute(
                "INSERT INTO registrar_keys (name, secret) VALUES ('nonce', ?1)
                 ON CONFLICT (name) DO NOTHING",
                args![fresh],
            )?;
            db.query_one(
                "SELECT secret FROM registrar_keys WHERE name = 'nonce'",
                &[],
            )?
            .text(0)
        })
        .await
    }
}
