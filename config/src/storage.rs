//! `[database]`, `[node]` and `[cluster]`: where the ledger lives (a
//! SQLite file or a shared PostgreSQL server), and how this daemon is known
//! among the nodes sharing it.

use std::path::PathBuf;
use std::time::Duration;

use crate::schema::{duration_in, secret};
use crate::secret::{Environment, Secret};
use crate::tree::TableReader;

/// `[database]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DatabaseConfig {
    /// `database.path`: the SQLite file (used when `url` is unset).
    pub path: PathBuf,
    /// `database.url`: a PostgreSQL server shared by several nodes, as a
    /// `postgres://` URL without its password; replaces the SQLite file.
    pub url: Option<String>,
    /// `database.password`: the PostgreSQL role's password.
    pub password: Option<Secret>,
    /// `database.pool_size`: connections to PostgreSQL.
    pub pool_size: u32,
    /// `database.outage_buffer`: how many call writes (checkpoints,
    /// closed records) are kept in memory while the ledger is unreachable.
    pub outage_buffer: u32,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// `node.name`: names this daemon on every call row, in logs and
    /// metrics; unique among the nodes sharing a ledger.
    pub name: String,
}

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    /// `cluster.node_timeout`: a node unseen this long is taken for dead
    /// and another takes over its calls.
    pub node_timeout: Duration,
}

pub(crate) const DATABASE_KEYS: [&str; 5] =
    ["path", "url", "password", "pool_size", "outage_buffer"];
pub(crate) const NODE_KEYS: [&str; 1] = ["name"];
pub(crate) const CLUSTER_KEYS: [&str; 1] = ["node_timeout"];

pub(crate) fn read_database(
    mut t: TableReader,
    env: &dyn Environment,
    defaults: DatabaseConfig,
) -> DatabaseConfig {
    let path_given = t.span("path").is_some();
    let path = t
        .get_with("path", |node| match node {
            crate::tree::Node::Str(s) if !s.trim().is_empty() => Ok(PathBuf::from(s)),
            _ => Err("expected a file path".to_owned()),
        })
        .unwrap_or(defaults.path);
    let url = t.get_with("url", |node| match node {
        crate::tree::Node::Str(s) => check_postgres_url(s).map(|()| s.clone()),
        _ => Err("expected a postgres:// URL".to_owned()),
    });
    if url.is_some() && path_given {
        t.diagnostics().report(
            &t.key("url"),
            None,
            None,
            "database.path and database.url are both set: the ledger is either a SQLite file or a PostgreSQL server",
        );
    }
    let password = secret(&mut t, "password", env);
    if password.is_some() && url.is_none() {
        t.diagnostics().report(
            &t.key("password"),
            None,
            None,
            "only used with database.url (SQLite has no password)",
        );
    }
    let pool_size = t
        .get_with("pool_size", |node| match node {
            crate::tree::Node::Int(n) if (1..=64).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 1 to 64".to_owned()),
        })
        .unwrap_or(defaults.pool_size);
    let outage_buffer = t
        .get_with("outage_buffer", |node| match node {
            crate::tree::Node::Int(n) if (100..=1_000_000).contains(n) => Ok(*n as u32),
            _ => Err("expected an integer from 100 to 1000000".to_owned()),
        })
        .unwrap_or(defaults.outage_buffer);
    t.finish(&DATABASE_KEYS);
    DatabaseConfig {
        path,
        url,
        password,
        pool_size,
        outage_buffer,
    }
}

/// A PostgreSQL connection URL as libpq reads it, without a password (that
/// is `database.password`, a secret kept out of logs).
fn check_postgres_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
    else {
        return Err("expected a postgres:// or postgresql:// URL".to_owned());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the URL contains spaces or control characters".to_owned());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let user_info = authority.rsplit_once('@').map(|(user, _)| user);
    let query = rest.split_once('?').map(|(_, q)| q).unwrap_or_default();
    if user_info.is_some_and(|user| user.contains(':'))
        || query.split('&').any(|pair| pair.starts_with("password="))
    {
        return Err(
            "the URL holds a password: put it in database.password (a secret) instead".to_owned(),
        );
    }
    if query.split('&').any(|pair| {
        matches!(
            pair,
            "sslmode=require" | "sslmode=verify-ca" | "sslmode=verify-full"
        )
    }) {
        return Err(
            "TLS to PostgreSQL is not supported by this build: reach the server on a private network, a Unix socket or a tunnel, with sslmode=disable or prefer".to_owned(),
        );
    }
    let has_host = !authority.rsplit('@').next().unwrap_or_default().is_empty()
        || query.split('&').any(|pair| pair.starts_with("host="));
    if !has_host {
        return Err("the URL names no host (a name, an address, or ?host=/socket/dir)".to_owned());
    }
    Ok(())
}

/// The machine's host name, made a valid node name; "tollbridge" if none.
pub(crate) fn default_node_name(env: &dyn Environment) -> String {
    let name: String = env
        .host_name()
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if is_node_name_char(c) { c } else { '-' })
        .take(NODE_NAME_MAX)
        .collect();
    if name.is_empty() {
        "tollbridge".to_owned()
    } else {
        name
    }
}

const NODE_NAME_MAX: usize = 63;

fn is_node_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

pub(crate) fn read_node(mut t: TableReader, defaults: NodeConfig) -> NodeConfig {
    let name = t
        .get_with("name", |node| match node {
            crate::tree::Node::Str(s)
                if !s.is_empty()
                    && s.len() <= NODE_NAME_MAX
                    && s.chars().all(is_node_name_char) =>
            {
                Ok(s.clone())
            }
            _ => Err(format!(
                "expected 1 to {NODE_NAME_MAX} letters, digits, '-', '_' or '.'"
            )),
        })
        .unwrap_or(defaults.name);
    t.finish(&NODE_KEYS);
    NodeConfig { name }
}

pub(crate) fn read_cluster(mut t: TableReader, defaults: ClusterConfig) -> ClusterConfig {
    let node_timeout = duration_in(
        &mut t,
        "node_timeout",
        Duration::from_secs(2),
        Duration::from_secs(600),
    )
    .unwrap_or(defaults.node_timeout);
    t.finish(&CLUSTER_KEYS);
    ClusterConfig { node_timeout }
}
