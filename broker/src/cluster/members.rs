//! The other members of this node's cluster and their cluster listeners, kept in
//! `<persistent_data_dir>/cluster_members` (one `name address` per line) so that a restarted
//! node gossips with them again: a restart is not a leave.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// The member list, written through on every change.
#[derive(Debug)]
pub struct Members {
    path: PathBuf,
    me: String,
    list: Mutex<BTreeMap<String, SocketAddr>>,
}

impl Members {
    /// Reads the list of the node called `me` from `dir` (none yet: empty).
    pub fn open(dir: &Path, me: &str) -> Result<Members, String> {
        let path = dir.join("cluster_members");
        let mut list = BTreeMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let parsed = line
                        .split_once(' ')
                        .and_then(|(n, a)| Some((n.to_owned(), a.trim().parse().ok()?)));
                    let Some((name, addr)) = parsed else {
                        return Err(format!(
                            "{}:{}: expected `nodename ip:port`, got {line:?}",
                            path.display(),
                            i + 1
                        ));
                    };
                    list.insert(name, addr);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
        Ok(Members {
            path,
            me: me.to_owned(),
            list: Mutex::new(list),
        })
    }

    /// Every member but this node, by name.
    pub fn list(&self) -> Vec<(String, SocketAddr)> {
        self.list
            .lock()
            .iter()
            .map(|(n, a)| (n.clone(), *a))
            .collect()
    }

    /// Adds or moves a member; returns whether the list changed.
    pub fn insert(&self, name: &str, addr: SocketAddr) -> bool {
        if name == self.me {
            return false;
        }
        let mut list = self.list.lock();
        if list.get(name) == Some(&addr) {
            return false;
        }
        list.insert(name.to_owned(), addr);
        self.save(&list);
        true
    }

    /// Removes a member; returns whether it was one.
    pub fn remove(&self, name: &str) -> bool {
        let mut list = self.list.lock();
        let was = list.remove(name).is_some();
        if was {
            self.save(&list);
        }
        was
    }

    /// Forgets every member (this node left).
    pub fn clear(&self) {
        let mut list = self.list.lock();
        list.clear();
        self.save(&list);
    }

    fn save(&self, list: &BTreeMap<String, SocketAddr>) {
        let text: String = list.iter().map(|(n, a)| format!("{n} {a}\n")).collect();
        let tmp = self.path.with_extension("tmp");
        let r = std::fs::create_dir_all(self.path.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = r {
            tracing::error!(
                "cannot write the cluster member list {}: {e} (a restart will not rejoin)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_survives_a_restart_and_never_holds_this_node() {
        let dir = tempfile::tempdir().unwrap();
        let m = Members::open(dir.path(), "n1@127.0.0.1").unwrap();
        assert!(m.insert("n2@127.0.0.2", "127.0.0.2:44053".parse().unwrap()));
        assert!(!m.insert("n2@127.0.0.2", "127.0.0.2:44053".parse().unwrap()));
        assert!(!m.insert("n1@127.0.0.1", "127.0.0.1:44053".parse().unwrap()));
        assert!(m.insert("n3@127.0.0.3", "127.0.0.3:44053".parse().unwrap()));
        assert!(m.remove("n3@127.0.0.3"));
        let again = Members::open(dir.path(), "n1@127.0.0.1").unwrap();
        assert_eq!(
            again.list(),
            vec![(
                "n2@127.0.0.2".to_owned(),
                "127.0.0.2:44053".parse().unwrap()
            )]
        );
        again.clear();
        assert!(Members::open(dir.path(), "n1").unwrap().list().is_empty());
        std::fs::write(dir.path().join("cluster_members"), "n2 nowhere\n").unwrap();
        let e = Members::open(dir.path(), "n1").unwrap_err();
        assert!(e.contains("cluster_members:1"), "{e}");
    }
}
