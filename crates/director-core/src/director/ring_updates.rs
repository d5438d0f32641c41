//! State changes that arrive over the director ring (§10.3, §10.5, §10.6): hosts and users
//! announced by other directors, merged into ours with Dovecot's conflict rules, and the
//! local kicks that ring `USER-KICK*` messages ask for.
//!
//! The ring state machine (`director-ring`) decides which messages are new and where they
//! go next; these methods only apply them and say whether anything changed, which is what
//! decides forwarding.

use std::net::IpAddr;

use super::{Director, KickPurpose};
use crate::effect::Effect;
use crate::host::{ip_cmp, HostId, VHOST_MAX};

/// A mail host as the ring carries it (`HOST` lines) and as the saved state keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingHost {
    /// Backend address.
    pub ip: IpAddr,
    /// Vhost count (capped at [`VHOST_MAX`] when applied).
    pub vhost_count: u32,
    /// Tag; empty = untagged.
    pub tag: String,
    /// Down (no new users).
    pub down: bool,
    /// Unix time of the last up/down change (0 = never).
    pub last_updown_change: u64,
    /// Host name, if any.
    pub hostname: Option<String>,
}

/// What applying a ring `HOST` did (§10.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingHostOutcome {
    /// Same as ours: not forwarded.
    Unchanged,
    /// Added or updated as received: forward the message.
    Applied,
    /// Our own change of this host has not gone round the ring yet and the update
    /// conflicts with it: the merged result (lower vhost count, the up/down state changed
    /// last) was applied and must be sent round the ring as our own `HOST`.
    Merged(RingHost),
    /// The host could not be added (host list limits); logged.
    Refused,
}

/// What applying a ring `USER`/`USER-WEAK` did (§10.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingUserOutcome {
    /// The host IP is not one of ours: ignored.
    UnknownHost,
    /// Already expired (`timestamp + director_user_expire <= now`): ignored.
    Expired,
    /// Nothing changed (at most the timestamp moved forward): not forwarded.
    Unchanged,
    /// The assignment changed: forward `USER hash ip timestamp` with these values.
    Changed {
        /// The host the user is now on (ours, when we kept it).
        ip: IpAddr,
        /// The user's timestamp after the update.
        timestamp: u32,
        /// We took the received, lower host over ours: send it back to the sender too.
        forced: bool,
        /// Two directors had assigned different hosts: connections elsewhere than
        /// this host must die, so originate `USER-KICK-HASH hash ip` (the local kick is
        /// already queued as [`Effect::KickDirectorHash`]).
        kick_except: Option<IpAddr>,
    },
}

/// A handshake `U` line named a host we don't have: Dovecot treats it as a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("handshake USER for unknown host {0}")]
pub struct UnknownHostError(pub IpAddr);

impl Director {
    /// Our record of host `ip` as the ring sends it.
    pub fn ring_host_record(&self, ip: &IpAddr) -> Option<RingHost> {
        let id = self.hosts.lookup(ip)?;
        self.ring_host_of(id)
    }

    fn ring_host_of(&self, id: HostId) -> Option<RingHost> {
        let h = self.hosts.get(id)?;
        Some(RingHost {
            ip: h.ip,
            vhost_count: h.vhost_count,
            tag: self.hosts.tag_name(h.tag).to_string(),
            down: h.down,
            last_updown_change: h.last_updown_change,
            hostname: h.hostname.clone(),
        })
    }

    /// Every host, in IP order, as the ring sends them (handshake, hosts_hash resend).
    pub fn ring_hosts(&self) -> Vec<RingHost> {
        self.hosts
            .iter()
            .filter_map(|(id, _)| self.ring_host_of(id))
            .collect()
    }

    /// Applies a `HOST` from the ring (handshake or update), §10.5.
    pub fn ring_host(&mut self, r: &RingHost, now: u64) -> RingHostOutcome {
        let vhosts = r.vhost_count.min(VHOST_MAX);
        let Some(id) = self.hosts.lookup(&r.ip) else {
            let id = match self.hosts.add(r.ip, &r.tag, vhosts, r.hostname.clone()) {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!(host = %r.ip, error = %e, "ring HOST refused");
                    return RingHostOutcome::Refused;
                }
            };
            if let Some(h) = self.hosts.get_mut(id) {
                h.down = r.down;
                h.last_updown_change = r.last_updown_change;
            }
            // Learnt, not changed here: not desynced (see the update case below), or a
            // next change of it arriving before our own re-sync would be merged away.
            self.hosts.touch();
            self.retry_pending(now);
            return RingHostOutcome::Applied;
        };
        let Some(cur) = self.ring_host_of(id) else {
            return RingHostOutcome::Unchanged;
        };
        let desynced = self.hosts.get(id).is_some_and(|h| h.desynced);
        let (mut new_vhosts, mut new_down) = (vhosts, r.down);
        let mut new_updown = r.last_updown_change.max(cur.last_updown_change);
        let differs = cur.vhost_count != vhosts || cur.down != r.down || cur.tag != r.tag;
        if !differs {
            if new_updown != cur.last_updown_change {
                if let Some(h) = self.hosts.get_mut(id) {
                    h.last_updown_change = new_updown;
                }
                // Saved with the host: the saved state must learn it.
                self.hosts.touch();
            }
            return RingHostOutcome::Unchanged;
        }
        let mut merged = false;
        if desynced {
            tracing::warn!(
                host = %r.ip,
                our_vhosts = cur.vhost_count, our_down = cur.down,
                their_vhosts = vhosts, their_down = r.down,
                "Ring is desynced: host changed here and elsewhere at once"
            );
            new_vhosts = new_vhosts.min(cur.vhost_count);
            if cur.last_updown_change > r.last_updown_change {
                new_down = cur.down;
                new_updown = cur.last_updown_change;
            }
            merged = true;
        }
        if cur.tag != r.tag {
            match self.hosts.intern_tag(&r.tag) {
                Ok(tag) => {
                    self.forget_users_of(id);
                    if let Some(h) = self.hosts.get_mut(id) {
                        h.tag = tag;
                    }
                }
                Err(e) => {
                    tracing::error!(host = %r.ip, error = %e, "ring HOST tag refused");
                    return RingHostOutcome::Refused;
                }
            }
        }
        if let Some(h) = self.hosts.get_mut(id) {
            h.vhost_count = new_vhosts;
            h.down = new_down;
            h.last_updown_change = new_updown;
        }
        if merged {
            // The merge is a change of ours: it goes round as ours, and a third change that
            // meets it before the ring syncs is merged again.
            self.mark_changed(id);
        } else {
            // Learnt from the ring, not changed here. Dovecot marks it desynced all the
            // same, so that a next change from the same admin, arriving before this
            // director's own re-sync, is merged down to the smaller vhost count and lost
            // (its ring answered two of three pipelined HOST-SET/UPDATE/DOWN and never
            // applied the update). Only a host changed here is desynced.
            self.hosts.touch();
        }
        self.after_users_dropped(now);
        if merged {
            match self.ring_host_of(id) {
                Some(m) => RingHostOutcome::Merged(m),
                None => RingHostOutcome::Unchanged,
            }
        } else {
            RingHostOutcome::Applied
        }
    }

    /// Applies a ring `HOST-REMOVE`: the host and its users go. False if unknown (ignored).
    pub fn ring_host_remove(&mut self, ip: &IpAddr, now: u64) -> bool {
        self.host_remove(*ip, now).is_ok()
    }

    /// Applies a ring `HOST-FLUSH`: the host's users are dropped. False if unknown.
    pub fn ring_host_flush(&mut self, ip: &IpAddr, now: u64) -> bool {
        self.host_flush(Some(*ip), now).is_ok()
    }

    /// Handshake `HOST-HAND-START 1` while our ring is not handshaked: we adopt the
    /// peer's host list, so ours is deleted first (with its users).
    pub fn ring_clear_hosts(&mut self, now: u64) {
        self.restored_unconfirmed = false;
        let ids: Vec<HostId> = self.hosts.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.forget_users_of(id);
            self.hosts.remove(id);
        }
        self.after_users_dropped(now);
    }

    /// A handshake `U hash ip timestamp [w]` line (§10.6): refreshed like a `USER`. What
    /// changed is returned: Dovecot never forwards handshake users, the ring may (see
    /// `director_ring::Ring`). An unknown host is an error (the caller drops the connection).
    pub fn ring_handshake_user(
        &mut self,
        hash: u32,
        ip: &IpAddr,
        timestamp: u32,
        weak: bool,
        now: u64,
    ) -> Result<RingUserOutcome, UnknownHostError> {
        match self.ring_user_refresh(hash, ip, Some(timestamp), weak, now) {
            RingUserOutcome::UnknownHost => Err(UnknownHostError(*ip)),
            out => Ok(out),
        }
    }

    /// A ring `USER hash ip [timestamp]` (`weak = false`) or a first-seen `USER-WEAK`
    /// (`weak = true`), §10.6.
    pub fn ring_user(
        &mut self,
        hash: u32,
        ip: &IpAddr,
        timestamp: Option<u32>,
        weak: bool,
        now: u64,
    ) -> RingUserOutcome {
        let out = self.ring_user_refresh(hash, ip, timestamp, weak, now);
        if matches!(out, RingUserOutcome::Changed { .. }) {
            self.retry_pending(now);
        }
        out
    }

    fn ring_user_refresh(
        &mut self,
        hash: u32,
        ip: &IpAddr,
        timestamp: Option<u32>,
        weak: bool,
        now: u64,
    ) -> RingUserOutcome {
        let Some(host) = self.hosts.lookup(ip) else {
            return RingUserOutcome::UnknownHost;
        };
        let Some(tag) = self.hosts.get(host).map(|h| h.tag) else {
            return RingUserOutcome::UnknownHost;
        };
        let expire = u64::from(self.users.expire_secs());
        let ts = timestamp.map_or(now, u64::from).min(now);
        if ts + expire <= now {
            return RingUserOutcome::Expired;
        }
        let Some(user) = self.users.get(tag, hash, now) else {
            let Some(u) = self.users.insert(tag, hash, host, ts, now) else {
                return RingUserOutcome::Unchanged;
            };
            if weak {
                self.users.set_weak(tag, hash, true);
            }
            return RingUserOutcome::Changed {
                ip: *ip,
                timestamp: u.timestamp,
                forced: false,
                kick_except: None,
            };
        };
        let mut chosen = host;
        let mut changed = false;
        let mut forced = false;
        let mut kick_except = None;
        if user.weak {
            if !weak {
                self.users.set_weak(tag, hash, false);
                changed = true;
            }
        } else if weak && !self.users.is_recently_updated(&user, now) {
            self.users.set_weak(tag, hash, true);
            changed = true;
        } else if weak {
            // Being moved, or not near expiry: our host stands, and the others learn it.
            chosen = user.host;
            changed = true;
        } else if user.host != host {
            if self.users.is_near_expiring(&user, now) {
                changed = true;
            } else if user.killing {
                // Directors that haven't seen the move yet don't get to undo it.
                chosen = user.host;
            } else {
                let ours = self.host_ip(user.host);
                tracing::error!(
                    user_hash = hash,
                    ours = ?ours, theirs = %ip,
                    "User hash is being redirected to two hosts"
                );
                // Everyone settles on the lower IP, so two directors can't fight.
                match ours {
                    Some(o) if ip_cmp(&o, ip).is_gt() => forced = true,
                    _ => chosen = user.host,
                }
                if let Some(except) = self.host_ip(chosen) {
                    let ticket = self.ticket();
                    self.kick_tickets.insert(ticket, KickPurpose::Admin);
                    self.effects.push_back(Effect::KickDirectorHash {
                        ticket,
                        hash,
                        except_ip: Some(except),
                    });
                    kick_except = Some(except);
                }
                changed = true;
            }
        }
        if chosen != user.host {
            self.users.set_host(tag, hash, chosen);
        }
        // Timestamps only move forward; a USER without one (an old peer) does not refresh
        // a record refreshed moments ago, so two such peers can't ping-pong it.
        let leeway = u64::from((self.users.expire_secs() / 4).min(15));
        let fresh = timestamp.is_none() && u64::from(user.timestamp) + leeway >= now;
        let u = if fresh {
            self.users.peek(tag, hash)
        } else {
            self.users.refresh(tag, hash, ts, now)
        };
        if !changed {
            return RingUserOutcome::Unchanged;
        }
        match (u, self.host_ip(chosen)) {
            (Some(u), Some(ip)) => RingUserOutcome::Changed {
                ip,
                timestamp: u.timestamp,
                forced,
                kick_except,
            },
            _ => RingUserOutcome::Unchanged,
        }
    }

    /// Ring `USER-KICK username`: kick the user's local connections (no reply expected
    /// on the ring; the kick's completion frees its slot).
    pub fn ring_user_kick(&mut self, username: &[u8]) {
        let ticket = self.ticket();
        self.kick_tickets.insert(ticket, KickPurpose::Admin);
        self.effects.push_back(Effect::Kick {
            ticket,
            username: username.to_vec(),
        });
    }

    /// Ring `USER-KICK-ALT field value`: kick local connections with that passdb field.
    pub fn ring_user_kick_alt(&mut self, field: &str, value: &str) {
        let ticket = self.ticket();
        self.kick_tickets.insert(ticket, KickPurpose::Admin);
        self.effects.push_back(Effect::KickAlt {
            ticket,
            field: field.to_string(),
            value: value.to_string(),
        });
    }

    /// Ring `USER-KICK-HASH hash except_ip`: kick local connections of the user hash
    /// except those to `except_ip`.
    pub fn ring_user_kick_hash(&mut self, hash: u32, except_ip: IpAddr) {
        let ticket = self.ticket();
        self.kick_tickets.insert(ticket, KickPurpose::Admin);
        self.effects.push_back(Effect::KickDirectorHash {
            ticket,
            hash,
            except_ip: Some(except_ip),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::director::{CoreSettings, RingStatus};
    use crate::lookup::ConfigHost;

    const NOW: u64 = 1_795_896_443;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip literal")
    }

    /// A director in a synced ring with a right neighbour, hosts .1 .2 .3.
    fn ringed() -> Director {
        let settings = CoreSettings {
            config_hosts: ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
                .iter()
                .map(|h| ConfigHost::new(ip(h)))
                .collect(),
            ..CoreSettings::default()
        };
        let mut d = Director::new(settings).expect("director");
        d.set_ring_status(
            RingStatus {
                handshaked: true,
                synced: true,
                has_right: true,
                has_peers: true,
            },
            NOW,
        );
        d
    }

    fn host(ip_s: &str, vhosts: u32, down: bool, updown: u64) -> RingHost {
        RingHost {
            ip: ip(ip_s),
            vhost_count: vhosts,
            tag: String::new(),
            down,
            last_updown_change: updown,
            hostname: None,
        }
    }

    #[test]
    fn host_added_updated_and_unchanged() {
        let mut d = ringed();
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 5, false, 0), NOW),
            RingHostOutcome::Applied
        );
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 5, false, 0), NOW),
            RingHostOutcome::Unchanged
        );
        // Only vhosts, down and tag count as a change; the up/down time only grows.
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 5, false, 7), NOW),
            RingHostOutcome::Unchanged
        );
        assert_eq!(
            d.ring_host_record(&ip("10.0.0.9"))
                .unwrap()
                .last_updown_change,
            7
        );
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 6, true, 3), NOW),
            RingHostOutcome::Applied
        );
        let r = d.ring_host_record(&ip("10.0.0.9")).unwrap();
        assert_eq!((r.vhost_count, r.down, r.last_updown_change), (6, true, 7));
    }

    #[test]
    fn a_host_learnt_from_the_ring_takes_the_next_update_as_is() {
        let mut d = ringed();
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 10, false, 0), NOW),
            RingHostOutcome::Applied
        );
        // The same admin's next change arrives before this director's own re-sync.
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 70, false, 0), NOW),
            RingHostOutcome::Applied
        );
        assert_eq!(
            d.ring_host(&host("10.0.0.9", 70, true, NOW), NOW),
            RingHostOutcome::Applied
        );
        let r = d.ring_host_record(&ip("10.0.0.9")).unwrap();
        assert_eq!((r.vhost_count, r.down), (70, true));
    }

    #[test]
    fn conflicting_update_of_a_host_we_changed_merges_and_is_reoriginated() {
        let mut d = ringed();
        // Our own change, not yet synced round the ring: the host is desynced.
        d.host_down(ip("10.0.0.2"), NOW + 10).unwrap();
        assert_eq!(
            d.host_update(ip("10.0.0.2"), None, 50, NOW),
            Err(crate::director::HostError::AlreadyBeingUpdated)
        );
        // Someone else set vhosts 20 and "up" earlier than our down.
        let out = d.ring_host(&host("10.0.0.2", 20, false, NOW + 5), NOW + 11);
        let RingHostOutcome::Merged(m) = out else {
            panic!("expected a merge, got {out:?}");
        };
        // Lower vhost count, and our down state (changed later).
        assert_eq!(
            (m.vhost_count, m.down, m.last_updown_change),
            (20, true, NOW + 10)
        );
    }

    #[test]
    fn users_from_the_ring() {
        let mut d = ringed();
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        // New user: created, forwarded.
        assert!(matches!(
            d.ring_user(7, &a, Some(NOW as u32), false, NOW),
            RingUserOutcome::Changed {
                forced: false,
                kick_except: None,
                ..
            }
        ));
        // Same host again with a newer time: refreshed, not forwarded.
        assert_eq!(
            d.ring_user(7, &a, Some(NOW as u32 + 5), false, NOW + 5),
            RingUserOutcome::Unchanged
        );
        // Unknown host and expired updates are ignored.
        assert_eq!(
            d.ring_user(8, &ip("10.9.9.9"), None, false, NOW),
            RingUserOutcome::UnknownHost
        );
        assert_eq!(
            d.ring_user(9, &a, Some(NOW as u32 - 900), false, NOW),
            RingUserOutcome::Expired
        );
        // Conflict: the lower IP wins everywhere. We have .1, they say .2: keep ours, kick
        // elsewhere, not forced.
        let out = d.ring_user(7, &b, Some(NOW as u32 + 6), false, NOW + 6);
        assert_eq!(
            out,
            RingUserOutcome::Changed {
                ip: a,
                timestamp: NOW as u32 + 6,
                forced: false,
                kick_except: Some(a)
            }
        );
        // The other way round: we have .2, they say .1: take theirs, forced back to sender.
        d.ring_user(11, &b, Some(NOW as u32), false, NOW);
        let out = d.ring_user(11, &a, Some(NOW as u32 + 1), false, NOW + 1);
        assert!(
            matches!(out, RingUserOutcome::Changed { forced: true, kick_except: Some(x), .. } if x == a)
        );
        let kicks = std::iter::from_fn(|| d.poll_effect())
            .filter(|e| {
                matches!(
                    e,
                    Effect::KickDirectorHash {
                        except_ip: Some(_),
                        ..
                    }
                )
            })
            .count();
        assert_eq!(kicks, 2);
    }

    #[test]
    fn handshake_users_need_a_known_host() {
        let mut d = ringed();
        assert!(d
            .ring_handshake_user(5, &ip("10.0.0.3"), NOW as u32, true, NOW)
            .is_ok());
        assert!(
            d.users()
                .peek(crate::host::TagId::UNTAGGED, 5)
                .unwrap()
                .weak
        );
        assert_eq!(
            d.ring_handshake_user(6, &ip("10.7.7.7"), NOW as u32, false, NOW),
            Err(UnknownHostError(ip("10.7.7.7")))
        );
    }
}
