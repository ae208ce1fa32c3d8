//! The Redis commands the scripts call, with Redis 7.0's argument parsing, replies and error texts.
//!
//! Each command is one entry of [`COMMANDS`]: its name, its arity in Redis' convention (positive: the
//! exact argument count, command name included; negative: at least that many) and a function from the
//! arguments to a reply. Adding a command is adding an entry and its function; the script layer
//! checks names and arities before calling one, as Redis does.
//!
//! Where Redis' behaviour depends on its internal encoding, it is reproduced: a sorted set that Redis
//! would still hold as a listpack stores `-0` as `0` (see [`ZSet::listpack`]). SMEMBERS answers in
//! hash order, as Redis' hashtable-encoded sets do; neither promises an order.

use super::keyspace::{Hash, Keyspace, Set, Stream, Value};
use super::num::{fmt_g17, parse_bound, parse_i64, parse_score};
use super::zset::ZSet;

/// A reply, as Redis produces it in RESP2.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum RValue {
    /// Null bulk string.
    Nil,
    /// Integer.
    Int(i64),
    /// Bulk string.
    Bulk(Vec<u8>),
    /// Status ("simple string").
    Status(String),
    /// Error, code first ("ERR syntax error").
    Error(String),
    /// Array.
    Array(Vec<RValue>),
}

/// What a command runs against: the keyspace at one frozen instant.
pub(crate) struct Ctx<'a> {
    pub ks: &'a mut Keyspace,
    pub now: i64,
}

type CmdResult = Result<RValue, String>;

/// One command of the table.
pub(crate) struct Command {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis' arity: exact when positive, minimum when negative; the name counts.
    pub arity: i32,
    run: fn(&mut Ctx<'_>, &[&[u8]]) -> CmdResult,
}

macro_rules! commands {
    ($($name:literal $arity:literal $f:ident,)*) => {
        /// Every command the embedded store answers.
        pub(crate) static COMMANDS: &[Command] = &[
            $(Command { name: $name, arity: $arity, run: $f },)*
        ];
    };
}

commands! {
    "del" -2 del,
    "unlink" -2 del,
    "exists" -2 exists,
    "pexpire" -3 pexpire,
    "pexpireat" -3 pexpireat,
    "pttl" 2 pttl,
    "hget" 3 hget,
    "hmget" -3 hmget,
    "hgetall" 2 hgetall,
    "hset" -4 hset,
    "hdel" -3 hdel,
    "hincrby" 4 hincrby,
    "sadd" -3 sadd,
    "srem" -3 srem,
    "smembers" 2 smembers,
    "zadd" -4 zadd,
    "zscore" 3 zscore,
    "zmscore" -3 zmscore,
    "zrank" 3 zrank,
    "zrevrank" 3 zrevrank,
    "zcard" 2 zcard,
    "zcount" 4 zcount,
    "zrange" -4 zrange,
    "zrevrange" -4 zrevrange,
    "zrangebyscore" -4 zrangebyscore,
    "zrevrangebyscore" -4 zrevrangebyscore,
    "zremrangebyscore" 4 zremrangebyscore,
    "zremrangebyrank" 4 zremrangebyrank,
    "zrem" -3 zrem,
    "get" 2 get,
    "set" -3 set_cmd,
    "incr" 2 incr,
    "incrby" 3 incrby,
    "xadd" -5 xadd,
    "xrange" -4 xrange,
    "xdel" -3 xdel,
}

/// The command named `name`, in any case. Names as rankd's scripts write them (upper case) are
/// found by one hash lookup: a script makes thousands of calls a second.
pub(crate) fn lookup(name: &[u8]) -> Option<&'static Command> {
    static UPPER: std::sync::OnceLock<std::collections::HashMap<Vec<u8>, &'static Command>> =
        std::sync::OnceLock::new();
    let upper = UPPER.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|c| (c.name.to_ascii_uppercase().into_bytes(), c))
            .collect()
    });
    upper.get(name).copied().or_else(|| {
        COMMANDS
            .iter()
            .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
    })
}

impl Command {
    /// True when `argc` arguments (the name included) satisfy the arity.
    pub(crate) fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity.unsigned_abs() as usize;
        if self.arity > 0 {
            argc == a
        } else {
            argc >= a
        }
    }

    /// Runs the command; `argv[0]` is its name.
    pub(crate) fn call(&self, ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> RValue {
        match (self.run)(ctx, argv) {
            Ok(v) => v,
            // Redis' error replies never carry line breaks (addReplyErrorFormat maps them to spaces).
            Err(e) => RValue::Error(e.replace(['\r', '\n'], " ")),
        }
    }
}

const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
const SYNTAX: &str = "ERR syntax error";
const NOT_INT: &str = "ERR value is not an integer or out of range";
const NOT_FLOAT: &str = "ERR value is not a valid float";
const MIN_MAX: &str = "ERR min or max is not a float";
const NAN_SCORE: &str = "ERR resulting score is not a number (NaN)";

fn int_arg(a: &[u8]) -> Result<i64, String> {
    parse_i64(a).ok_or_else(|| NOT_INT.into())
}

fn bulk(b: &[u8]) -> RValue {
    RValue::Bulk(b.to_vec())
}

fn score_reply(x: f64) -> RValue {
    RValue::Bulk(fmt_g17(x).into_bytes())
}

fn is(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

fn count(n: usize) -> RValue {
    RValue::Int(n as i64)
}

// ---- typed access ------------------------------------------------------------------------------

macro_rules! typed {
    ($get:ident, $get_mut:ident, $create:ident, $variant:ident, $ty:ty, $new:expr) => {
        fn $get<'k>(ctx: &'k mut Ctx<'_>, key: &[u8]) -> Result<Option<&'k $ty>, String> {
            match ctx.ks.get(key, ctx.now) {
                None => Ok(None),
                Some(Value::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(WRONGTYPE.into()),
            }
        }

        fn $get_mut<'k>(ctx: &'k mut Ctx<'_>, key: &[u8]) -> Result<Option<&'k mut $ty>, String> {
            match ctx.ks.get_mut(key, ctx.now) {
                None => Ok(None),
                Some(Value::$variant(v)) => Ok(Some(v)),
                Some(_) => Err(WRONGTYPE.into()),
            }
        }

        fn $create<'k>(ctx: &'k mut Ctx<'_>, key: &[u8]) -> Result<&'k mut $ty, String> {
            if $get_mut(ctx, key)?.is_none() {
                ctx.ks.insert(key, Value::$variant($new));
            }
            Ok($get_mut(ctx, key)?.expect("just created"))
        }
    };
}

typed!(zset, zset_mut, _zset_or_create, ZSet, ZSet, ZSet::new());
typed!(hash, hash_mut, hash_or_create, Hash, Hash, Hash::new());
typed!(set, set_mut, set_or_create, Set, Set, Set::new());
typed!(
    stream,
    stream_mut,
    stream_or_create,
    Stream,
    Stream,
    Stream::default()
);

// ---- strings -----------------------------------------------------------------------------------

fn string<'k>(ctx: &'k mut Ctx<'_>, key: &[u8]) -> Result<Option<&'k [u8]>, String> {
    match ctx.ks.get(key, ctx.now) {
        None => Ok(None),
        Some(Value::Str(v)) => Ok(Some(v)),
        Some(_) => Err(WRONGTYPE.into()),
    }
}

fn get(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(string(ctx, a[1])?.map_or(RValue::Nil, bulk))
}

fn set_cmd(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    // Only the plain form: the scripts pass no options.
    if a.len() != 3 {
        return Err(SYNTAX.into());
    }
    ctx.ks.remove(a[1]);
    ctx.ks.insert(a[1], Value::Str(a[2].into()));
    Ok(RValue::Status("OK".into()))
}

fn incr(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    incr_by(ctx, a[1], 1)
}

fn incrby(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    incr_by(ctx, a[1], int_arg(a[2])?)
}

fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], by: i64) -> CmdResult {
    let cur = match string(ctx, key)? {
        None => 0,
        Some(v) => parse_i64(v).ok_or_else(|| NOT_INT.to_owned())?,
    };
    let next = cur
        .checked_add(by)
        .ok_or_else(|| "ERR increment or decrement would overflow".to_owned())?;
    // INCR keeps a key's expiry, as Redis does.
    let expire = ctx.ks.expire_at(key);
    ctx.ks
        .insert(key, Value::Str(next.to_string().into_bytes().into()));
    ctx.ks.set_expire(key, expire);
    Ok(RValue::Int(next))
}

// ---- streams -----------------------------------------------------------------------------------

const BAD_ID: &str = "ERR Invalid stream ID specified as stream command argument";

/// Parses `ms-seq` or `ms` (with `seq` defaulting to `missing_seq`).
fn stream_id(a: &[u8], missing_seq: u64) -> Result<(u64, u64), String> {
    let s = std::str::from_utf8(a).map_err(|_| BAD_ID.to_owned())?;
    let (ms, seq) = match s.split_once('-') {
        Some((ms, seq)) => (ms, Some(seq)),
        None => (s, None),
    };
    let ms = ms.parse::<u64>().map_err(|_| BAD_ID.to_owned())?;
    let seq = match seq {
        Some(q) => q.parse::<u64>().map_err(|_| BAD_ID.to_owned())?,
        None => missing_seq,
    };
    Ok((ms, seq))
}

fn id_reply(id: (u64, u64)) -> RValue {
    RValue::Bulk(format!("{}-{}", id.0, id.1).into_bytes())
}

fn xadd(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    // XADD key id field value [field value ...]; the scripts pass no options.
    if a.len() < 5 || !(a.len() - 3).is_multiple_of(2) {
        return Err("ERR wrong number of arguments for 'xadd' command".into());
    }
    let now = ctx.now.max(0) as u64;
    let s = stream_or_create(ctx, a[1])?;
    let id = if a[2] == b"*" {
        if now > s.last_id.0 {
            (now, 0)
        } else {
            (s.last_id.0, s.last_id.1 + 1)
        }
    } else {
        let id = stream_id(a[2], 0)?;
        if id == (0, 0) {
            return Err("ERR The ID specified in XADD must be greater than 0-0".into());
        }
        if id <= s.last_id {
            return Err(
                "ERR The ID specified in XADD is equal or smaller than the target stream top item"
                    .into(),
            );
        }
        id
    };
    let fields = a[3..]
        .chunks_exact(2)
        .map(|p| (p[0].into(), p[1].into()))
        .collect();
    s.entries.insert(id, fields);
    s.last_id = id;
    Ok(id_reply(id))
}

fn xrange(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let start = if a[2] == b"-" {
        (0, 0)
    } else {
        stream_id(a[2], 0)?
    };
    let end = if a[3] == b"+" {
        (u64::MAX, u64::MAX)
    } else {
        stream_id(a[3], u64::MAX)?
    };
    let mut limit = usize::MAX;
    match &a[4..] {
        [] => {}
        [c, n] if is(c, "count") => {
            let n = int_arg(n)?;
            limit = if n < 0 { 0 } else { n as usize };
        }
        _ => return Err(SYNTAX.into()),
    }
    let Some(s) = stream(ctx, a[1])? else {
        return Ok(RValue::Array(Vec::new()));
    };
    if start > end {
        return Ok(RValue::Array(Vec::new()));
    }
    Ok(RValue::Array(
        s.entries
            .range(start..=end)
            .take(limit)
            .map(|(id, fields)| {
                let flat = fields
                    .iter()
                    .flat_map(|(f, v)| [bulk(f), bulk(v)])
                    .collect();
                RValue::Array(vec![id_reply(*id), RValue::Array(flat)])
            })
            .collect(),
    ))
}

fn xdel(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let ids = a[2..]
        .iter()
        .map(|i| stream_id(i, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(s) = stream_mut(ctx, a[1])? else {
        return Ok(count(0));
    };
    Ok(count(
        ids.iter()
            .filter(|id| s.entries.remove(id).is_some())
            .count(),
    ))
}

// ---- keys --------------------------------------------------------------------------------------

fn del(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let mut n = 0;
    for key in &a[1..] {
        if ctx.ks.contains(key, ctx.now) {
            ctx.ks.remove(key);
            n += 1;
        }
    }
    Ok(count(n))
}

fn exists(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let now = ctx.now;
    Ok(count(
        a[1..].iter().filter(|k| ctx.ks.contains(k, now)).count(),
    ))
}

fn pexpire(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    set_expiry(ctx, a, true)
}

fn pexpireat(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    set_expiry(ctx, a, false)
}

/// PEXPIRE (`relative`: milliseconds from now) and PEXPIREAT (a Unix time in ms).
fn set_expiry(ctx: &mut Ctx<'_>, a: &[&[u8]], relative: bool) -> CmdResult {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &a[3..] {
        match () {
            _ if is(opt, "nx") => nx = true,
            _ if is(opt, "xx") => xx = true,
            _ if is(opt, "gt") => gt = true,
            _ if is(opt, "lt") => lt = true,
            _ => {
                return Err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let mut when = int_arg(a[2])?;
    if relative {
        when = when
            .checked_add(ctx.now)
            .ok_or("ERR invalid expire time in 'pexpire' command")?;
    }
    let key = a[1];
    if !ctx.ks.contains(key, ctx.now) {
        return Ok(RValue::Int(0));
    }
    let current = ctx.ks.expire_at(key);
    let refused = (nx && current.is_some())
        || (xx && current.is_none())
        || (gt && current.is_none_or(|c| when <= c))
        || (lt && current.is_some_and(|c| when >= c));
    if refused {
        return Ok(RValue::Int(0));
    }
    // A time already reached deletes the key at once (Redis' checkAlreadyExpired: when <= now).
    if when <= ctx.now {
        ctx.ks.remove(key);
    } else {
        ctx.ks.set_expire(key, Some(when));
    }
    Ok(RValue::Int(1))
}

fn pttl(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    if !ctx.ks.contains(a[1], ctx.now) {
        return Ok(RValue::Int(-2));
    }
    Ok(RValue::Int(match ctx.ks.expire_at(a[1]) {
        None => -1,
        Some(at) => (at - ctx.now).max(0),
    }))
}

// ---- hashes ------------------------------------------------------------------------------------

fn hget(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(hash(ctx, a[1])?
        .and_then(|h| h.get(a[2]))
        .map_or(RValue::Nil, |v| bulk(v)))
}

fn hmget(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let h = hash(ctx, a[1])?;
    Ok(RValue::Array(
        a[2..]
            .iter()
            .map(|f| h.and_then(|h| h.get(*f)).map_or(RValue::Nil, |v| bulk(v)))
            .collect(),
    ))
}

fn hgetall(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(RValue::Array(
        hash(ctx, a[1])?
            .map(|h| h.iter().flat_map(|(f, v)| [bulk(f), bulk(v)]).collect())
            .unwrap_or_default(),
    ))
}

fn hset(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    if !a.len().is_multiple_of(2) {
        return Err("ERR wrong number of arguments for 'hset' command".into());
    }
    let h = hash_or_create(ctx, a[1])?;
    let mut added = 0;
    for pair in a[2..].chunks_exact(2) {
        if h.insert(pair[0].into(), pair[1].into()).is_none() {
            added += 1;
        }
    }
    Ok(count(added))
}

fn hdel(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let Some(h) = hash_mut(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    let n = a[2..].iter().filter(|f| h.remove(**f).is_some()).count();
    ctx.ks.remove_if_empty(a[1]);
    Ok(count(n))
}

fn hincrby(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let incr = int_arg(a[3])?;
    let h = hash_or_create(ctx, a[1])?;
    let old = match h.get(a[2]) {
        Some(v) => parse_i64(v).ok_or("ERR hash value is not an integer")?,
        None => 0,
    };
    let new = old
        .checked_add(incr)
        .ok_or("ERR increment or decrement would overflow")?;
    h.insert(a[2].into(), new.to_string().into_bytes().into());
    Ok(RValue::Int(new))
}

// ---- sets --------------------------------------------------------------------------------------

fn sadd(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let s = set_or_create(ctx, a[1])?;
    Ok(count(
        a[2..].iter().filter(|m| s.insert((**m).into())).count(),
    ))
}

fn srem(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let Some(s) = set_mut(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    let n = a[2..].iter().filter(|m| s.remove(**m)).count();
    ctx.ks.remove_if_empty(a[1]);
    Ok(count(n))
}

fn smembers(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(RValue::Array(
        set(ctx, a[1])?
            .map(|s| s.iter().map(|m| bulk(m)).collect())
            .unwrap_or_default(),
    ))
}

// ---- sorted sets -------------------------------------------------------------------------------

/// Redis' zset-max-listpack-entries and zset-max-listpack-value defaults.
const LISTPACK_ENTRIES: usize = 128;
const LISTPACK_VALUE: usize = 64;

#[derive(Clone, Copy, Default)]
struct AddFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    incr: bool,
}

#[derive(PartialEq)]
enum Added {
    New,
    Updated,
    Unchanged,
    Skipped,
}

/// `zsetAdd`: one score-member pair under the flags. Returns what happened and the resulting score.
fn zset_add(
    z: &mut ZSet,
    member: &[u8],
    mut score: f64,
    f: AddFlags,
) -> Result<(Added, f64), String> {
    match z.score(member) {
        Some(cur) => {
            if f.nx {
                return Ok((Added::Skipped, score));
            }
            if f.incr {
                score += cur;
                if score.is_nan() {
                    return Err(NAN_SCORE.into());
                }
            }
            if (f.lt && score >= cur) || (f.gt && score <= cur) {
                return Ok((Added::Skipped, score));
            }
            if score == cur {
                return Ok((Added::Unchanged, score));
            }
            z.insert(member, stored(z, score));
            Ok((Added::Updated, score))
        }
        None if f.xx => Ok((Added::Skipped, score)),
        None => {
            if z.listpack && (z.len() + 1 > LISTPACK_ENTRIES || member.len() > LISTPACK_VALUE) {
                z.listpack = false;
            }
            z.insert(member, stored(z, score));
            Ok((Added::New, score))
        }
    }
}

/// The score as Redis would store it: a listpack keeps integral scores as integers, so `-0` is `0`.
fn stored(z: &ZSet, score: f64) -> f64 {
    if z.listpack && score == 0.0 {
        0.0
    } else {
        score
    }
}

fn zadd(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let mut f = AddFlags::default();
    let mut ch = false;
    let mut i = 2;
    while i < a.len() {
        match () {
            _ if is(a[i], "nx") => f.nx = true,
            _ if is(a[i], "xx") => f.xx = true,
            _ if is(a[i], "ch") => ch = true,
            _ if is(a[i], "incr") => f.incr = true,
            _ if is(a[i], "gt") => f.gt = true,
            _ if is(a[i], "lt") => f.lt = true,
            _ => break,
        }
        i += 1;
    }
    let elements = a.len() - i;
    if elements == 0 || !elements.is_multiple_of(2) {
        return Err(SYNTAX.into());
    }
    let pairs = elements / 2;
    if f.nx && f.xx {
        return Err("ERR XX and NX options at the same time are not compatible".into());
    }
    if (f.nx && (f.gt || f.lt)) || (f.gt && f.lt) {
        return Err("ERR GT, LT, and/or NX options at the same time are not compatible".into());
    }
    if f.incr && pairs > 1 {
        return Err("ERR INCR option supports a single increment-element pair".into());
    }
    let scores = (0..pairs)
        .map(|j| parse_score(a[i + 2 * j]).ok_or(NOT_FLOAT))
        .collect::<Result<Vec<f64>, _>>()?;
    let key = a[1];
    if zset(ctx, key)?.is_none() {
        if f.xx {
            return Ok(if f.incr { RValue::Nil } else { RValue::Int(0) });
        }
        let mut z = ZSet::new();
        // zsetTypeCreate: a listpack unless the pairs or the first member are too many or too long.
        z.listpack = pairs <= LISTPACK_ENTRIES && a[i + 1].len() <= LISTPACK_VALUE;
        ctx.ks.insert(key, Value::ZSet(z));
    }
    let z = zset_mut(ctx, key)?.expect("present");
    let (mut added, mut updated, mut processed) = (0, 0, 0);
    let mut score = 0.0;
    for (j, &s) in scores.iter().enumerate() {
        let (what, new) = zset_add(z, a[i + 2 * j + 1], s, f)?;
        match what {
            Added::New => added += 1,
            Added::Updated => updated += 1,
            Added::Unchanged | Added::Skipped => {}
        }
        if what != Added::Skipped {
            processed += 1;
        }
        score = new;
    }
    Ok(if f.incr {
        if processed > 0 {
            score_reply(score)
        } else {
            RValue::Nil
        }
    } else {
        RValue::Int(if ch { added + updated } else { added })
    })
}

fn zscore(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(zset(ctx, a[1])?
        .and_then(|z| z.score(a[2]))
        .map_or(RValue::Nil, score_reply))
}

fn zmscore(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let z = zset(ctx, a[1])?;
    Ok(RValue::Array(
        a[2..]
            .iter()
            .map(|m| z.and_then(|z| z.score(m)).map_or(RValue::Nil, score_reply))
            .collect(),
    ))
}

fn zrank_generic(ctx: &mut Ctx<'_>, a: &[&[u8]], reverse: bool) -> CmdResult {
    let Some(z) = zset(ctx, a[1])? else {
        return Ok(RValue::Nil);
    };
    Ok(match z.rank(a[2]) {
        None => RValue::Nil,
        Some(r) if reverse => count(z.len() - 1 - r),
        Some(r) => count(r),
    })
}

fn zrank(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrank_generic(ctx, a, false)
}

fn zrevrank(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrank_generic(ctx, a, true)
}

fn zcard(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    Ok(count(zset(ctx, a[1])?.map_or(0, ZSet::len)))
}

/// A parsed score range: the bounds as `zslParseRange` reads them.
#[derive(Clone, Copy)]
struct ScoreRange {
    min: f64,
    minex: bool,
    max: f64,
    maxex: bool,
}

impl ScoreRange {
    fn parse(min: &[u8], max: &[u8]) -> Result<Self, String> {
        match (parse_bound(min), parse_bound(max)) {
            (Some((min, minex)), Some((max, maxex))) => Ok(Self {
                min,
                minex,
                max,
                maxex,
            }),
            _ => Err(MIN_MAX.into()),
        }
    }

    /// Ranks `[lo, hi)` of the members in range; empty when `lo >= hi`.
    fn ranks(&self, z: &ZSet) -> (usize, usize) {
        (
            z.count_below(self.min, self.minex),
            z.count_below(self.max, !self.maxex),
        )
    }
}

fn zcount(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let range = ScoreRange::parse(a[2], a[3])?;
    let Some(z) = zset(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    let (lo, hi) = range.ranks(z);
    Ok(count(hi.saturating_sub(lo)))
}

#[derive(Clone, Copy, PartialEq)]
enum RangeKind {
    Auto,
    Rank,
    Score,
    Lex,
}

/// `zrangeGenericCommand`: ZRANGE and its older forms, which fix the kind or the direction.
fn zrange_generic(
    ctx: &mut Ctx<'_>,
    a: &[&[u8]],
    mut kind: RangeKind,
    mut reverse: Option<bool>,
) -> CmdResult {
    let (mut minidx, mut maxidx) = (2, 3);
    let mut withscores = false;
    let (mut offset, mut limit) = (0i64, -1i64);
    let mut j = 4;
    while j < a.len() {
        let left = a.len() - j - 1;
        if is(a[j], "withscores") {
            withscores = true;
        } else if is(a[j], "limit") && left >= 2 {
            offset = int_arg(a[j + 1])?;
            limit = int_arg(a[j + 2])?;
            j += 2;
        } else if reverse.is_none() && is(a[j], "rev") {
            reverse = Some(true);
        } else if kind == RangeKind::Auto && is(a[j], "bylex") {
            kind = RangeKind::Lex;
        } else if kind == RangeKind::Auto && is(a[j], "byscore") {
            kind = RangeKind::Score;
        } else {
            return Err(SYNTAX.into());
        }
        j += 1;
    }
    let reverse = reverse.unwrap_or(false);
    if kind == RangeKind::Auto {
        kind = RangeKind::Rank;
    }
    if limit != -1 && kind == RangeKind::Rank {
        return Err(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
                .into(),
        );
    }
    if withscores && kind == RangeKind::Lex {
        return Err("ERR syntax error, WITHSCORES not supported in combination with BYLEX".into());
    }
    if kind == RangeKind::Lex {
        return Err("ERR BYLEX ranges are not supported by the embedded store".into());
    }
    if reverse && kind == RangeKind::Score {
        std::mem::swap(&mut minidx, &mut maxidx);
    }
    enum Spec {
        Rank(i64, i64),
        Score(ScoreRange),
    }
    let spec = if kind == RangeKind::Rank {
        Spec::Rank(int_arg(a[minidx])?, int_arg(a[maxidx])?)
    } else {
        Spec::Score(ScoreRange::parse(a[minidx], a[maxidx])?)
    };
    let Some(z) = zset(ctx, a[1])? else {
        return Ok(RValue::Array(Vec::new()));
    };
    let entries = match spec {
        Spec::Rank(start, end) => match rank_span(z.len(), start, end) {
            None => Vec::new(),
            Some((first, n)) if reverse => {
                let mut v = z.range(z.len() - first - n, n);
                v.reverse();
                v
            }
            Some((first, n)) => z.range(first, n),
        },
        Spec::Score(range) => {
            let (lo, hi) = range.ranks(z);
            if offset < 0 || lo >= hi {
                Vec::new()
            } else {
                let avail = (hi - lo) as u64;
                let skip = offset as u64;
                if skip >= avail {
                    Vec::new()
                } else {
                    let mut n = avail - skip;
                    if limit >= 0 {
                        n = n.min(limit as u64);
                    }
                    let n = n as usize;
                    if reverse {
                        let top = hi - skip as usize; // one past the first entry returned
                        let mut v = z.range(top - n, n);
                        v.reverse();
                        v
                    } else {
                        z.range(lo + skip as usize, n)
                    }
                }
            }
        }
    };
    let mut out = Vec::with_capacity(entries.len() * if withscores { 2 } else { 1 });
    for (m, s) in entries {
        out.push(bulk(m));
        if withscores {
            out.push(score_reply(s));
        }
    }
    Ok(RValue::Array(out))
}

/// Redis' sanitising of a rank range over `len` members: (first rank, count), or `None` when empty.
fn rank_span(len: usize, mut start: i64, mut end: i64) -> Option<(usize, usize)> {
    let llen = len as i64;
    if start < 0 {
        start += llen;
    }
    if end < 0 {
        end += llen;
    }
    if start < 0 {
        start = 0;
    }
    if start > end || start >= llen {
        return None;
    }
    if end >= llen {
        end = llen - 1;
    }
    Some((start as usize, (end - start + 1) as usize))
}

fn zrange(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrange_generic(ctx, a, RangeKind::Auto, None)
}

fn zrevrange(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrange_generic(ctx, a, RangeKind::Rank, Some(true))
}

fn zrangebyscore(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrange_generic(ctx, a, RangeKind::Score, Some(false))
}

fn zrevrangebyscore(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    zrange_generic(ctx, a, RangeKind::Score, Some(true))
}

/// Removes the members at ascending ranks `[first, first + n)` and deletes the key if it empties.
fn remove_ranks(ctx: &mut Ctx<'_>, key: &[u8], first: usize, n: usize) -> CmdResult {
    let z = zset_mut(ctx, key)?.expect("checked by the caller");
    let doomed: Vec<Vec<u8>> = z
        .range(first, n)
        .into_iter()
        .map(|(m, _)| m.to_vec())
        .collect();
    for m in &doomed {
        z.remove(m);
    }
    ctx.ks.remove_if_empty(key);
    Ok(count(doomed.len()))
}

fn zremrangebyscore(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let range = ScoreRange::parse(a[2], a[3])?;
    let Some(z) = zset(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    let (lo, hi) = range.ranks(z);
    if lo >= hi {
        return Ok(RValue::Int(0));
    }
    remove_ranks(ctx, a[1], lo, hi - lo)
}

fn zremrangebyrank(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let (start, end) = (int_arg(a[2])?, int_arg(a[3])?);
    let Some(z) = zset(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    match rank_span(z.len(), start, end) {
        None => Ok(RValue::Int(0)),
        Some((first, n)) => remove_ranks(ctx, a[1], first, n),
    }
}

fn zrem(ctx: &mut Ctx<'_>, a: &[&[u8]]) -> CmdResult {
    let Some(z) = zset_mut(ctx, a[1])? else {
        return Ok(RValue::Int(0));
    };
    let n = a[2..].iter().filter(|m| z.remove(m).is_some()).count();
    ctx.ks.remove_if_empty(a[1]);
    Ok(count(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Db {
        ks: Keyspace,
        now: i64,
    }

    impl Db {
        fn new() -> Self {
            Self {
                ks: Keyspace::new(),
                now: 1_000,
            }
        }

        fn run(&mut self, line: &str) -> RValue {
            let argv: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
            let cmd = lookup(argv[0]).expect("known command");
            assert!(cmd.arity_ok(argv.len()), "arity of {line}");
            let mut ctx = Ctx {
                ks: &mut self.ks,
                now: self.now,
            };
            cmd.call(&mut ctx, &argv)
        }
    }

    fn b(s: &str) -> RValue {
        RValue::Bulk(s.as_bytes().to_vec())
    }

    fn arr(items: &[&str]) -> RValue {
        RValue::Array(items.iter().map(|s| b(s)).collect())
    }

    fn err(s: &str) -> RValue {
        RValue::Error(s.into())
    }

    #[test]
    fn strings_and_streams_follow_redis_for_the_log_scripts() {
        let mut db = Db::new();
        assert_eq!(db.run("get c"), RValue::Nil);
        assert_eq!(db.run("incr c"), RValue::Int(1));
        assert_eq!(db.run("incr c"), RValue::Int(2));
        assert_eq!(db.run("get c"), b("2"));
        assert_eq!(db.run("set c 41"), RValue::Status("OK".into()));
        assert_eq!(db.run("incr c"), RValue::Int(42));
        assert_eq!(db.run("incrby c 8"), RValue::Int(50));
        assert_eq!(db.run("incrby c x"), err(NOT_INT));
        assert_eq!(db.run("incrby n 3"), RValue::Int(3));
        db.run("set t x");
        assert_eq!(db.run("incr t"), err(NOT_INT));
        assert_eq!(db.run("incrby t 1"), err(NOT_INT));
        assert_eq!(db.run("xadd s 0-1 a b"), b("0-1"));
        assert_eq!(db.run("xadd s 0-2 c d"), b("0-2"));
        assert_eq!(
            db.run("xadd s 0-1 a b"),
            err("ERR The ID specified in XADD is equal or smaller than the target stream top item")
        );
        assert_eq!(
            db.run("xadd s 0-0 a b"),
            err("ERR The ID specified in XADD must be greater than 0-0")
        );
        assert_eq!(
            db.run("xrange s - + count 1"),
            RValue::Array(vec![RValue::Array(vec![b("0-1"), arr(&["a", "b"])])])
        );
        assert_eq!(db.run("xdel s 0-1 0-9"), RValue::Int(1));
        assert_eq!(db.run("xdel s 0-2"), RValue::Int(1));
        assert_eq!(
            db.run("exists s"),
            RValue::Int(1),
            "an emptied stream stays, as in Redis"
        );
        assert_eq!(
            db.run("xadd s 0-2 a b"),
            err("ERR The ID specified in XADD is equal or smaller than the target stream top item"),
            "XDEL does not lower the last id"
        );
        assert_eq!(db.run("xrange s - +"), RValue::Array(vec![]));
        assert_eq!(db.run("get s"), err(WRONGTYPE));
    }

    #[test]
    fn zadd_flags_and_errors_follow_redis() {
        let mut db = Db::new();
        assert_eq!(db.run("zadd k 1 a 2 b"), RValue::Int(2));
        assert_eq!(db.run("zadd k xx ch 5 a 1 c"), RValue::Int(1));
        assert_eq!(db.run("zadd k nx 9 a 3 c"), RValue::Int(1));
        assert_eq!(db.run("zadd k gt ch 4 a 6 b"), RValue::Int(1));
        assert_eq!(db.run("zadd k incr 0.5 a"), b("5.5"));
        assert_eq!(db.run("zadd k incr nx 1 a"), RValue::Nil);
        assert_eq!(db.run("zadd k xx incr 1 zz"), RValue::Nil);
        assert_eq!(db.run("zadd k 0.1 q"), RValue::Int(1));
        assert_eq!(db.run("zscore k q"), b("0.10000000000000001"));
        assert_eq!(
            db.run("zmscore k q nope q"),
            RValue::Array(vec![
                b("0.10000000000000001"),
                RValue::Nil,
                b("0.10000000000000001")
            ])
        );
        assert_eq!(db.run("zmscore none q"), RValue::Array(vec![RValue::Nil]));
        assert_eq!(db.run("zadd k 1 a 2"), err(SYNTAX));
        assert_eq!(
            db.run("zadd k nx xx 1 a"),
            err("ERR XX and NX options at the same time are not compatible")
        );
        assert_eq!(
            db.run("zadd k gt lt 1 a"),
            err("ERR GT, LT, and/or NX options at the same time are not compatible")
        );
        assert_eq!(
            db.run("zadd k incr 1 a 2 b"),
            err("ERR INCR option supports a single increment-element pair")
        );
        assert_eq!(db.run("zadd k nan a"), err(NOT_FLOAT));
        assert_eq!(db.run("zadd k inf i"), RValue::Int(1));
        assert_eq!(db.run("zadd k incr -inf i"), err(NAN_SCORE));
        assert_eq!(db.run("hset h f v"), RValue::Int(1));
        assert_eq!(db.run("zadd h 1 a"), err(WRONGTYPE));
        assert_eq!(
            db.run("zadd h x a"),
            err(NOT_FLOAT),
            "scores are parsed before the type check"
        );
    }

    #[test]
    fn negative_zero_survives_only_outside_listpack_sized_sets() {
        let mut db = Db::new();
        db.run("zadd small -0 z");
        assert_eq!(db.run("zscore small z"), b("0"));
        let long = "m".repeat(65);
        db.run(&format!("zadd big -0 {long}"));
        db.run("zadd big -0 z");
        assert_eq!(db.run("zscore big z"), b("-0"));
        for i in 0..128 {
            db.run(&format!("zadd grown {i} m{i}"));
        }
        db.run("zadd grown -0 z");
        assert_eq!(
            db.run("zscore grown z"),
            b("-0"),
            "the 129th member converted the set"
        );
        assert_eq!(db.run("zadd grown 0 z"), RValue::Int(0));
        assert_eq!(
            db.run("zscore grown z"),
            b("-0"),
            "an equal score is no update"
        );
    }

    #[test]
    fn ranges_by_rank_and_score_mirror_redis_edge_cases() {
        let mut db = Db::new();
        db.run("zadd k 1 a 2 b 2 c 3 d -inf lo inf hi");
        assert_eq!(
            db.run("zrange k 0 -1"),
            arr(&["lo", "a", "b", "c", "d", "hi"])
        );
        assert_eq!(
            db.run("zrange k -2 100 withscores"),
            arr(&["d", "3", "hi", "inf"])
        );
        assert_eq!(
            db.run("zrevrange k 0 1 withscores"),
            arr(&["hi", "inf", "d", "3"])
        );
        assert_eq!(db.run("zrange k 3 1"), arr(&[]));
        assert_eq!(db.run("zrangebyscore k (1 2"), arr(&["b", "c"]));
        assert_eq!(
            db.run("zrangebyscore k -inf +inf limit 1 2"),
            arr(&["a", "b"])
        );
        assert_eq!(
            db.run("zrangebyscore k -inf +inf limit 4 -1"),
            arr(&["d", "hi"])
        );
        assert_eq!(db.run("zrangebyscore k -inf +inf limit -1 2"), arr(&[]));
        assert_eq!(
            db.run("zrevrangebyscore k 2 -inf withscores limit 1 5"),
            arr(&["b", "2", "a", "1", "lo", "-inf"])
        );
        assert_eq!(db.run("zrange k (1 +inf byscore rev"), arr(&[]));
        assert_eq!(
            db.run("zrange k +inf (1 byscore rev limit 0 2"),
            arr(&["hi", "d"])
        );
        assert_eq!(db.run("zrange k 0 1 limit 0 1"), err("ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"));
        assert_eq!(db.run("zrevrange k 0 1 rev"), err(SYNTAX));
        assert_eq!(db.run("zrangebyscore k 0 1 limit 0"), err(SYNTAX));
        assert_eq!(db.run("zrangebyscore k x 1"), err(MIN_MAX));
        assert_eq!(db.run("zrange k a 1"), err(NOT_INT));
        assert_eq!(db.run("zcount k ( +inf"), RValue::Int(5));
        assert_eq!(db.run("zcount k (2 (2"), RValue::Int(0));
        assert_eq!(db.run("zcount k 2 2"), RValue::Int(2));
        assert_eq!(db.run("zrank k c"), RValue::Int(3));
        assert_eq!(db.run("zrevrank k c"), RValue::Int(2));
        assert_eq!(db.run("zrank k nobody"), RValue::Nil);
        assert_eq!(db.run("zremrangebyscore k (2 +inf"), RValue::Int(2));
        assert_eq!(db.run("zremrangebyrank k 0 -3"), RValue::Int(2));
        assert_eq!(db.run("zrange k 0 -1"), arr(&["b", "c"]));
        assert_eq!(db.run("zrem k b c x"), RValue::Int(2));
        assert_eq!(
            db.run("exists k"),
            RValue::Int(0),
            "an emptied set is deleted"
        );
    }

    #[test]
    fn hashes_sets_and_expiry_follow_redis() {
        let mut db = Db::new();
        assert_eq!(db.run("hincrby h n 5"), RValue::Int(5));
        assert_eq!(db.run("hincrby h n -7"), RValue::Int(-2));
        assert_eq!(db.run("hset h s x t y"), RValue::Int(2));
        assert_eq!(
            db.run("hincrby h s 1"),
            err("ERR hash value is not an integer")
        );
        assert_eq!(db.run("hincrby h n x"), err(NOT_INT));
        db.run("hset h big 9223372036854775807");
        assert_eq!(
            db.run("hincrby h big 1"),
            err("ERR increment or decrement would overflow")
        );
        assert_eq!(
            db.run("hset h a b c"),
            err("ERR wrong number of arguments for 'hset' command")
        );
        assert_eq!(
            db.run("hmget h n nope"),
            RValue::Array(vec![b("-2"), RValue::Nil])
        );
        assert_eq!(db.run("hdel h n s t big nope"), RValue::Int(4));
        assert_eq!(db.run("exists h h"), RValue::Int(0));
        assert_eq!(db.run("sadd s a b a"), RValue::Int(2));
        assert_eq!(db.run("srem s a"), RValue::Int(1));
        assert_eq!(db.run("smembers s"), arr(&["b"]));
        assert_eq!(db.run("pttl s"), RValue::Int(-1));
        assert_eq!(db.run("pexpireat s 1500 xx"), RValue::Int(0));
        assert_eq!(
            db.run("pexpireat s 1500 lt"),
            RValue::Int(1),
            "no expiry counts as infinite"
        );
        assert_eq!(db.run("pexpireat s 1400 gt"), RValue::Int(0));
        assert_eq!(db.run("pexpireat s 1400 nx"), RValue::Int(0));
        assert_eq!(db.run("pttl s"), RValue::Int(500));
        assert_eq!(
            db.run("pexpireat s 1 foo"),
            err("ERR Unsupported option foo")
        );
        assert_eq!(
            db.run("pexpireat s x nx xx"),
            err("ERR NX and XX, GT or LT options at the same time are not compatible")
        );
        db.now = 1500;
        assert_eq!(db.run("pttl s"), RValue::Int(0));
        db.now = 1501;
        assert_eq!(db.run("pttl s"), RValue::Int(-2));
        assert_eq!(
            db.run("sadd s a"),
            RValue::Int(1),
            "the expired set is gone"
        );
        assert_eq!(db.run("pexpireat s 1501"), RValue::Int(1));
        assert_eq!(
            db.run("exists s"),
            RValue::Int(0),
            "a time already reached deletes at once"
        );
        assert_eq!(db.run("pexpireat s 99999"), RValue::Int(0));
        assert_eq!(db.run("del s h nope"), RValue::Int(0));
    }
}
