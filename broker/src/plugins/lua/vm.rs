//! One Lua state of a script (`specs/lua.md` 2, 5, 10): Lua 5.4 with VerneMQ's modules and
//! luerl's 5.1 leftovers, the script run in its own environment so that, unless it keeps
//! state, whatever globals a hook call sets are gone before the next call.
//!
//! The environment: globals the script reads resolve in `E` (this call's writes), then `B`
//! (what the script defined when it was loaded), then the real globals (the standard library
//! and the modules). After loading, `E`'s contents move to `B`; after each call `E` is emptied
//! unless the script keeps state. A table defined at load and changed in place by a call stays
//! changed (luerl reverted that too; documented).

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Function, HookTriggers, Lua, Table, Value, VmState};

use super::args::Args;
use super::bundled;
use super::data::Data;
use super::modules::{self, Shared};

/// Lua code run in every state before the script: luerl's leftovers from Lua 5.1 and 5.2
/// (`unpack`, `loadstring`, `bit32`) and its `eprint`.
const SHIMS: &str = r##"
unpack = unpack or table.unpack
loadstring = loadstring or load
if bit32 == nil then
  local M = 0xFFFFFFFF
  bit32 = {}
  function bit32.band(...) local r = M for i = 1, select("#", ...) do r = r & select(i, ...) end return r & M end
  function bit32.bor(...) local r = 0 for i = 1, select("#", ...) do r = r | select(i, ...) end return r & M end
  function bit32.bxor(...) local r = 0 for i = 1, select("#", ...) do r = r ~ select(i, ...) end return r & M end
  function bit32.bnot(x) return (~x) & M end
  function bit32.lshift(x, n) return (x << n) & M end
  function bit32.rshift(x, n) return (x & M) >> n end
  function bit32.btest(...) return bit32.band(...) ~= 0 end
end
function eprint(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring(select(i, ...)) end
  io.stderr:write(table.concat(parts, "\t"), "\n")
end
"##;

/// Memory one state may hold.
const MEMORY_LIMIT: usize = 256 << 20;

/// What a script says about itself once loaded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The names in its `hooks` table whose values are functions.
    pub hooks: Vec<String>,
    /// Its `num_states`, if it sets it.
    pub num_states: Option<usize>,
    /// Its `keep_state`, if it sets it.
    pub keep_state: Option<bool>,
}

/// How a state is made.
#[derive(Clone, Debug)]
pub struct Setup {
    /// `script_dir`, for `require`.
    pub script_dir: Option<std::path::PathBuf>,
    /// The configured default for `keep_state`.
    pub keep_state: bool,
    /// Longest a call may run.
    pub hook_timeout: Option<Duration>,
    /// What every state shares.
    pub shared: Arc<Shared>,
}

/// A loaded state.
pub struct Vm {
    lua: Lua,
    env: Table,
    hooks: HashMap<String, Function>,
    keep_state: bool,
    deadline: Rc<Cell<Option<Instant>>>,
    timeout: Option<Duration>,
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The script raised an error (or broke a limit): the message.
    Raised(String),
    /// It ran past `hook_timeout`.
    Timeout,
}

impl Vm {
    /// Runs the script `path` in a new state, instance `instance` of its pool. A syntax or
    /// runtime error at load names the file and line.
    pub fn load(path: &Path, instance: usize, setup: &Setup) -> Result<(Vm, Meta), String> {
        let source = bundled::read(path)?;
        let lua = Lua::new();
        let _ = lua.set_memory_limit(MEMORY_LIMIT);
        let err = |e: mlua::Error| e.to_string();
        modules::install(&lua, &setup.shared).map_err(err)?;
        lua.load(SHIMS).set_name("=shims").exec().map_err(err)?;
        let g = lua.globals();
        if let Some(dir) = &setup.script_dir {
            let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            let package: Table = g.get("package").map_err(err)?;
            let p: String = package.get("path").map_err(err)?;
            package
                .set("path", format!("{p};{}/?.lua", abs.display()))
                .map_err(err)?;
        }
        bundled_searcher(&lua).map_err(err)?;
        g.set("__SCRIPT_INSTANCE_ID__", instance as i64)
            .map_err(err)?;
        // E -> B -> globals.
        let base = lua.create_table().map_err(err)?;
        let meta = lua.create_table().map_err(err)?;
        meta.set("__index", g.clone()).map_err(err)?;
        base.set_metatable(Some(meta)).map_err(err)?;
        let env = lua.create_table().map_err(err)?;
        let meta = lua.create_table().map_err(err)?;
        meta.set("__index", base.clone()).map_err(err)?;
        env.set_metatable(Some(meta)).map_err(err)?;
        base.raw_set("_G", env.clone()).map_err(err)?;
        lua.load(&source[..])
            .set_name(format!("@{}", path.display()))
            .set_environment(env.clone())
            .exec()
            .map_err(|e| first_line(&e.to_string()))?;
        // What the script defined becomes the base every call starts from.
        let defined: Vec<(Value, Value)> = env
            .clone()
            .pairs::<Value, Value>()
            .collect::<mlua::Result<_>>()
            .map_err(err)?;
        for (k, v) in defined {
            env.raw_set(k.clone(), Value::Nil).map_err(err)?;
            base.raw_set(k, v).map_err(err)?;
        }
        let mut info = Meta::default();
        let mut hooks = HashMap::new();
        if let Ok(Value::Table(t)) = base.raw_get::<Value>("hooks") {
            for pair in t.pairs::<Value, Value>() {
                if let Ok((Value::String(k), Value::Function(f))) = pair
                    && let Ok(name) = k.to_str()
                {
                    info.hooks.push(name.to_owned());
                    hooks.insert(name.to_owned(), f);
                }
            }
        }
        info.hooks.sort();
        info.num_states = match base.raw_get::<Value>("num_states") {
            Ok(Value::Integer(n)) => Some(n.clamp(1, 256) as usize),
            Ok(Value::Number(n)) => Some(n.round().clamp(1.0, 256.0) as usize),
            _ => None,
        };
        info.keep_state = match base.raw_get::<Value>("keep_state") {
            Ok(Value::Boolean(b)) => Some(b),
            _ => None,
        };
        let deadline = Rc::new(Cell::new(None::<Instant>));
        if setup.hook_timeout.is_some() {
            let d = deadline.clone();
            lua.set_hook(
                HookTriggers::new().every_nth_instruction(1000),
                move |_, _| match d.get() {
                    Some(at) if Instant::now() > at => Err(mlua::Error::runtime(TIMEOUT_MESSAGE)),
                    _ => Ok(VmState::Continue),
                },
            )
            .map_err(err)?;
        }
        let vm = Vm {
            lua,
            env,
            hooks,
            keep_state: info.keep_state.unwrap_or(setup.keep_state),
            deadline,
            timeout: setup.hook_timeout,
        };
        Ok((vm, info))
    }

    /// Calls hook `name` with one argument table; the value it returned.
    pub fn call(&self, name: &str, args: &Args) -> Result<Data, CallError> {
        let Some(f) = self.hooks.get(name) else {
            return Err(CallError::Raised(format!(
                "{name} is not in the script's hooks table any more"
            )));
        };
        let result = (|| {
            let arg = args.to_lua(&self.lua)?;
            if let Some(t) = self.timeout {
                self.deadline.set(Some(Instant::now() + t));
            }
            let r = f.call::<Value>(arg);
            self.deadline.set(None);
            Data::from_lua(&r?)
        })();
        if !self.keep_state {
            self.reset();
        }
        result.map_err(|e| {
            let text = e.to_string();
            if text.contains(TIMEOUT_MESSAGE) {
                CallError::Timeout
            } else {
                CallError::Raised(first_line(&text))
            }
        })
    }

    /// Forgets the globals the last call set.
    fn reset(&self) {
        if self.env.is_empty() {
            return;
        }
        let set: Vec<Value> = self
            .env
            .clone()
            .pairs::<Value, Value>()
            .filter_map(|p| p.ok().map(|(k, _)| k))
            .collect();
        for k in set {
            let _ = self.env.raw_set(k, Value::Nil);
        }
    }
}

/// Lets `require "auth/<module>"` find the bundled modules after the files of `package.path`.
fn bundled_searcher(lua: &Lua) -> mlua::Result<()> {
    let package: Table = lua.globals().get("package")?;
    let searchers: Table = package.get("searchers")?;
    let searcher = lua.create_function(|lua, name: String| -> mlua::Result<Value> {
        match bundled::MODULES.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => Ok(Value::Function(
                lua.load(*src)
                    .set_name(format!("@{}{n}.lua", bundled::PREFIX))
                    .into_function()?,
            )),
            None => Ok(Value::String(
                lua.create_string(format!("no bundled module '{name}'"))?,
            )),
        }
    })?;
    searchers.raw_set(searchers.raw_len() + 1, searcher)
}

const TIMEOUT_MESSAGE: &str = "hook call ran past vmq_diversity.hook_timeout";

/// Lua errors carry a traceback after the first line; the log wants the message.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
