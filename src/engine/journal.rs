//! The journal: where the engine hands every operation Redis applied, so a durable store can keep
//! it.
//!
//! Each mutating script, when journaling is on, takes the board's next sequence number and appends the
//! operation to the board's log stream in the same atomic call. The engine then passes the operation
//! to the [`Journal`] (the durable store's persister), which commits it and trims it from the stream;
//! what a crash leaves in the stream is copied later by the persister's sweep. The sequence number
//! orders a board's operations, so replaying them through the same scripts rebuilds the board exactly.

use async_trait::async_trait;

use crate::board::BoardId;
use crate::error::Result;

/// One operation of a board's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// The board was defined or its definition changed.
    Define {
        /// The definition's version token.
        version: String,
        /// The definition as JSON.
        json: String,
    },
    /// A score event was accepted (duplicates are not logged).
    Event {
        /// Who scored.
        member: String,
        /// The submitted value.
        value: f64,
        /// The event id, if any.
        event_id: Option<String>,
        /// When the event happened, Unix ms.
        at_ms: i64,
        /// Scopes named.
        scopes: Vec<String>,
    },
    /// A member was removed from every key.
    Remove {
        /// The member.
        member: String,
    },
    /// A member's display data was set (None clears a field).
    Display {
        /// The member.
        member: String,
        /// Display name.
        name: Option<String>,
        /// Display data JSON.
        data: Option<String>,
    },
}

/// An operation with its place in its board's log.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedOp {
    /// The board.
    pub board: BoardId,
    /// Its sequence number within the board (from 1).
    pub seq: u64,
    /// When the engine applied it, Unix ms (replays use it as "now").
    pub recv_ms: i64,
    /// What happened.
    pub op: Op,
}

/// When a write is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the operation is committed in the durable store (commits are grouped).
    #[default]
    Sync,
    /// After Redis applied it; the store catches up within a bounded lag.
    Async,
}

/// Receives every operation Redis applied.
#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Hands over operations in sequence order per board. With [`Durability::Sync`] it returns once
    /// they are committed.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot commit (sync mode); the operations stay in
    /// the Redis log for the sweep to copy later.
    async fn record(&self, ops: Vec<LoggedOp>) -> Result<()>;

    /// Whether [`Journal::record`] returns only once the operations are committed
    /// ([`Durability::Sync`]): then a write answered as a duplicate of an earlier one must also
    /// wait until that one is committed.
    fn confirms(&self) -> bool {
        true
    }

    /// Called before a board's keys are deleted: records the deletion durably. Returns whether the
    /// store held the board.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot be reached (nothing is deleted then).
    async fn board_deleting(&self, board: &BoardId) -> Result<bool>;

    /// Called when a board is deleted, after its keys (log included) are gone from Redis.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot be reached.
    async fn board_deleted(&self, board: &BoardId) -> Result<()>;

    /// Called when Redis does not hold a board. Returns true when the store holds it: Redis lost it,
    /// and a rebuild has been started.
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot say (then neither can the caller: the
    /// board may well exist).
    async fn lost(&self, board: &BoardId) -> Result<bool>;

    /// Called at shutdown, after the last write was answered: stores whatever is still on its way
    /// (in `async` mode, answered writes not yet committed).
    ///
    /// # Errors
    /// [`crate::Error::Unavailable`] when the store cannot be reached.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
