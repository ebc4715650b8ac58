//! The filters subscribed on this node, counted per (mountpoint, filter): what a cluster node
//! tells its peers to forward here. Only the first subscriber of a filter and the last one
//! leaving change the set, so peers learn one route per filter, never one per client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// Subscribers per (mountpoint, filter); `version` changes whenever the set of filters does.
#[derive(Debug, Default)]
pub struct LocalRoutes {
    counts: Mutex<HashMap<(String, String), usize>>,
    version: AtomicU64,
}

impl LocalRoutes {
    /// One more subscriber on `filter`.
    pub(super) fn add(&self, mountpoint: &str, filter: &str) {
        let mut counts = self.counts.lock();
        let n = counts
            .entry((mountpoint.to_owned(), filter.to_owned()))
            .or_insert(0);
        *n += 1;
        if *n == 1 {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// One subscriber fewer on `filter`.
    pub(super) fn remove(&self, mountpoint: &str, filter: &str) {
        let mut counts = self.counts.lock();
        let key = (mountpoint.to_owned(), filter.to_owned());
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
                self.version.fetch_add(1, Ordering::Release);
            }
        }
    }

    /// Changes whenever a filter gains its first subscriber or loses its last.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every (mountpoint, filter) with a subscriber here.
    pub fn snapshot(&self) -> Vec<(String, String)> {
        self.counts.lock().keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_a_route_from_its_first_subscriber_to_its_last() {
        let r = LocalRoutes::default();
        let v0 = r.version();
        r.add("", "a/+");
        let v1 = r.version();
        assert_ne!(v0, v1);
        r.add("", "a/+");
        assert_eq!(r.version(), v1, "a second subscriber is not a new route");
        r.add("mp", "a/+");
        assert_eq!(r.snapshot().len(), 2);
        r.remove("", "a/+");
        assert_eq!(r.snapshot().len(), 2, "one subscriber is left");
        r.remove("", "a/+");
        assert_eq!(r.snapshot(), vec![("mp".to_owned(), "a/+".to_owned())]);
        r.remove("", "never/subscribed");
        assert_eq!(r.snapshot().len(), 1);
    }
}
