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

/// A mail host as the ring carries it (`HOST` lines).
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
            self.mark_changed(id);
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
            if let Some(h) = self.hosts.get_mut(id) {
                h.last_updown_change = new_updown;
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
        self.mark_changed(id);
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
        let ids: Vec<HostId> = self.hosts.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.forget_users_of(id);
            self.hosts.remove(id);
        }
        self.after_users_dropped(now);
    }

    /// A handshake `U hash ip timestamp [w]` line (§10.6): refreshed like a `USER`, never
    /// forwarded. An unknown host is an error (the caller drops the connection).
    pub fn ring_handshake_user(
        &mut self,
        hash: u32,
        ip: &IpAddr,
        timestamp: u32,
        weak: bool,
        now: u64,
    ) -> Result<(), UnknownHostError> {
        match self.ring_user_refresh(hash, ip, Some(timestamp), weak, now) {
            RingUserOutcome::UnknownHost => Err(UnknownHostError(*ip)),
            _ => Ok(()),
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
