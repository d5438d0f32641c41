//! The driver's clock: Unix time for the core, and the tokio instants its timers sleep
//! until.
//!
//! The core takes `now` as an argument and never reads a clock; the driver reads this one.
//! It reads the wall clock once, at start, and then advances with tokio's monotonic clock,
//! so a wall-clock step (NTP) cannot make timers jump, and a test on a paused tokio runtime
//! drives every timer deterministically. Tests that talk to real sockets cannot pause tokio
//! (a paused runtime jumps ahead whenever it waits for I/O), so the clock can also be moved
//! forward by hand ([`Clock::advance`]): expiry and kick delays then pass at once, without
//! waiting for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Maps tokio instants to Unix time. Clones share the hand-made advance.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    start_unix: Duration,
    /// How far [`Clock::advance`] moved the clock, in nanoseconds.
    advanced_nanos: Arc<AtomicU64>,
}

impl Clock {
    /// Anchors the clock at the current wall-clock time.
    pub fn new() -> Self {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self::starting_at(start_unix)
    }

    /// A clock that reads `unix` now (simulations and tests that want fixed timestamps).
    pub fn starting_at(unix: Duration) -> Self {
        Clock {
            start: Instant::now(),
            start_unix: unix,
            advanced_nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    fn advanced(&self) -> Duration {
        Duration::from_nanos(self.advanced_nanos.load(Ordering::Relaxed))
    }

    /// Unix time now, with sub-second precision.
    pub fn now(&self) -> Duration {
        self.start_unix + self.start.elapsed() + self.advanced()
    }

    /// Moves the clock forward by `by` (never back). The driver must be told to look at its
    /// timers again: use [`crate::DirectorHandle::advance_clock`].
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.advanced_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The tokio instant at which Unix time `at` is reached (now, if it has passed).
    pub fn instant_at(&self, at: Duration) -> Instant {
        match at.checked_sub(self.start_unix + self.advanced()) {
            Some(offset) => self.start + offset,
            None => self.start,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn advancing_moves_now_and_brings_instants_closer() {
        let clock = Clock::starting_at(Duration::from_secs(1_000));
        assert_eq!(clock.now(), Duration::from_secs(1_000));
        let deadline = clock.instant_at(Duration::from_secs(1_010));
        assert_eq!(deadline - Instant::now(), Duration::from_secs(10));
        clock.clone().advance(Duration::from_secs(4));
        assert_eq!(clock.now(), Duration::from_secs(1_004));
        assert_eq!(
            clock.instant_at(Duration::from_secs(1_010)) - Instant::now(),
            Duration::from_secs(6)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(clock.now(), Duration::from_secs(1_005));
        // A time already passed is "now".
        assert_eq!(clock.instant_at(Duration::from_secs(10)), clock.start);
    }
}
