//! What the driver tells the metrics listener: the state at the moment of a scrape (hosts,
//! their users and vhosts, the ring) and counters of what the driver carried out. Every
//! counter changes under the state lock, so they are plain numbers in the state; a scrape
//! takes the lock once, like an admin request.

use std::net::IpAddr;

/// Counters of what the driver carried out since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverCounters {
    /// Admin requests run (every connection and listener together).
    pub admin_requests: u64,
    /// User moves carried out here: the user's local sessions on other backends are closed
    /// (`KICK-DIRECTOR-HASH`), whoever started the move.
    pub user_moves: u64,
    /// User kicks by name (`USER-KICK`, from here or the ring).
    pub user_kicks: u64,
    /// User kicks by passdb field (`USER-KICK-ALT`).
    pub user_kicks_alt: u64,
    /// Backends whose local sessions were all closed (`HOST-REMOVE`, `HOST-FLUSH`).
    pub backend_kicks: u64,
}

/// One mail server, as a scrape sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMetrics {
    /// Its address (the `backend` label).
    pub ip: IpAddr,
    /// Up (not marked down).
    pub up: bool,
    /// Its vhost count.
    pub vhosts: u32,
    /// Users assigned to it.
    pub users: u32,
}

/// The ring, as a scrape sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingMetrics {
    /// Open connections to other directors.
    pub peers: usize,
    /// Our latest SYNC came back (a standalone director always is).
    pub synced: bool,
}

/// Everything a scrape reads from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverMetrics {
    /// The mail servers, in host-list order.
    pub hosts: Vec<HostMetrics>,
    /// Users in the directory.
    pub users: usize,
    /// `None` for a standalone director.
    pub ring: Option<RingMetrics>,
    /// What the driver carried out.
    pub counters: DriverCounters,
    /// Logins that found the state busy and waited for the driver task.
    pub queued_logins: u64,
}
