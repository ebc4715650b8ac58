//! Re-reading a plugin's file when it changes (password file, ACL file), as VerneMQ does: the
//! file's modification time is checked every interval; a file that no longer parses keeps the
//! rules loaded before, and says why in the log.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Calls `reload` whenever `path`'s modification time moves, checking every `interval` (zero:
/// never). Stops with the runtime.
pub fn watch(path: PathBuf, interval: Duration, reload: impl Fn() + Send + Sync + 'static) {
    if interval.is_zero() {
        return;
    }
    let modified = |p: &PathBuf| -> Option<SystemTime> {
        std::fs::metadata(p).and_then(|m| m.modified()).ok()
    };
    let mut last = modified(&path);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = modified(&path);
            if now != last {
                last = now;
                reload();
            }
        }
    });
}
