//! The library's errors: typed, with no HTTP in them.

use std::fmt;

use crate::board::{BoardId, Member};
use crate::window::WindowError;

/// Bad input: the field it was found in and what is wrong with it, limit included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending field, as the caller named it (`value`, `scopes[2]`, `events[7].member`).
    pub field: String,
    /// What is wrong, naming the limit.
    pub message: String,
}

impl Invalid {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same message about another field (for example `at` for a period computed from it).
    #[must_use]
    pub fn renamed(mut self, field: &str) -> Self {
        self.field = field.to_owned();
        self
    }

    /// The same error, found inside `outer` (for example `events[3]`).
    #[must_use]
    pub fn within(mut self, outer: &str) -> Self {
        self.field = format!("{outer}.{}", self.field);
        self
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

impl From<WindowError> for Invalid {
    fn from(e: WindowError) -> Self {
        let text = e.to_string();
        match text.split_once(": ") {
            Some((field, message)) => Invalid::new(field, message),
            None => Invalid::new("period", text),
        }
    }
}

/// Everything the engine can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// One input was invalid; nothing was written.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// Some events of a batch were invalid (index, reason); nothing was written.
    #[error("{} invalid event(s), first: events[{}]: {}", .0.len(), .0[0].0, .0[0].1)]
    InvalidBatch(Vec<(usize, Invalid)>),
    /// The board is not defined.
    #[error("board {0} is not defined")]
    BoardNotFound(BoardId),
    /// The member holds no score on the key that was read.
    #[error("member {member} has no score on board {board}")]
    MemberNotFound {
        /// The board read.
        board: BoardId,
        /// The member asked for.
        member: Member,
    },
    /// Concurrent changes to the same board kept invalidating this one; try again.
    #[error("conflict: {0}")]
    Conflict(String),
    /// An event id the board remembers (or an earlier event of the same batch carries) stands for
    /// another event: another member, value or set of scopes. Nothing was written.
    #[error(
        "{field}: {event_id:?} was already used by another event (another member, value or scopes)"
    )]
    EventIdReused {
        /// The field that carries the id: `event_id`, or `events[i].event_id` in a batch.
        field: String,
        /// The id.
        event_id: String,
    },
    /// The backend cannot be reached now; the request was not applied.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The request may have been applied, and nobody can say for sure: a call was sent to Redis
    /// and no answer came in time, or the durable store did not confirm a write Redis applied.
    #[error("{detail}")]
    Unconfirmed {
        /// What the client is told: no internal detail.
        detail: String,
        /// What went wrong, for the log.
        cause: String,
    },
    /// The backend answered something unexpected.
    #[error("backend error: {0}")]
    Backend(String),
}

impl Error {
    /// A call sent to Redis that was not answered (`cause`): it may have run.
    pub fn unanswered(cause: String) -> Self {
        Error::Unconfirmed {
            detail: "the leaderboard backend did not answer in time".into(),
            cause,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
