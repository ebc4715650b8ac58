//! A loaded script: its pool of Lua states, each on its own thread (never a tokio worker) with
//! its own queue (`specs/lua.md` 5). A hook call goes to the first state that is not backed
//! up, and the session awaits the answer without blocking the runtime; a client's
//! notifications always go to the same state, so they run in the client's order.

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::args::Args;
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

/// What a call answers.
pub type Answer = Result<Data, CallError>;

/// Where the answers of a job's calls go, with the job's arguments: they are freed by the
/// session that made them, on its own thread (freed on a Lua thread, they made the two
/// threads contend for the allocator's arena).
type Reply = oneshot::Sender<Answered>;

/// A job's answers, and its arguments.
type Answered = (Vec<Answer>, Vec<Args>);

enum Job {
    /// Calls of one hook, run in order, answered together.
    Call {
        hook: usize,
        args: Vec<Args>,
        queued: Instant,
        /// `None` for a notification: nobody waits for it.
        reply: Option<Reply>,
    },
    Reload {
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
    /// Read-locked to queue a call (sessions do not wait for each other, even while one
    /// wakes a state), write-locked only to unload.
    queues: RwLock<Option<Vec<Queue>>>,
    hasher: foldhash::fast::RandomState,
    stats: Arc<Vec<HookStats>>,
    /// Notifications queued and not yet run.
    pending: Arc<AtomicUsize>,
    /// Notifications dropped because [`MAX_PENDING`] were waiting.
    pub dropped: AtomicU64,
}

/// Calls a state may have waiting before the next job goes to another state: a busy state
/// takes its next job without going to sleep, so jobs stay on few states (few wakeups) while
/// those keep up, and spill over to the others when they do not. A client's publishes read
/// together are one job of up to 64 calls.
const SPILL: usize = 512;

/// Answered calls a state holds back while more jobs are queued (see `spawn_state`).
const REPLY_BATCH: usize = 64;

/// Notifications a script may have waiting before new ones are dropped (counted).
pub const MAX_PENDING: usize = 10_000;

/// One state's queue, and how many calls it has waiting or running.
struct Queue {
    jobs: mpsc::Sender<Job>,
    load: Arc<AtomicUsize>,
}

/// What a state's thread shares with its script.
#[derive(Clone)]
struct Counters {
    stats: Arc<Vec<HookStats>>,
    pending: Arc<AtomicUsize>,
}

impl Counters {
    /// Counts a job's calls: each took as long as the job took since it was queued (what
    /// the session waited for its answers).
    fn record(&self, index: usize, queued: Instant, results: &[Answer]) {
        let s = &self.stats[index];
        let n = results.len() as u64;
        let micros = queued.elapsed().as_micros() as u64 * n;
        s.calls.fetch_add(n, Relaxed);
        s.micros.fetch_add(micros, Relaxed);
        {
            let mut since = s.since_show.lock();
            since.0 += n;
            since.1 += micros;
        }
        for result in results {
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
    queue: mpsc::Receiver<Job>,
    load: Arc<AtomicUsize>,
    counters: Counters,
) -> mpsc::Receiver<Result<Meta, String>> {
    let (loaded, result) = mpsc::channel();
    let name = format!("lua-{instance}");
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        batch_policy();
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
        // Answers are sent once the queue is empty (or once [`REPLY_BATCH`] calls' answers
        // wait): sessions that asked at the same time are woken together once the state has
        // nothing left to do, not one by one while it runs, and none waits for more than a
        // batch of other calls.
        let mut answers: Vec<(Reply, Answered)> = Vec::new();
        let send_answers = |answers: &mut Vec<(Reply, Answered)>| {
            for (reply, result) in answers.drain(..) {
                let _ = reply.send(result);
            }
        };
        let held = |answers: &Vec<(Reply, Answered)>| -> usize {
            answers.iter().map(|(_, (calls, _))| calls.len()).sum()
        };
        loop {
            let job = match queue.try_recv() {
                Ok(job) if held(&answers) < REPLY_BATCH => Ok(job),
                Ok(job) => {
                    send_answers(&mut answers);
                    Ok(job)
                }
                Err(mpsc::TryRecvError::Empty) => {
                    send_answers(&mut answers);
                    queue.recv().map_err(drop)
                }
                Err(mpsc::TryRecvError::Disconnected) => Err(()),
            };
            if !matches!(job, Ok(Job::Call { .. })) {
                send_answers(&mut answers);
            }
            match job {
                Ok(Job::Call {
                    hook,
                    args,
                    queued,
                    reply,
                }) => {
                    let results: Vec<Answer> = args
                        .iter()
                        .map(|args| {
                            // A bug behind a module must not take the state (and its script)
                            // down.
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                vm.call(HOOKS[hook].name, args)
                            }))
                            .unwrap_or_else(|_| {
                                Err(CallError::Raised(
                                    "the hook call panicked (a broker bug)".into(),
                                ))
                            })
                        })
                        .collect();
                    load.fetch_sub(results.len(), Relaxed);
                    counters.record(hook, queued, &results);
                    match reply {
                        Some(reply) => answers.push((reply, (results, args))),
                        None => {
                            counters.pending.fetch_sub(results.len(), Relaxed);
                            for e in results.into_iter().filter_map(Result::err) {
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
                Ok(Job::Reload { reply }) => match Vm::load(&path, instance, &setup) {
                    Ok((new, _)) => {
                        vm = new;
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                },
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

/// Makes the calling thread (a Lua state's) a batch thread, Linux's `SCHED_BATCH`: waking it
/// for a call then no longer preempts the session's worker that queued the call (a wakeup
/// had cost two context switches, about as much as the call); the state runs at once on an
/// idle core, else when the worker's slice ends or it waits. Elsewhere, nothing.
fn batch_policy() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: a system call about the calling thread (0) with a valid parameter.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "a Lua thread keeps the normal scheduling policy"
            );
        }
    }
}

impl Script {
    /// Loads `path`: state 1 first (its `num_states` and `keep_state` decide the pool), then
    /// the others. Blocks while the states load.
    pub fn load(path: &Path, setup: &Setup, default_states: usize) -> Result<Script, String> {
        let counters = Counters {
            stats: Arc::new((0..HOOKS.len()).map(|_| HookStats::default()).collect()),
            pending: Arc::default(),
        };
        let wait = |r: mpsc::Receiver<Result<Meta, String>>| {
            r.recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|e| match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        Err("the script took over 60 s to load".into())
                    }
                    mpsc::RecvTimeoutError::Disconnected => {
                        Err("its Lua thread stopped while loading it".into())
                    }
                })
        };
        let start = |instance: usize| {
            let (jobs, rx) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let loaded = spawn_state(
                path.to_owned(),
                instance,
                setup.clone(),
                rx,
                load.clone(),
                counters.clone(),
            );
            (Queue { jobs, load }, loaded)
        };
        // State 1 first: its num_states and keep_state decide the pool.
        let (first, loaded) = start(1);
        let meta = wait(loaded)?;
        let keep = meta.keep_state.unwrap_or(setup.keep_state);
        let states = meta
            .num_states
            .unwrap_or(if keep { 1 } else { default_states });
        let mut queues = vec![first];
        for i in 2..=states {
            let (q, loaded) = start(i);
            wait(loaded)?;
            queues.push(q);
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
            queues: RwLock::new(Some(queues)),
            hasher: Default::default(),
            stats: counters.stats,
            pending: counters.pending,
            dropped: AtomicU64::new(0),
        })
    }

    /// Calls hook `index` once per argument table, in order on one state (the first with
    /// fewer than [`SPILL`] calls waiting, else the least loaded), and answers them together.
    pub async fn call(&self, index: usize, args: Vec<Args>) -> Vec<Answer> {
        let n = args.len();
        let gone = || {
            (0..n)
                .map(|_| Err(CallError::Raised("the script was unloaded".into())))
                .collect()
        };
        let (reply, answer) = oneshot::channel();
        let job = Job::Call {
            hook: index,
            args,
            queued: Instant::now(),
            reply: Some(reply),
        };
        let sent = self.queues.read().as_ref().is_some_and(|queues| {
            let q = queues
                .iter()
                .find(|q| q.load.load(Relaxed) < SPILL)
                .or_else(|| queues.iter().min_by_key(|q| q.load.load(Relaxed)))
                .expect("a script has a state");
            q.load.fetch_add(n, Relaxed);
            q.jobs.send(job).is_ok()
        });
        if !sent {
            return gone();
        }
        answer
            .await
            .map_or_else(|_| gone(), |(answers, _args)| answers)
    }

    /// Queues notification hook `index` about `client` on that client's state; never waits.
    /// Dropped (and counted) when [`MAX_PENDING`] notifications are already waiting.
    pub fn notify(&self, index: usize, args: Data, client: &str) {
        if self.pending.fetch_add(1, Relaxed) >= MAX_PENDING {
            self.pending.fetch_sub(1, Relaxed);
            self.dropped.fetch_add(1, Relaxed);
            return;
        }
        let job = Job::Call {
            hook: index,
            args: vec![Args::Table(args)],
            queued: Instant::now(),
            reply: None,
        };
        let sent = self.queues.read().as_ref().is_some_and(|queues| {
            let q = &queues[self.hasher.hash_one(client) as usize % queues.len()];
            q.load.fetch_add(1, Relaxed);
            q.jobs.send(job).is_ok()
        });
        if !sent {
            self.pending.fetch_sub(1, Relaxed);
        }
    }

    /// Loads the file again into every state; calls in flight finish on the old code, later
    /// ones run the new. If the new code does not load, the states keep the old one and the
    /// error says why. Blocks.
    pub fn reload(&self) -> Result<(), String> {
        let (reply, replies) = mpsc::channel();
        {
            let queues = self.queues.read();
            let queues = queues.as_ref().ok_or("the script was unloaded")?;
            for q in queues {
                q.jobs
                    .send(Job::Reload {
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
        self.queues.write().take();
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
