//! The director list and its circular order (spec §10.1, §10.7).
//!
//! Directors are sorted by (IP in Dovecot's order, port). Walking *upward* from ourselves
//! (wrapping) gives the order in which we prefer a right neighbour; walking *downward*
//! gives the order in which a left neighbour is "closer".

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use director_proto::ring::DirectorAddr;

/// Most directors kept in the list (Dovecot has no limit; a ring has a handful). Further
/// `DIRECTOR` announcements are ignored, so a misbehaving peer can't grow it without bound.
pub const MAX_DIRECTORS: usize = 1024;

/// A director is not connected to for this long after a connection to it failed or lasted
/// less than [`SHORT_CONNECTION_SECS`] (Dovecot: 60 s).
pub const NETWORK_FAILURE_SECS: u64 = 60;
/// … or after it broke the protocol (Dovecot: 60 s).
pub const PROTOCOL_FAILURE_SECS: u64 = 60;
/// A connection that dies younger than this counts as a network failure (Dovecot: 40 s).
pub const SHORT_CONNECTION_SECS: u64 = 40;

/// The identity a standalone director (empty `director_servers`) uses: `127.0.0.1:0`.
pub const STANDALONE_SELF: DirectorAddr = DirectorAddr {
    ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
    port: 0,
};

/// Dovecot's director order: IP (`net_ip_cmp`: IPv4 before IPv6, then address bytes),
/// then port.
pub fn addr_cmp(a: &DirectorAddr, b: &DirectorAddr) -> Ordering {
    a.ip.cmp(&b.ip).then(a.port.cmp(&b.port))
}

/// `ip:port` as Dovecot logs a director.
pub fn addr_text(a: &DirectorAddr) -> String {
    match a.ip {
        IpAddr::V4(v4) => format!("{v4}:{}", a.port),
        IpAddr::V6(v6) => format!("[{v6}]:{}", a.port),
    }
}

/// Position of `x` when walking upward from `me` (wrapping): `me` itself sorts last.
fn upward_key(me: &DirectorAddr, x: &DirectorAddr) -> (bool, DirectorAddr) {
    (addr_cmp(x, me) != Ordering::Greater, *x)
}

/// "Closer to my right": is `a` reached before `b` when walking upward from `me`?
pub fn closer_right(me: &DirectorAddr, a: &DirectorAddr, b: &DirectorAddr) -> bool {
    let (ka, kb) = (upward_key(me, a), upward_key(me, b));
    ka.0.cmp(&kb.0).then(addr_cmp(&ka.1, &kb.1)) == Ordering::Less
}

/// "Closer to my left": is `a` reached before `b` when walking downward from `me`?
pub fn closer_left(me: &DirectorAddr, a: &DirectorAddr, b: &DirectorAddr) -> bool {
    a != b && a != me && (b == me || closer_right(me, b, a))
}

/// Why [`find_self`] could not pick our identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelfError {
    /// The ring listener's address is not in `director_servers`.
    #[error("director_servers doesn't list ourself ({0})")]
    NotListed(String),
}

/// Self detection (§10.1): our identity is the ring listener's `ip:port`, which must be in
/// `director_servers`. A listener on the any-address takes the first listed director on
/// our port whose IP `is_local` says we can bind (the caller probes that; this crate does
/// no I/O). An empty `director_servers` is a standalone director: [`STANDALONE_SELF`].
pub fn find_self(
    listener: SocketAddr,
    servers: &[DirectorAddr],
    is_local: impl Fn(&IpAddr) -> bool,
) -> Result<DirectorAddr, SelfError> {
    if servers.is_empty() {
        return Ok(STANDALONE_SELF);
    }
    let me = DirectorAddr {
        ip: listener.ip(),
        port: listener.port(),
    };
    if listener.ip().is_unspecified() {
        return servers
            .iter()
            .find(|d| d.port == me.port && is_local(&d.ip))
            .copied()
            .ok_or_else(|| SelfError::NotListed(addr_text(&me)));
    }
    if servers.contains(&me) {
        Ok(me)
    } else {
        Err(SelfError::NotListed(addr_text(&me)))
    }
}

/// What we know about one director (including ourselves).
#[derive(Debug, Clone)]
pub(crate) struct DirectorEntry {
    pub addr: DirectorAddr,
    /// Removed with `DIRECTOR-REMOVE`; purged at the next ring sync or after 30 s.
    pub removed_at: Option<u64>,
    pub last_network_failure: Option<u64>,
    pub last_protocol_failure: Option<u64>,
    /// Highest seq seen from it in seq-tracked messages.
    pub last_seq: u32,
    /// Its latest SYNC's seq and timestamp.
    pub last_sync_seq: u32,
    pub last_sync_timestamp: u32,
    pub sync_duplicates: u32,
    /// A hosts_hash its SYNC carried that differed from ours (dropped once, then we resend
    /// our hosts).
    pub last_bad_hosts_hash: Option<u32>,
}

impl DirectorEntry {
    pub fn new(addr: DirectorAddr) -> Self {
        Self {
            addr,
            removed_at: None,
            last_network_failure: None,
            last_protocol_failure: None,
            last_seq: 0,
            last_sync_seq: 0,
            last_sync_timestamp: 0,
            sync_duplicates: 0,
            last_bad_hosts_hash: None,
        }
    }

    /// The director restarted (or may have): its counters start again from 0 (§10.7).
    pub fn reset_sequences(&mut self) {
        self.last_seq = 0;
        self.last_sync_seq = 0;
        self.last_sync_timestamp = 0;
        self.sync_duplicates = 0;
    }

    pub fn removed(&self) -> bool {
        self.removed_at.is_some()
    }

    /// Failed recently enough that we don't connect to it.
    pub fn failing(&self, now: u64) -> bool {
        self.last_network_failure
            .is_some_and(|t| now < t + NETWORK_FAILURE_SECS)
            || self
                .last_protocol_failure
                .is_some_and(|t| now < t + PROTOCOL_FAILURE_SECS)
    }

    /// `last_failed` of `DIRECTOR-LIST`: the later of the two failure marks, 0 = never.
    pub fn last_failed(&self) -> u64 {
        self.last_network_failure
            .unwrap_or(0)
            .max(self.last_protocol_failure.unwrap_or(0))
    }
}

/// The sorted director list.
#[derive(Debug, Clone)]
pub(crate) struct Directors {
    pub me: DirectorAddr,
    /// Sorted by [`addr_cmp`]; contains `me`.
    pub list: Vec<DirectorEntry>,
}

impl Directors {
    pub fn new(me: DirectorAddr, servers: &[DirectorAddr]) -> Self {
        let mut d = Self {
            me,
            list: Vec::new(),
        };
        d.add(me);
        for s in servers {
            d.add(*s);
        }
        d
    }

    fn position(&self, a: &DirectorAddr) -> Result<usize, usize> {
        self.list.binary_search_by(|e| addr_cmp(&e.addr, a))
    }

    pub fn get(&self, a: &DirectorAddr) -> Option<&DirectorEntry> {
        self.position(a).ok().map(|i| &self.list[i])
    }

    pub fn get_mut(&mut self, a: &DirectorAddr) -> Option<&mut DirectorEntry> {
        match self.position(a) {
            Ok(i) => Some(&mut self.list[i]),
            Err(_) => None,
        }
    }

    /// Adds a director; false if it was known or the list is full.
    pub fn add(&mut self, a: DirectorAddr) -> bool {
        match self.position(&a) {
            Ok(_) => false,
            Err(_) if self.list.len() >= MAX_DIRECTORS => {
                tracing::warn!(director = %addr_text(&a), limit = MAX_DIRECTORS,
                    "director list full, not adding");
                false
            }
            Err(i) => {
                self.list.insert(i, DirectorEntry::new(a));
                true
            }
        }
    }

    /// Is `ip` the address of a director in the ring (not removed)?
    pub fn ip_listed(&self, ip: &IpAddr) -> bool {
        self.list.iter().any(|e| e.addr.ip == *ip && !e.removed())
    }

    /// Other directors in the ring (not removed), upward from us.
    pub fn others_upward(&self) -> Vec<DirectorAddr> {
        let mut v: Vec<DirectorAddr> = self
            .list
            .iter()
            .filter(|e| e.addr != self.me && !e.removed())
            .map(|e| e.addr)
            .collect();
        let me = self.me;
        v.sort_by(|a, b| {
            if closer_right(&me, a, b) {
                Ordering::Less
            } else if a == b {
                Ordering::Equal
            } else {
                Ordering::Greater
            }
        });
        v
    }

    /// The director we should connect to: the first one upward from us that is neither
    /// removed nor failing (unless `ignore_failures`) and not in `skip`.
    pub fn preferred_right(
        &self,
        now: u64,
        ignore_failures: bool,
        skip: &[DirectorAddr],
    ) -> Option<DirectorAddr> {
        self.others_upward().into_iter().find(|a| {
            !skip.contains(a) && (ignore_failures || self.get(a).is_some_and(|e| !e.failing(now)))
        })
    }

    /// Drops removed directors (at a ring sync, or `older_than` for the 30 s purge).
    pub fn purge_removed(&mut self, older_than: Option<u64>) {
        let me = self.me;
        self.list.retain(|e| {
            e.addr == me
                || match (e.removed_at, older_than) {
                    (None, _) => true,
                    (Some(_), None) => false,
                    (Some(t), Some(limit)) => t > limit,
                }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn a(last: u8) -> DirectorAddr {
        DirectorAddr {
            ip: IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            port: 9090,
        }
    }

    #[test]
    fn right_and_left_order_wrap_around_self() {
        let me = a(12);
        // Upward from .12: .13, then wrap to .11.
        assert!(closer_right(&me, &a(13), &a(11)));
        assert!(!closer_right(&me, &a(11), &a(13)));
        // Downward from .12: .11, then wrap to .13.
        assert!(closer_left(&me, &a(11), &a(13)));
        assert!(!closer_left(&me, &a(13), &a(11)));
        // From .11 (the lab's d1), a new .13 is closer on the left than .12.
        assert!(closer_left(&a(11), &a(13), &a(12)));
    }

    #[test]
    fn preferred_right_skips_failing_and_removed() {
        let mut d = Directors::new(a(11), &[a(11), a(12), a(13), a(14)]);
        assert_eq!(d.others_upward(), vec![a(12), a(13), a(14)]);
        assert_eq!(d.preferred_right(100, false, &[]), Some(a(12)));
        d.get_mut(&a(12)).unwrap().last_network_failure = Some(90);
        assert_eq!(d.preferred_right(100, false, &[]), Some(a(13)));
        assert_eq!(d.preferred_right(100, true, &[]), Some(a(12)));
        assert_eq!(d.preferred_right(150, false, &[]), Some(a(12)));
        d.get_mut(&a(13)).unwrap().removed_at = Some(100);
        assert_eq!(d.preferred_right(100, false, &[]), Some(a(14)));
        let d3 = Directors::new(a(13), &[a(11), a(12), a(13)]);
        assert_eq!(d3.others_upward(), vec![a(11), a(12)]);
    }

    #[test]
    fn self_detection() {
        let servers = [a(11), a(12)];
        let l: SocketAddr = "127.0.0.12:9090".parse().unwrap();
        assert_eq!(find_self(l, &servers, |_| false), Ok(a(12)));
        let l: SocketAddr = "127.0.0.12:9091".parse().unwrap();
        assert!(find_self(l, &servers, |_| true).is_err());
        let l: SocketAddr = "0.0.0.0:9090".parse().unwrap();
        assert_eq!(find_self(l, &servers, |ip| *ip == a(12).ip), Ok(a(12)));
        assert_eq!(find_self(l, &[], |_| false), Ok(STANDALONE_SELF));
    }
}
