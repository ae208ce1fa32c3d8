//! The library's errors: typed, with no HTTP in them.

use crate::backend::{ExecError, Refusal};
use crate::board::{BoardId, Member};

pub use crate::invalid::Invalid;

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
    /// The board is being rebuilt from the durable store; the request was not applied. Redis is
    /// up: the board is not served until the rebuild is done, rather than from half of it.
    #[error("board {0} is being rebuilt from the durable store")]
    Rebuilding(BoardId),
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

/// The one conversion of a failed script call: not sent is unavailable; sent and not answered may
/// have run (see [`Error::unanswered`]); an error reply is the script's refusal, typed, or else the
/// backend's own error. A caller that knows the board reads [`Refusal::NoBoard`] and the retryable
/// refusals itself first (the engine's definition cache does).
impl From<ExecError> for Error {
    fn from(e: ExecError) -> Self {
        match e {
            ExecError::Unavailable(m) => Error::Unavailable(m),
            ExecError::Unanswered(m) => Error::unanswered(m),
            ExecError::Reply(m) => match Refusal::parse(&m) {
                Some(r) => r.into(),
                None => Error::Backend(m),
            },
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Range { invalid, .. } => Error::Invalid(invalid),
            Refusal::Reused { event_id, .. } => Error::EventIdReused {
                field: "event_id".into(),
                event_id,
            },
            Refusal::NoBoard => {
                Error::Conflict("the board was deleted while this request ran".into())
            }
            Refusal::Stale(_) | Refusal::Exists(_) | Refusal::Deleting(_) | Refusal::Retry => {
                Error::Conflict("the board kept changing under this request".into())
            }
            Refusal::Args(m) | Refusal::Unknown(m) => {
                Error::Backend(format!("a script refused its arguments: {m}"))
            }
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
