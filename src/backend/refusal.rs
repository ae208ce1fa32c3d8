//! A script's own error reply, read once into a typed value.
//!
//! Every script of lua/ refuses through `fail(code, detail)` of lua/lib.lua, which answers the error
//! reply `RANKD_<CODE> <detail>` (Redis may put a prefix such as `ERR ` before it). This is the one
//! place that text is read: callers match on [`Refusal`], never on the reply's words.

use crate::invalid::Invalid;

/// Why a script refused a call (see the header of each script for which it answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `NOBOARD`: the board is not defined.
    NoBoard,
    /// `STALE <version>`: the caller planned the call from another version of the definition
    /// (the current one, empty when there is none).
    Stale(String),
    /// `EXISTS <version>`: a create of a board that is defined, at this version.
    Exists(String),
    /// `DELETING <token>`: a create of a board whose deletion (under this token) is under way.
    Deleting(String),
    /// `RETRY <detail>`: a member removal lost its lease, or kept meeting writes of the member;
    /// begin again.
    Retry,
    /// `RANGE <event index> <field>: <detail>`: an event refused for one of its fields: a value
    /// that would leave the board's range, a scope beyond the board's `max_scopes`.
    Range {
        /// The event's index among the call's events.
        index: usize,
        /// The field and what is wrong with it.
        invalid: Invalid,
    },
    /// `REUSED <event index> <event id>`: the id stands for another event on this board.
    Reused {
        /// The event's index among the call's events.
        index: usize,
        /// The id.
        event_id: String,
    },
    /// `ARGS <detail>`: arguments the script does not take (a fault of the caller, not of input).
    Args(String),
    /// A `RANKD_` code this version does not know.
    Unknown(String),
}

impl Refusal {
    /// Reads an error reply; `None` when it is not a script's refusal (Redis's own errors: out of
    /// memory, a script that failed to run, ...).
    pub fn parse(reply: &str) -> Option<Self> {
        let (_, rest) = reply.split_once("RANKD_")?;
        let (code, detail) = rest.split_once(' ').unwrap_or((rest, ""));
        let detail = detail.trim_end();
        // "<event index> <rest>"
        let indexed = || {
            let (i, rest) = detail.split_once(' ').unwrap_or(("0", detail));
            (i.parse::<usize>().unwrap_or(0), rest)
        };
        Some(match code {
            "NOBOARD" => Self::NoBoard,
            "STALE" => Self::Stale(detail.to_owned()),
            "EXISTS" => Self::Exists(detail.to_owned()),
            "DELETING" => Self::Deleting(detail.to_owned()),
            "RETRY" => Self::Retry,
            "RANGE" => {
                let (index, why) = indexed();
                Self::Range {
                    index,
                    invalid: Invalid::from_reason(why),
                }
            }
            "REUSED" => {
                let (index, id) = indexed();
                Self::Reused {
                    index,
                    event_id: id.to_owned(),
                }
            }
            "ARGS" => Self::Args(detail.to_owned()),
            _ => Self::Unknown(rest.trim_end().to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_lib_lua_parses_with_its_detail() {
        assert_eq!(
            Refusal::parse("RANKD_NOBOARD the board is not defined"),
            Some(Refusal::NoBoard)
        );
        assert_eq!(
            Refusal::parse("RANKD_STALE 00ab3"),
            Some(Refusal::Stale("00ab3".into()))
        );
        assert_eq!(
            Refusal::parse("RANKD_STALE "),
            Some(Refusal::Stale(String::new()))
        );
        assert_eq!(
            Refusal::parse("RANKD_EXISTS v1"),
            Some(Refusal::Exists("v1".into()))
        );
        assert_eq!(
            Refusal::parse("RANKD_DELETING d1"),
            Some(Refusal::Deleting("d1".into()))
        );
        assert_eq!(
            Refusal::parse("RANKD_RETRY the board gained or lost keys"),
            Some(Refusal::Retry)
        );
        assert_eq!(
            Refusal::parse("ERR RANKD_RANGE 3 value: must be at most 1e15"),
            Some(Refusal::Range {
                index: 3,
                invalid: Invalid::new("value", "must be at most 1e15"),
            })
        );
        assert_eq!(
            Refusal::parse("RANKD_REUSED 7 order-42"),
            Some(Refusal::Reused {
                index: 7,
                event_id: "order-42".into(),
            })
        );
        assert_eq!(
            Refusal::parse("RANKD_ARGS unknown page kind x"),
            Some(Refusal::Args("unknown page kind x".into()))
        );
        assert_eq!(
            Refusal::parse("RANKD_NEWCODE what"),
            Some(Refusal::Unknown("NEWCODE what".into()))
        );
    }

    #[test]
    fn redis_errors_are_not_refusals() {
        assert_eq!(
            Refusal::parse("OOM command not allowed when used memory > 'maxmemory'"),
            None
        );
        assert_eq!(
            Refusal::parse("ERR Error running script (call to f_1): @user_script:1: boom"),
            None
        );
    }
}
