//! A loaded script: its pool of Lua states, each on its own thread (never a tokio worker),
//! taking hook calls from one FIFO queue, so a call goes to the first idle state
//! (`specs/lua.md` 5). A session awaits its call's answer without blocking the runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::data::Data;
use super::vm::{CallError, Meta, Setup, Vm};
use crate::plugins::hook_names::{self, HOOKS};

/// Counters of one hook of one script.
#[derive(Debug, Default)]
pub struct HookStats {
    /// Calls made.
    pub calls: AtomicU64,
    /// Calls that raised an error.
    pub errors: AtomicU64,
    /// Calls stopped by `hook_timeout`.
    pub timeouts: AtomicU64,
    /// Microseconds spent in calls (queueing included).
    pub micros: AtomicU64,
    /// Since the last `script show`: (calls, microseconds).
    since_show: Mutex<(u64, u64)>,
}

enum Job {
    Call {
        hook: usize,
        args: Data,
        queued: Instant,
        /// `None` for a notification: nobody waits for it.
        reply: Option<oneshot::Sender<Result<Data, CallError>>>,
    },
    Reload {
        barrier: Arc<Barrier>,
        reply: mpsc::Sender<Result<(), String>>,
    },
}

/// A script and its states.
pub struct Script {
    /// Its path, as given.
    pub path: PathBuf,
    /// The hooks it registered (indexes into [`HOOKS`]), read once at load as VerneMQ does.
    pub hooks: Vec<usize>,
    /// Its states.
    pub states: usize,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    stats: Arc<Vec<HookStats>>,
    /// Notifications queued and not yet run.
    pending: Arc<AtomicUsize>,
    /// Notifications dropped because [`MAX_PENDING`] were waiting.
    pub dropped: AtomicU64,
}

/// Notifications a script may have waiting before new ones are dropped (counted).
pub const MAX_PENDING: usize = 10_000;

/// What a state's thread shares with its script.
#[derive(Clone)]
struct Counters {
    stats: Arc<Vec<HookStats>>,
    pending: Arc<AtomicUsize>,
}

impl Counters {
    fn record(&self, index: usize, queued: Instant, result: &Result<Data, CallError>) {
        let s = &self.stats[index];
        let micros = queued.elapsed().as_micros() as u64;
        s.calls.fetch_add(1, Relaxed);
        s.micros.fetch_add(micros, Relaxed);
        {
            let mut since = s.since_show.lock();
            since.0 += 1;
            since.1 += micros;
        }
        match result {
            Err(CallError::Timeout) => {
                s.timeouts.fetch_add(1, Relaxed);
                s.errors.fetch_add(1, Relaxed);
            }
            Err(CallError::Raised(_)) => {
                s.errors.fetch_add(1, Relaxed);
            }
            Ok(_) => {}
        }
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Script")
            .field("path", &self.path)
            .field("states", &self.states)
            .finish()
    }
}

/// Starts one state's thread; its load result comes back on the returned channel.
fn spawn_state(
    path: PathBuf,
    instance: usize,
    setup: Setup,
    queue: Arc<Mutex<mpsc::Receiver<Job>>>,
    counters: Counters,
) -> mpsc::Receiver<Result<Meta, String>> {
    let (loaded, result) = mpsc::channel();
    let name = format!("lua-{instance}");
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let mut vm = match Vm::load(&path, instance, &setup) {
            Ok((vm, meta)) => {
                let _ = loaded.send(Ok(meta));
                vm
            }
            Err(e) => {
                let _ = loaded.send(Err(e));
                return;
            }
        };
        loop {
            // One idle state at a time waits on the queue: the first idle one gets the call.
            let job = queue.lock().recv();
            match job {
                Ok(Job::Call {
                    hook,
                    args,
                    queued,
                    reply,
                }) => {
                    let result = vm.call(HOOKS[hook].name, &args);
                    counters.record(hook, queued, &result);
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(result);
                        }
                        None => {
                            counters.pending.fetch_sub(1, Relaxed);
                            if let Err(e) = result {
                                tracing::warn!(
                                    script = %path.display(),
                                    hook = HOOKS[hook].name,
                                    error = ?e,
                                    "can't call Lua hook"
                                );
                            }
                        }
                    }
                }
                Ok(Job::Reload { barrier, reply }) => {
                    // Each state takes exactly one reload job: it waits here for the others.
                    barrier.wait();
                    match Vm::load(&path, instance, &setup) {
                        Ok((new, _)) => {
                            vm = new;
                            let _ = reply.send(Ok(()));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
                Err(_) => return,
            }
        }
    });
    if let Err(e) = spawned {
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Err(format!("cannot start a Lua thread: {e}")));
        return rx;
    }
    result
}

impl Script {
    /// Loads `path`: state 1 first (its `num_states` and `keep_state` decide the pool), then
    /// the others. Blocks while the states load.
    pub fn load(path: &Path, setup: &Setup, default_states: usize) -> Result<Script, String> {
        let (tx, rx) = mpsc::channel();
        let queue = Arc::new(Mutex::new(rx));
        let counters = Counters {
            stats: Arc::new((0..HOOKS.len()).map(|_| HookStats::default()).collect()),
            pending: Arc::default(),
        };
        let wait = |r: mpsc::Receiver<Result<Meta, String>>| {
            r.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| Err("the script took over 60 s to load".into()))
        };
        let meta = wait(spawn_state(
            path.to_owned(),
            1,
            setup.clone(),
            queue.clone(),
            counters.clone(),
        ))?;
        let keep = meta.keep_state.unwrap_or(setup.keep_state);
        let states = meta
            .num_states
            .unwrap_or(if keep { 1 } else { default_states });
        for i in 2..=states {
            if let Err(e) = wait(spawn_state(
                path.to_owned(),
                i,
                setup.clone(),
                queue.clone(),
                counters.clone(),
            )) {
                drop(tx);
                return Err(e);
            }
        }
        let mut hooks = Vec::new();
        for name in &meta.hooks {
            match hook_names::parse(name) {
                Some(i) => hooks.push(i),
                None => tracing::warn!(
                    script = %path.display(),
                    hook = name,
                    "the hooks table names an unknown hook: ignored"
                ),
            }
        }
        Ok(Script {
            path: path.to_owned(),
            hooks,
            states,
            jobs: Mutex::new(Some(tx)),
            stats: counters.stats,
            pending: counters.pending,
            dropped: AtomicU64::new(0),
        })
    }

    /// Calls hook `index` on the first idle state.
    pub async fn call(&self, index: usize, args: Data) -> Result<Data, CallError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Call {
            hook: index,
            args,
            queued: Instant::now(),
            reply: Some(reply),
        };
        if !self.send(job) {
            return Err(CallError::Raised("the script was unloaded".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(CallError::Raised("the script was unloaded".into())))
    }

    /// Queues notification hook `index`; never waits. Dropped (and counted) when
    /// [`MAX_PENDING`] notifications are already waiting.
    pub fn notify(&self, index: usize, args: Data) {
        if self.pending.fetch_add(1, Relaxed) >= MAX_PENDING {
            self.pending.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let job = Job::Call {
            hook: index,
            args,
            queued: Instant::now(),
            reply: None,
        };
        if !self.send(job) {
            self.pending.fetch_sub(1, Relaxed);
        }
    }

    fn send(&self, job: Job) -> bool {
        self.jobs
            .lock()
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok())
    }

    /// Loads the file again into every state; calls in flight finish on the old code, later
    /// ones run the new. If the new code does not load, every state keeps the old one and the
    /// error says why. Blocks.
    pub fn reload(&self) -> Result<(), String> {
        let barrier = Arc::new(Barrier::new(self.states));
        let (reply, replies) = mpsc::channel();
        {
            let jobs = self.jobs.lock();
            let jobs = jobs.as_ref().ok_or("the script was unloaded")?;
            for _ in 0..self.states {
                jobs.send(Job::Reload {
                    barrier: barrier.clone(),
                    reply: reply.clone(),
                })
                .map_err(|_| "the script's states are gone")?;
            }
        }
        let mut first_error = None;
        for _ in 0..self.states {
            match replies.recv_timeout(Duration::from_secs(60)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(_) => return Err("the states did not reload within 60 s".into()),
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// Stops the states once the calls queued before finish.
    pub fn unload(&self) {
        self.jobs.lock().take();
    }

    /// The counters of hook `index`.
    pub fn stats(&self, index: usize) -> &HookStats {
        &self.stats[index]
    }

    /// Average call time in microseconds per hook since the previous call, as `script show`
    /// lists it; the samples start again.
    pub fn take_averages(&self) -> Vec<(&'static str, u64)> {
        self.hooks
            .iter()
            .filter_map(|&i| {
                let (n, us) = std::mem::take(&mut *self.stats[i].since_show.lock());
                (n > 0).then(|| (HOOKS[i].name, us / n))
            })
            .collect()
    }
}
