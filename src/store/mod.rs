//! The durable store: Postgres keeps every board's operation log, so Redis can always be rebuilt.
//!
//! - [`postgres`]: the tables (migrations/) and their queries
//! - [`persister`]: the [`crate::engine::Journal`] that commits operations in groups, and the sweep that
//!   copies what a crash left in the Redis logs
//! - [`rebuild`]: finds boards Redis lost and replays them from the store
//! - [`snapshot`]: every key's standing, copied into Postgres for history and trends

pub mod persister;
pub mod postgres;
pub mod rebuild;
pub mod snapshot;
pub mod sqlite;

pub use persister::Persister;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;

use crate::board::BoardId;
use crate::engine::{KeySnapshot, LoggedOp};
use crate::error::Result;

/// What the persister, the rebuild and the snapshots need of a durable store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates or upgrades the tables and indexes.
    async fn migrate(&self) -> Result<()>;
    /// Commits operations in one transaction; sequence numbers already stored are skipped.
    async fn insert_ops(&self, ops: &[LoggedOp]) -> Result<()>;
    /// Marks a board deleted, before its Redis keys go.
    async fn tombstone(&self, board: &BoardId) -> Result<()>;
    /// Removes a deleted board's rows.
    async fn purge(&self, board: &BoardId) -> Result<()>;
    /// Live boards with their highest stored sequence number.
    async fn boards(&self) -> Result<Vec<(BoardId, u64)>>;
    /// Deleted boards whose deletion may not have reached Redis yet.
    async fn tombstones(&self) -> Result<Vec<BoardId>>;
    /// Whether a live board of this id is stored.
    async fn has_board(&self, board: &BoardId) -> Result<bool>;
    /// A board's operations in order.
    async fn ops(&self, board: &BoardId) -> Result<Vec<LoggedOp>>;
    /// Writes one key's snapshot.
    async fn write_snapshot(&self, board: &BoardId, snap: &KeySnapshot) -> Result<()>;
    /// Deletes snapshots older than `keep_days` days.
    async fn prune_snapshots(&self, keep_days: u32) -> Result<u64>;
    /// Claims (or renews) the lease `name` for `holder` for `ms`; false when another holds it.
    async fn try_lease(&self, name: &str, holder: &str, ms: i64) -> Result<bool>;
}
