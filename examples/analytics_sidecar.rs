//! Live analytics from the relayed events: events per hook, messages and bytes per topic (top N),
//! clients online, printed as a summary every few seconds.
//!
//! ```text
//! cargo run --release --example analytics_sidecar -- --listen 127.0.0.1:8890 --interval 5 --top 10
//! ```
//! Memory is bounded: at most `--max-topics` topics are tracked one by one; publishes to further
//! topics are counted under `(other topics)`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use vmq_sidecar_sdk::bytes::Bytes;
use vmq_sidecar_sdk::{
    EventView, HOOKS, Handler, OnClientGoneView, OnClientOfflineView, Peer, Server, Stats,
};

#[derive(Parser, Debug)]
#[command(about = "Prints live statistics of the relayed hook events")]
struct Args {
    /// Address to listen on (the broker's vmq_events_sidecar.hostname:port).
    #[arg(long, default_value = vmq_sidecar_sdk::DEFAULT_ADDR)]
    listen: SocketAddr,
    /// Seconds between summaries.
    #[arg(long, default_value_t = 5)]
    interval: u64,
    /// How many topics the summary lists.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// How many distinct topics are tracked one by one.
    #[arg(long, default_value_t = 10_000)]
    max_topics: usize,
}

#[derive(Default, Clone, Copy)]
struct TopicStats {
    messages: u64,
    bytes: u64,
}

impl TopicStats {
    fn add(&mut self, bytes: u64) {
        self.messages += 1;
        self.bytes += bytes;
    }
}

/// Publishes per topic, bounded.
#[derive(Default)]
struct Topics {
    tracked: HashMap<String, TopicStats>,
    other: TopicStats,
}

/// Event counters of the connections whose id picks it: connections handled on different
/// threads count on different cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
    events: AtomicU64,
    /// Per hook, in the order of `vmq_sidecar_sdk::HOOKS`, then unknown types.
    per_hook: [AtomicU64; HOOKS.len() + 1],
}

struct Analytics {
    counters: [Counters; 16],
    /// Only publishes take this lock.
    topics: Mutex<Topics>,
    /// (mountpoint, client id) of every client seen registering and not yet gone.
    online: Mutex<HashSet<(String, String)>>,
    max_topics: usize,
}

impl Handler for Analytics {
    /// Reads each event in place, borrowed from its frame: a publish to a known topic costs no
    /// allocation at all.
    async fn on_event_view(&self, peer: &Peer, event: EventView<'_>, _frame: &Bytes) {
        let c = &self.counters[peer.id as usize % self.counters.len()];
        c.events.fetch_add(1, Relaxed);
        c.per_hook[event.hook_index().unwrap_or(HOOKS.len())].fetch_add(1, Relaxed);
        match event {
            EventView::OnPublish(p) => {
                let Ok(mut t) = self.topics.lock() else {
                    return;
                };
                let len = p.payload.len() as u64;
                // One lookup; the topic is copied only the first time it is seen.
                if let Some(slot) = t.tracked.get_mut(p.topic) {
                    slot.add(len);
                } else if t.tracked.len() < self.max_topics {
                    t.tracked.entry(p.topic.to_owned()).or_default().add(len);
                } else {
                    t.other.add(len);
                }
            }
            EventView::OnRegister(r) => {
                if let Ok(mut online) = self.online.lock() {
                    online.insert((r.mountpoint.to_owned(), r.client_id.to_owned()));
                }
            }
            EventView::OnClientOffline(OnClientOfflineView {
                mountpoint,
                client_id,
                ..
            })
            | EventView::OnClientGone(OnClientGoneView {
                mountpoint,
                client_id,
                ..
            }) => {
                if let Ok(mut online) = self.online.lock() {
                    online.remove(&(mountpoint.to_owned(), client_id.to_owned()));
                }
            }
            _ => {}
        }
    }
}

impl Analytics {
    fn summary(
        &self,
        stats: &Stats,
        elapsed: Duration,
        previous_events: &mut u64,
        every: Duration,
        top: usize,
    ) -> String {
        let (Ok(t), Ok(online)) = (self.topics.lock(), self.online.lock()) else {
            return "statistics unavailable (poisoned lock)".into();
        };
        let total = |f: &dyn Fn(&Counters) -> &AtomicU64| -> u64 {
            self.counters.iter().map(|c| f(c).load(Relaxed)).sum()
        };
        let events = total(&|c| &c.events);
        let s = stats.snapshot();
        let rate = (events - *previous_events) as f64 / every.as_secs_f64();
        *previous_events = events;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== after {:.0}s: {events} events ({rate:.0}/s), {} clients online, {} sidecar connections, {} decode errors, {} empty frames",
            elapsed.as_secs_f64(),
            online.len(),
            s.connections_active,
            s.decode_errors,
            s.skipped_frames
        );
        let names = HOOKS.iter().copied().chain(["unknown"]);
        for (i, hook) in names.enumerate() {
            let n = total(&|c| &c.per_hook[i]);
            if n > 0 {
                let _ = writeln!(out, "   {hook:<22} {n:>12}");
            }
        }
        let mut topics: Vec<_> = t.tracked.iter().collect();
        topics.sort_unstable_by(|a, b| b.1.messages.cmp(&a.1.messages).then(a.0.cmp(b.0)));
        if !topics.is_empty() {
            let _ = writeln!(out, "   top topics by messages published:");
        }
        for (topic, ts) in topics.into_iter().take(top) {
            let _ = writeln!(
                out,
                "   {:>10} msgs {:>12} bytes  {topic}",
                ts.messages, ts.bytes
            );
        }
        if t.other.messages > 0 {
            let o = t.other;
            let _ = writeln!(
                out,
                "   {:>10} msgs {:>12} bytes  (other topics)",
                o.messages, o.bytes
            );
        }
        out
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    vmq_examples::init_logging();
    let args = Args::parse();
    let server = Server::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    eprintln!("analytics_sidecar: listening on {}", server.local_addr()?);
    let stats = server.stats();
    let analytics = Arc::new(Analytics {
        counters: Default::default(),
        topics: Mutex::default(),
        online: Mutex::default(),
        max_topics: args.max_topics,
    });

    let every = Duration::from_secs(args.interval.max(1));
    let started = Instant::now();
    let reporter = {
        let (analytics, stats) = (analytics.clone(), stats.clone());
        tokio::spawn(async move {
            let mut previous = 0;
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                print!(
                    "{}",
                    analytics.summary(&stats, started.elapsed(), &mut previous, every, args.top)
                );
            }
        })
    };

    struct Shared(Arc<Analytics>);
    impl Handler for Shared {
        async fn on_event_view(&self, peer: &Peer, event: EventView<'_>, frame: &Bytes) {
            self.0.on_event_view(peer, event, frame).await
        }
    }
    server
        .serve_with_shutdown(Shared(analytics.clone()), vmq_examples::shutdown_signal())
        .await;
    reporter.abort();
    let mut previous = 0;
    print!(
        "{}",
        analytics.summary(
            &stats,
            started.elapsed(),
            &mut previous,
            started.elapsed().max(Duration::from_millis(1)),
            args.top
        )
    );
    Ok(())
}
