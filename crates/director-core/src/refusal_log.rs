//! How many refused connections get a log line of their own: a peer that is refused and
//! connects in a loop must not flood the log, yet the operator must see that it happens.

use std::ops::Add;
use std::time::Duration;

/// Refused peers logged per [`REFUSAL_LOG_WINDOW`]; the rest are counted and the count is
/// logged when the next window opens.
pub const REFUSAL_LOG_BURST: u32 = 20;
/// See [`REFUSAL_LOG_BURST`].
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Which refusals get a log line of their own. `T` is the caller's monotonic clock: an
/// `Instant` in the daemon, a `Duration` since an origin in the pure core.
#[derive(Debug)]
pub struct RefusalLog<T> {
    window_start: Option<T>,
    logged: u32,
    suppressed: u64,
}

/// What to log for one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalVerdict {
    /// Log this refusal.
    pub log: bool,
    /// Refusals not logged in the window that just ended (to report once).
    pub suppressed_before: u64,
}

impl<T: Copy + PartialOrd + Add<Duration, Output = T>> RefusalLog<T> {
    /// Nothing logged yet.
    pub fn new() -> Self {
        RefusalLog {
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Records a refusal at `now`.
    pub fn refusal(&mut self, now: T) -> RefusalVerdict {
        let mut suppressed_before = 0;
        let expired = self
            .window_start
            .is_none_or(|start| now >= start + REFUSAL_LOG_WINDOW);
        if expired {
            suppressed_before = std::mem::take(&mut self.suppressed);
            self.window_start = Some(now);
            self.logged = 0;
        }
        let log = self.logged < REFUSAL_LOG_BURST;
        if log {
            self.logged += 1;
        } else {
            self.suppressed += 1;
        }
        RefusalVerdict {
            log,
            suppressed_before,
        }
    }
}

impl<T: Copy + PartialOrd + Add<Duration, Output = T>> Default for RefusalLog<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_in_bursts_and_the_rest_counted() {
        let mut log = RefusalLog::new();
        let t0 = Duration::from_secs(1000);
        for _ in 0..REFUSAL_LOG_BURST {
            assert_eq!(
                log.refusal(t0),
                RefusalVerdict {
                    log: true,
                    suppressed_before: 0
                }
            );
        }
        for _ in 0..5 {
            assert!(!log.refusal(t0 + Duration::from_secs(1)).log);
        }
        let next = log.refusal(t0 + REFUSAL_LOG_WINDOW);
        assert_eq!(
            next,
            RefusalVerdict {
                log: true,
                suppressed_before: 5
            },
            "a new window logs again and reports what was left out"
        );
        assert_eq!(log.refusal(t0 + REFUSAL_LOG_WINDOW).suppressed_before, 0);
    }
}
