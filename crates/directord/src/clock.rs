//! Wall-clock time for the core, derived from tokio's clock.
//!
//! The core takes `now` as an argument and never reads a clock. The daemon reads the wall
//! clock once at start and then advances it with `tokio::time::Instant`, so tests running on
//! a paused tokio clock can drive timers deterministically, and a wall-clock step (NTP)
//! cannot make timers jump.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Maps tokio instants to Unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix: Duration,
}

impl Clock {
    /// Anchors the clock at the current wall-clock time.
    pub fn new() -> Self {
        let start_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock {
            start: Instant::now(),
            start_unix,
        }
    }

    /// Unix time now, with sub-second precision.
    pub fn now(&self) -> Duration {
        self.start_unix + self.start.elapsed()
    }

    /// The tokio instant at which Unix time `at` is reached (now, if it has passed).
    pub fn instant_at(&self, at: Duration) -> Instant {
        match at.checked_sub(self.start_unix) {
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
