//! The kinds of setting values: how each is read from its string form (an environment variable, a
//! flag, a default) and from rankd.toml, which limits it checks, and how those read in the docs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::{ApiKey, LogFormat};
use crate::engine::Durability;
use crate::error::Invalid;

/// A kind of setting value, read into a `T`.
pub(super) trait Kind<T> {
    /// What rankd.toml holds for it: an integer, a boolean or a string, turned into the string form.
    type Toml: DeserializeOwned + ToString;
    /// A true-or-false switch: its flag alone means true, and an empty value means its default.
    const SWITCH: bool = false;
    /// The smallest and largest whole number it takes, for a number.
    const RANGE: Option<(u64, u64)> = None;
    /// Reads the string form of the setting `name`.
    ///
    /// # Errors
    /// [`Invalid`] naming `name` and the limit the value breaks.
    fn parse(name: &str, value: &str) -> Result<T, Invalid>;
    /// The values it takes, in Markdown, for the README and `--help` (for example `1–3600`).
    fn values() -> String {
        match Self::RANGE {
            Some((lo, hi)) => format!("{lo}–{hi}"),
            None => String::new(),
        }
    }
}

/// Reads the setting `name` as a `K`: an empty value of a switch is its `default`.
///
/// # Errors
/// [`Invalid`] naming `name` and the limit the value breaks.
pub(super) fn read<K: Kind<T>, T>(name: &str, value: &str, default: &str) -> Result<T, Invalid> {
    if K::SWITCH && value.trim().is_empty() {
        K::parse(name, default)
    } else {
        K::parse(name, value)
    }
}

/// A whole number from `lo` to `hi` of some `unit` (empty for a plain count).
fn whole(name: &str, value: &str, lo: u64, hi: u64, unit: &str) -> Result<u64, Invalid> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| {
            Invalid::new(
                name,
                format!("must be a whole number{unit} from {lo} to {hi}, got {value:?}"),
            )
        })
}

/// A whole number from `LO` to `HI`.
pub(super) struct Whole<const LO: u64, const HI: u64>;

impl<const LO: u64, const HI: u64, T: TryFrom<u64>> Kind<T> for Whole<LO, HI> {
    type Toml = u64;
    const RANGE: Option<(u64, u64)> = Some((LO, HI));
    fn parse(name: &str, value: &str) -> Result<T, Invalid> {
        // A limit past what `T` holds is a mistake in the declaration, which a test of every
        // setting's limits catches; it still fails with the limit rather than wrap.
        T::try_from(whole(name, value, LO, HI, "")?).map_err(|_| {
            Invalid::new(
                name,
                format!("must be a whole number from {LO} to {HI}, got {value:?}"),
            )
        })
    }
}

/// A number of seconds from `LO` to `HI`.
pub(super) struct Secs<const LO: u64, const HI: u64>;

impl<const LO: u64, const HI: u64> Kind<Duration> for Secs<LO, HI> {
    type Toml = u64;
    const RANGE: Option<(u64, u64)> = Some((LO, HI));
    fn parse(name: &str, value: &str) -> Result<Duration, Invalid> {
        whole(name, value, LO, HI, " of seconds").map(Duration::from_secs)
    }
}

/// A number of milliseconds from `LO` to `HI`.
pub(super) struct Millis<const LO: u64, const HI: u64>;

impl<const LO: u64, const HI: u64> Kind<Duration> for Millis<LO, HI> {
    type Toml = u64;
    const RANGE: Option<(u64, u64)> = Some((LO, HI));
    fn parse(name: &str, value: &str) -> Result<Duration, Invalid> {
        whole(name, value, LO, HI, " of milliseconds").map(Duration::from_millis)
    }
}

/// True or false (also `1`/`0`, `yes`/`no`).
pub(super) struct Switch;

impl Kind<bool> for Switch {
    type Toml = bool;
    const SWITCH: bool = true;
    fn parse(name: &str, value: &str) -> Result<bool, Invalid> {
        match value.trim() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(Invalid::new(
                name,
                format!("must be true or false, got {value:?}"),
            )),
        }
    }
    fn values() -> String {
        "`true` or `false`".into()
    }
}

/// The named values of a setting that takes one of a few words.
pub(super) trait Choices: Sized + Copy + 'static {
    /// Each word and the value it stands for.
    const CHOICES: &'static [(&'static str, Self)];
}

impl Choices for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

impl Choices for Durability {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("sync", Durability::Sync), ("async", Durability::Async)];
}

/// `a`, `a or b`, `a, b or c`: each word through `quote`.
fn one_of(quote: impl Fn(&str) -> String, words: &[(&str, impl Sized)]) -> String {
    let words: Vec<String> = words.iter().map(|(w, _)| quote(w)).collect();
    match words.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// One of the words of [`Choices`].
pub(super) struct OneOf;

impl<T: Choices> Kind<T> for OneOf {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<T, Invalid> {
        let word = value.trim();
        T::CHOICES
            .iter()
            .find(|(w, _)| *w == word)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                Invalid::new(
                    name,
                    format!(
                        "must be {}, got {value:?}",
                        one_of(str::to_owned, T::CHOICES)
                    ),
                )
            })
    }
    fn values() -> String {
        one_of(|w| format!("`{w}`"), T::CHOICES)
    }
}

/// An IP address and port.
pub(super) struct Address;

impl Kind<SocketAddr> for Address {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<SocketAddr, Invalid> {
        value.trim().parse().map_err(|_| {
            Invalid::new(
                name,
                format!("must be an address like 127.0.0.1:8080, got {value:?}"),
            )
        })
    }
    fn values() -> String {
        "`IP:port`".into()
    }
}

/// A Redis URL, standalone or cluster; empty for none.
pub(super) struct RedisUrl;

impl Kind<Option<String>> for RedisUrl {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<Option<String>, Invalid> {
        let v = value.trim();
        if v.is_empty() {
            Ok(None)
        } else if [
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
        ]
        .iter()
        .any(|scheme| v.starts_with(scheme))
        {
            Ok(Some(v.to_owned()))
        } else {
            Err(Invalid::new(
                name,
                "must start with redis://, rediss:// (TLS), redis-cluster:// or rediss-cluster://",
            ))
        }
    }
    fn values() -> String {
        "`redis[s]://…` or `redis[s]-cluster://…`".into()
    }
}

/// A Postgres URL in any form libpq takes; empty for none.
pub(super) struct PostgresUrl;

impl Kind<Option<String>> for PostgresUrl {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<Option<String>, Invalid> {
        let v = value.trim();
        if v.is_empty() {
            Ok(None)
        } else if v.starts_with("postgres://") || v.starts_with("postgresql://") {
            // Every form libpq takes: user, password, host (a Unix socket directory too), port and
            // sslmode in the URL or as its parameters; without a user, PGUSER, then the
            // operating-system user, as libpq does.
            <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(v)
                .map_err(|e| Invalid::new(name, format!("not a Postgres URL: {e}")))?;
            Ok(Some(v.to_owned()))
        } else {
            Err(Invalid::new(name, "must start with postgres://"))
        }
    }
    fn values() -> String {
        "`postgres://…`".into()
    }
}

/// The prefix of Redis keys, as [`crate::keys::Keys`] takes it.
pub(super) struct KeyPrefix;

impl Kind<String> for KeyPrefix {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<String, Invalid> {
        crate::keys::Keys::new(value).map_err(|e| e.renamed(name))?;
        Ok(value.to_owned())
    }
    fn values() -> String {
        format!(
            "at most {} bytes, no braces or white space",
            crate::keys::MAX_PREFIX_LEN
        )
    }
}

/// API keys and their roles, as [`ApiKey::parse_list`] takes them.
pub(super) struct ApiKeys;

impl Kind<Vec<ApiKey>> for ApiKeys {
    type Toml = String;
    fn parse(_name: &str, value: &str) -> Result<Vec<ApiKey>, Invalid> {
        // Its errors name the entry at fault: `api_keys[2]`.
        ApiKey::parse_list(value)
    }
    fn values() -> String {
        "`KEY:ROLES,…`".into()
    }
}

/// A secret sent in an HTTP header: visible ASCII; empty for none.
pub(super) struct HeaderSecret;

impl Kind<Option<String>> for HeaderSecret {
    type Toml = String;
    fn parse(name: &str, value: &str) -> Result<Option<String>, Invalid> {
        let v = value.trim();
        if !v.is_empty() && !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid::new(
                name,
                "must be visible ASCII characters (no spaces)",
            ));
        }
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }
    fn values() -> String {
        "visible ASCII".into()
    }
}

/// A file system path; empty for none.
pub(super) struct OptionalPath;

impl Kind<Option<PathBuf>> for OptionalPath {
    type Toml = String;
    fn parse(_name: &str, value: &str) -> Result<Option<PathBuf>, Invalid> {
        let v = value.trim();
        Ok((!v.is_empty()).then(|| PathBuf::from(v)))
    }
    fn values() -> String {
        "a path".into()
    }
}
