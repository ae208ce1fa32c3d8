//! The only place a Redis key is formatted.
//!
//! Every key of a board carries the configured prefix and the board id as its hash tag, so that all
//! keys one script touches live in one Redis Cluster slot:
//!
//! ```text
//! {prefix}boards                                   set of board ids (a key outside any board)
//! {prefix}store                                    string: id of the durable store this Redis feeds
//! {prefix}caches                                   hash: answer cache clears, for every instance to apply
//! {prefix}{<board>}:def                            hash: v (version), json (definition), created
//! {prefix}{<board>}:dedupe                         zset: event id -> ms when it is forgotten
//! {prefix}{<board>}:prints                         hash: event id -> print of the event it stands for
//! {prefix}{<board>}:keys                           zset: data key -> ms it expires (+inf: never)
//! {prefix}{<board>}:scopes                         zset: scope -> ms its latest key expires (+inf: never)
//! {prefix}{<board>}:rm                             hash: member under removal -> keys written for it since
//! {prefix}{<board>}:dn / :dd                       hashes: member -> display name / display data
//! {prefix}{<board>}:seq                            counter: the board's last operation sequence number
//! {prefix}{<board>}:log                            stream: operations not yet copied to the durable store
//! {prefix}{<board>}:cv                             hash: cached pages' depths and versions, and the epoch
//! {prefix}{<board>}:z:<window>:<period>:<scope>    zset: member -> stored score
//! {prefix}{<board>}:dv:<window>:<period>:<scope>   zset: distinct values (dense boards)
//! {prefix}{<board>}:dc:<window>:<period>:<scope>   hash: value -> member count (dense boards)
//! ```
//!
//! `<period>` is `all` for the all-time window; `<scope>` is `g` for the global board and `s:<scope>`
//! for a scoped one (scopes may contain `:`, which is why the scope comes last).

use crate::board::{BoardId, Scope};
use crate::error::Invalid;
use crate::window::Period;

/// Longest key prefix, in bytes.
pub const MAX_PREFIX_LEN: usize = 64;

/// Formats keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// The keys of one leaderboard: a (window, period, scope) of a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoardKey {
    /// The sorted set of members and stored scores.
    pub zset: String,
    /// Distinct values, for dense ranks.
    pub distinct_values: String,
    /// How many members hold each distinct value, for dense ranks.
    pub distinct_counts: String,
}

impl Keys {
    /// Keys under `prefix` (for example `rankd:`).
    ///
    /// # Errors
    /// [`Invalid`] naming `key_prefix` when it is too long or holds a brace, which would break hash tags.
    pub fn new(prefix: &str) -> Result<Self, Invalid> {
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(Invalid::new(
                "key_prefix",
                format!(
                    "must be at most {MAX_PREFIX_LEN} bytes, got {}",
                    prefix.len()
                ),
            ));
        }
        if prefix.contains(['{', '}'])
            || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Invalid::new(
                "key_prefix",
                "must not contain braces, white space or control characters",
            ));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
        })
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn board_key(&self, board: &BoardId, suffix: &str) -> String {
        let mut k = self.head(board, suffix.len());
        k.push_str(suffix);
        k
    }

    /// `{prefix}{<board>}:`, with room for `more` bytes after it. Keys are built by hand rather
    /// than by format!: every request names a few, and formatting them was a visible share of a
    /// single submit's CPU.
    fn head(&self, board: &BoardId, more: usize) -> String {
        let board = board.as_str();
        let mut k = String::with_capacity(self.prefix.len() + board.len() + 3 + more);
        k.push_str(&self.prefix);
        k.push('{');
        k.push_str(board);
        k.push_str("}:");
        k
    }

    /// The set of defined board ids.
    pub fn registry(&self) -> String {
        format!("{}boards", self.prefix)
    }

    /// A board's definition hash.
    pub fn definition(&self, board: &BoardId) -> String {
        self.board_key(board, "def")
    }

    /// What every leaderboard key of a board starts with (`{prefix}{<board>}:z:`).
    pub fn leaderboard_head(&self, board: &BoardId) -> String {
        self.board_key(board, "z:")
    }

    /// The clears of the answer caches, for every instance to apply (see lua/cache_clears.lua).
    pub fn cache_clears(&self) -> String {
        format!("{}caches", self.prefix)
    }

    /// The id of the durable store this Redis feeds (see [`crate::store::identity`]).
    pub fn store_pairing(&self) -> String {
        format!("{}store", self.prefix)
    }

    /// A board's recently seen event ids.
    pub fn dedupe(&self, board: &BoardId) -> String {
        self.board_key(board, "dedupe")
    }

    /// The prints of the events a board's remembered ids were accepted with (see
    /// [`crate::engine::event_print`]).
    pub fn event_prints(&self, board: &BoardId) -> String {
        self.board_key(board, "prints")
    }

    /// A board's cache hash: the versions of the pages rankd instances cache (see lua/lib.lua's
    /// `pages_changed`).
    pub fn cache_versions(&self, board: &BoardId) -> String {
        self.board_key(board, "cv")
    }

    /// A board's index of its data keys.
    pub fn index(&self, board: &BoardId) -> String {
        self.board_key(board, "keys")
    }

    /// A board's scope index: every scope it keeps, with when its latest key expires.
    pub fn scopes(&self, board: &BoardId) -> String {
        self.board_key(board, "scopes")
    }

    /// A board's removals under way: per member, the keys written for it since its removal began.
    pub fn removals(&self, board: &BoardId) -> String {
        self.board_key(board, "rm")
    }

    /// A board's operation sequence counter.
    pub fn sequence(&self, board: &BoardId) -> String {
        self.board_key(board, "seq")
    }

    /// A board's log of operations awaiting the durable store.
    pub fn log(&self, board: &BoardId) -> String {
        self.board_key(board, "log")
    }

    /// A board's display names.
    pub fn display_names(&self, board: &BoardId) -> String {
        self.board_key(board, "dn")
    }

    /// A board's display data.
    pub fn display_data(&self, board: &BoardId) -> String {
        self.board_key(board, "dd")
    }

    /// The keys of one leaderboard of a board.
    pub fn leaderboard(&self, board: &BoardId, period: &Period, scope: Option<&Scope>) -> BoardKey {
        let id = period.id();
        let window = period.window().as_str();
        let scope = scope.map(Scope::as_str);
        let more = window.len() + id.len() + scope.map_or(0, str::len) + 9;
        let key = |kind: &str| {
            let mut k = self.head(board, more);
            k.push_str(kind);
            k.push(':');
            k.push_str(window);
            k.push(':');
            k.push_str(&id);
            match scope {
                None => k.push_str(":g"),
                Some(s) => {
                    k.push_str(":s:");
                    k.push_str(s);
                }
            }
            k
        };
        BoardKey {
            zset: key("z"),
            distinct_values: key("dv"),
            distinct_counts: key("dc"),
        }
    }

    /// The window, period id and scope of a leaderboard named by its sorted set.
    pub fn describe(
        &self,
        board: &BoardId,
        zset: &str,
    ) -> Option<(crate::window::Window, String, Option<String>)> {
        let head = self.leaderboard_head(board);
        let tail = zset.strip_prefix(&head)?;
        let mut parts = tail.splitn(3, ':');
        let window = parts.next()?.parse().ok()?;
        let period = parts.next()?.to_owned();
        let scope = match parts.next()? {
            "g" => None,
            s => Some(s.strip_prefix("s:")?.to_owned()),
        };
        Some((window, period, scope))
    }

    /// The keys of a leaderboard named by its sorted set (as the key index lists them), with the
    /// window it belongs to.
    pub fn from_zset(
        &self,
        board: &BoardId,
        zset: &str,
    ) -> Option<(BoardKey, crate::window::Window)> {
        let head = self.leaderboard_head(board);
        let tail = zset.strip_prefix(&head)?;
        let window = tail.split(':').next()?.parse().ok()?;
        Some((
            BoardKey {
                zset: zset.to_owned(),
                distinct_values: self.board_key(board, &format!("dv:{tail}")),
                distinct_counts: self.board_key(board, &format!("dc:{tail}")),
            },
            window,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::Window;

    fn board() -> BoardId {
        BoardId::parse("xp").unwrap()
    }

    #[test]
    fn every_board_key_carries_the_prefix_and_the_board_hash_tag() {
        let k = Keys::new("t1:").unwrap();
        let p = Period::parse(Window::Weekly, "2026-W48").unwrap();
        let s = Scope::parse("class:42").unwrap();
        let l = k.leaderboard(&board(), &p, Some(&s));
        assert_eq!(l.zset, "t1:{xp}:z:weekly:2026-W48:s:class:42");
        assert_eq!(l.distinct_values, "t1:{xp}:dv:weekly:2026-W48:s:class:42");
        for key in [
            k.definition(&board()),
            k.dedupe(&board()),
            k.event_prints(&board()),
            k.index(&board()),
            k.scopes(&board()),
            k.removals(&board()),
            l.distinct_counts,
        ] {
            assert!(key.starts_with("t1:{xp}:"), "{key}");
        }
        let g = k.leaderboard(&board(), &Period::parse(Window::All, "all").unwrap(), None);
        assert_eq!(g.zset, "t1:{xp}:z:all:all:g");
    }

    #[test]
    fn a_zset_name_from_the_index_maps_back_to_its_keys_and_window() {
        let k = Keys::new("rankd:").unwrap();
        let p = Period::parse(Window::Daily, "2026-11-26").unwrap();
        let s = Scope::parse("region:eu").unwrap();
        let l = k.leaderboard(&board(), &p, Some(&s));
        assert_eq!(
            k.describe(&board(), &l.zset),
            Some((
                Window::Daily,
                "2026-11-26".to_owned(),
                Some("region:eu".to_owned())
            ))
        );
        assert_eq!(k.from_zset(&board(), &l.zset), Some((l, Window::Daily)));
        assert_eq!(k.from_zset(&board(), "rankd:{other}:z:all:all:g"), None);
    }

    #[test]
    fn prefixes_with_braces_are_refused() {
        assert_eq!(Keys::new("a{b}").unwrap_err().field, "key_prefix");
        assert!(Keys::new(&"p".repeat(65)).is_err());
        assert!(Keys::new("").is_ok());
    }
}
