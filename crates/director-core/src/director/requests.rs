//! Login requests (§6): resolve a user to a host now, or queue it until the director's
//! state changes (ring synced, kill finished, host added…) or 30 s pass.

use super::{Director, PendingRequest, RequestOutcome, MAX_PENDING_REQUESTS, REQUEST_TIMEOUT_SECS};
use crate::effect::{Effect, RequestError, RequestId, Route, WaitReason};
use crate::hash::user_hash;
use crate::host::TagId;
use std::collections::VecDeque;
use std::net::IpAddr;

impl Director {
    /// Assigns a backend to a login of `username` with director tag `tag` (`""` = none).
    pub fn request(&mut self, username: &[u8], tag: &str, now: u64) -> RequestOutcome {
        let hash = match user_hash(username, &self.settings.username_hash) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "failed to hash username");
                return RequestOutcome::Failed(RequestError::HashFailed(e));
            }
        };
        match self.try_resolve(hash, tag, now) {
            Ok(route) => RequestOutcome::Ready(route),
            Err(reason) => {
                if self.pending_requests.len() >= MAX_PENDING_REQUESTS {
                    return RequestOutcome::Failed(RequestError::QueueFull);
                }
                let id = RequestId(self.next_request);
                self.next_request += 1;
                self.pending_requests.push_back(PendingRequest {
                    id,
                    hash,
                    tag: tag.to_string(),
                    deadline: now.saturating_add(REQUEST_TIMEOUT_SECS),
                    reason,
                });
                RequestOutcome::Queued(id, reason)
            }
        }
    }

    pub(super) fn try_resolve(
        &mut self,
        hash: u32,
        tag: &str,
        now: u64,
    ) -> Result<Route, WaitReason> {
        if !self.ring.handshaked {
            return Err(WaitReason::RingNotHandshaked);
        }
        let tag_id = self.hosts.tag_id(tag);
        let user = tag_id.and_then(|t| self.users.get(t, hash, now));
        if let (Some(u), Some(t)) = (user, tag_id) {
            if u.killing {
                return Err(WaitReason::KillWaiting);
            }
            let alone = !self.ring.has_right && self.ring.synced;
            if alone {
                self.users.set_weak(t, hash, false);
            } else if u.weak {
                return Err(WaitReason::WeakUser);
            } else if self.users.is_near_expiring(&u, now) {
                let hashed = self.hashed_host(t, hash);
                if !self.ring.synced {
                    return Err(WaitReason::RingNotSynced);
                }
                if hashed != Some(u.host) {
                    self.users.set_weak(t, hash, true);
                    if let Some(ip) = self.host_ip(u.host) {
                        self.ring_effect(Effect::RingUserWeak { hash, ip });
                    }
                    return Err(WaitReason::WeakUser);
                }
            }
            let Some(u) = self.users.refresh(t, hash, now, now) else {
                return Err(WaitReason::NoHosts);
            };
            self.broadcast_user(&u);
            return self.route(u.host).ok_or(WaitReason::NoHosts);
        }
        if !self.ring.synced {
            return Err(WaitReason::RingNotSynced);
        }
        let Some(t) = tag_id else {
            return Err(WaitReason::NoHosts);
        };
        let Some(host) = self.hashed_host(t, hash) else {
            return Err(WaitReason::NoHosts);
        };
        let Some(u) = self.users.insert(t, hash, host, now, now) else {
            return Err(WaitReason::NoHosts);
        };
        self.broadcast_user(&u);
        let route = self.route(host).ok_or(WaitReason::NoHosts)?;
        Ok(Route {
            new_user: true,
            ..route
        })
    }

    /// Retries waiting requests (Dovecot: only while the ring is synced).
    pub(super) fn retry_pending(&mut self, now: u64) {
        if !self.ring.synced || self.pending_requests.is_empty() {
            return;
        }
        let mut kept = VecDeque::with_capacity(self.pending_requests.len());
        for mut r in std::mem::take(&mut self.pending_requests) {
            match self.try_resolve(r.hash, &r.tag, now) {
                Ok(route) => self.effects.push_back(Effect::RequestDone {
                    id: r.id,
                    result: Ok(route),
                }),
                Err(reason) => {
                    r.reason = reason;
                    kept.push_back(r);
                }
            }
        }
        self.pending_requests = kept;
    }

    /// A login whose request created `username`'s assignment on `ip` ([`Route::new_user`])
    /// was refused by the backend (wrong password, unknown recipient): drop the assignment,
    /// unless it has since moved or is being moved. The caller makes sure that no other
    /// session of the user is open or logging in. Returns whether it was dropped.
    ///
    /// Only a director that has never had a ring peer drops it. In a ring the `USER` (or a
    /// handshake) may already have told the others, and no ring message takes an
    /// assignment back: dropping it here alone would leave this director without a user
    /// the rest of the ring keeps (for good, unless the user logs in again), and a later
    /// login here could pick another backend than the ring's. So, as in Dovecot, the
    /// assignment stays and expires as usual everywhere.
    pub fn discard_new_user(&mut self, username: &[u8], tag: &str, ip: IpAddr, now: u64) -> bool {
        if self.ring_peers_seen {
            return false;
        }
        let Ok(hash) = user_hash(username, &self.settings.username_hash) else {
            return false;
        };
        let Some(t) = self.hosts.tag_id(tag) else {
            return false;
        };
        let Some(u) = self.users.get(t, hash, now) else {
            return false;
        };
        if u.killing || u.weak || self.host_ip(u.host) != Some(ip) {
            return false;
        }
        self.users.remove(t, hash).is_some()
    }

    /// proxy-notify (§3.4, §7.3): a login process still proxies `username`; refresh it in
    /// every tag where it exists. Unknown users and hash failures are ignored.
    pub fn refresh_user(&mut self, username: &[u8], now: u64) {
        let Ok(hash) = user_hash(username, &self.settings.username_hash) else {
            return;
        };
        let tags: Vec<TagId> = self.hosts.tag_ids().collect();
        for t in tags {
            if let Some(old) = self.users.get(t, hash, now) {
                if self.users.expire_time(&old) < now {
                    tracing::warn!(hash, "user refreshed after it should have expired");
                }
                if let Some(u) = self.users.refresh(t, hash, now, now) {
                    self.broadcast_user(&u);
                }
            }
        }
    }
}
