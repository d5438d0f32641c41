//! The driver's bounds, in one place, with the Dovecot value where one exists.

use std::time::Duration;

/// Capacity of the channel into the driver task. Senders wait (not the driver) when it is
/// full, which is the back-pressure we want.
pub const DRIVER_QUEUE_CAPACITY: usize = 4096;

/// `director_flush_socket` connect timeout (Dovecot's program-client uses 10 s).
pub const FLUSH_CONNECT_TIMEOUT: Duration =
    Duration::from_secs(director_proto::flush_script::SCRIPT_CONNECT_TIMEOUT_SECS);

/// Total time a flush script may take before it counts as failed. Dovecot bounds the whole
/// kill/move by the 30 s move timeout; we stop waiting for the script a little earlier.
pub const FLUSH_TOTAL_TIMEOUT: Duration = Duration::from_secs(25);

/// Shortest period of the refresh of users with open local sessions (half of
/// `director_user_expire`, which Dovecot requires to be at least 10 s).
pub const MIN_REFRESH_PERIOD: Duration = Duration::from_secs(1);

/// Capacity of the channel from the ring connections into the driver task, in events of
/// up to 256 lines each: a peer whose lines arrive faster than the driver handles them
/// waits in TCP.
pub const RING_EVENT_QUEUE_CAPACITY: usize = 64;

/// How long a ring-gated admin command waits for the ring to be synced (Dovecot: 30 s, then
/// `Ring sync timed out`).
pub const RING_SYNC_WAIT: Duration = Duration::from_secs(30);

/// Ring events (of up to 256 lines each) the driver task handles per taking of the state:
/// few enough that logins meanwhile wait well under a millisecond (and go through the
/// driver's channel rather than wait).
pub const RING_EVENTS_PER_LOCK: usize = 2;
