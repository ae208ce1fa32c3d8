//! Property tests: random sequences of writes, reads and clock moves run through the real engine on
//! real Redis, each step checked against a small model that keeps every leaderboard key as a plain
//! list and ranks it by sorting in the most naive way.
//!
//! A case draws a board definition (every order × policy × tie-break × rank mode, a non-empty set of
//! windows, sometimes `max_members`), a batch chunk size and a start time shortly before an instant
//! where a day, an ISO week and a month all begin together, so that period rollovers happen within a
//! case. Then up to 30 operations; after each, besides checking what the operation answered, every
//! view the board has (each window's current and previous period, global and scoped) is read in full
//! and compared with the model.
//!
//! The model computes period boundaries with `rankd::window::Period` (tested on its own); ticks,
//! scores, tie-breaks, trimming, ranks, percentiles, deduplication and every read it computes itself.
//!
//! 64 cases per backend by default; `PROPTEST_CASES=n` runs more. Redis becoming unreachable is not
//! a disagreement with the model: such a case is retried, and if Redis stays away the test fails
//! saying so rather than shrinking.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::panic::AssertUnwindSafe;

use chrono::{Datelike, Duration as Days, Utc, Weekday};
use futures::FutureExt;
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use rankd::board::{BoardDef, BoardId, EventId, Member, Order, Policy, RankMode, Scope, TieBreak};
use rankd::engine::{
    BatchOutcome, Cursor, EngineConfig, Entry, KeyResult, Limit, Lookup, Offset, Page, Radius,
    Standing, Submit, Submitted, View,
};
use rankd::window::{Period, Window};
use rankd::Error;

use crate::helpers::{prefix, Clock, Ctx, Redis};

/// Members, in no particular byte order: upper case sorts before lower case, "al" before "al2",
/// and the multi-byte "zoë" after everything else.
const MEMBERS: [&str; 6] = ["bob", "Bob", "al", "amy", "zoë", "al2"];
/// A member that never scores, for reads of absent members.
const GHOST: &str = "nobody";
const SCOPES: [&str; 2] = ["class:1", "class:2"];
/// The scope lists an event may name, in the order named.
const SCOPE_LISTS: [&[usize]; 5] = [&[], &[0], &[1], &[0, 1], &[1, 0]];
const EVENT_IDS: usize = 4;
/// Start of the all-time period (2020-01-01T00:00:00Z); its ticks are whole seconds since then.
const ALL_START_MS: i64 = 1_577_836_800_000;
/// Widest limit: enough to read any key of the model in full.
const FULL: i64 = 1000;

fn member_name(i: usize) -> &'static str {
    MEMBERS.get(i).copied().unwrap_or(GHOST)
}

// ---- what a case is made of -------------------------------------------------------------------

#[derive(Clone)]
struct Ev {
    member: usize,
    value: i64,
    scopes: usize,
    event_id: Option<usize>,
}

impl fmt::Debug for Ev {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:+}", member_name(self.member), self.value)?;
        for &s in SCOPE_LISTS[self.scopes] {
            write!(f, " @{}", SCOPES[s])?;
        }
        if let Some(id) = self.event_id {
            write!(f, " #e{id}")?;
        }
        Ok(())
    }
}

/// Which leaderboard key a read looks at: a window of the board (by index, modulo the number of
/// windows, so that it shrinks independently of the definition), the current or previous period,
/// the global board or a scope.
#[derive(Clone, Copy)]
struct ViewSel {
    window: usize,
    previous: bool,
    scope: Option<usize>,
}

impl fmt::Debug for ViewSel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "w{}", self.window)?;
        if self.previous {
            write!(f, "/prev")?;
        }
        if let Some(s) = self.scope {
            write!(f, "@{}", SCOPES[s])?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
enum Op {
    Submit(Ev),
    Batch(Vec<Ev>),
    Remove(usize),
    Advance(i64),
    Top(ViewSel, i64),
    Page(ViewSel, i64, i64),
    /// The page after the last cursor a page read handed out; when there is none yet, first a top
    /// read of the view with the first limit, and the page after its cursor if it has one.
    After(ViewSel, i64, i64),
    Around(ViewSel, usize, i64),
    Lookup(ViewSel, Vec<usize>),
    Standing(ViewSel, usize),
    /// Bounds in half units, in either order.
    ScoreRange(ViewSel, i64, i64, i64),
    Count(ViewSel),
}

#[derive(Clone)]
struct Case {
    order: Order,
    policy: Policy,
    tie_break: TieBreak,
    rank_mode: RankMode,
    /// Bit i set: the board keeps `Window::EVERY[i]`.
    windows: u8,
    max_members: Option<u64>,
    batch_chunk: usize,
    /// How long before the rollover instant the case starts, ms.
    lead_ms: i64,
    ops: Vec<Op>,
}

impl Case {
    fn def(&self) -> BoardDef {
        BoardDef {
            order: self.order,
            policy: self.policy,
            tie_break: self.tie_break,
            rank_mode: self.rank_mode,
            windows: windows_of(self.windows),
            max_members: self.max_members,
            ..BoardDef::default()
        }
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let windows: Vec<&str> = windows_of(self.windows)
            .iter()
            .map(|w| w.as_str())
            .collect();
        writeln!(
            f,
            "board {{ order: {}, policy: {}, tie_break: {}, rank_mode: {}, windows: [{}], max_members: {:?} }}, batch_chunk {}, start {} ms before the rollover",
            self.order,
            self.policy,
            self.tie_break,
            self.rank_mode,
            windows.join(", "),
            self.max_members,
            self.batch_chunk,
            self.lead_ms,
        )?;
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}: {op:?}")?;
        }
        Ok(())
    }
}

fn windows_of(mask: u8) -> Vec<Window> {
    Window::EVERY
        .into_iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, w)| w)
        .collect()
}

// ---- strategies -------------------------------------------------------------------------------

fn ev() -> impl Strategy<Value = Ev> {
    let any = (
        0..MEMBERS.len(),
        // Mostly small, so that ties are frequent; sometimes negative, sometimes larger.
        prop_oneof![4 => 0_i64..=3, 1 => -3_i64..=-1, 1 => 4_i64..=9],
        prop_oneof![3 => Just(0_usize), 2 => 1..SCOPE_LISTS.len()],
        prop_oneof![3 => Just(None), 1 => (0..EVENT_IDS).prop_map(Some)],
    )
        .prop_map(|(member, value, scopes, event_id)| Ev {
            member,
            value,
            scopes,
            event_id,
        });
    // The one event each id stands for when it is sent (again) as itself: a retry, a duplicate
    // unless the id was first taken by another event.
    let retry = (0..EVENT_IDS).prop_map(|id| Ev {
        member: id % MEMBERS.len(),
        value: id as i64,
        scopes: id % SCOPE_LISTS.len(),
        event_id: Some(id),
    });
    prop_oneof![4 => any, 1 => retry]
}

fn view() -> impl Strategy<Value = ViewSel> {
    (
        0_usize..4,
        prop::bool::weighted(0.25),
        prop::option::of(0..SCOPES.len()),
    )
        .prop_map(|(window, previous, scope)| ViewSel {
            window,
            previous,
            scope,
        })
}

/// A member to read: any of the pool or the ghost.
fn reader() -> impl Strategy<Value = usize> {
    0..=MEMBERS.len()
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => ev().prop_map(Op::Submit),
        2 => prop::collection::vec(ev(), 1..=20).prop_map(Op::Batch),
        1 => reader().prop_map(Op::Remove),
        // Under a second (so that all-time ticks, in whole seconds, often tie) or a few seconds.
        3 => prop_oneof![2 => 1_i64..=400, 1 => 1000_i64..=5000].prop_map(Op::Advance),
        1 => (view(), 1_i64..=6).prop_map(|(v, l)| Op::Top(v, l)),
        1 => (view(), 0_i64..=6, 1_i64..=6).prop_map(|(v, o, l)| Op::Page(v, o, l)),
        2 => (view(), 1_i64..=3, 1_i64..=4).prop_map(|(v, f, l)| Op::After(v, f, l)),
        2 => (view(), reader(), 0_i64..=4).prop_map(|(v, m, r)| Op::Around(v, m, r)),
        1 => (view(), prop::collection::vec(reader(), 1..=5)).prop_map(|(v, ms)| Op::Lookup(v, ms)),
        1 => (view(), reader()).prop_map(|(v, m)| Op::Standing(v, m)),
        1 => (view(), -12_i64..=24, -12_i64..=24, 1_i64..=8)
            .prop_map(|(v, a, b, l)| Op::ScoreRange(v, a, b, l)),
        1 => view().prop_map(Op::Count),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            prop_oneof![Just(Order::Desc), Just(Order::Asc)],
            prop_oneof![Just(Policy::Incr), Just(Policy::Best), Just(Policy::Set)],
            prop_oneof![Just(TieBreak::Member), Just(TieBreak::First)],
            prop_oneof![
                Just(RankMode::Ordinal),
                Just(RankMode::Competition),
                Just(RankMode::Dense)
            ],
            1_u8..16,
            prop_oneof![2 => Just(None), 1 => (1_u64..=4).prop_map(Some)],
        ),
        prop_oneof![Just(500_usize), Just(1), Just(3)],
        // Mostly close enough to the rollover that the case's clock moves cross it.
        prop_oneof![3 => 0_i64..=5_000, 1 => 5_000_i64..=60_000],
        prop::collection::vec(op(), 1..=30),
    )
        .prop_map(
            |(
                (order, policy, tie_break, rank_mode, windows, max_members),
                batch_chunk,
                lead_ms,
                ops,
            )| {
                Case {
                    order,
                    policy,
                    tie_break,
                    rank_mode,
                    windows,
                    max_members,
                    batch_chunk,
                    lead_ms,
                    ops,
                }
            },
        )
}

// ---- the model --------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
struct Row {
    member: String,
    value: i64,
    /// When the member reached its value: ms since its period's start, whole seconds for the
    /// all-time window. Always 0 on boards that break ties by member.
    tick: i64,
}

/// A ranked row.
#[derive(Clone, Debug)]
struct Ranked {
    rank: u64,
    row: Row,
}

/// (window, period id, scope): one leaderboard key.
type KeyId = (Window, String, Option<String>);

struct Rules {
    order: Order,
    policy: Policy,
    tie_break: TieBreak,
    rank_mode: RankMode,
    windows: Vec<Window>,
    max_members: Option<u64>,
}

impl Rules {
    /// Whether value `a` is strictly better than `b`.
    fn better(&self, a: i64, b: i64) -> bool {
        match self.order {
            Order::Desc => a > b,
            Order::Asc => a < b,
        }
    }

    /// Board order: better value first; then, on `first` boards, earlier tick; then member bytes,
    /// ascending on asc boards and descending on desc boards (as ZRANGE / ZREVRANGE give them).
    fn cmp(&self, a: &Row, b: &Row) -> Ordering {
        let by_value = match self.order {
            Order::Desc => b.value.cmp(&a.value),
            Order::Asc => a.value.cmp(&b.value),
        };
        let by_tick = match self.tie_break {
            TieBreak::First => a.tick.cmp(&b.tick),
            TieBreak::Member => Ordering::Equal,
        };
        let by_member = match self.order {
            Order::Desc => b.member.as_bytes().cmp(a.member.as_bytes()),
            Order::Asc => a.member.as_bytes().cmp(b.member.as_bytes()),
        };
        by_value.then(by_tick).then(by_member)
    }

    fn ranked(&self, rows: &[Row]) -> Vec<Ranked> {
        let mut sorted = rows.to_vec();
        sorted.sort_by(|a, b| self.cmp(a, b));
        sorted
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rank = match self.rank_mode {
                    RankMode::Ordinal => i + 1,
                    RankMode::Competition => {
                        1 + rows
                            .iter()
                            .filter(|o| self.better(o.value, r.value))
                            .count()
                    }
                    RankMode::Dense => {
                        let better: HashSet<i64> = rows
                            .iter()
                            .filter(|o| self.better(o.value, r.value))
                            .map(|o| o.value)
                            .collect();
                        1 + better.len()
                    }
                };
                Ranked {
                    rank: rank as u64,
                    row: r.clone(),
                }
            })
            .collect()
    }
}

/// What an event id stands for: the member, the value and the set of scopes of the event it was
/// first accepted with.
type IdPrint = (usize, i64, Vec<usize>);

fn print_of(ev: &Ev) -> IdPrint {
    let mut scopes = SCOPE_LISTS[ev.scopes].to_vec();
    scopes.sort_unstable();
    (ev.member, ev.value, scopes)
}

struct Model {
    rules: Rules,
    keys: BTreeMap<KeyId, Vec<Row>>,
    seen_ids: HashMap<String, IdPrint>,
}

/// The period of `window` containing `now`, and the tick of `now` in it.
fn period_at(window: Window, now: i64) -> (Period, i64) {
    let p = Period::containing(window, now).expect("the clock lies in a supported period");
    let tick = match window {
        Window::All => (now - ALL_START_MS) / 1000,
        _ => now - p.start_ms(),
    };
    (p, tick)
}

fn period_id(window: Window, p: &Period) -> String {
    if window == Window::All {
        "all".into()
    } else {
        p.id()
    }
}

impl Model {
    fn ranked(&self, key: &KeyId) -> Vec<Ranked> {
        self.keys
            .get(key)
            .map_or_else(Vec::new, |rows| self.rules.ranked(rows))
    }

    fn total(&self, key: &KeyId) -> u64 {
        self.keys.get(key).map_or(0, |r| r.len() as u64)
    }

    /// (value, rank) of a member in a key.
    fn place(&self, key: &KeyId, member: &str) -> Option<(i64, u64)> {
        self.ranked(key)
            .into_iter()
            .find(|r| r.row.member == member)
            .map(|r| (r.row.value, r.rank))
    }

    /// The first of `evs` (in order) whose event id stands for another event: one remembered, or
    /// carried by an earlier event of `evs`, with another member, value or set of scopes.
    fn first_reused(&self, evs: &[Ev]) -> Option<usize> {
        let mut claimed: HashMap<String, IdPrint> = HashMap::new();
        evs.iter().position(|ev| {
            let Some(id) = ev.event_id else {
                return false;
            };
            let id = format!("e{id}");
            let mine = print_of(ev);
            match self.seen_ids.get(&id).or(claimed.get(&id)) {
                Some(theirs) => *theirs != mine,
                None => {
                    claimed.insert(id, mine);
                    false
                }
            }
        })
    }

    /// Applies one event at `now`; answers (duplicate, one result per key the event names).
    fn submit(&mut self, ev: &Ev, now: i64) -> (bool, Vec<KeyResult>) {
        let duplicate = ev
            .event_id
            .is_some_and(|id| match self.seen_ids.entry(format!("e{id}")) {
                std::collections::hash_map::Entry::Occupied(_) => true,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(print_of(ev));
                    false
                }
            });
        let member = member_name(ev.member);
        let mut results = Vec::new();
        for window in self.rules.windows.clone() {
            let (period, tick) = period_at(window, now);
            let scopes = std::iter::once(None)
                .chain(SCOPE_LISTS[ev.scopes].iter().map(|&s| Some(SCOPES[s])));
            for scope in scopes {
                let key: KeyId = (window, period_id(window, &period), scope.map(str::to_owned));
                let before = self.place(&key, member);
                if !duplicate {
                    self.apply(&key, member, ev.value, tick);
                }
                let after = self.place(&key, member);
                results.push(KeyResult {
                    window,
                    period: (window != Window::All).then(|| period.id()),
                    scope: scope.map(|s| Scope::parse(s).unwrap()),
                    score: after.map(|(v, _)| v as f64),
                    rank: after.map(|(_, r)| r),
                    // A duplicate changes nothing: the rank before it is the rank now.
                    previous_rank: if duplicate {
                        after.map(|(_, r)| r)
                    } else {
                        before.map(|(_, r)| r)
                    },
                });
            }
        }
        (duplicate, results)
    }

    fn apply(&mut self, key: &KeyId, member: &str, value: i64, tick: i64) {
        let rules = &self.rules;
        let tick = match rules.tie_break {
            TieBreak::First => tick,
            TieBreak::Member => 0,
        };
        let rows = self.keys.entry(key.clone()).or_default();
        let old = rows.iter().position(|r| r.member == member);
        let old_value = old.map(|i| rows[i].value);
        let new_value = match (rules.policy, old_value) {
            (Policy::Incr, o) => o.unwrap_or(0) + value,
            (Policy::Set, _) | (Policy::Best, None) => value,
            (Policy::Best, Some(o)) => {
                if rules.better(value, o) {
                    value
                } else {
                    o
                }
            }
        };
        if old_value == Some(new_value) {
            // Unchanged: the member keeps the moment it first reached the value.
            return;
        }
        match old {
            Some(i) => {
                rows[i].value = new_value;
                rows[i].tick = tick;
            }
            None => rows.push(Row {
                member: member.to_owned(),
                value: new_value,
                tick,
            }),
        }
        if let Some(max) = rules.max_members {
            // Keep the best `max`: drop the worst in board order.
            while rows.len() as u64 > max {
                rows.sort_by(|a, b| rules.cmp(a, b));
                rows.pop();
            }
        }
    }

    /// Removes a member from every key; answers how many held it.
    fn remove(&mut self, member: &str) -> u64 {
        let mut n = 0;
        for rows in self.keys.values_mut() {
            let before = rows.len();
            rows.retain(|r| r.member != member);
            n += (before - rows.len()) as u64;
        }
        n
    }
}

// ---- running a case ---------------------------------------------------------------------------

/// The first instant, at least two days from now, where a UTC day, an ISO week and a month all
/// begin: Monday the 1st, 00:00 UTC. Cases start shortly before it, so their writes straddle a
/// rollover of every window, and their keys expire (if a case leaves any) well in the future.
fn rollover_ms() -> i64 {
    let mut day = Utc::now().date_naive() + Days::days(2);
    while !(day.day() == 1 && day.weekday() == Weekday::Mon) {
        day += Days::days(1);
    }
    day.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis()
}

fn fail(msg: String) -> TestCaseError {
    TestCaseError::fail(msg)
}

/// Marks a failure as Redis' rather than the engine's.
const UNAVAILABLE: &str = "REDIS UNAVAILABLE: ";

fn infra(why: String) -> TestCaseError {
    fail(format!("{UNAVAILABLE}{why}"))
}

fn is_infra(e: &TestCaseError) -> bool {
    match e {
        TestCaseError::Fail(r) | TestCaseError::Reject(r) => r.message().contains(UNAVAILABLE),
    }
}

/// Fails the case as Redis' fault when the engine could not reach it.
fn reachable<T>(r: &rankd::Result<T>, what: &dyn fmt::Debug) -> Result<(), TestCaseError> {
    match r {
        Err(Error::Unavailable(m)) => Err(infra(format!("{what:?}: {m}"))),
        _ => Ok(()),
    }
}

fn engine_ok<T>(r: rankd::Result<T>, what: &dyn fmt::Debug) -> Result<T, TestCaseError> {
    reachable(&r, what)?;
    r.map_err(|e| fail(format!("{what:?}: the engine failed: {e}")))
}

fn entries_of(ranked: &[Ranked]) -> Vec<Entry> {
    ranked
        .iter()
        .map(|r| Entry {
            rank: r.rank,
            member: r.row.member.clone(),
            score: r.row.value as f64,
            display_name: None,
        })
        .collect()
}

/// A page without its cursor (cursors are opaque; whether a page has one is checked separately):
/// window, period id, scope, total, entries.
type PageShape = (Window, Option<String>, Option<Scope>, u64, Vec<Entry>);

fn page_shape(p: &Page) -> PageShape {
    (
        p.window,
        p.period.clone(),
        p.scope.clone(),
        p.total,
        p.entries.clone(),
    )
}

struct Run<'a> {
    t: &'a Ctx,
    board: BoardId,
    model: Model,
    /// The last cursor a page read handed out: its view, the cursor, and the row it points past.
    cursor: Option<(ViewSel, Cursor, Row)>,
}

impl Run<'_> {
    fn now(&self) -> i64 {
        self.t.clock.now_ms()
    }

    /// The engine view and the model key a selection names at the current time.
    fn resolve(&self, v: ViewSel) -> (View, KeyId) {
        let windows = &self.model.rules.windows;
        let window = windows[v.window % windows.len()];
        let (mut period, _) = period_at(window, self.now());
        let explicit = v.previous && window != Window::All;
        if explicit {
            period = period.offset(-1);
        }
        let scope = v.scope.map(|s| SCOPES[s]);
        let view = View {
            window,
            period: explicit.then_some(period),
            scope: scope.map(|s| Scope::parse(s).unwrap()),
        };
        (
            view,
            (window, period_id(window, &period), scope.map(str::to_owned)),
        )
    }

    fn expected_page(&self, key: &KeyId, entries: Vec<Entry>) -> PageShape {
        let (window, period, scope) = key;
        (
            *window,
            (*window != Window::All).then(|| period.clone()),
            scope.as_deref().map(|s| Scope::parse(s).unwrap()),
            self.model.total(key),
            entries,
        )
    }

    fn submit_of(&self, ev: &Ev) -> Submit {
        Submit {
            board: self.board.clone(),
            member: Member::parse(member_name(ev.member)).unwrap(),
            value: rankd::board::Score::new("value", ev.value as f64).unwrap(),
            scopes: SCOPE_LISTS[ev.scopes]
                .iter()
                .map(|&s| Scope::parse(SCOPES[s]).unwrap())
                .collect(),
            event_id: ev
                .event_id
                .map(|id| EventId::parse(&format!("e{id}")).unwrap()),
            at_ms: None,
        }
    }

    /// Remembers the cursor of a page read, pointing past its last entry.
    fn keep_cursor(&mut self, v: ViewSel, page: &Page, limit: i64) -> Result<(), TestCaseError> {
        let full = page.entries.len() as i64 == limit;
        prop_assert_eq!(
            page.next.is_some(),
            full,
            "a page has a cursor exactly when it is full"
        );
        if let (Some(c), Some(last)) = (&page.next, page.entries.last()) {
            let (_, key) = self.resolve(v);
            let row = self
                .model
                .keys
                .get(&key)
                .and_then(|rows| rows.iter().find(|r| r.member == last.member))
                .cloned()
                .ok_or_else(|| fail(format!("cursor member {} not in the model", last.member)))?;
            self.cursor = Some((v, c.clone(), row));
        }
        Ok(())
    }

    async fn top(&mut self, v: ViewSel, limit: i64, op: &Op) -> Result<(), TestCaseError> {
        let (view, key) = self.resolve(v);
        let got = engine_ok(
            self.t
                .engine
                .top(&self.board, &view, Limit::new(limit).unwrap())
                .await,
            op,
        )?;
        let ranked = self.model.ranked(&key);
        let want = entries_of(&ranked[..ranked.len().min(limit as usize)]);
        prop_assert_eq!(page_shape(&got), self.expected_page(&key, want));
        self.keep_cursor(v, &got, limit)
    }

    async fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let e = &self.t.engine;
        let board = self.board.clone();
        let b = &board;
        match op {
            Op::Submit(ev) if self.model.first_reused(std::slice::from_ref(ev)).is_some() => {
                let got = e.submit(&self.submit_of(ev)).await;
                reachable(&got, op)?;
                prop_assert!(
                    matches!(&got, Err(Error::EventIdReused { field, .. }) if field == "event_id"),
                    "{op:?}: an id reused for another event must be refused: {got:?}"
                );
            }
            Op::Batch(evs) if self.model.first_reused(evs).is_some() => {
                let events: Vec<Submit> = evs.iter().map(|ev| self.submit_of(ev)).collect();
                let got = e.submit_batch(&events).await;
                reachable(&got, op)?;
                let want = format!(
                    "events[{}].event_id",
                    self.model.first_reused(evs).unwrap_or(0)
                );
                prop_assert!(
                    matches!(&got, Err(Error::EventIdReused { field, .. }) if *field == want),
                    "{op:?}: {want} reuses an id for another event: {got:?}"
                );
            }
            Op::Submit(ev) => {
                let got = engine_ok(e.submit(&self.submit_of(ev)).await, op)?;
                let now = self.now();
                let (duplicate, results) = self.model.submit(ev, now);
                let want = Submitted {
                    member: Member::parse(member_name(ev.member)).unwrap(),
                    duplicate,
                    results,
                };
                prop_assert_eq!(got, want);
            }
            Op::Batch(evs) => {
                let events: Vec<Submit> = evs.iter().map(|ev| self.submit_of(ev)).collect();
                let got = engine_ok(e.submit_batch(&events).await, op)?;
                let now = self.now();
                let mut want = BatchOutcome::default();
                for ev in evs {
                    if self.model.submit(ev, now).0 {
                        want.duplicates += 1;
                    } else {
                        want.accepted += 1;
                    }
                }
                prop_assert_eq!(got, want);
            }
            Op::Remove(m) => {
                let member = Member::parse(member_name(*m)).unwrap();
                let got = engine_ok(e.remove_member(b, &member).await, op)?;
                let want = self.model.remove(member_name(*m));
                prop_assert_eq!(got, want, "keys the member was removed from");
            }
            Op::Advance(ms) => self.t.clock.advance(*ms),
            Op::Top(v, limit) => self.top(*v, *limit, op).await?,
            Op::Page(v, offset, limit) => {
                let (view, key) = self.resolve(*v);
                let got = engine_ok(
                    e.page(
                        b,
                        &view,
                        Offset::new(*offset).unwrap(),
                        Limit::new(*limit).unwrap(),
                    )
                    .await,
                    op,
                )?;
                let ranked = self.model.ranked(&key);
                let want: Vec<Ranked> = ranked
                    .into_iter()
                    .skip(*offset as usize)
                    .take(*limit as usize)
                    .collect();
                prop_assert_eq!(
                    page_shape(&got),
                    self.expected_page(&key, entries_of(&want))
                );
                self.keep_cursor(*v, &got, *limit)?;
            }
            Op::After(first_view, first_limit, limit) => {
                if self.cursor.is_none() {
                    self.top(*first_view, *first_limit, op).await?;
                }
                let Some((v, cursor, row)) = self.cursor.clone() else {
                    return Ok(());
                };
                let (view, key) = self.resolve(v);
                let got = engine_ok(
                    e.after(b, &view, &cursor, Limit::new(*limit).unwrap())
                        .await,
                    op,
                )?;
                // Strictly after the cursor's (score, member) in board order, whatever happened
                // to the cursor's member since.
                let rules = &self.model.rules;
                let want: Vec<Ranked> = self
                    .model
                    .ranked(&key)
                    .into_iter()
                    .filter(|r| rules.cmp(&row, &r.row) == Ordering::Less)
                    .take(*limit as usize)
                    .collect();
                prop_assert_eq!(
                    page_shape(&got),
                    self.expected_page(&key, entries_of(&want)),
                    "page after {:?}",
                    row
                );
                self.keep_cursor(v, &got, *limit)?;
            }
            Op::Around(v, m, radius) => {
                let (view, key) = self.resolve(*v);
                let member = Member::parse(member_name(*m)).unwrap();
                let got = e
                    .around(b, &view, &member, Radius::new(*radius).unwrap())
                    .await;
                reachable(&got, op)?;
                let ranked = self.model.ranked(&key);
                let Some(pos) = ranked.iter().position(|r| r.row.member == member_name(*m)) else {
                    prop_assert!(
                        matches!(got, Err(Error::MemberNotFound { .. })),
                        "around an absent member: {:?}",
                        got
                    );
                    return Ok(());
                };
                let got = engine_ok(got, op)?;
                let r = *radius as usize;
                let total = ranked.len();
                let count = (2 * r + 1).min(total);
                let mut first = pos.saturating_sub(r);
                if first + count > total {
                    first = total - count;
                }
                let want = entries_of(&ranked[first..first + count]);
                // The shape the brief promises, checked on the engine's own answer.
                prop_assert_eq!(got.entries.len(), count, "2r+1 entries, or all of them");
                prop_assert!(got.entries.iter().any(|x| x.member == member_name(*m)));
                if pos <= r {
                    prop_assert_eq!(
                        got.entries.first().map(|x| x.member.as_str()),
                        Some(ranked[0].row.member.as_str()),
                        "the top entry is not dropped"
                    );
                }
                prop_assert!(got.next.is_none());
                prop_assert_eq!(page_shape(&got), self.expected_page(&key, want));
            }
            Op::Lookup(v, ms) => {
                let (view, key) = self.resolve(*v);
                let members: Vec<Member> = ms
                    .iter()
                    .map(|&m| Member::parse(member_name(m)).unwrap())
                    .collect();
                let got = engine_ok(e.lookup(b, &view, &members).await, op)?;
                let mut unique: Vec<&str> = Vec::new();
                for &m in ms {
                    if !unique.contains(&member_name(m)) {
                        unique.push(member_name(m));
                    }
                }
                let ranked = self.model.ranked(&key);
                let found: Vec<Ranked> = ranked
                    .iter()
                    .filter(|r| unique.contains(&r.row.member.as_str()))
                    .cloned()
                    .collect();
                let want = Lookup {
                    total: self.model.total(&key),
                    entries: entries_of(&found),
                    missing: unique
                        .iter()
                        .filter(|m| !found.iter().any(|r| r.row.member == **m))
                        .map(|m| Member::parse(m).unwrap())
                        .collect(),
                };
                prop_assert_eq!(got, want);
            }
            Op::Standing(v, m) => {
                let (view, key) = self.resolve(*v);
                let member = Member::parse(member_name(*m)).unwrap();
                let got = e.standing(b, &view, &member).await;
                reachable(&got, op)?;
                let ranked = self.model.ranked(&key);
                match ranked.iter().find(|r| r.row.member == member_name(*m)) {
                    None => prop_assert!(
                        matches!(got, Err(Error::MemberNotFound { .. })),
                        "standing of an absent member: {:?}",
                        got
                    ),
                    Some(me) => {
                        let rules = &self.model.rules;
                        let worse = ranked
                            .iter()
                            .filter(|o| rules.better(me.row.value, o.row.value))
                            .count();
                        let total = ranked.len() as u64;
                        let want = Standing {
                            member,
                            score: me.row.value as f64,
                            rank: me.rank,
                            percentile: worse as f64 * 100.0 / total as f64,
                            total,
                            display_name: None,
                            data: None,
                        };
                        prop_assert_eq!(engine_ok(got, op)?, want);
                    }
                }
            }
            Op::ScoreRange(v, a, c, limit) => {
                let (view, key) = self.resolve(*v);
                let (lo, hi) = ((*a).min(*c) as f64 / 2.0, (*a).max(*c) as f64 / 2.0);
                let got = engine_ok(
                    e.score_range(
                        b,
                        &view,
                        rankd::board::Score::new("min", lo).unwrap(),
                        rankd::board::Score::new("max", hi).unwrap(),
                        Limit::new(*limit).unwrap(),
                    )
                    .await,
                    op,
                )?;
                let want: Vec<Ranked> = self
                    .model
                    .ranked(&key)
                    .into_iter()
                    .filter(|r| (lo..=hi).contains(&(r.row.value as f64)))
                    .take(*limit as usize)
                    .collect();
                prop_assert!(got.next.is_none());
                prop_assert_eq!(
                    page_shape(&got),
                    self.expected_page(&key, entries_of(&want))
                );
            }
            Op::Count(v) => {
                let (view, key) = self.resolve(*v);
                let got = engine_ok(e.count(b, &view).await, op)?;
                prop_assert_eq!(got, self.model.total(&key));
            }
        }
        Ok(())
    }

    /// Reads every view of the board in full (each window's current and previous period, global
    /// and each scope) and compares it with the model.
    async fn check_all(&self) -> Result<(), TestCaseError> {
        let mut sels = Vec::new();
        for window in 0..self.model.rules.windows.len() {
            for previous in [false, true] {
                if previous && self.model.rules.windows[window] == Window::All {
                    continue;
                }
                for scope in [None, Some(0), Some(1)] {
                    sels.push(ViewSel {
                        window,
                        previous,
                        scope,
                    });
                }
            }
        }
        let resolved: Vec<(View, KeyId)> = sels.iter().map(|&v| self.resolve(v)).collect();
        let limit = Limit::new(FULL).unwrap();
        let pages = futures::future::join_all(
            resolved
                .iter()
                .map(|(view, _)| self.t.engine.top(&self.board, view, limit)),
        )
        .await;
        for ((view, key), page) in resolved.iter().zip(pages) {
            let page = engine_ok(page, view)?;
            let want = self.expected_page(key, entries_of(&self.model.ranked(key)));
            prop_assert_eq!(page_shape(&page), want, "full read of {:?}", key);
        }
        Ok(())
    }
}

async fn run_case(t: &Ctx, case: &Case) -> Result<(), TestCaseError> {
    t.clock.set(rollover_ms() - case.lead_ms);
    let def = case.def();
    let board = BoardId::parse("model").unwrap();
    engine_ok(t.engine.put_board(&board, def.clone()).await, &"put_board")?;
    let mut run = Run {
        t,
        board,
        model: Model {
            rules: Rules {
                order: def.order,
                policy: def.policy,
                tie_break: def.tie_break,
                rank_mode: def.rank_mode,
                windows: def.windows.clone(),
                max_members: def.max_members,
            },
            keys: BTreeMap::new(),
            seen_ids: HashMap::new(),
        },
        cursor: None,
    };
    for (i, op) in case.ops.iter().enumerate() {
        let at = run.now();
        let checked = match run.step(op).await {
            Ok(()) => run.check_all().await,
            Err(e) => Err(e),
        };
        checked.map_err(|e| fail(format!("step {i} ({op:?}) at clock {at}: {e}")))?;
    }
    Ok(())
}

/// Runs a case once on a fresh engine and prefix, cleaning up whatever the outcome.
async fn attempt(redis: Redis, case: &Case) -> Result<(), TestCaseError> {
    let config = EngineConfig {
        batch_chunk: case.batch_chunk,
        ..EngineConfig::default()
    };
    let t = AssertUnwindSafe(Ctx::with_prefix(redis, &prefix(), config))
        .catch_unwind()
        .await
        .map_err(|p| infra(panic_text(&p)))?;
    let outcome = run_case(&t, case).await;
    let cleaned = AssertUnwindSafe(t.cleanup()).catch_unwind().await;
    outcome?;
    cleaned.map_err(|p| infra(format!("cleanup: {}", panic_text(&p))))
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".into())
}

fn random_sequences_match_the_model(redis: Redis) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Fail loudly, before any case, when this Redis is not there.
    rt.block_on(async {
        let t = Ctx::new(redis).await;
        t.engine.ready().await.expect("Redis answers");
    });
    let mut config = ProptestConfig {
        failure_persistence: None,
        max_shrink_iters: 4096,
        max_shrink_time: 300_000,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    // Redis failing under a case (others share it, and may restart it) is no disagreement with the
    // model: the case is run again from scratch, and if Redis stays unreachable the whole test
    // fails saying so, without shrinking towards a meaningless "minimal case".
    let unavailable: RefCell<Option<String>> = RefCell::new(None);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case(), |case| {
        if let Some(why) = unavailable.borrow().as_ref() {
            return Err(infra(why.clone()));
        }
        let mut last = String::new();
        for _ in 0..3 {
            match rt.block_on(attempt(redis, &case)) {
                Err(e) if is_infra(&e) => {
                    last = e.to_string();
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                outcome => return outcome,
            }
        }
        *unavailable.borrow_mut() = Some(last.clone());
        Err(infra(last))
    });
    if let Some(why) = unavailable.into_inner() {
        panic!("{redis:?} Redis was unavailable during the run (no verdict on the engine): {why}");
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => {
            panic!(
                "the engine disagrees with the model on {redis:?}: {why}\nminimal case:\n{case:?}"
            )
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn random_sequences_match_the_model_on_standalone_redis() {
    random_sequences_match_the_model(Redis::Standalone);
}

#[test]
fn random_sequences_match_the_model_on_a_redis_cluster() {
    random_sequences_match_the_model(Redis::Cluster);
}
