//! The executor end to end: the Lua environment, conversions and error texts as Redis 7.0.15 gives
//! them (each expected text was read off a real Redis 7.0.15), expiry and batches.

use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;

fn script(src: &str) -> &'static Script {
    Box::leak(Box::new(Script::new(
        "test",
        Box::leak(src.to_owned().into_boxed_str()),
    )))
}

struct T {
    exec: EmbeddedExecutor,
    clock: Arc<ManualClock>,
}

impl T {
    fn new() -> Self {
        let clock = Arc::new(ManualClock::new(1_000_000));
        Self {
            exec: EmbeddedExecutor::new(clock.clone()),
            clock,
        }
    }

    async fn run(&self, src: &str, keys: &[&str], args: &[&str]) -> Result<Reply, ExecError> {
        self.exec
            .eval(Call {
                script: script(src),
                keys: keys.iter().map(|s| s.to_string()).collect(),
                args: args.iter().map(|s| s.to_string()).collect(),
            })
            .await
    }

    /// The error a script raises, with the " script: <sha>, on" part Redis appends checked and cut.
    async fn raised(&self, src: &str) -> String {
        let sha = script(src).sha1().to_owned();
        match self.run(src, &["k"], &[]).await {
            Err(ExecError::Reply(m)) => {
                let (head, tail) = m.split_once(" script: ").unwrap_or((&m, ""));
                assert!(tail.starts_with(&sha), "{m}");
                format!("{head} |{}", &tail[sha.len()..])
            }
            other => panic!("{src}: expected an error, got {other:?}"),
        }
    }
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(s.into())
}

fn reply_err(s: &str) -> Result<Reply, ExecError> {
    Err(ExecError::Reply(s.into()))
}

#[tokio::test]
async fn globals_are_read_only_as_in_redis_7() {
    let t = T::new();
    let ro = "ERR user_script:1: Attempt to modify a readonly table |, on @user_script:1.";
    assert_eq!(t.raised("x = 1 return 1").await, ro);
    assert_eq!(
        t.raised("local function f() y = 1 end f() return 1").await,
        ro
    );
    assert_eq!(t.raised("KEYS = {} return 1").await, ro);
    assert_eq!(t.raised("string.foo = 1 return 1").await, ro);
    assert_eq!(t.raised("_G.q = 1 return 1").await, ro);
    assert_eq!(
        t.raised("rawset(_G, 'q', 1) return 1").await,
        "ERR Attempt to modify a readonly table |, on @user_script:1."
    );
    assert_eq!(
        t.raised("setmetatable(_G, nil) return 1").await,
        "ERR Attempt to modify a readonly table |, on @user_script:1."
    );
    assert_eq!(
        t.raised("return zz").await,
        "ERR user_script:1: Script attempted to access nonexistent global variable 'zz' |, on @user_script:1."
    );
    for name in ["print", "os", "debug", "getfenv", "io", "require"] {
        assert!(
            t.raised(&format!("return type({name})"))
                .await
                .contains("nonexistent global"),
            "{name}"
        );
    }
    assert_eq!(
        t.run("local t = KEYS; t[1] = 'x'; return t[1]", &["k"], &[])
            .await,
        Ok(bulk("x"))
    );
    assert_eq!(
        t.run(
            "return ('abc'):upper() .. string.format('%.17g', 0.1)",
            &[],
            &[]
        )
        .await,
        Ok(bulk("ABC0.10000000000000001"))
    );
}

#[tokio::test]
async fn errors_carry_redis_text_and_the_failing_line() {
    let t = T::new();
    assert_eq!(
        t.raised("error('boom')").await,
        "ERR user_script:1: boom |, on @user_script:1."
    );
    assert_eq!(
        t.raised("error('boom', 0)").await,
        "ERR boom |, on @user_script:1."
    );
    assert_eq!(
        t.raised("error({err='BOOM x'})").await,
        "BOOM x |, on @user_script:1."
    );
    assert_eq!(
        t.raised("return redis.call('ZADD','k','x','m')").await,
        "ERR value is not a valid float |, on @user_script:1."
    );
    assert_eq!(
        t.raised("local a = 1\nlocal b = 2\nreturn redis.call('NOPE')")
            .await,
        "ERR Unknown Redis command called from script |, on @user_script:3."
    );
    assert_eq!(
        t.raised("local function f()\n  return redis.call('ZADD', 'k')\nend\nreturn f()")
            .await,
        "ERR Wrong number of args calling Redis command from script |, on @user_script:2."
    );
    assert_eq!(
        t.raised("return redis.call()").await,
        "ERR Please specify at least one argument for this redis lib call |, on @user_script:1."
    );
    assert_eq!(
        t.raised("return redis.call('GET', {})").await,
        "ERR Lua redis lib command arguments must be strings or integers |, on @user_script:1."
    );
    assert_eq!(
        t.raised("local x = nil\nreturn x.y").await,
        "ERR user_script:2: attempt to index local 'x' (a nil value) |, on @user_script:2."
    );
    assert_eq!(
        t.raised("return string.rep()").await,
        "ERR user_script:1: bad argument #1 to 'rep' (string expected, got no value) |, on @user_script:1."
    );
    assert_eq!(
        t.raised("redis.call('HSET', KEYS[1], 'f', 'v')\nreturn redis.call('ZCARD', KEYS[1])")
            .await,
        "WRONGTYPE Operation against a key holding the wrong kind of value |, on @user_script:2."
    );
    assert_eq!(
        t.run("return redis.pcall('ZADD','k','x','m')", &[], &[])
            .await,
        reply_err("ERR value is not a valid float")
    );
    assert_eq!(
        t.run("local r = redis.pcall('NOPE') return r.err", &[], &[])
            .await,
        Ok(bulk("ERR Unknown Redis command called from script"))
    );
    assert_eq!(
        t.run(
            "local ok, e = pcall(redis.call, 'ZADD', 'k') return e",
            &[],
            &[]
        )
        .await,
        Ok(bulk(
            "ERR Wrong number of args calling Redis command from script"
        ))
    );
    let broken = script("x x");
    assert_eq!(
        t.exec.load(&[broken]).await,
        Err(ExecError::Reply(
            "ERR Error compiling script (new function): user_script:1: '=' expected near 'x'"
                .into()
        ))
    );
}

#[tokio::test]
async fn return_values_convert_as_redis_converts_them() {
    let t = T::new();
    let cases: Vec<(&str, Result<Reply, ExecError>)> = vec![
        (
            "return {1, 2, nil, 3}",
            Ok(Reply::Array(vec![Reply::Int(1), Reply::Int(2)])),
        ),
        ("return 3.7", Ok(Reply::Int(3))),
        ("return -3.7", Ok(Reply::Int(-3))),
        ("return 1e300", Ok(Reply::Int(i64::MIN))),
        ("return 0/0", Ok(Reply::Int(i64::MIN))),
        ("return true", Ok(Reply::Int(1))),
        ("return false", Ok(Reply::Nil)),
        ("return nil", Ok(Reply::Nil)),
        ("return", Ok(Reply::Nil)),
        (
            "return {true, false, 'a'}",
            Ok(Reply::Array(vec![Reply::Int(1), Reply::Nil, bulk("a")])),
        ),
        (
            "return {1, {2, {3}}}",
            Ok(Reply::Array(vec![
                Reply::Int(1),
                Reply::Array(vec![Reply::Int(2), Reply::Array(vec![Reply::Int(3)])]),
            ])),
        ),
        ("return {err='bad thing'}", reply_err("bad thing")),
        ("return {err='a\\nb'}", reply_err("a b")),
        ("return {err=5}", Ok(Reply::Array(vec![]))),
        ("return {ok='fine'}", Ok(bulk("fine"))),
        ("return {ok='a', err='b'}", reply_err("b")),
        ("return {double=0.1}", Ok(bulk("0.10000000000000001"))),
        ("return {1, {err='x'}, 3}", reply_err("x")),
        (
            "return redis.error_reply('RANKD_X y')",
            reply_err("RANKD_X y"),
        ),
        ("return redis.error_reply('foo')", reply_err("ERR foo")),
        ("return redis.error_reply('-foo')", reply_err("ERR foo")),
        ("return redis.error_reply('a\\nb')", reply_err("ERR a b")),
        ("return redis.status_reply('x\\r\\ny')", Ok(bulk("x  y"))),
        (
            "return redis.status_reply(5)",
            reply_err("ERR wrong number or type of arguments"),
        ),
        (
            "return redis.sha1hex('')",
            Ok(bulk("da39a3ee5e6b4b0d3255bfef95601890afd80709")),
        ),
        ("return tostring(1e15)", Ok(bulk("1e+15"))),
        ("return _VERSION", Ok(bulk("Lua 5.1"))),
        ("return #ARGV", Ok(Reply::Int(0))),
    ];
    for (src, want) in cases {
        assert_eq!(t.run(src, &[], &[]).await, want, "{src}");
    }
}

#[tokio::test]
async fn numbers_reach_commands_formatted_as_redis_7_formats_them() {
    let t = T::new();
    let src = "redis.call('HSET', KEYS[1], 'f', ARGV[1] == 'nan' and 0/0 or tonumber(ARGV[1])) \
               return redis.call('HGET', KEYS[1], 'f')";
    for (n, want) in [
        ("0.1", "0.10000000000000001"),
        ("1e20", "1e+20"),
        ("-0", "-0"),
        ("3", "3"),
        ("1e999", "inf"),
        ("nan", "-nan"),
    ] {
        assert_eq!(t.run(src, &["h"], &[n]).await, Ok(bulk(want)), "{n}");
    }
}

#[tokio::test]
async fn keys_expire_by_the_injected_clock_lazily_and_in_the_background() {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let exec = EmbeddedExecutor::with_config(
        clock.clone(),
        EmbeddedConfig {
            sweep_interval: Duration::from_millis(5),
            sweep_budget: 2,
            ..EmbeddedConfig::default()
        },
    );
    let set = script(
        "for i, k in ipairs(KEYS) do redis.call('SADD', k, 'm') redis.call('PEXPIREAT', k, ARGV[1]) end \
         return redis.call('PTTL', KEYS[1])",
    );
    let call = |keys: Vec<String>, at: &str| Call {
        script: set,
        keys,
        args: vec![at.into()],
    };
    let keys: Vec<String> = (0..5).map(|i| format!("k{i}")).collect();
    assert_eq!(
        exec.eval(call(keys.clone(), "1000500")).await,
        Ok(Reply::Int(500))
    );
    let count = || exec.with_keyspace(|ks, _| ks.len());
    assert_eq!(count().await, Ok(5));
    clock.set(1_000_500);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        count().await,
        Ok(5),
        "live through the expiry instant itself"
    );
    clock.advance(1);
    let mut left = 5;
    for _ in 0..200 {
        left = count().await.unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        left, 0,
        "the sweeper deleted every expired key, a budget at a time"
    );
    let pttl = script("return redis.call('PTTL', KEYS[1])");
    let r = exec
        .eval(Call {
            script: pttl,
            keys: vec!["k0".into()],
            args: vec![],
        })
        .await;
    assert_eq!(r, Ok(Reply::Int(-2)));
}

#[tokio::test]
async fn eval_many_runs_every_call_in_order_with_its_own_result() {
    let t = T::new();
    let incr = script("return redis.call('HINCRBY', KEYS[1], 'n', ARGV[1])");
    let calls = ["1", "x", "10", "100"]
        .iter()
        .map(|a| Call {
            script: incr,
            keys: vec!["h".into()],
            args: vec![a.to_string()],
        })
        .collect();
    let out = t.exec.eval_many(calls).await.unwrap();
    assert_eq!(out[0], Ok(Reply::Int(1)));
    assert!(
        matches!(&out[1], Err(ExecError::Reply(m)) if m.starts_with("ERR value is not an integer"))
    );
    assert_eq!(out[2..], [Ok(Reply::Int(11)), Ok(Reply::Int(111))]);
    assert_eq!(t.exec.eval_many(Vec::new()).await, Ok(Vec::new()));
    t.exec.ping().await.unwrap();
    t.clock.advance(1);
}

#[tokio::test]
async fn every_rankd_script_loads() {
    let t = T::new();
    t.exec.load(&crate::engine::scripts::all()).await.unwrap();
}

#[tokio::test]
async fn a_script_past_the_lua_memory_limit_fails_and_the_engine_goes_on() {
    let exec = EmbeddedExecutor::with_config(
        Arc::new(ManualClock::new(1_000_000)),
        EmbeddedConfig {
            lua_memory_limit: 4 << 20,
            ..EmbeddedConfig::default()
        },
    );
    let run = |src: &str, args: &[&str]| {
        exec.eval(Call {
            script: script(src),
            keys: vec!["z".into()],
            args: args.iter().map(|s| s.to_string()).collect(),
        })
    };
    let grow = "local t = {} for i = 1, 1e6 do t[i] = ARGV[1] .. i end return #t";
    let sha = script(grow).sha1().to_owned();
    for _ in 0..3 {
        assert_eq!(
            run(grow, &["member"]).await,
            Err(ExecError::Reply(format!(
                "ERR Error running script f_{sha}, not enough memory"
            ))),
            "a script growing a table past 4 MiB fails as Redis fails a script without an error table"
        );
        assert_eq!(
            run(
                "redis.call('ZADD', KEYS[1], 1, 'm') return redis.call('ZCARD', KEYS[1])",
                &[]
            )
            .await,
            Ok(Reply::Int(1)),
            "the next call runs"
        );
    }
    // A reply too big for the limit: 60,000 members, each written by a call of its own.
    let fill = "for i = 1, 60000 do redis.call('ZADD', KEYS[1], i, ARGV[1] .. i) end \
                return redis.call('ZCARD', KEYS[1])";
    assert_eq!(
        run(fill, &["a-member-named-at-length-"]).await,
        Ok(Reply::Int(60_001))
    );
    let all = "return #redis.call('ZRANGE', KEYS[1], 0, -1)";
    assert_eq!(
        run(all, &[]).await,
        Err(ExecError::Reply(format!(
            "ERR Error running script f_{}, not enough memory",
            script(all).sha1()
        ))),
        "a reply that does not fit fails the same way"
    );
    assert_eq!(
        run("return #redis.call('ZRANGE', KEYS[1], 0, 999)", &[]).await,
        Ok(Reply::Int(1000)),
        "a range that fits still runs, on a keyspace the failure left whole"
    );
}

#[tokio::test]
async fn rankds_largest_call_fits_in_a_quarter_of_the_default_lua_memory_limit() {
    use crate::board::{BoardDef, BoardId, Member, RankMode, Score};
    use crate::engine::{Engine, EngineConfig, Submit, MAX_BATCH};
    let clock = Arc::new(ManualClock::new(1_767_225_600_000));
    let exec = EmbeddedExecutor::with_config(
        clock.clone(),
        EmbeddedConfig {
            lua_memory_limit: DEFAULT_LUA_MEMORY_LIMIT / 4,
            ..EmbeddedConfig::default()
        },
    );
    let engine = Engine::new(
        Arc::new(exec),
        crate::keys::Keys::new("rankd:").unwrap(),
        clock,
        EngineConfig::default(),
    )
    .await
    .unwrap();
    // Batches of the most events a batch takes, and a snapshot's chunk of 25,000 entries, of
    // members as long as a member may be, on a board ranking densely (the rank mode whose reads do
    // the most). Both fit in 12 MiB, not in 8.
    let board = BoardId::parse("big").unwrap();
    let def = BoardDef {
        rank_mode: RankMode::Dense,
        ..BoardDef::default()
    };
    assert!(engine.put_board(&board, def).await.unwrap());
    let events: Vec<Submit> = (0..25_000)
        .map(|i| {
            Submit::new(
                board.clone(),
                Member::parse(&format!("{i:0>128}")).unwrap(),
                Score::new("value", f64::from(i)).unwrap(),
            )
        })
        .collect();
    for chunk in events.chunks(MAX_BATCH) {
        // (A refused batch's error lists every event: too long to print.)
        assert!(engine.submit_batch(chunk).await.is_ok());
    }
    let keys = engine
        .snapshot_board(&board)
        .await
        .map_err(|e| e.to_string())
        .unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].entries.len(), 25_000);
}

/// A command a script names that the table lacks fails only when that script runs: find it here.
#[test]
fn every_command_rankd_scripts_call_is_answered() {
    for s in crate::engine::scripts::all() {
        for call in ["redis.call('", "redis.pcall('"] {
            for (at, _) in s.source().match_indices(call) {
                let rest = &s.source()[at + call.len()..];
                let name = &rest[..rest.find('\'').unwrap_or(0)];
                assert!(
                    commands::lookup(name.as_bytes()).is_some(),
                    "{} calls {name}, which the embedded store does not answer",
                    s.name()
                );
            }
        }
    }
}

#[tokio::test]
async fn hgetall_answers_every_field_and_value_and_nothing_for_no_key() {
    let t = T::new();
    let all = "redis.call('HINCRBY', KEYS[1], 'a', 2) redis.call('HSET', KEYS[1], 'b', 'x') \
               local r = redis.call('HGETALL', KEYS[1]) \
               local m = {} for i = 1, #r, 2 do m[r[i]] = r[i + 1] end \
               return {#r, m.a, m.b, #redis.call('HGETALL', 'none')}";
    assert_eq!(
        t.run(all, &["h"], &[]).await,
        Ok(Reply::Array(vec![
            Reply::Int(4),
            bulk("2"),
            bulk("x"),
            Reply::Int(0)
        ]))
    );
}
