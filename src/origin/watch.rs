//! One watcher per folder playlist that blocking reloads wait on: a shared stat every few
//! milliseconds while anyone waits, a wake-up for all of them when the packager writes. Two
//! hundred held requests on one playlist cost one stat loop, not two hundred.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;

use super::cache::Stamp;
use super::dir;

/// How often a watched playlist is looked at: well inside LL-HLS's 150 ms budget for answering
/// a held request, and a stat of a cached inode costs about a microsecond.
const POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
pub struct Watchers {
    by_path: Arc<DashMap<PathBuf, watch::Sender<u64>>>,
}

impl Watchers {
    /// A receiver that changes each time the file at `path` does (a new stamp, or it appears or
    /// goes). The watcher starts with its first subscriber and stops after its last.
    pub fn subscribe(&self, path: &Path) -> watch::Receiver<u64> {
        if let Some(sender) = self.by_path.get(path) {
            return sender.subscribe();
        }
        match self.by_path.entry(path.to_owned()) {
            dashmap::Entry::Occupied(e) => e.get().subscribe(),
            dashmap::Entry::Vacant(e) => {
                let (sender, receiver) = watch::channel(0);
                e.insert(sender.clone());
                tokio::spawn(poll(Arc::clone(&self.by_path), path.to_owned(), sender));
                receiver
            }
        }
    }
}

async fn poll(by_path: Arc<DashMap<PathBuf, watch::Sender<u64>>>, path: PathBuf, sender: watch::Sender<u64>) {
    let stamp_of = |path: &Path| dir::stat(path).ok().map(|(_, stamp)| stamp);
    let mut last: Option<Stamp> = stamp_of(&path);
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // Our own copy in the map is one sender; receivers are the waiters.
        if sender.receiver_count() == 0 {
            by_path.remove_if(&path, |_, current| current.same_channel(&sender));
            // A subscriber may have come between the count and the removal: it holds a
            // receiver of this sender, so keep serving it until it too is gone.
            if sender.receiver_count() == 0 {
                return;
            }
        }
        let now = stamp_of(&path);
        if now != last {
            last = now;
            sender.send_modify(|version| *version = version.wrapping_add(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_wakes_when_the_file_changes_and_the_watcher_stops_after_the_last() {
        let dir = std::env::temp_dir().join(format!("hlsgate-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("index.m3u8");
        std::fs::write(&path, "one").unwrap();
        let watchers = Watchers::default();
        let mut waiters: Vec<_> = (0..200).map(|_| watchers.subscribe(&path)).collect();
        assert_eq!(watchers.by_path.len(), 1, "one watcher for all");
        tokio::time::sleep(POLL * 3).await;
        std::fs::write(dir.join("tmp"), "two, longer").unwrap();
        std::fs::rename(dir.join("tmp"), &path).unwrap();
        for waiter in &mut waiters {
            tokio::time::timeout(Duration::from_secs(5), waiter.changed()).await.unwrap().unwrap();
        }
        drop(waiters);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !watchers.by_path.is_empty() {
                tokio::time::sleep(POLL).await;
            }
        })
        .await
        .unwrap();
    }
}
