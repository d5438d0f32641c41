//! director-driver: the one driver of the director core.
//!
//! [`director_core::Director`] is a pure state machine: it takes `now` as an argument, queues
//! effects, and exposes its next deadline. This crate is the only code that drives it, in the
//! daemon and in every test: [`spawn`] starts the driver task that owns the state, its
//! [`Clock`] and its timers, and carries out the core's effects (admin replies, login answers,
//! kicks through [`LocalSessions`], flush scripts) and saves the state ([`StateStore`]). Admin connections, proxy logins and
//! SIGHUP reach the core through a [`DirectorHandle`]. `docs/ARCHITECTURE.md` says which
//! thread touches the state when.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod clock;
pub mod core_api;
pub mod driver;
pub mod effects;
pub mod limits;
pub mod metrics;
mod ring_net;
pub mod ring_view;
pub mod state_store;

pub use clock::Clock;
pub use core_api::CoreError;
pub use driver::{
    spawn, DirectorHandle, Directors, DriverConfig, DriverExit, SaveOutcome, SaveReport,
    StateConfig,
};
pub use effects::sessions::{KickFuture, LocalSessions, NoLocalSessions};
pub use metrics::{DriverCounters, DriverMetrics, HostMetrics, RingMetrics};
pub use ring_net::RingDialer;
pub use ring_view::RingView;
pub use state_store::{StateStore, StateStoreError, STATE_FILE_NAME};

/// What the core answers a login with.
pub use director_core::{RequestError, Route};
