//! The director's state as it is saved and restored across a restart: the hosts (runtime
//! changes included), the `director_mail_servers` they were saved under, and every user
//! assignment with its timestamp, so that expiry is honoured after a restart.
//!
//! [`Director::snapshot`] copies the state out (the caller encodes and writes it elsewhere,
//! off the state lock); [`Director::restore`] checks a whole snapshot before it replaces
//! anything, so a bad one leaves the director exactly as the config built it.

use std::collections::HashSet;
use std::net::IpAddr;

use super::{Director, RingHost};
use crate::host::{HostId, HostList, HostListError, VHOST_DEFAULT, VHOST_MAX};
use crate::user_directory::UserDirectory;
use crate::vhost_ring::RingSet;

/// One saved user assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedUser {
    /// User hash.
    pub hash: u32,
    /// Index of its host in [`Snapshot::hosts`] (the user's tag is that host's tag).
    pub host: u32,
    /// Last refresh, Unix seconds.
    pub timestamp: u32,
}

/// Everything that survives a restart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Unix time the snapshot was taken.
    pub saved_at: u64,
    /// The live hosts, in IP order.
    pub hosts: Vec<RingHost>,
    /// The `director_mail_servers` addresses in effect when it was taken: at restore, a
    /// config host not among them was added to the config since, and is added.
    pub config_hosts: Vec<IpAddr>,
    /// The user assignments, oldest first (expiry order).
    pub users: Vec<SavedUser>,
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Hosts restored (config additions included).
    pub hosts: usize,
    /// Users restored.
    pub users: usize,
    /// Users dropped because they expired while we were down.
    pub expired: usize,
    /// Config hosts added to `director_mail_servers` since the snapshot, added as new hosts.
    pub added_from_config: Vec<IpAddr>,
    /// Restored hosts the config does not list (kept, as a reload keeps them).
    pub not_in_config: Vec<IpAddr>,
}

/// Why a snapshot was refused; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The director already has users or work in progress: a restore replaces a fresh state.
    #[error("the director is not fresh (users or moves exist)")]
    NotFresh,
    /// The same host twice.
    #[error("host {0} is listed twice")]
    DuplicateHost(IpAddr),
    /// More vhosts than allowed.
    #[error("host {ip}: vhost count {count} is above {VHOST_MAX}")]
    VhostCount {
        /// The host.
        ip: IpAddr,
        /// Its count.
        count: u32,
    },
    /// A host list limit.
    #[error("host {ip}: {error}")]
    Hosts {
        /// The host.
        ip: IpAddr,
        /// The limit.
        error: HostListError,
    },
    /// A user names a host index that does not exist.
    #[error("user {index} (hash {hash}) names host #{host}, but there are {hosts} hosts")]
    UnknownHost {
        /// Position of the user in the snapshot.
        index: usize,
        /// Its hash.
        hash: u32,
        /// The host index it names.
        host: u32,
        /// How many hosts there are.
        hosts: usize,
    },
    /// A user appears twice in the same tag.
    #[error("user {index} (hash {hash}) is listed twice")]
    DuplicateUser {
        /// Position of the second one.
        index: usize,
        /// Its hash.
        hash: u32,
    },
    /// Users must be oldest first (the directory is rebuilt in one pass).
    #[error("user {index} (hash {hash}) is older than the user before it")]
    NotInExpiryOrder {
        /// Position of the user.
        index: usize,
        /// Its hash.
        hash: u32,
    },
}

impl Director {
    /// Grows whenever something a [`Snapshot`] holds changes (hosts, tags, users and their
    /// timestamps): the driver saves when it differs from the value it last saved.
    pub fn state_changes(&self) -> u64 {
        self.hosts.generation().wrapping_add(self.users.changes())
    }

    /// Whether the users came from a saved state and the ring has not been joined since.
    /// The ring then offers none of them in its handshake: a handshaked ring may have
    /// removed one of their hosts meanwhile, and Dovecot drops a connection whose handshake
    /// names an unknown host. Joining a handshaked ring replaces them with the ring's.
    pub fn has_unconfirmed_restored_users(&self) -> bool {
        self.restored_unconfirmed
    }

    /// A copy of the saved part of the state at `now`.
    pub fn snapshot(&self, now: u64) -> Snapshot {
        let hosts = self.ring_hosts();
        // HostId → index in `hosts`; ids are small and dense.
        let mut index: Vec<u32> = Vec::new();
        for (i, (id, _)) in self.hosts.iter().enumerate() {
            let slot = usize::from(id.0);
            if index.len() <= slot {
                index.resize(slot + 1, u32::MAX);
            }
            index[slot] = u32::try_from(i).unwrap_or(u32::MAX);
        }
        let users = self
            .users
            .iter()
            .filter_map(|u| {
                let host = *index.get(usize::from(u.host.0))?;
                (host != u32::MAX).then_some(SavedUser {
                    hash: u.hash,
                    host,
                    timestamp: u.timestamp,
                })
            })
            .collect();
        Snapshot {
            saved_at: now,
            hosts,
            config_hosts: self.settings.config_hosts.iter().map(|c| c.ip).collect(),
            users,
        }
    }

    /// Replaces the hosts and users of a freshly built director with `snapshot`'s, all or
    /// nothing: on error nothing changed.
    ///
    /// Users whose `timestamp + director_user_expire` passed by `now` are dropped. The
    /// saved host list wins over the config (it holds runtime adds, removes, vhost counts,
    /// down states and tags), except that a config host that is neither live nor in the
    /// snapshot's config list was added to the config since, and is added (100 vhosts, up),
    /// as a SIGHUP reload would have added it. The "Initial config" answers stay the
    /// config's.
    pub fn restore(
        &mut self,
        snapshot: &Snapshot,
        now: u64,
    ) -> Result<RestoreReport, RestoreError> {
        if !self.users.is_empty()
            || !self.kills.is_empty()
            || !self.pending_requests.is_empty()
            || !self.reset_jobs.is_empty()
        {
            return Err(RestoreError::NotFresh);
        }
        let mut hosts = HostList::new();
        let mut ids: Vec<HostId> = Vec::with_capacity(snapshot.hosts.len());
        for h in &snapshot.hosts {
            if h.vhost_count > VHOST_MAX {
                return Err(RestoreError::VhostCount {
                    ip: h.ip,
                    count: h.vhost_count,
                });
            }
            if hosts.lookup(&h.ip).is_some() {
                return Err(RestoreError::DuplicateHost(h.ip));
            }
            let id = hosts
                .add(h.ip, &h.tag, h.vhost_count, h.hostname.clone())
                .map_err(|error| RestoreError::Hosts { ip: h.ip, error })?;
            if let Some(m) = hosts.get_mut(id) {
                m.down = h.down;
                m.last_updown_change = h.last_updown_change;
            }
            ids.push(id);
        }
        let mut users = UserDirectory::new(self.settings.user_expire_secs);
        let expire = u64::from(users.expire_secs());
        let (mut expired, mut last_ts) = (0usize, 0u32);
        for (index, u) in snapshot.users.iter().enumerate() {
            let unknown = || RestoreError::UnknownHost {
                index,
                hash: u.hash,
                host: u.host,
                hosts: ids.len(),
            };
            let id = *usize::try_from(u.host)
                .ok()
                .and_then(|i| ids.get(i))
                .ok_or_else(unknown)?;
            if u.timestamp < last_ts {
                return Err(RestoreError::NotInExpiryOrder {
                    index,
                    hash: u.hash,
                });
            }
            last_ts = u.timestamp;
            if u64::from(u.timestamp) + expire <= now {
                expired += 1;
                continue;
            }
            let tag = hosts.get(id).map(|h| h.tag).ok_or_else(unknown)?;
            if users
                .insert(tag, u.hash, id, u64::from(u.timestamp), now)
                .is_none()
            {
                return Err(RestoreError::DuplicateUser {
                    index,
                    hash: u.hash,
                });
            }
        }
        let saved_config: HashSet<IpAddr> = snapshot.config_hosts.iter().copied().collect();
        let mut added_from_config = Vec::new();
        for c in &self.settings.config_hosts {
            if saved_config.contains(&c.ip) || hosts.lookup(&c.ip).is_some() {
                continue;
            }
            hosts
                .add(c.ip, &c.tag, VHOST_DEFAULT, c.hostname.clone())
                .map_err(|error| RestoreError::Hosts { ip: c.ip, error })?;
            added_from_config.push(c.ip);
        }
        let configured: HashSet<IpAddr> = self.settings.config_hosts.iter().map(|c| c.ip).collect();
        let not_in_config = hosts
            .iter()
            .map(|(_, h)| h.ip)
            .filter(|ip| !configured.contains(ip))
            .collect();
        let report = RestoreReport {
            hosts: hosts.len(),
            users: users.len(),
            expired,
            added_from_config,
            not_in_config,
        };
        // Everything checked: replace. The rings are rebuilt outright, since the new host
        // list's generation says nothing about the old rings.
        self.hosts = hosts;
        self.users = users;
        self.rings = RingSet::build(
            &self.hosts,
            self.settings.hashing_mode,
            &mut self.vhash_cache,
        );
        let live = &self.hosts;
        self.vhash_cache.retain(|ip| live.lookup(ip).is_some());
        self.restored_unconfirmed = !self.users.is_empty();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::parse_user_key;
    use crate::lookup::ConfigHost;
    use crate::{CoreSettings, RequestOutcome};

    const T0: u64 = 1_700_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    fn director(hosts: &[&str]) -> Director {
        Director::new(CoreSettings {
            config_hosts: hosts.iter().map(|h| ConfigHost::new(ip(h))).collect(),
            ..CoreSettings::default()
        })
        .expect("director")
    }

    fn host_of(d: &mut Director, user: &str, now: u64) -> Option<IpAddr> {
        d.user_lookup(&parse_user_key(user.as_bytes()), "", now)
            .expect("lookup")
            .current
            .map(|(ip, _)| ip)
    }

    fn login(d: &mut Director, user: &str, now: u64) -> IpAddr {
        match d.request(user.as_bytes(), "", now) {
            RequestOutcome::Ready(r) => r.ip,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    #[test]
    fn hosts_users_and_runtime_changes_survive_a_snapshot() {
        let mut d = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        d.host_set(ip("10.0.0.9"), Some("blue"), Some(50), T0)
            .expect("add");
        d.host_down(ip("10.0.0.2"), T0 + 1).expect("down");
        d.host_remove(ip("10.0.0.3"), T0).expect("remove");
        let before: Vec<(String, IpAddr)> = (0..200)
            .map(|i| {
                let u = format!("user{i}");
                let h = login(&mut d, &u, T0 + 2 + i);
                (u, h)
            })
            .collect();
        let snap = d.snapshot(T0 + 300);

        let mut e = director(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let report = e.restore(&snap, T0 + 300).expect("restore");
        assert_eq!(report.users, 200);
        assert_eq!(report.expired, 0);
        assert!(report.added_from_config.is_empty());
        assert_eq!(report.not_in_config, vec![ip("10.0.0.9")]);
        assert_eq!(e.host_list(), d.host_list());
        assert_eq!(e.hosts_hash(), d.hosts_hash());
        for (u, h) in &before {
            assert_eq!(host_of(&mut e, u, T0 + 300), Some(*h), "{u}");
            assert_eq!(login(&mut e, u, T0 + 301), *h, "{u}");
        }
        // The removed host stays removed, and is listed as removed from the config.
        assert_eq!(e.host_list_removed(), vec![ip("10.0.0.3")]);
        assert!(e.has_unconfirmed_restored_users());
        e.users().check_invariants().expect("invariants");
    }

    #[test]
    fn users_that_expired_while_down_are_dropped() {
        let mut d = director(&["10.0.0.1", "10.0.0.2"]);
        login(&mut d, "old", T0);
        login(&mut d, "new", T0 + 500);
        let snap = d.snapshot(T0 + 500);
        let mut e = director(&["10.0.0.1", "10.0.0.2"]);
        // Expiry is 900 s: "old" expires at T0 + 900.
        let report = e.restore(&snap, T0 + 900).expect("restore");
        assert_eq!((report.users, report.expired), (1, 1));
        assert_eq!(host_of(&mut e, "old", T0 + 900), None);
        assert!(host_of(&mut e, "new", T0 + 900).is_some());
    }

    #[test]
    fn a_host_added_to_the_config_since_is_added_and_a_removed_one_stays_removed() {
        let mut d = director(&["10.0.0.1", "10.0.0.2"]);
        d.host_remove(ip("10.0.0.2"), T0).expect("remove");
        let snap = d.snapshot(T0);
        let mut e = director(&["10.0.0.1", "10.0.0.2", "10.0.0.4"]);
        let report = e.restore(&snap, T0).expect("restore");
        assert_eq!(report.added_from_config, vec![ip("10.0.0.4")]);
        let live: Vec<IpAddr> = e.host_list().iter().map(|h| h.ip).collect();
        assert_eq!(live, vec![ip("10.0.0.1"), ip("10.0.0.4")]);
    }

    #[test]
    fn a_bad_snapshot_changes_nothing() {
        let mut d = director(&["10.0.0.1", "10.0.0.2"]);
        for i in 0..10 {
            login(&mut d, &format!("u{i}"), T0 + i);
        }
        let good = d.snapshot(T0 + 10);
        let mut cases = Vec::new();
        let mut s = good.clone();
        s.users[3].host = 7;
        cases.push(s);
        let mut s = good.clone();
        s.users[5].timestamp = 1;
        cases.push(s);
        let mut s = good.clone();
        let dup = s.users[2];
        s.users.insert(3, dup);
        cases.push(s);
        let mut s = good.clone();
        let h = s.hosts[0].clone();
        s.hosts.push(h);
        cases.push(s);
        let mut s = good.clone();
        s.hosts[1].vhost_count = VHOST_MAX + 1;
        cases.push(s);
        for bad in cases {
            let mut e = director(&["10.0.0.1", "10.0.0.3"]);
            let hosts = e.host_list();
            assert!(e.restore(&bad, T0 + 10).is_err(), "{bad:?}");
            assert_eq!(e.host_list(), hosts);
            assert_eq!(e.counters().users, 0);
            assert!(!e.has_unconfirmed_restored_users());
        }
        let mut e = director(&["10.0.0.1", "10.0.0.2"]);
        e.restore(&good, T0 + 10).expect("good");
        assert_eq!(e.restore(&good, T0 + 10), Err(RestoreError::NotFresh));
    }

    #[test]
    fn state_changes_follow_hosts_and_users_but_not_lookups() {
        let mut d = director(&["10.0.0.1", "10.0.0.2"]);
        let c0 = d.state_changes();
        login(&mut d, "bob", T0);
        let c1 = d.state_changes();
        assert_ne!(c1, c0);
        host_of(&mut d, "bob", T0);
        d.host_list();
        assert_eq!(d.state_changes(), c1);
        // Same second: nothing to save.
        login(&mut d, "bob", T0);
        assert_eq!(d.state_changes(), c1);
        login(&mut d, "bob", T0 + 1);
        let c2 = d.state_changes();
        assert_ne!(c2, c1);
        d.host_down(ip("10.0.0.1"), T0 + 2).expect("down");
        assert_ne!(d.state_changes(), c2);
    }

    #[test]
    fn joining_a_handshaked_ring_drops_the_restored_mark() {
        let mut d = director(&["10.0.0.1"]);
        login(&mut d, "bob", T0);
        let snap = d.snapshot(T0);
        let mut e = director(&["10.0.0.1"]);
        e.restore(&snap, T0).expect("restore");
        let joining = crate::RingStatus {
            handshaked: false,
            synced: false,
            has_right: false,
            has_peers: true,
        };
        e.set_ring_status(joining, T0);
        assert!(e.has_unconfirmed_restored_users());
        e.ring_clear_hosts(T0);
        assert!(!e.has_unconfirmed_restored_users());
        assert_eq!(e.counters().users, 0);
    }
}
