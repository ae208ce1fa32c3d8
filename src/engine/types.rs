//! What the engine takes and answers: requests parsed at the edge, replies ready to serialise.

use serde::Serialize;

use crate::board::{BoardDef, BoardId, EventId, Member, Scope, Score};
use crate::error::Invalid;
use crate::window::{Period, Window};

/// Most entries one page-like read returns.
pub const MAX_LIMIT: u32 = 1000;
/// Widest around-me radius.
pub const MAX_RADIUS: u32 = 100;
/// Most members one lookup names.
pub const MAX_LOOKUP: usize = 1000;
/// Most events one batch holds.
pub const MAX_BATCH: usize = 10_000;

/// How many entries a read returns: 1 to [`MAX_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u32);

impl Limit {
    /// Parses a limit.
    ///
    /// # Errors
    /// [`Invalid`] naming `limit` and its range.
    pub fn new(n: i64) -> Result<Self, Invalid> {
        if (1..=i64::from(MAX_LIMIT)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(Invalid::new(
                "limit",
                format!("must be 1 to {MAX_LIMIT}, got {n}"),
            ))
        }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// How many entries an around-me read returns on each side: 0 to [`MAX_RADIUS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Radius(u32);

impl Radius {
    /// Parses a radius.
    ///
    /// # Errors
    /// [`Invalid`] naming `radius` and its range.
    pub fn new(n: i64) -> Result<Self, Invalid> {
        if (0..=i64::from(MAX_RADIUS)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(Invalid::new(
                "radius",
                format!("must be 0 to {MAX_RADIUS}, got {n}"),
            ))
        }
    }

    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A 0-based position in a board: 0 or more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(u64);

impl Offset {
    /// Parses an offset.
    ///
    /// # Errors
    /// [`Invalid`] naming `offset` when it is negative.
    pub fn new(n: i64) -> Result<Self, Invalid> {
        u64::try_from(n)
            .map(Self)
            .map_err(|_| Invalid::new("offset", format!("must be 0 or more, got {n}")))
    }

    /// The number.
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Which leaderboard of a board a read looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct View {
    /// The window (default all-time).
    pub window: Window,
    /// The period; `None` is the current one.
    pub period: Option<Period>,
    /// The scope; `None` is the global board.
    pub scope: Option<Scope>,
}

/// One word for the window and the period (whose window and end follow from its start within a
/// view), then the scope: concurrent reads find their shared call by this hash, and SipHash
/// charges for every write, which the derived hash made five of.
impl std::hash::Hash for View {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let period = self.period.map_or(u64::MAX, |p| p.start_ms() as u64);
        h.write_u64(period.rotate_left(2) ^ self.window as u64);
        if let Some(scope) = &self.scope {
            h.write(scope.as_str().as_bytes());
        }
    }
}

impl View {
    /// Parses the optional `window`, `period` and `scope` of a read.
    ///
    /// # Errors
    /// [`Invalid`] naming `window`, `period` or `scope`.
    pub fn parse(
        window: Option<&str>,
        period: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Self, Invalid> {
        let window = match window {
            None => Window::All,
            Some(w) => w.parse::<Window>()?,
        };
        let period = period.map(|p| Period::parse(window, p)).transpose()?;
        let scope = scope.map(Scope::parse).transpose()?;
        Ok(Self {
            window,
            period,
            scope,
        })
    }

    /// The global all-time board.
    pub fn all_time() -> Self {
        Self::default()
    }

    /// A window's current period of the global board.
    pub fn current(window: Window) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// The same view, of a scope.
    #[must_use]
    pub fn scoped(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }
}

/// One score event.
#[derive(Debug, Clone, PartialEq)]
pub struct Submit {
    /// The board.
    pub board: BoardId,
    /// Who scored.
    pub member: Member,
    /// The value, applied by the board's policy.
    pub value: Score,
    /// Scoped boards that also keep the member's score (at most 8).
    pub scopes: Vec<Scope>,
    /// Makes the event idempotent within the dedupe window.
    pub event_id: Option<EventId>,
    /// When the event happened, in Unix ms (default: now). It places the event in its periods.
    pub at_ms: Option<i64>,
}

impl Submit {
    /// An event with no scopes, no event id, happening now.
    pub fn new(board: BoardId, member: Member, value: Score) -> Self {
        Self {
            board,
            member,
            value,
            scopes: Vec::new(),
            event_id: None,
            at_ms: None,
        }
    }

    /// The operation the log records for this event, received at `now`.
    pub fn logged(&self, now: i64) -> super::Op {
        super::Op::Event {
            member: self.member.to_string(),
            value: self.value.get(),
            event_id: self.event_id.as_ref().map(|e| e.to_string()),
            at_ms: self.at_ms.unwrap_or(now),
            scopes: self.scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Parses an event from raw parts.
    ///
    /// # Errors
    /// [`Invalid`] naming the first bad field.
    pub fn parse(
        board: &str,
        member: &str,
        value: f64,
        scopes: &[String],
        event_id: Option<&str>,
        at_ms: Option<i64>,
    ) -> Result<Self, Invalid> {
        Ok(Self {
            board: BoardId::parse(board)?,
            member: Member::parse(member)?,
            value: Score::new("value", value)?,
            scopes: Scope::parse_list(scopes)?,
            event_id: event_id.map(EventId::parse).transpose()?,
            at_ms,
        })
    }
}

/// What one submit did to one leaderboard key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyResult {
    /// The window.
    pub window: Window,
    /// The period id; `None` for the all-time window.
    pub period: Option<String>,
    /// The scope; `None` for the global board.
    pub scope: Option<Scope>,
    /// The member's score there now (`None` when trimmed away by `max_members`).
    pub score: Option<f64>,
    /// The member's rank there now, in the board's rank mode.
    pub rank: Option<u64>,
    /// The rank before the event; `None` when the member was new there.
    pub previous_rank: Option<u64>,
}

/// The answer to a submit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Submitted {
    /// Who scored.
    pub member: Member,
    /// True when the event id was seen before: nothing changed, and `results` is the current standing.
    pub duplicate: bool,
    /// One result per (window, scope) key, global board first.
    pub results: Vec<KeyResult>,
}

/// The answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct BatchOutcome {
    /// Events applied.
    pub accepted: u64,
    /// Events skipped as duplicates.
    pub duplicates: u64,
}

/// One ranked member.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Rank in the board's rank mode.
    pub rank: u64,
    /// The member.
    pub member: String,
    /// The score.
    pub score: f64,
    /// The member's display name, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// A run of entries of one leaderboard key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    /// The board.
    pub board: BoardId,
    /// The window.
    pub window: Window,
    /// The period id; `None` for the all-time window.
    pub period: Option<String>,
    /// The scope; `None` for the global board.
    pub scope: Option<Scope>,
    /// Members in the key.
    pub total: u64,
    /// The entries, best first.
    pub entries: Vec<Entry>,
    /// Where the next page starts, when the read was a page and there may be more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Cursor>,
}

/// A member's standing in one leaderboard key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    /// The member.
    pub member: Member,
    /// The score.
    pub score: f64,
    /// Rank in the board's rank mode.
    pub rank: u64,
    /// The share of members with a strictly worse score, in percent.
    pub percentile: f64,
    /// Members in the key.
    pub total: u64,
    /// The display name, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The display data, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

/// Ranks for a list of members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lookup {
    /// Members in the key.
    pub total: u64,
    /// The members found, by rank.
    pub entries: Vec<Entry>,
    /// The members not on the board, in the order asked.
    pub missing: Vec<Member>,
}

/// A board's definition as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BoardInfo {
    /// The board.
    pub board: BoardId,
    /// Its definition.
    #[serde(flatten)]
    pub definition: BoardDef,
    /// When it was created, Unix ms.
    pub created_at_ms: i64,
}

/// Where a page ends: the stored score and member of its last entry. Paging by cursor neither skips
/// nor repeats members whose scores do not change, whatever happens to the others.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub(crate) stored: f64,
    pub(crate) member: String,
}

impl Cursor {
    /// The cursor as an opaque token.
    pub fn encode(&self) -> String {
        let mut s = format!("{:016x}", self.stored.to_bits());
        for b in self.member.as_bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses a token made by [`Cursor::encode`].
    ///
    /// # Errors
    /// [`Invalid`] naming `after` when the token is not one.
    pub fn decode(token: &str) -> Result<Self, Invalid> {
        let bad = || Invalid::new("after", "is not a cursor this server issued");
        if token.len() < 18 || !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(bad());
        }
        let bits = u64::from_str_radix(&token[..16], 16).map_err(|_| bad())?;
        let stored = f64::from_bits(bits);
        if !stored.is_finite() {
            return Err(bad());
        }
        let bytes = (16..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad())?;
        let member = String::from_utf8(bytes).map_err(|_| bad())?;
        Member::parse(&member).map_err(|_| bad())?;
        Ok(Self { stored, member })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_field_and_the_range() {
        assert_eq!(
            Limit::new(0).unwrap_err().to_string(),
            "limit: must be 1 to 1000, got 0"
        );
        assert!(Limit::new(1000).is_ok());
        assert!(Limit::new(1001).is_err());
        assert_eq!(Radius::new(101).unwrap_err().field, "radius");
        assert!(Radius::new(0).is_ok());
        assert_eq!(Offset::new(-1).unwrap_err().field, "offset");
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            stored: -12.5,
            member: "ünï:42".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("zz").is_err());
        assert!(Cursor::decode(&format!("{:016x}41", f64::NAN.to_bits())).is_err());
        assert_eq!(
            Cursor::decode("nothex!!nothex!!41").unwrap_err().field,
            "after"
        );
    }

    #[test]
    fn views_parse_window_period_and_scope() {
        let v = View::parse(Some("weekly"), Some("2026-W47"), Some("class:7")).unwrap();
        assert_eq!(v.window, Window::Weekly);
        assert_eq!(v.period.unwrap().id(), "2026-W47");
        assert_eq!(
            View::parse(Some("hourly"), None, None).unwrap_err().field,
            "window"
        );
        assert_eq!(
            View::parse(Some("daily"), Some("2026-W47"), None)
                .unwrap_err()
                .field,
            "period"
        );
        assert_eq!(
            View::parse(None, None, Some("a b")).unwrap_err().field,
            "scope"
        );
    }
}
