//! director-ring: the director ring protocol (spec §10) as a sans-I/O state machine.
//!
//! Shaped like quinn-proto: a [`Ring`] is fed events (a connection opened or closed, a
//! line received, a core effect to forward, an admin change, a timer) with the current
//! Unix time and the [`director_core::Director`] it serves, and is polled for
//! [`Output`]s (send a line, open a connection, close one) and for its next deadline.
//! No sockets, no clock reads, no async runtime: the same code runs in the daemon's
//! driver and in the in-memory ring simulation of this crate's tests.
//!
//! * [`topology`]: the sorted director list, self detection, "closer to my right/left".
//! * [`ring`]: connections, handshake, forwarding with per-origin sequence numbers,
//!   `SYNC`, `CONNECT` arbitration, PING/PONG and the timers.
//!
//! # Driving a `Ring`
//!
//! ```text
//! let mut ring = Ring::new(RingConfig::new(me, servers));
//! ring.start(now, &mut director);
//! loop {
//!     // after every call below:
//!     while let Some(out) = ring.poll_output() { match out {
//!         Output::Send { conn, message } => write message.encode() to conn,
//!         Output::Connect { addr } => open TCP to addr; then ring.connected(id, addr.ip,
//!             Direction::Outgoing(addr), now, dir) or ring.connect_failed(addr, now, dir),
//!         Output::Disconnect { conn, reason } => log reason, close conn (no closed() call),
//!     }}
//!     while let Some(e) = director.poll_effect() {
//!         if let Some(e) = ring.core_effect(e, now, &mut director) { handle locally }
//!     }
//!     arm a timer for min(ring.next_timeout(), director.next_timeout());
//! }
//! ```
//! Incoming TCP: `ring.connected(id, peer_ip, Direction::Incoming, now, dir)`. Bytes:
//! feed a per-connection `RingDecoder`; each message → `ring.line(id, msg, now, dir)`, a
//! decode error → `ring.decode_error(id, &err, now, dir)`. EOF or an I/O error →
//! `ring.closed(id, now, dir)`. Admin host commands that succeeded in the core →
//! [`Ring::host_changed`] / [`Ring::host_removed`] / [`Ring::host_flushed`]; admin
//! `DIRECTOR-ADD`/`-REMOVE` → [`Ring::director_add`] / [`Ring::director_remove`];
//! `DIRECTOR-LIST` → [`Ring::status`]. Ring-sync-gated admin replies wait for
//! [`Ring::is_synced`].
//!
//! # What the driver owns
//!
//! * Byte framing and the output buffer: a `RingDecoder` per connection, writing
//!   `message.encode()`, the 10 MiB `director_output_buffer_size` limit, and flushing the
//!   handshake's `U` lines in batches (`HANDSHAKE_USERS_PER_FLUSH` / `_BYTES`).
//! * The TCP connect itself and its 10 s timeout (the ring also gives up after
//!   [`CONNECT_TIMEOUT_SECS`] if nothing is reported).
//! * Calling [`Director::handle_timeout`](director_core::Director::handle_timeout) for the
//!   core's own timers, and carrying out non-ring effects returned by
//!   [`Ring::core_effect`].
//! * Filling in the buffered byte count of `PING` and `PONG` as it queues them
//!   ([`stamp_buffered`]): only the socket's owner knows it.
//!
//! # Time
//!
//! Every event takes the time it happens at as a [`RingTime`]: whole Unix seconds (a
//! `u64`) drive the protocol's timers, a [`std::time::Duration`] since the epoch also
//! gives the round trips `DIRECTOR-LIST` shows and the slow-handshake and slow-ping
//! warnings their milliseconds. [`Ring::next_timeout`] is in whole seconds.
//!
//! # Not done (spec §10)
//!
//! * Peers older than protocol 1.9 (Dovecot before 2.2.34) are not served their dialect:
//!   they are accepted (from 1.5 on) and get 1.9 lines except for the `USER` timestamp, so
//!   a handshake that sends them users as `U` lines makes them drop the link ("Unknown
//!   command"), and `HOST` lines carry every field of 1.7 whatever the ring's lowest minor
//!   (so a tagged host can reach a peer below 1.7, which Dovecot refuses at `VERSION`).
//!   Their own handshake `USER` lines are taken as ring `USER` updates, not handshake
//!   users. Serving them needs a handshake `USER` form with the weak flag in
//!   `director-proto` (the codec has only `U`), `HOST` fields chosen by the peer's and the
//!   ring's lowest minor (a tagged host removed on a ring below 1.7, as Dovecot does), and
//!   a Dovecot 2.2 to test against: Dovecot 2.3, the only one this project tests with,
//!   speaks 1.9.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ring;
pub mod topology;

pub use ring::{
    stamp_buffered, ConnCounters, ConnId, Direction, Output, Ring, RingConfig, RingOverview,
    RingTime, CONNECT_TIMEOUT_SECS, DONE_TIMEOUT_SECS, HANDSHAKE_USERS_PER_ROUND,
    HANDSHAKE_WARN_MSECS, ME_TIMEOUT_SECS, PING_IDLE_SECS, PING_UNSYNCED_SECS, PING_WARN_MSECS,
    RING_ALONE_GIVE_UP_SECS, RING_RETRY_SECS, SYNC_RESEND_SECS, WAIT_DISCONNECT_AFTER_CONNECT_SECS,
    WRONG_CONNECT_CLOSE_SECS,
};
pub use topology::{addr_cmp, closer_left, closer_right, find_self, SelfError, STANDALONE_SELF};
