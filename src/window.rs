//! UTC leaderboard windows (all-time, daily, weekly, monthly) and the periods they cut time into.

use crate::invalid::Invalid;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Months, NaiveDate, SecondsFormat, TimeDelta, Utc, Weekday};

/// First year any period may fall in.
const MIN_YEAR: i32 = 2000;
/// Last year any period may fall in; ids carry exactly four year digits.
const MAX_YEAR: i32 = 9999;

/// Start of the single all-time period: 2020-01-01T00:00:00Z.
const ALL_START_MS: i64 = 1_577_836_800_000;
/// End of the single all-time period: 2^32 whole seconds after its start, so that an all-time
/// tick (whole seconds since the start) always fits in [`Window::tick_bits`] bits.
const ALL_END_MS: i64 = ALL_START_MS + (1_i64 << 32) * 1000;

/// Id of the single all-time period.
const ALL_ID: &str = "all";

/// The span of time a leaderboard ranks over.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Window {
    /// One everlasting period, starting 2020-01-01T00:00:00Z. The default.
    #[default]
    All,
    /// UTC calendar days.
    Daily,
    /// ISO 8601 weeks, Monday 00:00 UTC to the next Monday.
    Weekly,
    /// UTC calendar months.
    Monthly,
}

impl Window {
    /// Every window, in declaration order.
    pub const EVERY: [Window; 4] = [Window::All, Window::Daily, Window::Weekly, Window::Monthly];

    /// The window's lowercase name: `"all"`, `"daily"`, `"weekly"` or `"monthly"`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Window::All => "all",
            Window::Daily => "daily",
            Window::Weekly => "weekly",
            Window::Monthly => "monthly",
        }
    }

    /// Bits reserved for the tie-break tick when a board breaks ties by who reached a score first.
    ///
    /// Every [`Period::tick`] of this window is below `2^tick_bits`: a day has 86 400 000 ms
    /// (< 2^27), a week 604 800 000 ms (< 2^30), the longest month 2 678 400 000 ms (< 2^32), and
    /// the all-time period is exactly 2^32 seconds long.
    #[must_use]
    pub fn tick_bits(self) -> u32 {
        match self {
            Window::Daily => 27,
            Window::Weekly => 30,
            Window::Monthly | Window::All => 32,
        }
    }

    /// The id format of this window's periods, as shown in parse errors.
    fn expected_id(self) -> &'static str {
        match self {
            Window::All => "all",
            Window::Daily => "YYYY-MM-DD, e.g. 2026-11-26",
            Window::Weekly => "YYYY-Www, e.g. 2026-W48",
            Window::Monthly => "YYYY-MM, e.g. 2026-11",
        }
    }
}

impl FromStr for Window {
    type Err = WindowError;

    /// Parses an exact lowercase window name.
    ///
    /// # Errors
    ///
    /// [`WindowError::UnknownWindow`] for anything but `all`, `daily`, `weekly` or `monthly`
    /// (case matters, so that one board never has two spellings).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Window::EVERY
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| WindowError::UnknownWindow {
                given: s.to_owned(),
            })
    }
}

impl fmt::Display for Window {
    /// Writes [`Window::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a window, period id or instant was rejected. Every message starts with the name of the
/// offending field (`window: …`, `period: …`, `at: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A window name that is not one of [`Window::EVERY`].
    #[error("window: unknown window {given:?} (expected one of all, daily, weekly, monthly)")]
    UnknownWindow {
        /// The rejected name.
        given: String,
    },
    /// A period id that is not in its window's exact format, or names no real period.
    #[error("period: {given:?} is not {} period (expected {expected})", period_noun(*.window))]
    InvalidPeriod {
        /// The window the id was parsed for.
        window: Window,
        /// The rejected id.
        given: String,
        /// The expected format, with an example.
        expected: &'static str,
    },
    /// A well-formed value outside the supported range.
    #[error("{field}: {detail}")]
    OutOfRange {
        /// The offending field: `"at"` for instants, `"period"` for period ids and offsets.
        field: &'static str,
        /// What was out of range, naming the bound.
        detail: String,
    },
}

/// "a daily", "the all-time", ...: the noun phrase for one period of `window` in error messages.
fn period_noun(window: Window) -> &'static str {
    match window {
        Window::All => "the all-time",
        Window::Daily => "a daily",
        Window::Weekly => "a weekly",
        Window::Monthly => "a monthly",
    }
}

/// One period of a window: the half-open span `[start_ms, end_ms)` of Unix milliseconds, UTC.
///
/// Every `Period` lies in the supported years 2000..=9999 (for weekly periods, the ISO week-year),
/// so its [`id`](Period::id) always parses back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    window: Window,
    start_ms: i64,
    end_ms: i64,
}

impl Period {
    /// The period of `window` that contains the instant `at_ms` (Unix milliseconds).
    ///
    /// # Errors
    ///
    /// [`WindowError::OutOfRange`] (field `at`) if `at_ms` falls in a year before 2000 or after
    /// 9999 (for [`Window::Weekly`], the ISO week-year), or, for [`Window::All`], before
    /// 2020-01-01T00:00:00Z or at or after the end of the all-time period.
    pub fn containing(window: Window, at_ms: i64) -> Result<Period, WindowError> {
        if window == Window::All {
            return Self::all_containing(at_ms);
        }
        let Some(at) = DateTime::from_timestamp_millis(at_ms) else {
            // Beyond chrono's range, which itself lies far beyond the supported years.
            let bound = if at_ms < 0 {
                format!("before the first supported year {MIN_YEAR}")
            } else {
                format!("after the last supported year {MAX_YEAR}")
            };
            return Err(at_error(format!("{at_ms} is {bound}")));
        };
        let day = at.date_naive();
        let start = match window {
            Window::Daily => day,
            Window::Weekly => {
                let week = day.iso_week();
                NaiveDate::from_isoywd_opt(week.year(), week.week(), Weekday::Mon)
                    .expect("the ISO week of an existing date has a Monday")
            }
            Window::Monthly => day.with_day(1).expect("every month has a first day"),
            Window::All => unreachable!("handled above"),
        };
        if let Err(bound) = check_year(window, start) {
            let (kind, year) = year_of(window, start);
            return Err(at_error(format!(
                "{at_ms} ({}) is in {kind} {year}, {bound}",
                rfc3339(at_ms)
            )));
        }
        Ok(Self::from_start(window, start)
            .expect("a start date in the supported years has a representable end"))
    }

    /// The period of `window` whose [`id`](Period::id) is exactly `id`.
    ///
    /// Formats are strict and zero-padded: `YYYY-MM-DD` (daily), `YYYY-Www` with the ISO week-year
    /// (weekly), `YYYY-MM` (monthly) and `all` (all-time).
    ///
    /// # Errors
    ///
    /// [`WindowError::InvalidPeriod`] if `id` is not in the window's format or names no real
    /// period (such as `2026-02-30`, `2026-13` or `2025-W53`, as 2025 has only 52 ISO weeks);
    /// [`WindowError::OutOfRange`] (field `period`) if its year is before 2000.
    pub fn parse(window: Window, id: &str) -> Result<Period, WindowError> {
        let invalid = || WindowError::InvalidPeriod {
            window,
            given: id.to_owned(),
            expected: window.expected_id(),
        };
        if window == Window::All {
            return if id == ALL_ID {
                Ok(Self::all())
            } else {
                Err(invalid())
            };
        }
        let b = id.as_bytes();
        // Each arm checks the exact shape byte by byte, so signs, spaces, missing padding and
        // trailing junk are all rejected before any number is read.
        let start = match window {
            Window::Daily if shape_matches(b, "dddd-dd-dd") => {
                NaiveDate::from_ymd_opt(year(b), digits(&b[5..7]), digits(&b[8..10]))
            }
            Window::Weekly if shape_matches(b, "dddd-Wdd") => {
                NaiveDate::from_isoywd_opt(year(b), digits(&b[6..8]), Weekday::Mon)
            }
            Window::Monthly if shape_matches(b, "dddd-dd") => {
                NaiveDate::from_ymd_opt(year(b), digits(&b[5..7]), 1)
            }
            _ => None,
        }
        .ok_or_else(invalid)?;
        if let Err(bound) = check_year(window, start) {
            let (kind, counted) = year_of(window, start);
            return Err(WindowError::OutOfRange {
                field: "period",
                detail: format!("{id:?} is in {kind} {counted}, {bound}"),
            });
        }
        Ok(Self::from_start(window, start)
            .expect("a start date in the supported years has a representable end"))
    }

    /// The window this period belongs to.
    #[must_use]
    pub fn window(&self) -> Window {
        self.window
    }

    /// The first millisecond of the period (inclusive), Unix ms UTC.
    #[must_use]
    pub fn start_ms(&self) -> i64 {
        self.start_ms
    }

    /// The first millisecond after the period (exclusive), Unix ms UTC; also the start of the
    /// next period.
    #[must_use]
    pub fn end_ms(&self) -> i64 {
        self.end_ms
    }

    /// The period's id: `2026-11-26` (daily), `2026-W48` (weekly: ISO week-year and two-digit
    /// week), `2026-11` (monthly) or `all` (all-time). [`Period::parse`] reads it back.
    #[must_use]
    pub fn id(&self) -> String {
        let start = self.start_date();
        match self.window {
            Window::All => ALL_ID.to_owned(),
            Window::Daily => format!(
                "{:04}-{:02}-{:02}",
                start.year(),
                start.month(),
                start.day()
            ),
            Window::Weekly => {
                let week = start.iso_week();
                format!("{:04}-W{:02}", week.year(), week.week())
            }
            Window::Monthly => format!("{:04}-{:02}", start.year(), start.month()),
        }
    }

    /// The period `n` periods later (earlier if `n` is negative). The all-time period is its own
    /// offset.
    ///
    /// # Panics
    ///
    /// If the result would leave the supported years 2000..=9999; use
    /// [`Period::checked_offset`] when `n` is not known to be small.
    #[must_use]
    pub fn offset(&self, n: i64) -> Period {
        self.checked_offset(n)
            .unwrap_or_else(|e| panic!("Period::offset({n}) of {}: {e}", self.id()))
    }

    /// The period `n` periods later (earlier if `n` is negative), like [`Period::offset`].
    ///
    /// # Errors
    ///
    /// [`WindowError::OutOfRange`] (field `period`) if the result would leave the supported years
    /// 2000..=9999.
    pub fn checked_offset(&self, n: i64) -> Result<Period, WindowError> {
        if self.window == Window::All {
            return Ok(*self);
        }
        let out_of_range = |bound: &str| WindowError::OutOfRange {
            field: "period",
            detail: format!("{} offset by {n} is {bound}", self.id()),
        };
        let Some(start) = shift(self.window, self.start_date(), n) else {
            let bound = if n < 0 {
                format!("before the first supported year {MIN_YEAR}")
            } else {
                format!("after the last supported year {MAX_YEAR}")
            };
            return Err(out_of_range(&bound));
        };
        check_year(self.window, start).map_err(|bound| out_of_range(&bound))?;
        Ok(Self::from_start(self.window, start)
            .expect("a start date in the supported years has a representable end"))
    }

    /// When this period's keys expire: the end of the period `retention` periods later, i.e. the
    /// last `retention` closed periods stay readable. `None` for [`Window::All`], which never
    /// expires.
    ///
    /// The expiry may lie beyond year 9999; if it is beyond what chrono can represent (only for
    /// absurd retentions of hundreds of thousands of years) it saturates to `i64::MAX`.
    #[must_use]
    pub fn expires_at_ms(&self, retention: u32) -> Option<i64> {
        if self.window == Window::All {
            return None;
        }
        // The end of the period `retention` later is the start of the one after it. This is
        // computed on raw dates, not Periods, so a late period with a long retention still gets
        // an expiry instead of an out-of-range error.
        let expiry = shift(self.window, self.start_date(), i64::from(retention) + 1)
            .map_or(i64::MAX, midnight_ms);
        Some(expiry)
    }

    /// The tie-break tick of an instant inside this period: milliseconds since the period start
    /// for daily, weekly and monthly periods; whole seconds since 2020-01-01T00:00:00Z for the
    /// all-time period. Always below `2^`[`Window::tick_bits`].
    ///
    /// # Errors
    ///
    /// [`WindowError::OutOfRange`] (field `at`) if `at_ms` is outside `[start_ms, end_ms)`.
    pub fn tick(&self, at_ms: i64) -> Result<u64, WindowError> {
        if at_ms < self.start_ms || at_ms >= self.end_ms {
            return Err(at_error(format!(
                "{at_ms} is outside period {} {} [{}, {})",
                self.window,
                self.id(),
                self.start_ms,
                self.end_ms
            )));
        }
        let since_start = (at_ms - self.start_ms).unsigned_abs();
        Ok(match self.window {
            // Seconds, not ms: 2^32 ms would cover only ~50 days of all-time history.
            Window::All => since_start / 1000,
            Window::Daily | Window::Weekly | Window::Monthly => since_start,
        })
    }

    /// The single all-time period.
    fn all() -> Period {
        Period {
            window: Window::All,
            start_ms: ALL_START_MS,
            end_ms: ALL_END_MS,
        }
    }

    /// The all-time period, if `at_ms` lies inside it.
    fn all_containing(at_ms: i64) -> Result<Period, WindowError> {
        if at_ms < ALL_START_MS {
            return Err(at_error(format!(
                "{at_ms} is before the start of the all-time window, {} ({ALL_START_MS})",
                rfc3339(ALL_START_MS)
            )));
        }
        if at_ms >= ALL_END_MS {
            return Err(at_error(format!(
                "{at_ms} is at or after the end of the all-time window, {} ({ALL_END_MS})",
                rfc3339(ALL_END_MS)
            )));
        }
        Ok(Self::all())
    }

    /// The period of a non-all-time `window` starting at midnight of `start`, which must be the
    /// first day of such a period. `None` only if its end is beyond chrono's range.
    fn from_start(window: Window, start: NaiveDate) -> Option<Period> {
        let end = shift(window, start, 1)?;
        Some(Period {
            window,
            start_ms: midnight_ms(start),
            end_ms: midnight_ms(end),
        })
    }

    /// The UTC date the period starts on.
    fn start_date(&self) -> NaiveDate {
        DateTime::from_timestamp_millis(self.start_ms)
            .expect("a period starts at a representable instant")
            .date_naive()
    }
}

/// The first day of the period `n` periods after the one starting on `start`, unrestricted by
/// the supported years; `None` if beyond chrono's range. The all-time window does not move.
fn shift(window: Window, start: NaiveDate, n: i64) -> Option<NaiveDate> {
    match window {
        Window::All => Some(start),
        Window::Daily => start.checked_add_signed(TimeDelta::try_days(n)?),
        Window::Weekly => start.checked_add_signed(TimeDelta::try_weeks(n)?),
        Window::Monthly => {
            let months = Months::new(u32::try_from(n.unsigned_abs()).ok()?);
            if n < 0 {
                start.checked_sub_months(months)
            } else {
                start.checked_add_months(months)
            }
        }
    }
}

/// Which year a period starting on `start` is counted in: the ISO week-year for weekly periods
/// (so that 2024-12-30 counts as 2025), the calendar year otherwise.
fn year_of(window: Window, start: NaiveDate) -> (&'static str, i32) {
    match window {
        Window::Weekly => ("ISO week-year", start.iso_week().year()),
        _ => ("year", start.year()),
    }
}

/// Checks that a period starting on `start` lies in the supported years; the error names the
/// violated bound.
fn check_year(window: Window, start: NaiveDate) -> Result<(), String> {
    let (_, year) = year_of(window, start);
    if year < MIN_YEAR {
        Err(format!("before the first supported year {MIN_YEAR}"))
    } else if year > MAX_YEAR {
        Err(format!("after the last supported year {MAX_YEAR}"))
    } else {
        Ok(())
    }
}

/// Unix ms of 00:00:00 UTC on `date`.
fn midnight_ms(date: NaiveDate) -> i64 {
    date.and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis()
}

/// `at_ms` as an RFC 3339 UTC timestamp with milliseconds, for error messages.
fn rfc3339(at_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(at_ms).map_or_else(
        || at_ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// An out-of-range error about the `at` field.
fn at_error(detail: String) -> WindowError {
    WindowError::OutOfRange {
        field: "at",
        detail,
    }
}

/// Whether `b` has exactly the shape of `pattern`, where `d` stands for an ASCII digit and every
/// other pattern byte must match literally.
fn shape_matches(b: &[u8], pattern: &str) -> bool {
    b.len() == pattern.len()
        && b.iter().zip(pattern.bytes()).all(|(&c, p)| match p {
            b'd' => c.is_ascii_digit(),
            _ => c == p,
        })
}

/// The value of a run of ASCII digits already checked by [`shape_matches`] (at most four).
fn digits(b: &[u8]) -> u32 {
    b.iter().fold(0, |acc, &c| acc * 10 + u32::from(c - b'0'))
}

/// The four-digit year leading a shape-checked period id.
fn year(id: &[u8]) -> i32 {
    i32::try_from(digits(&id[0..4])).expect("four digits fit in an i32")
}

impl From<WindowError> for Invalid {
    fn from(e: WindowError) -> Self {
        let text = e.to_string();
        match text.split_once(": ") {
            Some((field, message)) => Invalid::new(field, message),
            None => Invalid::new("period", text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of an RFC 3339 timestamp.
    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap_or_else(|e| panic!("bad test timestamp {rfc3339}: {e}"))
            .timestamp_millis()
    }

    fn at(window: Window, rfc3339: &str) -> Period {
        Period::containing(window, ms(rfc3339)).unwrap()
    }

    fn parsed(window: Window, id: &str) -> Period {
        Period::parse(window, id).unwrap()
    }

    fn out_of_range_detail(err: WindowError, expected_field: &str) -> String {
        match err {
            WindowError::OutOfRange { field, detail } => {
                assert_eq!(field, expected_field, "{detail}");
                detail
            }
            other => panic!("expected OutOfRange, got {other:?}"),
        }
    }

    /// A fixed-seed linear congruential generator (Knuth's MMIX constants), so the property tests
    /// are reproducible without a dependency.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 11
        }

        fn in_range(&mut self, lo: i64, hi: i64) -> i64 {
            let span = (hi - lo).unsigned_abs();
            lo + i64::try_from(self.next() % span).unwrap()
        }
    }

    // --- Window -------------------------------------------------------------------------------

    #[test]
    fn every_window_round_trips_through_its_name() {
        for w in Window::EVERY {
            assert_eq!(w.as_str().parse::<Window>(), Ok(w));
            assert_eq!(w.to_string(), w.as_str());
        }
        assert_eq!(
            Window::EVERY.map(Window::as_str),
            ["all", "daily", "weekly", "monthly"]
        );
    }

    #[test]
    fn window_names_must_be_exact_and_lowercase() {
        for bad in [
            "", "Daily", "DAILY", " daily", "daily ", "day", "alltime", "week",
        ] {
            assert_eq!(
                bad.parse::<Window>(),
                Err(WindowError::UnknownWindow {
                    given: bad.to_owned()
                })
            );
        }
    }

    #[test]
    fn unknown_window_message_names_the_field_and_the_choices() {
        assert_eq!(
            "x".parse::<Window>().unwrap_err().to_string(),
            "window: unknown window \"x\" (expected one of all, daily, weekly, monthly)"
        );
    }

    #[test]
    fn windows_serialize_as_lowercase_names() {
        for w in Window::EVERY {
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(json, format!("\"{}\"", w.as_str()));
            assert_eq!(serde_json::from_str::<Window>(&json).unwrap(), w);
        }
        assert!(serde_json::from_str::<Window>("\"Daily\"").is_err());
    }

    #[test]
    fn tick_bits_are_as_documented() {
        assert_eq!(Window::Daily.tick_bits(), 27);
        assert_eq!(Window::Weekly.tick_bits(), 30);
        assert_eq!(Window::Monthly.tick_bits(), 32);
        assert_eq!(Window::All.tick_bits(), 32);
    }

    // --- ids and bounds -----------------------------------------------------------------------

    #[test]
    fn a_known_instant_has_the_expected_ids() {
        let t = "2026-11-26T15:04:05.678Z";
        assert_eq!(at(Window::Daily, t).id(), "2026-11-26");
        assert_eq!(at(Window::Weekly, t).id(), "2026-W48");
        assert_eq!(at(Window::Monthly, t).id(), "2026-11");
        assert_eq!(at(Window::All, t).id(), "all");
    }

    #[test]
    fn a_known_instant_has_the_expected_bounds() {
        let t = "2026-11-26T15:04:05.678Z";
        let daily = at(Window::Daily, t);
        assert_eq!(daily.window(), Window::Daily);
        assert_eq!(daily.start_ms(), ms("2026-11-26T00:00:00Z"));
        assert_eq!(daily.end_ms(), ms("2026-11-27T00:00:00Z"));

        // 2026-11-26 is a Thursday; its ISO week runs Monday 23rd to Monday 30th.
        let weekly = at(Window::Weekly, t);
        assert_eq!(weekly.start_ms(), ms("2026-11-23T00:00:00Z"));
        assert_eq!(weekly.end_ms(), ms("2026-11-30T00:00:00Z"));

        let monthly = at(Window::Monthly, t);
        assert_eq!(monthly.start_ms(), ms("2026-11-01T00:00:00Z"));
        assert_eq!(monthly.end_ms(), ms("2026-12-01T00:00:00Z"));
    }

    #[test]
    fn the_all_time_period_spans_two_to_the_32_seconds_from_2020() {
        let all = at(Window::All, "2026-11-26T15:04:05Z");
        assert_eq!(all.start_ms(), ms("2020-01-01T00:00:00Z"));
        assert_eq!(all.start_ms(), 1_577_836_800_000);
        assert_eq!(all.end_ms() - all.start_ms(), (1_i64 << 32) * 1000);
        assert_eq!(all.end_ms(), ms("2156-02-07T06:28:16Z"));
        assert_eq!(all, parsed(Window::All, "all"));
    }

    #[test]
    fn iso_week_ids_use_the_iso_week_year() {
        assert_eq!(at(Window::Weekly, "2020-12-31T12:00:00Z").id(), "2020-W53");
        assert_eq!(
            at(Window::Weekly, "2021-01-03T23:59:59.999Z").id(),
            "2020-W53"
        );
        assert_eq!(at(Window::Weekly, "2021-01-04T00:00:00Z").id(), "2021-W01");
        assert_eq!(at(Window::Weekly, "2024-12-30T00:00:00Z").id(), "2025-W01");
        assert_eq!(
            at(Window::Weekly, "2024-12-29T23:59:59.999Z").id(),
            "2024-W52"
        );
        assert_eq!(
            parsed(Window::Weekly, "2025-W01").start_ms(),
            ms("2024-12-30T00:00:00Z")
        );
        assert_eq!(
            parsed(Window::Weekly, "2020-W53").start_ms(),
            ms("2020-12-28T00:00:00Z")
        );
    }

    #[test]
    fn weeks_start_on_monday_midnight_utc() {
        let w = at(Window::Weekly, "2026-11-29T23:59:59.999Z"); // a Sunday
        assert_eq!(w.id(), "2026-W48");
        assert_eq!(w.start_ms(), ms("2026-11-23T00:00:00Z"));
        assert_eq!(at(Window::Weekly, "2026-11-30T00:00:00Z").id(), "2026-W49");
    }

    #[test]
    fn a_leap_day_is_its_own_daily_period_and_lengthens_february() {
        let leap = at(Window::Daily, "2024-02-29T08:00:00Z");
        assert_eq!(leap.id(), "2024-02-29");
        assert_eq!(leap.offset(1).id(), "2024-03-01");
        assert_eq!(leap.offset(-1).id(), "2024-02-28");
        assert_eq!(parsed(Window::Daily, "2024-02-29"), leap);

        let feb = parsed(Window::Monthly, "2024-02");
        assert_eq!(feb.end_ms() - feb.start_ms(), 29 * 86_400_000);
        let feb = parsed(Window::Monthly, "2023-02");
        assert_eq!(feb.end_ms() - feb.start_ms(), 28 * 86_400_000);
        // Century rule: 2000 was a leap year, 2100 is not.
        assert!(Period::parse(Window::Daily, "2000-02-29").is_ok());
        assert!(Period::parse(Window::Daily, "2100-02-29").is_err());
    }

    #[test]
    fn a_monthly_period_ends_at_the_first_ms_of_the_next_month() {
        let dec = parsed(Window::Monthly, "2026-12");
        assert_eq!(dec.end_ms(), ms("2027-01-01T00:00:00Z"));
        let jan = parsed(Window::Monthly, "2027-01");
        assert_eq!(jan.end_ms(), ms("2027-02-01T00:00:00Z"));
    }

    #[test]
    fn each_period_ends_exactly_where_the_next_starts() {
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let p = at(w, "2026-11-26T15:04:05Z");
            let next = Period::containing(w, p.end_ms()).unwrap();
            assert_eq!(next.start_ms(), p.end_ms(), "{w}");
            assert_eq!(next, p.offset(1), "{w}");
        }
    }

    #[test]
    fn the_last_ms_of_a_period_is_inside_it_and_its_end_is_not() {
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let p = at(w, "2026-11-26T15:04:05Z");
            assert_eq!(Period::containing(w, p.start_ms()).unwrap(), p, "{w}");
            assert_eq!(Period::containing(w, p.end_ms() - 1).unwrap(), p, "{w}");
            assert_eq!(
                Period::containing(w, p.end_ms()).unwrap(),
                p.offset(1),
                "{w}"
            );
            assert_eq!(
                Period::containing(w, p.start_ms() - 1).unwrap(),
                p.offset(-1),
                "{w}"
            );
        }
    }

    // --- supported range ----------------------------------------------------------------------

    #[test]
    fn the_first_and_last_supported_days_are_accepted() {
        let first = at(Window::Daily, "2000-01-01T00:00:00Z");
        assert_eq!(first.id(), "2000-01-01");
        let last = at(Window::Daily, "9999-12-31T23:59:59.999Z");
        assert_eq!(last.id(), "9999-12-31");
        assert_eq!(last.end_ms(), ms("9999-12-31T00:00:00Z") + 86_400_000);
        assert_eq!(parsed(Window::Monthly, "9999-12").id(), "9999-12");
        assert_eq!(parsed(Window::Monthly, "2000-01").id(), "2000-01");
    }

    #[test]
    fn instants_outside_the_supported_years_are_rejected_naming_the_bound() {
        let before = ms("1999-12-31T23:59:59.999Z");
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let detail = out_of_range_detail(Period::containing(w, before).unwrap_err(), "at");
            assert!(
                detail.contains("first supported year 2000"),
                "{w}: {detail}"
            );
        }
        let after = ms("9999-12-31T00:00:00Z") + 86_400_000;
        for w in [Window::Daily, Window::Monthly] {
            let detail = out_of_range_detail(Period::containing(w, after).unwrap_err(), "at");
            assert!(detail.contains("last supported year 9999"), "{w}: {detail}");
        }
        let err = Period::containing(Window::Daily, before).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at: 946684799999 (1999-12-31T23:59:59.999Z) is in year 1999, \
             before the first supported year 2000"
        );
    }

    #[test]
    fn weekly_range_checks_use_the_iso_week_year() {
        // 2000-01-01 and 02 are a Saturday and Sunday in 1999-W52.
        let err = Period::containing(Window::Weekly, ms("2000-01-02T12:00:00Z")).unwrap_err();
        let detail = out_of_range_detail(err, "at");
        assert!(detail.contains("ISO week-year 1999"), "{detail}");
        assert_eq!(at(Window::Weekly, "2000-01-03T00:00:00Z").id(), "2000-W01");

        let last = parsed(Window::Weekly, "9999-W52");
        assert_eq!(
            Period::containing(Window::Weekly, last.end_ms() - 1),
            Ok(last)
        );
        let detail = out_of_range_detail(
            Period::containing(Window::Weekly, last.end_ms()).unwrap_err(),
            "at",
        );
        assert!(detail.contains("ISO week-year 10000"), "{detail}");
        assert!(detail.contains("last supported year 9999"), "{detail}");
    }

    #[test]
    fn extreme_instants_are_errors_not_panics() {
        for w in Window::EVERY {
            for t in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX - 1, i64::MAX] {
                let err = Period::containing(w, t).unwrap_err();
                assert!(err.to_string().starts_with("at: "), "{w} {t}: {err}");
            }
        }
        let detail = out_of_range_detail(
            Period::containing(Window::Daily, i64::MIN).unwrap_err(),
            "at",
        );
        assert!(detail.contains("first supported year 2000"), "{detail}");
        let detail = out_of_range_detail(
            Period::containing(Window::Daily, i64::MAX).unwrap_err(),
            "at",
        );
        assert!(detail.contains("last supported year 9999"), "{detail}");
    }

    #[test]
    fn the_all_time_window_rejects_instants_outside_it_naming_the_bound() {
        let start = ms("2020-01-01T00:00:00Z");
        let end = start + (1_i64 << 32) * 1000;
        assert!(Period::containing(Window::All, start).is_ok());
        assert!(Period::containing(Window::All, end - 1).is_ok());

        let err = Period::containing(Window::All, start - 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at: 1577836799999 is before the start of the all-time window, \
             2020-01-01T00:00:00.000Z (1577836800000)"
        );
        let err = Period::containing(Window::All, end).unwrap_err();
        assert_eq!(
            err.to_string(),
            "at: 5872804096000 is at or after the end of the all-time window, \
             2156-02-07T06:28:16.000Z (5872804096000)"
        );
    }

    // --- offset -------------------------------------------------------------------------------

    #[test]
    fn offsets_cross_year_ends() {
        assert_eq!(
            parsed(Window::Daily, "2026-12-31").offset(1).id(),
            "2027-01-01"
        );
        assert_eq!(
            parsed(Window::Daily, "2027-01-01").offset(-1).id(),
            "2026-12-31"
        );
        assert_eq!(
            parsed(Window::Daily, "2026-11-26").offset(365).id(),
            "2027-11-26"
        );
        assert_eq!(parsed(Window::Monthly, "2026-11").offset(2).id(), "2027-01");
        assert_eq!(
            parsed(Window::Monthly, "2027-01").offset(-13).id(),
            "2025-12"
        );
        assert_eq!(
            parsed(Window::Weekly, "2020-W52").offset(1).id(),
            "2020-W53"
        );
        assert_eq!(
            parsed(Window::Weekly, "2020-W53").offset(1).id(),
            "2021-W01"
        );
        assert_eq!(
            parsed(Window::Weekly, "2026-W52").offset(1).id(),
            "2026-W53"
        );
        assert_eq!(
            parsed(Window::Weekly, "2026-W53").offset(1).id(),
            "2027-W01"
        );
        assert_eq!(
            parsed(Window::Weekly, "2027-W01").offset(-2).id(),
            "2026-W52"
        );
        assert_eq!(
            parsed(Window::Weekly, "2025-W01").offset(-1).id(),
            "2024-W52"
        );
    }

    #[test]
    fn offset_zero_is_the_same_period_and_offsets_compose() {
        for w in Window::EVERY {
            let p = at(w, "2026-11-26T15:04:05Z");
            assert_eq!(p.offset(0), p);
            assert_eq!(p.offset(7).offset(-3), p.offset(4));
            assert_eq!(p.offset(-100).offset(100), p);
        }
    }

    #[test]
    fn the_all_time_period_is_its_own_offset() {
        let all = parsed(Window::All, "all");
        assert_eq!(all.offset(1), all);
        assert_eq!(all.offset(i64::MIN), all);
        assert_eq!(all.checked_offset(i64::MAX), Ok(all));
    }

    #[test]
    fn checked_offset_rejects_leaving_the_supported_years() {
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let p = at(w, "2026-11-26T15:04:05Z");
            for n in [i64::MIN, -10_000_000, 10_000_000, i64::MAX] {
                let err = p.checked_offset(n).unwrap_err();
                let detail = out_of_range_detail(err, "period");
                let bound = if n < 0 { "2000" } else { "9999" };
                assert!(detail.contains(bound), "{w} {n}: {detail}");
            }
        }
        let first = parsed(Window::Monthly, "2000-01");
        assert!(first.checked_offset(-1).is_err());
        let last = parsed(Window::Daily, "9999-12-31");
        assert_eq!(
            last.checked_offset(1).unwrap_err().to_string(),
            "period: 9999-12-31 offset by 1 is after the last supported year 9999"
        );
    }

    #[test]
    #[should_panic(expected = "after the last supported year 9999")]
    fn offset_panics_when_leaving_the_supported_years() {
        let _ = parsed(Window::Monthly, "9999-12").offset(1);
    }

    // --- expiry -------------------------------------------------------------------------------

    #[test]
    fn expiry_keeps_the_last_retention_closed_periods_readable() {
        assert_eq!(
            parsed(Window::Monthly, "2026-11").expires_at_ms(2),
            Some(ms("2027-02-01T00:00:00Z"))
        );
        assert_eq!(
            parsed(Window::Daily, "2026-11-26").expires_at_ms(0),
            Some(ms("2026-11-27T00:00:00Z"))
        );
        assert_eq!(
            parsed(Window::Weekly, "2026-W53").expires_at_ms(1),
            Some(ms("2027-01-11T00:00:00Z"))
        );
    }

    #[test]
    fn expiry_is_the_end_of_the_period_retention_later() {
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let p = at(w, "2026-11-26T15:04:05Z");
            for r in [0_u32, 1, 2, 7, 30, 400] {
                assert_eq!(
                    p.expires_at_ms(r),
                    Some(p.offset(i64::from(r)).end_ms()),
                    "{w} {r}"
                );
            }
        }
    }

    #[test]
    fn the_all_time_period_never_expires() {
        assert_eq!(parsed(Window::All, "all").expires_at_ms(0), None);
        assert_eq!(parsed(Window::All, "all").expires_at_ms(u32::MAX), None);
    }

    #[test]
    fn expiry_may_pass_year_9999_and_saturates_beyond_chrono() {
        let last = parsed(Window::Monthly, "9999-12");
        assert_eq!(last.expires_at_ms(0), Some(last.end_ms()));
        assert!(last.expires_at_ms(12).unwrap() > last.end_ms());
        for w in [Window::Daily, Window::Weekly, Window::Monthly] {
            let p = at(w, "2026-11-26T15:04:05Z");
            assert_eq!(p.expires_at_ms(u32::MAX), Some(i64::MAX), "{w}");
        }
    }

    // --- tick ---------------------------------------------------------------------------------

    #[test]
    fn the_tick_of_a_period_start_is_zero() {
        for w in Window::EVERY {
            let p = at(w, "2026-11-26T15:04:05Z");
            assert_eq!(p.tick(p.start_ms()), Ok(0), "{w}");
        }
    }

    #[test]
    fn the_tick_counts_ms_since_the_start_or_seconds_for_all_time() {
        let t = ms("2026-11-26T15:04:05.678Z");
        assert_eq!(
            at(Window::Daily, "2026-11-26T00:00:00Z").tick(t),
            Ok(54_245_678)
        );
        assert_eq!(
            at(Window::All, "2026-11-26T00:00:00Z").tick(t),
            Ok(u64::try_from((t - 1_577_836_800_000) / 1000).unwrap())
        );
        // Sub-second differences do not separate all-time ticks.
        let all = parsed(Window::All, "all");
        assert_eq!(all.tick(t), all.tick(t - 678));
    }

    #[test]
    fn the_last_tick_fits_in_tick_bits_for_the_longest_periods() {
        let longest = [
            parsed(Window::Daily, "2026-11-26"),
            parsed(Window::Weekly, "2020-W53"), // 2020 has 53 ISO weeks
            parsed(Window::Monthly, "2026-12"), // 31 days
            parsed(Window::All, "all"),
        ];
        for p in longest {
            let last = p.tick(p.end_ms() - 1).unwrap();
            assert!(last < 1_u64 << p.window().tick_bits(), "{}", p.id());
        }
        let all = parsed(Window::All, "all");
        assert_eq!(all.tick(all.end_ms() - 1), Ok((1_u64 << 32) - 1));
    }

    #[test]
    fn tick_bits_are_not_wasteful() {
        // One bit fewer would not fit the longest period.
        for (p, bits) in [
            (parsed(Window::Daily, "2026-11-26"), 26),
            (parsed(Window::Weekly, "2026-W48"), 29),
            (parsed(Window::Monthly, "2026-12"), 31),
        ] {
            assert!(
                p.tick(p.end_ms() - 1).unwrap() >= 1_u64 << bits,
                "{}",
                p.id()
            );
        }
    }

    #[test]
    fn a_tick_outside_the_period_is_an_error() {
        for w in Window::EVERY {
            let p = at(w, "2026-11-26T15:04:05Z");
            for t in [p.start_ms() - 1, p.end_ms(), i64::MIN, i64::MAX] {
                let err = p.tick(t).unwrap_err();
                out_of_range_detail(err, "at");
            }
        }
        assert_eq!(
            parsed(Window::Daily, "2026-11-26")
                .tick(ms("2026-11-27T00:00:00Z"))
                .unwrap_err()
                .to_string(),
            "at: 1795737600000 is outside period daily 2026-11-26 [1795651200000, 1795737600000)"
        );
    }

    // --- parse --------------------------------------------------------------------------------

    #[test]
    fn parse_accepts_well_formed_ids() {
        assert_eq!(
            parsed(Window::Daily, "2026-11-26"),
            at(Window::Daily, "2026-11-26T15:04:05Z")
        );
        assert_eq!(
            parsed(Window::Weekly, "2026-W48"),
            at(Window::Weekly, "2026-11-26T15:04:05Z")
        );
        assert_eq!(
            parsed(Window::Monthly, "2026-11"),
            at(Window::Monthly, "2026-11-26T15:04:05Z")
        );
        assert_eq!(parsed(Window::Weekly, "2026-W01").id(), "2026-W01");
        assert_eq!(parsed(Window::Weekly, "2026-W52").id(), "2026-W52");
    }

    #[test]
    fn parse_rejects_malformed_or_impossible_ids() {
        let cases: &[(Window, &[&str])] = &[
            (
                Window::Daily,
                &[
                    "",
                    "2026-11-2",
                    "2026-1-26",
                    "26-11-26",
                    "2026-11-26 ",
                    " 2026-11-26",
                    "2026-11-26T00",
                    "2026/11/26",
                    "2026-11-31",
                    "2026-02-30",
                    "2026-02-29",
                    "2026-13-01",
                    "2026-00-10",
                    "2026-11-00",
                    "+026-11-26",
                    "2026-+1-26",
                    "2026-11",
                    "2026-W48",
                    "２026-11-26",
                    "all",
                ],
            ),
            (
                Window::Weekly,
                &[
                    "",
                    "2026-W54",
                    "2025-W53",
                    "2027-W53",
                    "2026-W00",
                    "2026-W1",
                    "2026-w48",
                    "2026W48",
                    "2026-W048",
                    "2026-W48x",
                    "2026-48",
                    "2026-W+4",
                    "2026-11-26",
                    "all",
                ],
            ),
            (
                Window::Monthly,
                &[
                    "",
                    "2026-13",
                    "2026-00",
                    "2026-1",
                    "2026-011",
                    "2026-11-01",
                    "2026/11",
                    "202611",
                    "2026-11\n",
                    "2026-W48",
                    "all",
                ],
            ),
            (
                Window::All,
                &["", "All", "ALL", "all ", "alltime", "2026-11-26", "daily"],
            ),
        ];
        for &(w, ids) in cases {
            for &id in ids {
                assert_eq!(
                    Period::parse(w, id),
                    Err(WindowError::InvalidPeriod {
                        window: w,
                        given: id.to_owned(),
                        expected: w.expected_id(),
                    }),
                    "{w} {id:?}"
                );
            }
        }
    }

    #[test]
    fn week_53_exists_only_in_long_iso_years() {
        assert_eq!(parsed(Window::Weekly, "2020-W53").id(), "2020-W53");
        assert_eq!(parsed(Window::Weekly, "2026-W53").id(), "2026-W53");
        assert!(Period::parse(Window::Weekly, "2025-W53").is_err());
        assert!(Period::parse(Window::Weekly, "2027-W53").is_err());
    }

    #[test]
    fn parse_rejects_years_before_2000_naming_the_bound() {
        for (w, id) in [
            (Window::Daily, "1999-12-31"),
            (Window::Weekly, "1999-W52"),
            (Window::Monthly, "1999-12"),
            (Window::Monthly, "0000-01"),
        ] {
            let err = Period::parse(w, id).unwrap_err();
            assert!(err.to_string().starts_with("period: "), "{err}");
            let detail = out_of_range_detail(err, "period");
            assert!(
                detail.contains("first supported year 2000"),
                "{w}: {detail}"
            );
        }
    }

    #[test]
    fn invalid_period_messages_name_the_field_and_the_format() {
        assert_eq!(
            Period::parse(Window::Weekly, "2026-W60")
                .unwrap_err()
                .to_string(),
            "period: \"2026-W60\" is not a weekly period (expected YYYY-Www, e.g. 2026-W48)"
        );
        assert_eq!(
            Period::parse(Window::Daily, "x").unwrap_err().to_string(),
            "period: \"x\" is not a daily period (expected YYYY-MM-DD, e.g. 2026-11-26)"
        );
        assert_eq!(
            Period::parse(Window::Monthly, "x").unwrap_err().to_string(),
            "period: \"x\" is not a monthly period (expected YYYY-MM, e.g. 2026-11)"
        );
        assert_eq!(
            Period::parse(Window::All, "x").unwrap_err().to_string(),
            "period: \"x\" is not the all-time period (expected all)"
        );
    }

    // --- properties ---------------------------------------------------------------------------

    #[test]
    fn random_instants_lie_in_periods_that_round_trip_through_their_ids() {
        let lo = ms("2000-01-03T00:00:00Z"); // first Monday of ISO week-year 2000
        let hi = ms("9999-12-27T00:00:00Z"); // last Monday of ISO week-year 9999
        let mut rng = Lcg(0x5EED_1234_ABCD_0001);
        for i in 0..20_000 {
            // Alternate between the whole range and the years the service will actually see.
            let t = if i % 2 == 0 {
                rng.in_range(lo, hi)
            } else {
                rng.in_range(ms("2020-01-01T00:00:00Z"), ms("2040-01-01T00:00:00Z"))
            };
            for w in Window::EVERY {
                if w == Window::All && !(ALL_START_MS..ALL_END_MS).contains(&t) {
                    assert!(Period::containing(w, t).is_err());
                    continue;
                }
                let p = Period::containing(w, t).unwrap();
                assert_eq!(p.window(), w);
                assert!(p.start_ms() <= t && t < p.end_ms(), "{w} {t}");
                assert_eq!(Period::parse(w, &p.id()), Ok(p), "{w} {t}");
                assert_eq!(Period::containing(w, p.start_ms()), Ok(p), "{w} {t}");
                assert_eq!(Period::containing(w, p.end_ms() - 1), Ok(p), "{w} {t}");
                assert!(p.tick(t).unwrap() < 1_u64 << w.tick_bits(), "{w} {t}");
                if w != Window::All {
                    assert_eq!(
                        p.checked_offset(1).unwrap().start_ms(),
                        p.end_ms(),
                        "{w} {t}"
                    );
                    assert_eq!(p.checked_offset(1).unwrap().checked_offset(-1), Ok(p));
                    assert_eq!(p.checked_offset(-1).unwrap().end_ms(), p.start_ms());
                }
            }
        }
    }

    #[test]
    fn every_day_of_a_long_span_round_trips_in_every_window() {
        // Walk day by day across several year ends, including 53-week years 2020 and 2026.
        let mut day = parsed(Window::Daily, "2019-12-01");
        let last = parsed(Window::Daily, "2028-02-01");
        let mut weeks = 0;
        let mut prev_week = Period::containing(Window::Weekly, day.start_ms()).unwrap();
        while day != last {
            for w in [Window::Daily, Window::Weekly, Window::Monthly] {
                let p = Period::containing(w, day.start_ms()).unwrap();
                assert_eq!(Period::parse(w, &p.id()), Ok(p), "{}", day.id());
            }
            let week = Period::containing(Window::Weekly, day.start_ms()).unwrap();
            if week != prev_week {
                assert_eq!(week, prev_week.offset(1));
                weeks += 1;
                prev_week = week;
            }
            day = day.offset(1);
        }
        // 2019-12-01 (in 2019-W48) to 2028-01-31 (in 2028-W05).
        let first_week = parsed(Window::Weekly, "2019-W48");
        let last_week = parsed(Window::Weekly, "2028-W05");
        assert_eq!(
            i64::from(weeks),
            (last_week.start_ms() - first_week.start_ms()) / (7 * 86_400_000)
        );
    }
}
