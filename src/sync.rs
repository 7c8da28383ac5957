//! A mutex whose holder panicked is still usable: what it guards (counters, queues, a report
//! file) stays consistent line by line, and one failed image must not stop a run. Every lock
//! in the crate is taken through [`lock`].
use std::sync::{Mutex, MutexGuard};

/// Lock `m`, recovering the guard if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
