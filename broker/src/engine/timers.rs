//! The engine's timers: session expiry and delayed wills run from one task holding one
//! `DelayQueue`, on tokio's clock (so tests drive them with `tokio::time::pause()` and
//! `advance()`), instead of one sleeping task each. A timer carries the session generation it
//! was set for: if a connection attached in between, it does nothing when it fires.
//!
//! The task holds the engine weakly and ends when the engine stops or is dropped.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

use super::{Engine, SessionSlot};
use crate::message::Message;
use crate::metrics::Metrics;

/// What happens when a timer fires.
#[derive(Debug)]
enum Timer {
    /// Remove the session if still detached and of this generation.
    ExpireSession {
        slot: Arc<SessionSlot>,
        generation: u64,
    },
    /// Publish a will if the session is still detached and of this generation.
    Will {
        slot: Arc<SessionSlot>,
        generation: u64,
        message: Arc<Message>,
    },
}

/// Sets timers on the engine's timer task.
#[derive(Debug)]
pub struct Timers {
    tx: mpsc::UnboundedSender<(Timer, Duration)>,
}

impl Timers {
    /// Starts the timer task for `engine`. Must run inside a tokio runtime.
    pub(super) fn start(engine: Weak<Engine>) -> Timers {
        // Unbounded, but each entry is a detached session's (at most two per session): the
        // registry's size bounds it.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, rx));
        Timers { tx }
    }

    /// Removes the (detached) session of `slot` after `after`, unless a connection attaches
    /// in between.
    pub fn expire_session(&self, slot: &Arc<SessionSlot>, after: Duration) {
        let generation = slot.generation.load(Ordering::Acquire);
        let timer = Timer::ExpireSession {
            slot: slot.clone(),
            generation,
        };
        let _ = self.tx.send((timer, after));
    }

    /// Publishes `message` (a will) after `after`, unless the session of `slot` is attached
    /// again in between.
    pub fn publish_will(&self, slot: &Arc<SessionSlot>, message: Arc<Message>, after: Duration) {
        let generation = slot.generation.load(Ordering::Acquire);
        let timer = Timer::Will {
            slot: slot.clone(),
            generation,
            message,
        };
        let _ = self.tx.send((timer, after));
    }
}

async fn run(engine: Weak<Engine>, mut rx: mpsc::UnboundedReceiver<(Timer, Duration)>) {
    let mut queue: DelayQueue<Timer> = DelayQueue::new();
    let stopping = match engine.upgrade() {
        Some(e) => e.stopping().clone(),
        None => return,
    };
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            set = rx.recv() => match set {
                Some((timer, after)) => {
                    queue.insert(timer, after);
                }
                None => return,
            },
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                fire(&engine, expired.into_inner());
            }
        }
    }
}

fn fire(engine: &Engine, timer: Timer) {
    match timer {
        Timer::ExpireSession { slot, generation } => {
            engine.registry.expire(engine, &slot, generation);
        }
        Timer::Will {
            slot,
            generation,
            message,
        } => {
            if slot.generation.load(Ordering::Acquire) == generation && !slot.mailbox.is_online() {
                engine.publish_will(&slot.mountpoint, message);
            }
        }
    }
}

impl Engine {
    /// Publishes a client's will now: retained if it says so, counted.
    pub fn publish_will(&self, mountpoint: &str, message: Arc<Message>) {
        if message.retain && self.config.retain_available {
            self.retain(mountpoint, message.clone());
        }
        self.publish(mountpoint, &message, false);
        Metrics::inc(&self.metrics.wills_published);
    }
}
