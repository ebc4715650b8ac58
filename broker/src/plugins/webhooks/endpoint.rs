//! One endpoint URL: its share of the HTTP pool (at most `pool_max_connections` requests at
//! once, shared by every hook posting there, as VerneMQ's per-URL hackney pool), and its
//! notification queues. Notifications never make a session wait (our change to VerneMQ,
//! `specs/webhooks.md` 8.5): the session serializes the body into a bounded queue and goes on;
//! workers post them. A client's notifications always go to the same queue, so an endpoint
//! sees them in the client's order; a full queue drops and counts.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::warn;

use super::client::{CallError, Http, Reply};
use super::metrics::{Drop, WebhookMetrics};
use crate::plugins::hook_names::HOOKS;

/// Queues (and workers) per endpoint: enough to keep several requests in flight while each
/// client's notifications stay in order.
const WORKERS: usize = 4;

/// A notification to post.
#[derive(Debug)]
pub struct Job {
    /// Index into [`HOOKS`].
    pub hook: usize,
    /// The JSON body.
    pub body: Bytes,
    /// Its `response_timeout`.
    pub timeout: Duration,
}

/// An endpoint URL and what is shared by the hooks posting there.
#[derive(Debug)]
pub struct Endpoint {
    /// The URL, as registered.
    pub url: String,
    permits: Arc<Semaphore>,
    queues: Mutex<Option<Vec<mpsc::Sender<Job>>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    depth: Arc<AtomicUsize>,
    hasher: foldhash::fast::RandomState,
}

/// What the workers share.
#[derive(Clone, Debug)]
pub struct Shared {
    /// The HTTP client.
    pub http: Http,
    /// The plugin's counters.
    pub metrics: Arc<WebhookMetrics>,
}

impl Endpoint {
    /// Starts the endpoint's workers (inside a tokio runtime).
    pub fn start(
        url: String,
        pool_max_connections: usize,
        queue_size: usize,
        shared: &Shared,
    ) -> Arc<Endpoint> {
        let permits = Arc::new(Semaphore::new(pool_max_connections));
        let depth = Arc::new(AtomicUsize::new(0));
        let per_queue = queue_size.div_ceil(WORKERS).max(1);
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..WORKERS {
            let (tx, rx) = mpsc::channel(per_queue);
            queues.push(tx);
            workers.push(tokio::spawn(work(
                url.clone(),
                rx,
                permits.clone(),
                depth.clone(),
                shared.clone(),
            )));
        }
        Arc::new(Endpoint {
            url,
            permits,
            queues: Mutex::new(Some(queues)),
            workers: Mutex::new(workers),
            depth,
            hasher: Default::default(),
        })
    }

    /// Notifications waiting.
    pub fn depth(&self) -> usize {
        self.depth.load(Relaxed)
    }

    /// Queues a notification of `client_id`; never waits. `false` if it was dropped.
    pub fn enqueue(&self, client_id: &str, job: Job, metrics: &WebhookMetrics) -> bool {
        let shard = self.hasher.hash_one(client_id) as usize;
        let queues = self.queues.lock();
        let Some(queues) = queues.as_ref() else {
            metrics.dropped(Drop::Shutdown, 1);
            return false;
        };
        self.depth.fetch_add(1, Relaxed);
        match queues[shard % queues.len()].try_send(job) {
            Ok(()) => true,
            Err(e) => {
                self.depth.fetch_sub(1, Relaxed);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => Drop::QueueFull,
                    mpsc::error::TrySendError::Closed(_) => Drop::Shutdown,
                };
                metrics.dropped(why, 1);
                false
            }
        }
    }

    /// Posts a verdict hook's request now, sharing the endpoint's concurrency limit; waiting
    /// for a free connection counts in `timeout`.
    pub async fn post(
        &self,
        http: &Http,
        hook: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        post(http, &self.url, &self.permits, hook, body, timeout).await
    }

    /// Stops taking notifications; the workers post what is queued, then end.
    pub fn close(&self) {
        self.queues.lock().take();
    }

    /// Closes, and waits up to `within` for the queues to empty; what is left is dropped
    /// (counted as `shutdown`).
    pub async fn drain(&self, within: Duration, metrics: &WebhookMetrics) {
        self.close();
        let workers = std::mem::take(&mut *self.workers.lock());
        let aborts: Vec<_> = workers.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(within, futures::future::join_all(workers))
            .await
            .is_err()
        {
            for a in aborts {
                a.abort();
            }
            let left = self.depth.swap(0, Relaxed);
            metrics.dropped(Drop::Shutdown, left as u64);
            if left > 0 {
                warn!(endpoint = %self.url, dropped = left, "webhook notifications not sent at shutdown");
            }
        }
    }
}

async fn post(
    http: &Http,
    url: &str,
    permits: &Semaphore,
    hook: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<Reply, CallError> {
    let exchange = async {
        let _permit = permits.acquire().await;
        http.exchange(url, hook, body).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(CallError::Timeout),
    }
}

async fn work(
    url: String,
    mut rx: mpsc::Receiver<Job>,
    permits: Arc<Semaphore>,
    depth: Arc<AtomicUsize>,
    shared: Shared,
) {
    while let Some(job) = rx.recv().await {
        let name = HOOKS[job.hook].name;
        let c = shared.metrics.hook(job.hook);
        let len = job.body.len() as u64;
        let r = post(&shared.http, &url, &permits, name, job.body, job.timeout).await;
        depth.fetch_sub(1, Relaxed);
        c.requests.fetch_add(1, Relaxed);
        c.bytes_sent.fetch_add(len, Relaxed);
        if let Err(e) = r {
            c.errors.fetch_add(1, Relaxed);
            if e == CallError::Timeout {
                c.timeouts.fetch_add(1, Relaxed);
            }
            warn!(endpoint = %url, hook = name, error = %e, "webhook call failed (notification: ignored)");
        }
    }
}
