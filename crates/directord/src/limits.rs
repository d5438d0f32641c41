//! Hard limits of the daemon, in one place, with the Dovecot value where one exists.
//!
//! Every buffer that input can grow is bounded by one of these, so a misbehaving client can
//! cost us at most a known amount of memory.

use std::time::Duration;

// The admin line limit (1023 bytes + LF, Dovecot's 1024-byte input buffer) lives with the
// framer: `director_proto::line::ADMIN_MAX_LINE_LEN`.

/// Most UNIX-socket admin connections served at once. Above this the accept loop stops
/// accepting and lets the kernel backlog hold new clients until a slot frees up. Dovecot's
/// director has `client_limit = 0` (= `default_client_limit`, 1000, shared by every
/// listener); we allow more because a connection costs us a few KiB only. TCP admin clients
/// have a separate pool (`director_admin_tcp_max_connections`, default 100), so they can never
/// take these slots.
pub const MAX_ADMIN_CONNECTIONS: usize = 10_000;

/// Listen backlog for the admin sockets (the kernel caps it at `net.core.somaxconn`).
pub const ADMIN_LISTEN_BACKLOG: u32 = 1024;

/// First and last pause after a failed `accept()` (EMFILE and friends), doubling in between.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// See [`ACCEPT_BACKOFF_MIN`].
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, so thousands of idle admin clients
/// (and later, proxied sessions) don't run us out of descriptors. Returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}
