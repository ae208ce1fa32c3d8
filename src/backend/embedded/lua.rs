//! The scripting environment: one Lua 5.1 state set up as Redis 7.0 sets up its own.
//!
//! What a script sees:
//!
//! - `KEYS` and `ARGV`, set for each call;
//! - the base library without `print`, `dofile`, `loadfile`, `getfenv`, `setfenv` and `module`, and
//!   the `string`, `math`, `table` and `coroutine` libraries; `pcall` is Redis 7.0's, which hands back
//!   the `err` string of an error table (so `pcall(redis.call, …)` yields the message);
//! - `redis.call`, `redis.pcall`, `redis.error_reply`, `redis.status_reply`, `redis.log`,
//!   `redis.sha1hex`, `redis.replicate_commands`, `redis.set_repl` and the `LOG_*` / `REPL_*`
//!   constants.
//!
//! As in Redis 7.0, the globals table and the library tables are read-only: assigning a global
//! (`x = 1`) fails with "Attempt to modify a readonly table", reading an undefined one with "Script
//! attempted to access nonexistent global variable". Redis does this with a read-only flag inside its
//! own Lua; stock Lua 5.1 has none, so scripts run in an environment of read-only views (empty tables
//! whose metatables forward reads and refuse writes), and `rawset`/`setmetatable` refuse those views.
//!
//! Values cross between Lua and the commands as Redis converts them (RESP2): integer → number, bulk →
//! string, nil → false, array → table, status → `{ok=…}`, error → `{err=…}` (raised by `redis.call`,
//! returned by `redis.pcall`); and back: number → integer (truncated), string → bulk, table → array up
//! to the first nil, `{err=…}` → error, `{ok=…}` → status, `{double=…}` → bulk, true → 1, false and
//! nil → nil. Numbers passed to `redis.call` are formatted with `%.17g`, as Redis 7.0 formats them.
//!
//! An error raised inside a script becomes the reply Redis 7.0 gives:
//! `ERR user_script:12: <message> script: <sha1>, on @user_script:12.`, the line found the way
//! Redis' `__redis__err__handler` finds it.
//!
//! Known differences: `bit`, `cjson`, `cmsgpack` and `struct` are absent, as are `redis.setresp`,
//! `redis.breakpoint`, `redis.debug` and `redis.acl_check_cmd`; `math.random` is Lua's own generator;
//! `rawget(_G, name)` sees an empty table (globals are behind a view); a script raising an error
//! object without an `err` string gets a generic error reply (Redis 7.0.15 crashes on `error({})`);
//! the RESP3-only reply tables (`map`, `set`, `big_number`, `verbatim_string`) convert as plain
//! arrays; there is no time limit on a script. `tests/it/differential.rs` checks the rest against a
//! real Redis, snippet by snippet.
//!
//! Unlike Redis 7.0, the state has a memory limit ([`super::EmbeddedConfig::lua_memory_limit`]):
//! a script allocating past it fails with `ERR Error running script f_<sha1>, not enough memory`,
//! the reply Redis gives a script that fails without an error table (Lua reports a memory error
//! without calling the message handler), and the state is collected before the next call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use mlua::{ffi, Function, Lua, LuaOptions, LuaString, MultiValue, StdLib, Table, Value, Variadic};

use super::commands::{self, Ctx, RValue};
use super::keyspace::Keyspace;
use super::num::{fmt_g17, lua_number_to_int};
use crate::backend::{Call, ExecError, Reply, Script};

/// What scripts read and write: the keyspace and the instant the running script sees.
#[derive(Debug, Default)]
pub(super) struct Store {
    pub ks: Keyspace,
    pub now: i64,
    /// Set when a command panicked: the keyspace may be half-changed, so the store stops answering.
    pub poisoned: bool,
}

/// The chunk name of the sandbox's own Lua code, which error positions skip over.
const SANDBOX: &str = "=rankd_sandbox";

/// Builds the environment. Called with the Rust callbacks; returns the runner, the visible globals
/// (where KEYS and ARGV go) and the read-only view scripts get as their environment.
const SANDBOX_SOURCE: &str = r#"
local raw_call, raw_log, raw_sha1hex, handler, raising = ...
local error, type, tostring, tonumber, select, rawget, rawset, setmetatable, setfenv, loadstring,
  load, xpcall, ipairs, concat =
  error, type, tostring, tonumber, select, rawget, rawset, setmetatable, setfenv, loadstring,
  load, xpcall, ipairs, table.concat

-- Read-only views: reads fall through to the table, writes fail as on Redis 7.0's read-only tables.
local protected = setmetatable({}, { __mode = 'k' })
local function readonly_error()
  error('Attempt to modify a readonly table', 2)
end
local function readonly(t)
  local view = setmetatable({}, { __index = t, __newindex = readonly_error, __metatable = false })
  protected[view] = true
  return view
end

local redis = {
  LOG_DEBUG = 0, LOG_VERBOSE = 1, LOG_NOTICE = 2, LOG_WARNING = 3,
  REPL_NONE = 0, REPL_AOF = 1, REPL_SLAVE = 2, REPL_REPLICA = 2, REPL_ALL = 3,
  REDIS_VERSION = '7.0.15', REDIS_VERSION_NUM = 0x07000f,
}

-- Functions that fail are written to return (error, true) and wrapped by `raising`, a C function
-- that raises the error: as in Redis, where they are C functions, a failing call then leaves the
-- script's own frame in place, even in a tail call (`return redis.call(...)`), for the error position.
redis.call = raising(raw_call)

function redis.pcall(...)
  return (raw_call(...))
end

-- As luaPushErrorBuff: "-CODE message" keeps its code, anything else gets ERR.
function redis.error_reply(...)
  local e = ...
  if select('#', ...) ~= 1 or type(e) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  if e:sub(1, 1) ~= '-' then
    e = '-' .. e
  end
  local code, msg
  local space = e:find(' ', 1, true)
  if space then
    code, msg = e:sub(2, space - 1), e:sub(space + 1)
  else
    code, msg = 'ERR', e:sub(2)
  end
  msg = msg:gsub('^[\r\n]+', ''):gsub('[\r\n]+$', '')
  return { err = code .. ' ' .. msg }
end

function redis.status_reply(...)
  local s = ...
  if select('#', ...) ~= 1 or type(s) ~= 'string' then
    return { err = 'ERR wrong number or type of arguments' }
  end
  return { ok = s }
end

redis.log = raising(function(...)
  local n = select('#', ...)
  if n < 2 then
    return { err = 'ERR redis.log() requires two arguments or more.' }, true
  end
  local level = tonumber((...))
  if not level then
    return { err = 'ERR First argument must be a number (log level).' }, true
  end
  if level < 0 or level > 3 then
    return { err = 'ERR Invalid debug level.' }, true
  end
  local parts = {}
  for i = 2, n do
    local v = select(i, ...)
    if type(v) == 'string' or type(v) == 'number' then
      parts[#parts + 1] = tostring(v)
    end
  end
  raw_log(level, concat(parts, ' '))
end)

redis.sha1hex = raising(function(...)
  if select('#', ...) ~= 1 then
    return { err = 'ERR wrong number of arguments' }, true
  end
  local s = ...
  if type(s) == 'number' then
    s = tostring(s)
  elseif type(s) ~= 'string' then
    s = ''
  end
  return raw_sha1hex(s)
end)

function redis.replicate_commands()
  return true
end

redis.set_repl = raising(function(...)
  if select('#', ...) ~= 1 then
    return { err = 'ERR redis.set_repl() requires two arguments.' }, true
  end
  local flags = tonumber((...)) or 0
  if flags < 0 or flags > 3 or flags % 1 ~= 0 then
    return { err = 'ERR Invalid replication flags. Use REPL_AOF, REPL_REPLICA, REPL_ALL or REPL_NONE.' }, true
  end
end)

local visible = {}
for _, name in ipairs({ 'assert', 'collectgarbage', 'error', 'gcinfo', 'ipairs',
    'next', 'pairs', 'pcall', 'rawequal', 'rawget', 'select', 'tonumber', 'tostring', 'type',
    'unpack', 'xpcall', '_VERSION' }) do
  visible[name] = _G[name]
end
-- Redis 7.0 replaces pcall: an error that is a table with an `err` field comes back as that field
-- alone (so `pcall(redis.call, ...)` yields the message string, not the table).
local pcall = pcall
local function caught(ok, ...)
  if ok then
    return ok, ...
  end
  local e = ...
  if type(e) == 'table' then
    local m = rawget(e, 'err')
    if type(m) == 'string' or type(m) == 'number' then
      return false, m
    end
  end
  return false, e
end
function visible.pcall(...)
  return caught(pcall(...))
end
local env
visible.rawset = raising(function(t, k, v)
  if protected[t] then
    return 'Attempt to modify a readonly table', true
  end
  return rawset(t, k, v)
end)
visible.setmetatable = raising(function(t, mt)
  if protected[t] then
    return 'Attempt to modify a readonly table', true
  end
  return setmetatable(t, mt)
end)
-- A loader whose chunks run in the sandbox, not in the real globals.
local function sandboxed(loader)
  return function(s, name)
    local f, e = loader(s, name)
    if f then
      setfenv(f, env)
    end
    return f, e
  end
end
visible.loadstring = sandboxed(loadstring)
visible.load = sandboxed(load)
visible.string = readonly(string)
visible.math = readonly(math)
visible.table = readonly(table)
if coroutine then
  visible.coroutine = readonly(coroutine)
end
visible.redis = readonly(redis)
env = readonly(visible)
visible._G = env
local function missing(_, name)
  error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
end
setmetatable(visible, { __index = missing })
-- What getmetatable shows of the views: like Redis, a read-only metatable for _G, none for the
-- libraries.
local shown = { [env] = readonly({ __index = missing }) }
local getmetatable = getmetatable
function visible.getmetatable(...)
  local t = ...
  if protected[t] then
    return shown[t]
  end
  return getmetatable(...)
end

-- Strings index the read-only view of the string library; their metatable is seen read-only too.
local string_mt = getmetatable('')
string_mt.__index = visible.string
string_mt.__metatable = readonly(string_mt)

local function run(f)
  return xpcall(f, handler)
end
return run, visible, env
"#;

/// `raising(f)`: a C closure over `f` that calls it and, when its second result is true, raises its
/// first result as the error (unchanged, so `pcall(redis.call, …)` still gets the `{err=…}` table).
///
/// The one place rankd allows `unsafe`: the error must be raised by a C function, as in Redis, so
/// that a failing call leaves the script's own frame in place for the error position (see the
/// sandbox's comment on `raising`), and that takes the Lua C API.
#[allow(unsafe_code)]
unsafe extern "C-unwind" fn raising(state: *mut ffi::lua_State) -> c_int {
    unsafe extern "C-unwind" fn call(state: *mut ffi::lua_State) -> c_int {
        let n = ffi::lua_gettop(state);
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(1));
        ffi::lua_insert(state, 1);
        ffi::lua_call(state, n, 2);
        if ffi::lua_toboolean(state, -1) != 0 {
            ffi::lua_pop(state, 1);
            ffi::lua_error(state);
        }
        ffi::lua_pop(state, 1);
        1
    }
    ffi::luaL_checktype(state, 1, ffi::LUA_TFUNCTION);
    ffi::lua_settop(state, 1);
    ffi::lua_pushcclosure(state, call, 1);
    1
}

/// The Lua state with the compiled scripts.
pub(super) struct Scripting {
    lua: Lua,
    /// Past this many bytes in use at the start of a call, the state is fully collected first.
    collect_above: usize,
    store: Rc<RefCell<Store>>,
    visible: Table,
    env: Table,
    run: Function,
    /// Compiled scripts by SHA-1.
    scripts: HashMap<String, Function>,
}

/// The lowercase hex SHA-1 of `data`, for `redis.sha1hex` (Redis hashes the raw bytes of a Lua string).
fn sha1_hex(data: &[u8]) -> String {
    use sha1::Digest;
    use std::fmt::Write;
    let mut hex = String::with_capacity(40);
    for byte in sha1::Sha1::digest(data) {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn error_table(lua: &Lua, message: &str, from_command: bool) -> mlua::Result<Value> {
    let t = lua.create_table()?;
    t.raw_set("err", message)?;
    if from_command {
        // Redis marks errors that already counted in the command's statistics.
        t.raw_set("ignore_error_stats_update", true)?;
    }
    Ok(Value::Table(t))
}

/// A command reply as a Lua value.
fn to_lua(lua: &Lua, v: RValue) -> mlua::Result<Value> {
    Ok(match v {
        RValue::Nil => Value::Boolean(false),
        RValue::Int(i) => Value::Number(i as f64),
        RValue::Bulk(b) => Value::String(lua.create_string(&b)?),
        RValue::Status(s) => {
            let t = lua.create_table()?;
            t.raw_set("ok", s)?;
            Value::Table(t)
        }
        RValue::Error(e) => error_table(lua, &e, true)?,
        RValue::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// One argument of a `redis.call`: a Lua string's own bytes, or a number's text.
enum Arg {
    Lua(mlua::BorrowedBytes),
    Text(Vec<u8>),
}

impl Arg {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Lua(b) => b,
            Self::Text(t) => t,
        }
    }
}

/// `redis.call` / `redis.pcall` without the raising: (reply, whether it is an error).
fn raw_call(
    lua: &Lua,
    store: &RefCell<Store>,
    args: Variadic<Value>,
) -> mlua::Result<(Value, bool)> {
    let fail = |m: &str| Ok((error_table(lua, m, false)?, true));
    if args.is_empty() {
        return fail("ERR Please specify at least one argument for this redis lib call");
    }
    // Strings are read where Lua keeps them; only numbers are formatted.
    let mut argv: Vec<Arg> = Vec::with_capacity(args.len());
    for a in args.iter() {
        match a {
            Value::String(s) => argv.push(Arg::Lua(s.as_bytes())),
            // Lua 5.1 numbers are doubles; mlua hands integral ones over as integers.
            Value::Integer(i) => argv.push(Arg::Text(fmt_g17(*i as f64).into_bytes())),
            Value::Number(n) => argv.push(Arg::Text(fmt_g17(*n).into_bytes())),
            _ => return fail("ERR Lua redis lib command arguments must be strings or integers"),
        }
    }
    let argv: Vec<&[u8]> = argv.iter().map(Arg::bytes).collect();
    // Errors from here on come from Redis' command dispatch, which marks them as counted already.
    let refuse = |m: &str| Ok((error_table(lua, m, true)?, true));
    let Some(cmd) = commands::lookup(argv[0]) else {
        return refuse("ERR Unknown Redis command called from script");
    };
    if !cmd.arity_ok(argv.len()) {
        return refuse("ERR Wrong number of args calling Redis command from script");
    }
    let args = argv;
    let reply = {
        let mut guard = store.borrow_mut();
        let st = &mut *guard;
        if st.poisoned {
            return fail("ERR the embedded store stopped after an internal error");
        }
        let mut ctx = Ctx {
            ks: &mut st.ks,
            now: st.now,
        };
        match catch_unwind(AssertUnwindSafe(|| cmd.call(&mut ctx, &args))) {
            Ok(r) => r,
            Err(_) => {
                st.poisoned = true;
                return fail("ERR the embedded store stopped after an internal error");
            }
        }
    };
    let failed = matches!(reply, RValue::Error(_));
    Ok((to_lua(lua, reply)?, failed))
}

/// Where the failing script line is, found as Redis' `__redis__err__handler` finds it: the function
/// that raised, or its caller when that was a C function; then past the sandbox's own Lua wrappers
/// (which in Redis are C functions and so not frames of their own).
fn failing_frame(lua: &Lua) -> Option<(String, i64)> {
    // Level 0 is this handler; level 1 is what raised the error (Redis' getinfo(2)).
    let info = |level: usize| {
        lua.inspect_stack(level, |d| {
            let s = d.source();
            (
                s.what,
                s.source.map(|c| c.into_owned()),
                d.current_line().map_or(-1, |l| l as i64),
            )
        })
    };
    let mut level = 1;
    let mut frame = info(level)?;
    if frame.0 == "C" {
        level += 1;
        frame = info(level)?;
    }
    while frame.1.as_deref() == Some(SANDBOX) {
        level += 1;
        frame = info(level)?;
    }
    Some((frame.1?, frame.2))
}

/// The message handler scripts run under: turns any error into Redis' `{err=…}` table with the
/// failing position.
fn error_handler(lua: &Lua, err: Value) -> mlua::Result<Table> {
    let t = match err {
        Value::Table(t) => t,
        other => {
            let tostring: Function = lua.globals().raw_get("tostring")?;
            let text: LuaString = tostring.call(other)?;
            let mut msg = b"ERR ".to_vec();
            msg.extend_from_slice(&text.as_bytes());
            let t = lua.create_table()?;
            t.raw_set("err", lua.create_string(&msg)?)?;
            t
        }
    };
    if let Some((source, line)) = failing_frame(lua) {
        t.raw_set("source", source)?;
        t.raw_set("line", line)?;
    }
    Ok(t)
}

/// Redis' reply for an error a script raised: the message, then where it was raised.
fn raised_error(t: &Table, sha: &str) -> String {
    let mut out = match t.raw_get::<Value>("err") {
        Ok(Value::String(s)) => lossy(&s.as_bytes()),
        _ => "ERR the script raised an error object without an 'err' string".to_owned(),
    };
    let source = t.raw_get::<Option<LuaString>>("source").ok().flatten();
    let line = t.raw_get::<Option<i64>>("line").ok().flatten();
    if let (Some(source), Some(line)) = (source, line) {
        out.push_str(&format!(
            " script: {sha}, on {}:{line}.",
            lossy(&source.as_bytes())
        ));
    }
    out.replace(['\r', '\n'], " ")
}

/// A script's return value as Redis replies it (RESP2, as [`Reply`] models it).
fn to_reply(v: &Value) -> Result<Reply, ExecError> {
    Ok(match v {
        Value::Nil | Value::Boolean(false) => Reply::Nil,
        Value::Boolean(true) => Reply::Int(1),
        Value::Integer(i) => Reply::Int(*i),
        Value::Number(n) => Reply::Int(lua_number_to_int(*n)),
        Value::String(s) => Reply::Bulk(lossy(&s.as_bytes())),
        Value::Table(t) => {
            let field = |name: &str| t.raw_get::<Value>(name).unwrap_or(Value::Nil);
            if let Value::String(e) = field("err") {
                // An error anywhere in a reply fails the whole reply, as it does through fred.
                return Err(ExecError::Reply(
                    lossy(&e.as_bytes()).replace(['\r', '\n'], " "),
                ));
            }
            if let Value::String(s) = field("ok") {
                return Ok(Reply::Bulk(lossy(&s.as_bytes()).replace(['\r', '\n'], " ")));
            }
            match field("double") {
                Value::Number(n) => return Ok(Reply::Bulk(fmt_g17(n))),
                Value::Integer(i) => return Ok(Reply::Bulk(fmt_g17(i as f64))),
                _ => {}
            }
            let mut items = Vec::new();
            for i in 1.. {
                let item = t.raw_get::<Value>(i).unwrap_or(Value::Nil);
                if item.is_nil() {
                    break;
                }
                items.push(to_reply(&item)?);
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    })
}

/// Redis' reply for a script that failed without an error table: Lua's own message (a memory
/// error skips the message handler), cut at 100 bytes as Redis cuts it.
fn bare_error(sha: &str, message: &[u8]) -> ExecError {
    let message = lossy(&message[..message.len().min(100)]);
    ExecError::Reply(
        format!("ERR Error running script f_{sha}, {message}").replace(['\r', '\n'], " "),
    )
}

/// A failure of the Rust side of a call (building `KEYS`/`ARGV`, reading the result).
fn lua_failure(e: &mlua::Error, sha: &str) -> ExecError {
    match e {
        mlua::Error::MemoryError(m) => bare_error(sha, m.as_bytes()),
        other => ExecError::Reply(
            format!("ERR Error running script: {other}").replace(['\r', '\n'], " "),
        ),
    }
}

impl Scripting {
    /// A fresh state over `store`, which may hold at most `memory_limit` bytes.
    pub(super) fn new(store: Rc<RefCell<Store>>, memory_limit: usize) -> mlua::Result<Self> {
        let lua = Lua::new_with(
            StdLib::TABLE | StdLib::STRING | StdLib::MATH,
            LuaOptions::default(),
        )?;
        let call_store = store.clone();
        let raw_call = lua
            .create_function(move |lua, args: Variadic<Value>| raw_call(lua, &call_store, args))?;
        let raw_log = lua.create_function(|_, (level, msg): (i64, LuaString)| {
            let msg = lossy(&msg.as_bytes());
            match level {
                0 => tracing::debug!(target: "rankd::script", "{msg}"),
                1 | 2 => tracing::info!(target: "rankd::script", "{msg}"),
                _ => tracing::warn!(target: "rankd::script", "{msg}"),
            }
            Ok(())
        })?;
        let raw_sha1hex = lua.create_function(|_, s: LuaString| Ok(sha1_hex(&s.as_bytes())))?;
        let handler = lua.create_function(error_handler)?;
        // SAFETY: `raising` only uses the Lua C API on the state it is called with, within the stack
        // space Lua guarantees a C function (LUA_MINSTACK), and holds no Rust value across the
        // `lua_call`/`lua_error` that may unwind through it.
        #[allow(unsafe_code)]
        let raising = unsafe { lua.create_c_function(raising)? };
        let (run, visible, env): (Function, Table, Table) = lua
            .load(SANDBOX_SOURCE)
            .set_name(SANDBOX)
            .call((raw_call, raw_log, raw_sha1hex, handler, raising))?;
        lua.set_memory_limit(memory_limit)?;
        Ok(Self {
            lua,
            // Lua 5.1 does not collect when an allocation fails, so garbage left by earlier calls
            // would count against the next one: collecting once a quarter of the limit is in use
            // leaves each call at least three quarters, and costs a collection of the small live
            // heap (the sandbox and the compiled scripts) per quarter of garbage.
            collect_above: memory_limit / 4,
            store,
            visible,
            env,
            run,
            scripts: HashMap::new(),
        })
    }

    /// Compiles `script` unless it already is. A script that does not compile is refused with the
    /// error Redis gives.
    pub(super) fn load(&mut self, script: &Script) -> Result<(), ExecError> {
        if self.scripts.contains_key(script.sha1()) {
            return Ok(());
        }
        let f = self
            .lua
            .load(script.source())
            .set_name("@user_script")
            .set_environment(self.env.clone())
            .into_function()
            .map_err(|e| {
                let detail = match &e {
                    mlua::Error::SyntaxError { message, .. } => message.clone(),
                    other => other.to_string(),
                };
                ExecError::Reply(format!(
                    "ERR Error compiling script (new function): {detail}"
                ))
            })?;
        self.scripts.insert(script.sha1().to_owned(), f);
        Ok(())
    }

    /// Runs one call at the instant `now`, as Redis runs EVALSHA (compiling the script first when it
    /// was never loaded, as EVAL would).
    pub(super) fn eval(&mut self, call: &Call, now: i64) -> Result<Reply, ExecError> {
        if self.store.borrow().poisoned {
            return Err(ExecError::Unavailable(
                "the embedded store stopped after an internal error".into(),
            ));
        }
        if self.lua.used_memory() > self.collect_above {
            self.lua
                .gc_collect()
                .map_err(|e| lua_failure(&e, call.script.sha1()))?;
        }
        self.load(call.script)?;
        let f = self.scripts[call.script.sha1()].clone();
        self.store.borrow_mut().now = now;
        let out = self
            .run_function(f, call)
            .map_err(|e| lua_failure(&e, call.script.sha1()))?;
        if self.store.borrow().poisoned {
            return Err(ExecError::Unavailable(
                "the embedded store stopped after an internal error".into(),
            ));
        }
        out
    }

    fn run_function(&self, f: Function, call: &Call) -> mlua::Result<Result<Reply, ExecError>> {
        let strings = |items: &[String]| -> mlua::Result<Table> {
            let t = self.lua.create_table_with_capacity(items.len(), 0)?;
            for (i, s) in items.iter().enumerate() {
                t.raw_set(i + 1, self.lua.create_string(s)?)?;
            }
            Ok(t)
        };
        self.visible.raw_set("KEYS", strings(&call.keys)?)?;
        self.visible.raw_set("ARGV", strings(&call.args)?)?;
        let out: MultiValue = self.run.call(f)?;
        let mut out = out.into_iter();
        let ok = matches!(out.next(), Some(Value::Boolean(true)));
        let value = out.next().unwrap_or(Value::Nil);
        if ok {
            return Ok(to_reply(&value));
        }
        let sha = call.script.sha1();
        Ok(Err(match &value {
            Value::Table(t) => ExecError::Reply(raised_error(t, sha)),
            Value::String(m) => bare_error(sha, &m.as_bytes()),
            _ => bare_error(sha, b"execution failure"),
        }))
    }

    /// The store, for work outside scripts (sweeping, snapshots).
    pub(super) fn store(&self) -> &Rc<RefCell<Store>> {
        &self.store
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_matches_known_digests_and_fred_on_text() {
        assert_eq!(sha1_hex(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let long = "x".repeat(1000);
        assert_eq!(sha1_hex(long.as_bytes()), fred::util::sha1_hash(&long));
        assert_eq!(
            sha1_hex(crate::engine::scripts::SUBMIT.source().as_bytes()),
            crate::engine::scripts::SUBMIT.sha1()
        );
    }
}
