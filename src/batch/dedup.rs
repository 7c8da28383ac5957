//! Byte-identical inputs within one run, without a barrier: the first input with a given
//! SHA-256 is the primary; a copy that arrives while the primary is in flight waits for it and
//! is written from the same prediction (`duplicate`); a copy that arrives after the primary
//! was written is copied from the primary's output when the format matches. The map holds the
//! hash and, once written, the primary's first output path.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::walk::Input;

/// A copy waiting for its primary.
#[derive(Debug, Clone)]
pub struct Waiter {
    pub input: Input,
    pub dest: PathBuf,
    pub started: std::time::Instant,
}

enum Slot {
    InFlight(Vec<Waiter>),
    /// Written to this output (`None`: settled without an output; later copies start over).
    Done(Option<Box<Path>>),
}

/// What [`Dedup::claim`] decided.
#[derive(Debug)]
pub enum Claim {
    /// The first of its bytes in this run: process it.
    Primary,
    /// The primary is in flight; this input was attached to it (the waiter is recorded when
    /// the primary is written).
    Attached,
    /// The primary was already written here.
    Written(PathBuf),
    /// Seen before, settled without an output: process it again (as a duplicate).
    Again,
}

#[derive(Default)]
pub struct Dedup {
    map: Mutex<HashMap<[u8; 32], Slot>>,
}

impl Dedup {
    /// Claim `sha` for `waiter` (attached if the primary is in flight and `attach` is set).
    pub fn claim(&self, sha: &[u8; 32], waiter: Waiter, attach: bool) -> Claim {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(sha) {
            None => {
                map.insert(*sha, Slot::InFlight(Vec::new()));
                Claim::Primary
            }
            Some(Slot::InFlight(waiters)) => {
                if attach {
                    waiters.push(waiter);
                }
                Claim::Attached
            }
            Some(Slot::Done(Some(p))) => Claim::Written(p.to_path_buf()),
            Some(Slot::Done(None)) => Claim::Again,
        }
    }

    /// The primary of `sha` is settled (written to `output`, or not written at all): returns
    /// the waiters, which the caller now settles the same way.
    pub fn finish(&self, sha: &[u8; 32], output: Option<&Path>) -> Vec<Waiter> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let slot = map.insert(*sha, Slot::Done(output.map(Box::from)));
        match slot {
            Some(Slot::InFlight(w)) => w,
            _ => Vec::new(),
        }
    }

    /// The primary of `sha` was not processed after all (its file changed under the run):
    /// forget the hash and hand back the waiters, to be processed on their own.
    pub fn abandon(&self, sha: &[u8; 32]) -> Vec<Waiter> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(sha) {
            Some(Slot::InFlight(w)) => w,
            Some(done) => {
                map.insert(*sha, done);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Distinct images seen.
    pub fn unique(&self) -> u64 {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }
}
