//! director-core: every decision of the director, as pure deterministic code.
//!
//! No I/O, no async runtime, no wall clock: time is passed in as Unix seconds. The daemon
//! drives a [`director::Director`] with events and drains its [`effect::Effect`]s, so every
//! rule of the spec can be unit- and property-tested and simulated without sockets.
//!
//! Modules, bottom up:
//! * [`var_expand`], [`hash`] — `director_username_hash` templates and the user hash (§1);
//! * [`host`] — backends, Dovecot IP order and `inet_ntop` text (§0, §2.1);
//! * [`vhost_ring`] — per-tag consistent-hash rings and the 2.2 modulo mode (§2.2–2.5);
//! * [`hosts_hash`] — the SYNC fingerprint of the host list (§2.6);
//! * [`user_directory`] — compact user → host assignments with expiry (§3);
//! * [`lookup`] — Current / Hashed / Initial config answers (§3.5);
//! * [`refusal_log`] — which refused connections are logged, so a loop cannot flood the log;
//! * [`effect`] — vocabulary of the move/kill state machine and its effects (§11);
//! * [`director`] — the facade tying it together (§4, §6, §8.3, §11).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod director;
pub mod effect;
pub mod hash;
pub mod host;
pub mod hosts_hash;
pub mod lookup;
pub mod refusal_log;
pub mod user_directory;
pub mod var_expand;
pub mod vhost_ring;

pub use director::{
    AdminOutcome, CoreSettings, Counters, Director, HostError, ReloadReport, RequestOutcome,
    RestoreError, RestoreReport, RingHost, RingHostOutcome, RingStatus, RingUserOutcome, SavedUser,
    SetupError, Snapshot, UnknownHostError, UserListEntry, UserMoveError,
};
pub use effect::{AdminStatus, Effect, RequestError, RequestId, Route, Ticket, WaitReason};
pub use hash::{parse_user_key, user_hash, HashError, HashFormat, HashFormatError, UserKey};
pub use host::{HostInfo, VHOST_DEFAULT, VHOST_MAX};
pub use lookup::{ConfigHost, UserLookup};
pub use vhost_ring::HashingMode;
