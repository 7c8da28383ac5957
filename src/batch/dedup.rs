//! Byte-identical inputs within one run, without a barrier: the first input with a given
//! SHA-256 is the primary; a copy that arrives while the primary is in flight waits for it and
//! is written from the same prediction (`duplicate`); a copy that arrives after the primary
//! was written is copied from the primary's output when the format matches. The map holds the
//! first 128 bits of the hash of every image seen; the output paths of only the last [`RECENT`] written (copies are
//! usually near each other in a walk; an older one is served through the cache as a
//! `duplicate`, or inferred again without a cache).
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// How many written outputs are remembered for copies.
pub const RECENT: usize = 4096;

/// The first 128 bits of a SHA-256: what is kept of every image settled (16 bytes each).
fn short(sha: &[u8; 32]) -> u128 {
    u128::from_le_bytes(sha[..16].try_into().expect("16 bytes"))
}

struct Maps<W> {
    /// Primaries in flight, with the copies (`W`: whatever the caller needs to settle one)
    /// waiting for them.
    in_flight: HashMap<[u8; 32], Vec<W>>,
    /// Every image settled in this run.
    done: HashSet<u128>,
    /// The outputs of the last [`RECENT`] images written.
    recent: HashMap<u128, Box<Path>>,
    order: VecDeque<u128>,
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
    /// Seen before, settled without an output (or written long ago): process it again (as
    /// a duplicate).
    Again,
}

pub struct Dedup<W> {
    map: Mutex<Maps<W>>,
}

impl<W> Default for Dedup<W> {
    fn default() -> Self {
        Self {
            map: Mutex::new(Maps {
                in_flight: HashMap::new(),
                done: HashSet::new(),
                recent: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }
}

impl<W> Dedup<W> {
    /// Claim `sha` for an input (attached as `waiter()` if the primary is in flight and
    /// `attach` is set).
    pub fn claim(&self, sha: &[u8; 32], waiter: impl FnOnce() -> W, attach: bool) -> Claim {
        let mut m = crate::sync::lock(&self.map);
        if let Some(waiters) = m.in_flight.get_mut(sha) {
            if attach {
                waiters.push(waiter());
            }
            return Claim::Attached;
        }
        let id = short(sha);
        if m.done.contains(&id) {
            return match m.recent.get(&id) {
                Some(p) => Claim::Written(p.to_path_buf()),
                None => Claim::Again,
            };
        }
        m.in_flight.insert(*sha, Vec::new());
        Claim::Primary
    }

    /// The primary of `sha` is settled (written to `output`, or not written at all): returns
    /// the waiters, which the caller now settles the same way.
    pub fn finish(&self, sha: &[u8; 32], output: Option<&Path>) -> Vec<W> {
        let mut m = crate::sync::lock(&self.map);
        let id = short(sha);
        m.done.insert(id);
        if let Some(out) = output {
            if m.recent.insert(id, Box::from(out)).is_none() {
                m.order.push_back(id);
            }
            while m.order.len() > RECENT {
                if let Some(old) = m.order.pop_front() {
                    m.recent.remove(&old);
                }
            }
        }
        m.in_flight.remove(sha).unwrap_or_default()
    }

    /// The primary of `sha` was not processed after all (its file changed under the run):
    /// forget the hash and hand back the waiters, to be processed on their own.
    pub fn abandon(&self, sha: &[u8; 32]) -> Vec<W> {
        let mut m = crate::sync::lock(&self.map);
        m.in_flight.remove(sha).unwrap_or_default()
    }

    /// Distinct images seen.
    pub fn unique(&self) -> u64 {
        let m = crate::sync::lock(&self.map);
        (m.done.len() + m.in_flight.len()) as u64
    }
}
