//! The engine's timers: session expiry and delayed wills run from one task holding one
//! `DelayQueue`, on tokio's clock (so tests drive them with `tokio::time::pause()` and
//! `advance()`), instead of one sleeping task each. A timer carries the session generation it
//! was set for: if a connection attached in between, it does nothing when it fires.
//!
//! The task holds the engine weakly (it is spawned while the engine is being built, so it
//! upgrades only when a timer fires) and ends when the engine stops or is dropped.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
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
    pub(super) fn start(engine: Weak<Engine>, stopping: CancellationToken) -> Timers {
        // Unbounded, but each entry is a detached session's (at most two per session): the
        // registry's size bounds it.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(engine, stopping, rx));
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

/// The longest a timer waits in the queue at once; a longer one (a session expiry of years)
/// is put back for the rest when this runs out. `DelayQueue` refuses durations past ~2 years.
const LONGEST_WAIT: Duration = Duration::from_secs(86_400 * 365);

async fn run(
    engine: Weak<Engine>,
    stopping: CancellationToken,
    mut rx: mpsc::UnboundedReceiver<(Timer, Duration)>,
) {
    let mut queue: DelayQueue<(Timer, Instant)> = DelayQueue::new();
    let arm = |queue: &mut DelayQueue<(Timer, Instant)>, timer: Timer, due: Instant| {
        let wait = due
            .saturating_duration_since(Instant::now())
            .min(LONGEST_WAIT);
        queue.insert((timer, due), wait);
    };
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            set = rx.recv() => match set {
                Some((timer, after)) => {
                    let now = Instant::now();
                    let due = now.checked_add(after).unwrap_or(now + LONGEST_WAIT * 100);
                    arm(&mut queue, timer, due);
                }
                None => return,
            },
            Some(expired) = queue.next(), if !queue.is_empty() => {
                let (timer, due) = expired.into_inner();
                if Instant::now() < due {
                    arm(&mut queue, timer, due);
                    continue;
                }
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                fire(&engine, timer);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;
    use crate::engine::{Subscriber, Subscription};
    use crate::mqtt::{Properties, Publish, QoS, SubOptions};

    fn engine() -> Arc<Engine> {
        Engine::for_tests(Config::default())
    }

    fn will(topic: &str) -> Arc<Message> {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: topic.into(),
            packet_id: 0,
            payload: bytes::Bytes::from_static(b"gone"),
            properties: Properties::default(),
        };
        Arc::new(Message::from_publish(&p, topic.into(), Some("w".into())))
    }

    /// A session of `watcher` subscribed to `will/#`, online, whose mailbox receives wills.
    async fn watcher(engine: &Arc<Engine>) -> Arc<crate::engine::Mailbox> {
        let id: Arc<str> = "watcher".into();
        let a = engine.attach("", &id, true).await.unwrap();
        engine.subscribe(
            "",
            "will/#",
            Subscription {
                client_id: id,
                subscriber: Subscriber::Local(a.slot.mailbox.clone()),
                options: SubOptions::default(),
                id: None,
                acl: None,
            },
        );
        a.slot.mailbox.clone()
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_will_is_published_at_its_time_unless_the_client_came_back() {
        let engine = engine();
        let inbox = watcher(&engine).await;
        let id: Arc<str> = "w".into();
        let a = engine.attach("", &id, false).await.unwrap();
        engine.detach(&a.slot, a.state, None);
        engine
            .timers()
            .publish_will(&a.slot, will("will/w"), Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(inbox.len(), 0, "not yet");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(inbox.len(), 1, "published at 30 s");
        assert_eq!(Metrics::get(&engine.metrics().wills_published), 1);

        // Gone again with a delayed will, but back within the delay: no will.
        let b = engine.attach("", &id, false).await.unwrap();
        engine.detach(&b.slot, b.state, None);
        engine
            .timers()
            .publish_will(&b.slot, will("will/w"), Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(10)).await;
        let _back = engine.attach("", &id, false).await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            inbox.len(),
            1,
            "the returning client's will is not published"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upgrade_outgoing_qos_delivers_at_the_granted_qos() {
        for (upgrade, expected) in [(false, QoS::AtMostOnce), (true, QoS::AtLeastOnce)] {
            let config = Config {
                upgrade_outgoing_qos: upgrade,
                ..Config::default()
            };
            let engine = Engine::for_tests(config);
            let id: Arc<str> = "s".into();
            let a = engine.attach("", &id, true).await.unwrap();
            engine.subscribe(
                "",
                "will/#",
                Subscription {
                    client_id: id,
                    subscriber: Subscriber::Local(a.slot.mailbox.clone()),
                    options: SubOptions {
                        qos: QoS::AtLeastOnce,
                        ..SubOptions::default()
                    },
                    id: None,
                    acl: None,
                },
            );
            engine.publish("", &will("will/x"), false);
            let mut out = Vec::new();
            a.slot.mailbox.take(1, &mut out);
            assert_eq!(out[0].qos, expected, "upgrade_outgoing_qos = {upgrade}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_expiry_of_years_neither_kills_the_timers_nor_fires_early() {
        let engine = engine();
        let inbox = watcher(&engine).await;
        let id: Arc<str> = "w".into();
        let a = engine.attach("", &id, false).await.unwrap();
        // A v5 client may ask for 136 years; DelayQueue alone would panic past ~2.
        engine.detach(
            &a.slot,
            a.state,
            Some(Duration::from_secs(u64::from(u32::MAX - 1))),
        );
        engine
            .timers()
            .publish_will(&a.slot, will("will/w"), Duration::from_secs(10));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(inbox.len(), 1, "later timers still fire");
        tokio::time::sleep(LONGEST_WAIT + Duration::from_secs(1)).await;
        assert_eq!(
            engine.session_count(),
            2,
            "re-armed, not expired after a year"
        );
    }
}
