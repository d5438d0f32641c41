//! [`BufferBudget`]: one limit on the buffer memory that all connections together may hold
//! beyond their fixed share.
//!
//! Every connection has small fixed buffers. What grows with a client's or a backend's
//! behaviour — a splice direction moving a bulk transfer, the recipients of a large LMTP
//! transaction — is taken from this budget first. When the budget is spent, the buffer does
//! not grow: the splice goes on with its small buffer (more system calls, no less data), and
//! an LMTP transaction takes no more recipients. So the worst that hostile clients on every
//! listener can make the process hold is the connections' fixed share plus this budget
//! (`director_proxy_buffer_memory`; docs/SECURITY.md gives the figure).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The shared budget (`director_proxy_buffer_memory`).
#[derive(Debug)]
pub struct BufferBudget {
    limit: AtomicUsize,
    used: AtomicUsize,
    peak: AtomicUsize,
}

impl BufferBudget {
    /// A budget of `limit` bytes, none used.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        })
    }

    /// Bytes taken now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The most taken at once since the start.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// A new limit (SIGHUP). What is taken stays taken; growth waits until use is below it.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Takes `n` bytes if they fit under the limit.
    pub fn try_take(&self, n: usize) -> bool {
        let limit = self.limit();
        match self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(n).filter(|&u| u <= limit)
            }) {
            Ok(before) => {
                self.peak.fetch_max(before + n, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back `n` bytes taken earlier.
    pub fn give_back(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// Bytes taken from a [`BufferBudget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BufferBudget>,
    bytes: usize,
}

impl Reservation {
    /// Nothing taken yet.
    pub fn new(budget: Arc<BufferBudget>) -> Self {
        Self { budget, bytes: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Holds `bytes` in all: takes the difference from the budget, or gives it back. False
    /// (and nothing changed) when growing does not fit.
    pub fn resize(&mut self, bytes: usize) -> bool {
        if bytes > self.bytes {
            if !self.budget.try_take(bytes - self.bytes) {
                return false;
            }
        } else {
            self.budget.give_back(self.bytes - bytes);
        }
        self.bytes = bytes;
        true
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn takes_up_to_the_limit_and_gives_back_on_drop() {
        let b = BufferBudget::new(100);
        let mut r1 = Reservation::new(Arc::clone(&b));
        let mut r2 = Reservation::new(Arc::clone(&b));
        assert!(r1.resize(60));
        assert!(!r2.resize(50), "60 + 50 is over the limit");
        assert_eq!(r2.bytes(), 0);
        assert!(r2.resize(40));
        assert_eq!(b.used(), 100);
        assert!(r1.resize(10), "shrinking always works");
        assert_eq!(b.used(), 50);
        drop(r2);
        assert_eq!(b.used(), 10);
        drop(r1);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_lower_limit_stops_growth_but_keeps_what_is_taken() {
        let b = BufferBudget::new(100);
        let mut r = Reservation::new(Arc::clone(&b));
        assert!(r.resize(80));
        b.set_limit(50);
        assert!(!r.resize(90));
        assert_eq!(r.bytes(), 80);
        assert!(r.resize(40));
        assert!(r.resize(50));
    }
}
