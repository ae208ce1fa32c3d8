//! Board ids, members, scopes, event ids, scores and board definitions: parsed once at the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::invalid::Invalid;
use crate::window::Window;

/// Longest board id, scope, in characters.
pub const MAX_ID_LEN: usize = 64;
/// Longest member id or event id, in bytes.
pub const MAX_MEMBER_LEN: usize = 128;
/// Most scopes one event may name.
pub const MAX_SCOPES: usize = 8;
/// Most periods a board may keep readable after they close.
pub const MAX_RETENTION_PERIODS: u32 = 1000;
/// Largest `max_members`.
pub const MAX_MAX_MEMBERS: u64 = 100_000_000;
/// `max_scopes` of a definition that names none.
pub const DEFAULT_MAX_SCOPES: u32 = 10_000;
/// Largest `max_scopes`.
pub const MAX_MAX_SCOPES: u32 = 1_000_000;
/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 128;
/// Largest display data object, in bytes of JSON.
pub const MAX_DISPLAY_DATA_BYTES: usize = 4096;

fn check_id(field: &str, s: &str, extra: &[char], allowed: &str) -> Result<(), Invalid> {
    let len = s.chars().count();
    if len == 0 || len > MAX_ID_LEN {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters of {allowed}, got {len}"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c) || extra.contains(c)))
    {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters of {allowed}, found {c:?}"),
        ));
    }
    Ok(())
}

fn check_opaque(field: &str, s: &str) -> Result<(), Invalid> {
    if s.is_empty() || s.len() > MAX_MEMBER_LEN {
        return Err(Invalid::new(
            field,
            format!("must be 1 to {MAX_MEMBER_LEN} bytes, got {}", s.len()),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(Invalid::new(field, "must not contain control characters"));
    }
    Ok(())
}

/// Ids that travel as a path segment cannot be `.` or `..`: HTTP clients resolve those (curl, and
/// any WHATWG URL parser even when percent-encoded), so `DELETE …/members/..` would reach the
/// board itself.
fn check_path_segment(field: &str, s: &str) -> Result<(), Invalid> {
    if s == "." || s == ".." {
        return Err(Invalid::new(
            field,
            format!("must not be {s:?}: HTTP clients resolve it as a path segment"),
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A board id: 1 to 64 characters of `[A-Za-z0-9_.-]`, other than `.` and `..`.
    BoardId
);
string_newtype!(
    /// A member id: 1 to 128 bytes of UTF-8 without control characters, other than `.` and `..`.
    Member
);
string_newtype!(
    /// A scope, such as `class:42`: 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    Scope
);
string_newtype!(
    /// An event id that makes a submit idempotent: 1 to 128 bytes without control characters.
    EventId
);

impl BoardId {
    /// Parses a board id.
    ///
    /// # Errors
    /// [`Invalid`] naming `board` and the allowed characters and length.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        check_id("board", s, &[], "[A-Za-z0-9_.-]")?;
        check_path_segment("board", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl Member {
    /// Parses a member id.
    ///
    /// # Errors
    /// [`Invalid`] naming `member` and the length limit.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::parse_field("member", s)
    }

    /// Parses a member id found in `field` (for example `members[3]`).
    ///
    /// # Errors
    /// [`Invalid`] naming `field` and the length limit.
    pub fn parse_field(field: &str, s: &str) -> Result<Self, Invalid> {
        check_opaque(field, s)?;
        check_path_segment(field, s)?;
        Ok(Self(s.to_owned()))
    }
}

impl Scope {
    /// Parses a scope found in `field`.
    ///
    /// # Errors
    /// [`Invalid`] naming `field` and the allowed characters and length.
    pub fn parse_field(field: &str, s: &str) -> Result<Self, Invalid> {
        check_id(field, s, &[':'], "[A-Za-z0-9_.:-]")?;
        Ok(Self(s.to_owned()))
    }

    /// Parses a scope.
    ///
    /// # Errors
    /// [`Invalid`] naming `scope`.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        Self::parse_field("scope", s)
    }

    /// Parses the scopes of one event: at most [`MAX_SCOPES`], no repeats.
    ///
    /// # Errors
    /// [`Invalid`] naming `scopes` or `scopes[i]`.
    pub fn parse_list<S: AsRef<str>>(list: &[S]) -> Result<Vec<Scope>, Invalid> {
        if list.len() > MAX_SCOPES {
            return Err(Invalid::new(
                "scopes",
                format!("at most {MAX_SCOPES} scopes, got {}", list.len()),
            ));
        }
        let mut out: Vec<Scope> = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let scope = Scope::parse_field(&format!("scopes[{i}]"), s.as_ref())?;
            if out.contains(&scope) {
                return Err(Invalid::new(
                    format!("scopes[{i}]"),
                    format!("{scope} is named twice"),
                ));
            }
            out.push(scope);
        }
        Ok(out)
    }
}

impl EventId {
    /// Parses an event id.
    ///
    /// # Errors
    /// [`Invalid`] naming `event_id` and the length limit.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        check_opaque("event_id", s)?;
        Ok(Self(s.to_owned()))
    }
}

/// A submitted value or a score: always finite.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Score(f64);

impl Score {
    /// Accepts a finite number.
    ///
    /// # Errors
    /// [`Invalid`] naming `field` when the number is NaN or infinite.
    pub fn new(field: &str, v: f64) -> Result<Self, Invalid> {
        if v.is_finite() {
            // -0 and 0 are one score: keep one of them, or dense ranks would count two values.
            Ok(Self(v + 0.0))
        } else {
            Err(Invalid::new(
                field,
                format!("must be a finite number, got {v}"),
            ))
        }
    }

    /// The number.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Which scores rank first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Higher is better.
    #[default]
    Desc,
    /// Lower is better (fastest time).
    Asc,
}

/// How a submitted value changes a member's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Add the value (negative values allowed).
    #[default]
    Incr,
    /// Keep the better of the old score and the value, by the board's order.
    Best,
    /// Replace the score.
    Set,
}

/// How members with equal scores are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TieBreak {
    /// Redis' own order of member ids (byte order; reversed on `desc` boards, as ZREVRANGE gives).
    #[default]
    Member,
    /// Whoever reached the score first ranks higher.
    First,
}

/// How ranks are numbered among equal scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RankMode {
    /// 1, 2, 3, 4.
    #[default]
    Ordinal,
    /// 1, 1, 3, 4.
    Competition,
    /// 1, 1, 2, 3.
    Dense,
}

macro_rules! wire_names {
    ($($t:ty { $($v:ident => $s:literal),+ })+) => {$(
        impl $t {
            /// The name used on the wire and in scripts.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )+};
}

wire_names! {
    Order { Desc => "desc", Asc => "asc" }
    Policy { Incr => "incr", Best => "best", Set => "set" }
    TieBreak { Member => "member", First => "first" }
    RankMode { Ordinal => "ordinal", Competition => "competition", Dense => "dense" }
}

/// A board definition: how scores are kept and ranked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDef {
    /// Which scores rank first.
    #[serde(default)]
    pub order: Order,
    /// How a submitted value changes a score.
    #[serde(default)]
    pub policy: Policy,
    /// How equal scores are ordered.
    #[serde(default)]
    pub tie_break: TieBreak,
    /// How ranks are numbered among equal scores.
    #[serde(default)]
    pub rank_mode: RankMode,
    /// The windows kept, each period its own sorted set.
    #[serde(default = "default_windows")]
    pub windows: Vec<Window>,
    /// How many closed periods stay readable.
    #[serde(default = "default_retention")]
    pub retention_periods: u32,
    /// Keep only the best N members per key.
    #[serde(default)]
    pub max_members: Option<u64>,
    /// Most distinct scope values the board keeps at once: an event naming a scope beyond them is
    /// refused. A scope stops counting once every key it has expired (see lua/submit.lua).
    #[serde(default = "default_max_scopes")]
    pub max_scopes: u32,
}

fn default_max_scopes() -> u32 {
    DEFAULT_MAX_SCOPES
}

fn default_windows() -> Vec<Window> {
    vec![Window::All]
}

fn default_retention() -> u32 {
    2
}

impl Default for BoardDef {
    fn default() -> Self {
        Self {
            order: Order::default(),
            policy: Policy::default(),
            tie_break: TieBreak::default(),
            rank_mode: RankMode::default(),
            windows: default_windows(),
            retention_periods: default_retention(),
            max_members: None,
            max_scopes: DEFAULT_MAX_SCOPES,
        }
    }
}

impl BoardDef {
    /// Checks the limits and puts the windows in canonical order.
    ///
    /// # Errors
    /// [`Invalid`] naming `windows`, `retention_periods`, `max_members` or `max_scopes` and the
    /// limit.
    pub fn validated(mut self) -> Result<Self, Invalid> {
        if self.windows.is_empty() {
            return Err(Invalid::new(
                "windows",
                "must name at least one of all, daily, weekly, monthly",
            ));
        }
        let n = self.windows.len();
        self.windows.sort();
        self.windows.dedup();
        if self.windows.len() != n {
            return Err(Invalid::new("windows", "must not name a window twice"));
        }
        if self.retention_periods > MAX_RETENTION_PERIODS {
            return Err(Invalid::new(
                "retention_periods",
                format!(
                    "must be at most {MAX_RETENTION_PERIODS}, got {}",
                    self.retention_periods
                ),
            ));
        }
        if let Some(m) = self.max_members {
            if m == 0 || m > MAX_MAX_MEMBERS {
                return Err(Invalid::new(
                    "max_members",
                    format!("must be 1 to {MAX_MAX_MEMBERS}, got {m}"),
                ));
            }
        }
        if self.max_scopes == 0 || self.max_scopes > MAX_MAX_SCOPES {
            return Err(Invalid::new(
                "max_scopes",
                format!("must be 1 to {MAX_MAX_SCOPES}, got {}", self.max_scopes),
            ));
        }
        Ok(self)
    }

    /// The largest magnitude a value or score may have on this board, when it is bounded.
    ///
    /// Boards that break ties by time fold a tick into the low bits of what Redis stores, so values
    /// must be integers that leave those bits free within the 53 exact bits of a double:
    /// |value| ≤ 2^(53 − T) − 1, with T the widest tick among the board's windows (see
    /// [`Window::tick_bits`]).
    pub fn score_bound(&self) -> Option<f64> {
        if self.tie_break != TieBreak::First {
            return None;
        }
        let bits = self.windows.iter().map(|w| w.tick_bits()).max()?;
        Some(2f64.powi(53 - bits as i32) - 1.0)
    }

    /// Tick bits folded into the stored scores of one window's keys (0 when ties break by member).
    pub fn tick_bits(&self, window: Window) -> u32 {
        match self.tie_break {
            TieBreak::Member => 0,
            TieBreak::First => window.tick_bits(),
        }
    }

    /// Checks a submitted value against this board.
    ///
    /// # Errors
    /// [`Invalid`] naming `field` when the value is outside the board's exact range.
    pub fn check_value(&self, field: &str, v: Score) -> Result<(), Invalid> {
        if let Some(bound) = self.score_bound() {
            let v = v.get();
            if v.fract() != 0.0 || v.abs() > bound {
                return Err(Invalid::new(
                    field,
                    format!(
                        "must be an integer in [-{bound}, {bound}] on a board that breaks ties by time \
                         (tie_break first, windows {}), got {v}",
                        self.windows_text()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn windows_text(&self) -> String {
        self.windows
            .iter()
            .map(|w| w.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Checks that `next` may replace this definition on a live board.
    ///
    /// Refused: a new `order`, `policy` or `tie_break` (the stored scores and the event history mean
    /// something else under them), a switch to or from `dense` ranks (dense boards keep a
    /// distinct-value index from their first write), and dropping a window (delete and recreate the
    /// board instead). Allowed: adding windows (they start empty), `ordinal` ↔ `competition`,
    /// `retention_periods` (applies to keys written from then on), `max_members` (a lower one
    /// trims every key before the change is answered) and `max_scopes` (a lower one refuses new
    /// scopes until fewer than it are kept; the scopes kept stay).
    ///
    /// # Errors
    /// [`Invalid`] naming the field and why the change is refused.
    pub fn check_update(&self, next: &BoardDef) -> Result<(), Invalid> {
        let refuse = |field: &str, from: &dyn fmt::Display, to: &dyn fmt::Display, why: &str| {
            Err(Invalid::new(
                field,
                format!("cannot change from {from} to {to} on an existing board: {why}"),
            ))
        };
        if self.order != next.order {
            return refuse(
                "order",
                &self.order,
                &next.order,
                "stored scores would rank backwards",
            );
        }
        if self.policy != next.policy {
            return refuse(
                "policy",
                &self.policy,
                &next.policy,
                "existing scores and the event history were made under the old policy",
            );
        }
        if self.tie_break != next.tie_break {
            return refuse(
                "tie_break",
                &self.tie_break,
                &next.tie_break,
                "stored scores encode the tie-break",
            );
        }
        if (self.rank_mode == RankMode::Dense) != (next.rank_mode == RankMode::Dense) {
            return refuse(
                "rank_mode",
                &self.rank_mode,
                &next.rank_mode,
                "dense ranks need a distinct-value index kept from the board's first write",
            );
        }
        if let Some(w) = self.windows.iter().find(|w| !next.windows.contains(w)) {
            return Err(Invalid::new(
                "windows",
                format!("cannot drop the {w} window from an existing board: delete and recreate the board"),
            ));
        }
        if next.tie_break == TieBreak::First && next.score_bound() < self.score_bound() {
            return Err(Invalid::new(
                "windows",
                "cannot add a window whose tick is wider than the existing windows': it would narrow the score range of stored scores",
            ));
        }
        Ok(())
    }
}

/// Display data kept beside a board for dashboards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Display {
    /// The name shown for the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// A small JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Display {
    /// Checks the limits.
    ///
    /// # Errors
    /// [`Invalid`] naming `display_name` or `data` and the limit.
    pub fn validated(self) -> Result<Self, Invalid> {
        if let Some(name) = &self.display_name {
            let n = name.chars().count();
            if n == 0 || n > MAX_DISPLAY_NAME_LEN {
                return Err(Invalid::new(
                    "display_name",
                    format!("must be 1 to {MAX_DISPLAY_NAME_LEN} characters, got {n}"),
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(Invalid::new(
                    "display_name",
                    "must not contain control characters",
                ));
            }
        }
        if let Some(data) = &self.data {
            let n = serde_json::to_string(data)
                .map(|s| s.len())
                .unwrap_or(usize::MAX);
            if n > MAX_DISPLAY_DATA_BYTES {
                return Err(Invalid::new(
                    "data",
                    format!("must be at most {MAX_DISPLAY_DATA_BYTES} bytes of JSON, got {n}"),
                ));
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_ids_accept_the_documented_alphabet_and_name_the_field_otherwise() {
        assert!(BoardId::parse("xp_2026.v-1").is_ok());
        let e = BoardId::parse("x p").unwrap_err();
        assert_eq!(e.field, "board");
        assert!(e.message.contains("[A-Za-z0-9_.-]"), "{e}");
        assert!(BoardId::parse("").is_err());
        assert!(BoardId::parse(&"a".repeat(64)).is_ok());
        assert!(BoardId::parse(&"a".repeat(65))
            .unwrap_err()
            .message
            .contains("64"));
        assert!(
            BoardId::parse("a{b}").is_err(),
            "braces would break the hash tag"
        );
    }

    #[test]
    fn scopes_allow_colons_and_refuse_repeats_and_more_than_eight() {
        assert!(Scope::parse("class:42").is_ok());
        let e = Scope::parse_list(&["a", "a"]).unwrap_err();
        assert_eq!(e.field, "scopes[1]");
        let nine: Vec<String> = (0..9).map(|i| format!("s{i}")).collect();
        assert_eq!(Scope::parse_list(&nine).unwrap_err().field, "scopes");
        assert_eq!(
            Scope::parse_list(&["ok", "b a d"]).unwrap_err().field,
            "scopes[1]"
        );
    }

    #[test]
    fn members_are_opaque_bytes_within_the_length_limit() {
        assert!(Member::parse("ünï cödé@example.com").is_ok());
        assert!(Member::parse(&"m".repeat(128)).is_ok());
        assert!(Member::parse(&"m".repeat(129))
            .unwrap_err()
            .message
            .contains("128"));
        assert!(Member::parse("a\nb").is_err());
        assert!(EventId::parse("").is_err());
    }

    #[test]
    fn ids_that_clients_would_resolve_as_path_segments_are_refused() {
        for s in [".", ".."] {
            let e = Member::parse_field("members[2]", s).unwrap_err();
            assert_eq!(e.field, "members[2]");
            assert!(e.message.contains("path segment"), "{e}");
            assert_eq!(BoardId::parse(s).unwrap_err().field, "board");
        }
        assert!(Member::parse("...").is_ok());
        assert!(BoardId::parse(".x").is_ok());
    }

    #[test]
    fn scores_must_be_finite() {
        assert!(Score::new("value", f64::NAN).is_err());
        assert!(Score::new("value", f64::INFINITY).is_err());
        assert_eq!(Score::new("value", -2.5).unwrap().get(), -2.5);
        assert!(Score::new("value", -0.0).unwrap().get().is_sign_positive());
    }

    #[test]
    fn definitions_default_to_the_documented_values() {
        let d: BoardDef = serde_json::from_str("{}").unwrap();
        assert_eq!(d, BoardDef::default());
        // The contract's defaults, spelled out: desc, incr, member, ordinal, ["all"], 2, null.
        assert_eq!(
            serde_json::to_value(&d).unwrap(),
            serde_json::json!({
                "order": "desc",
                "policy": "incr",
                "tie_break": "member",
                "rank_mode": "ordinal",
                "windows": ["all"],
                "retention_periods": 2,
                "max_members": null,
                "max_scopes": 10000,
            })
        );
        assert!(serde_json::from_str::<BoardDef>(r#"{"colour":"red"}"#).is_err());
    }

    #[test]
    fn first_tie_break_bounds_values_by_the_widest_window_tick() {
        let mut d = BoardDef {
            tie_break: TieBreak::First,
            windows: vec![Window::Daily],
            ..BoardDef::default()
        };
        assert_eq!(d.score_bound(), Some(2f64.powi(26) - 1.0));
        d.windows.push(Window::All);
        assert_eq!(d.score_bound(), Some(2f64.powi(21) - 1.0));
        let v = Score::new("value", 2_097_152.0).unwrap();
        let e = d.check_value("value", v).unwrap_err();
        assert!(e.message.contains("2097151"), "{e}");
        assert!(d
            .check_value("value", Score::new("value", 1.5).unwrap())
            .is_err());
        assert!(BoardDef::default()
            .check_value("value", Score::new("v", 1e300).unwrap())
            .is_ok());
    }

    #[test]
    fn updates_refuse_what_would_corrupt_stored_scores() {
        let base = BoardDef::default();
        let mut next = base.clone();
        next.order = Order::Asc;
        assert_eq!(base.check_update(&next).unwrap_err().field, "order");
        let mut next = base.clone();
        next.rank_mode = RankMode::Dense;
        assert_eq!(base.check_update(&next).unwrap_err().field, "rank_mode");
        let mut next = base.clone();
        next.rank_mode = RankMode::Competition;
        next.windows.push(Window::Weekly);
        next.max_members = Some(10);
        assert!(base.check_update(&next).is_ok());
        assert_eq!(next.check_update(&base).unwrap_err().field, "windows");
    }

    #[test]
    fn validation_sorts_windows_and_checks_limits() {
        let d = BoardDef {
            windows: vec![Window::Weekly, Window::All],
            ..BoardDef::default()
        }
        .validated()
        .unwrap();
        assert_eq!(d.windows, vec![Window::All, Window::Weekly]);
        let e = BoardDef {
            windows: vec![Window::All, Window::All],
            ..BoardDef::default()
        }
        .validated()
        .unwrap_err();
        assert_eq!(e.field, "windows");
        let e = BoardDef {
            max_members: Some(0),
            ..BoardDef::default()
        }
        .validated()
        .unwrap_err();
        assert_eq!(e.field, "max_members");
        for bad in [0, MAX_MAX_SCOPES + 1] {
            let e = BoardDef {
                max_scopes: bad,
                ..BoardDef::default()
            }
            .validated()
            .unwrap_err();
            assert_eq!(e.field, "max_scopes");
            assert!(e.message.contains("1 to 1000000"), "{e}");
        }
    }

    #[test]
    fn a_stored_definition_without_max_scopes_reads_as_the_default() {
        let d: BoardDef = serde_json::from_str(r#"{"order":"asc","max_members":5}"#).unwrap();
        assert_eq!(d.max_scopes, DEFAULT_MAX_SCOPES);
    }
}
