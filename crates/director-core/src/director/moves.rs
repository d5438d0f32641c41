//! Moves, kills, kicks and HOST-RESET-USERS (§11, §4): the per-user kill state machine
//! driven by kick/flush completions, ring notifications and timers.

use std::net::IpAddr;

use super::{Director, KickPurpose};
use crate::effect::{
    expand_flush_socket, Effect, FlushScriptArgs, KillCtx, KillState, OldHost, Ticket,
    MOVE_TIMEOUT_SECS,
};
use crate::host::{HostId, TagId};

impl Director {
    pub(super) fn old_host_of(&self, id: HostId) -> Option<OldHost> {
        self.hosts.get(id).map(|h| OldHost {
            ip: h.ip,
            down: h.down,
            vhost_count: h.vhost_count,
        })
    }

    /// §11.1 step 1 + 2 + 3.
    pub(super) fn start_move(
        &mut self,
        tag: TagId,
        hash: u32,
        host: HostId,
        self_initiated: bool,
        now: u64,
    ) {
        let old = match self.users.get(tag, hash, now) {
            None => {
                self.users.insert(tag, hash, host, now, now);
                None
            }
            Some(u) => {
                let old = self.old_host_of(u.host);
                self.users.set_host(tag, hash, host);
                self.users.refresh(tag, hash, now, now);
                old
            }
        };
        let new_ip = self.host_ip(host);
        if self_initiated {
            if let Some(ip) = new_ip {
                self.ring_effect(Effect::RingUserMove { hash, ip });
            }
        }
        self.start_kill(tag, hash, old, Some(host), false, self_initiated, now);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_kill(
        &mut self,
        tag: TagId,
        hash: u32,
        old: Option<OldHost>,
        new_host: Option<HostId>,
        forced: bool,
        self_initiated: bool,
        now: u64,
    ) {
        let key = (tag, hash);
        if self.kills.contains(&key) {
            return; // a kill is already in progress: just keep going
        }
        self.users.set_killing(tag, hash, true);
        let new_ip = new_host.and_then(|h| self.host_ip(h));
        let new_hostname = new_host.and_then(|h| self.hosts.get(h)?.hostname.clone());
        let must_kick = forced || old.as_ref().is_some_and(|o| Some(o.ip) != new_ip);
        let mut ctx = KillCtx {
            tag,
            hash,
            state: KillState::Killing,
            old_host: old,
            new_ip,
            new_hostname,
            self_initiated,
            forced,
            move_deadline: now.saturating_add(MOVE_TIMEOUT_SECS),
            delay_deadline: None,
            kick_ticket: None,
            flush_ticket: None,
        };
        if must_kick {
            let ticket = self.ticket();
            ctx.kick_ticket = Some(ticket);
            self.kick_tickets
                .insert(ticket, KickPurpose::Kill(tag, hash));
            self.effects.push_back(Effect::KickDirectorHash {
                ticket,
                hash,
                except_ip: None,
            });
            self.kills.insert(key, ctx);
        } else {
            self.kills.insert(key, ctx);
            self.kill_finished(key, now);
        }
    }

    /// The driver finished a kick it got from [`Effect::KickDirectorHash`], [`Effect::Kick`]
    /// or [`Effect::KickAlt`] (successfully or not — either way the slot is free).
    pub fn kick_finished(&mut self, ticket: Ticket, now: u64) {
        let Some(purpose) = self.kick_tickets.remove(&ticket) else {
            return;
        };
        if let KickPurpose::Kill(tag, hash) = purpose {
            let key = (tag, hash);
            let ours = self.kills.update(&key, |k| {
                let ours = k.kick_ticket == Some(ticket);
                if ours {
                    k.kick_ticket = None;
                }
                ours
            });
            if ours == Some(true) {
                self.kill_finished(key, now);
            }
        }
        self.run_pending_kicks();
    }

    pub(super) fn kill_finished(&mut self, key: (TagId, u32), now: u64) {
        let has_right = self.ring.has_right;
        let Some(k) = self.kills.get(&key) else {
            return;
        };
        if !has_right {
            self.flush_step(key, now);
        } else if k.self_initiated || k.state == KillState::NotifyReceived {
            self.kills
                .update(&key, |k| k.state = KillState::WaitingForEveryone);
            self.effects
                .push_back(Effect::RingUserKilled { hash: key.1 });
        } else {
            self.kills
                .update(&key, |k| k.state = KillState::WaitingForNotify);
        }
    }

    pub(super) fn flush_step(&mut self, key: (TagId, u32), now: u64) {
        let socket = self.settings.flush_socket.clone().filter(|s| !s.is_empty());
        let kick_delay = u64::from(self.settings.kick_delay_secs);
        let Some(k) = self.kills.get(&key) else {
            return;
        };
        if let (Some(socket), Some(old), Some(new_ip), true) =
            (socket, k.old_host.clone(), k.new_ip, k.self_initiated)
        {
            let socket = expand_flush_socket(&socket, &new_ip, k.new_hostname.as_deref());
            let ticket = self.ticket();
            self.kills.update(&key, |k| {
                k.state = KillState::Flushing;
                k.flush_ticket = Some(ticket);
            });
            self.flush_tickets.insert(ticket, key);
            self.effects.push_back(Effect::RunFlushScript {
                ticket,
                socket,
                args: FlushScriptArgs {
                    hash: key.1,
                    old_ip: old.ip,
                    new_ip,
                    old_down: old.down,
                    old_vhost_count: old.vhost_count,
                },
            });
        } else {
            self.kills.update(&key, |k| {
                k.state = KillState::Delay;
                k.delay_deadline = Some(now.saturating_add(kick_delay));
            });
        }
    }

    /// The flush script of [`Effect::RunFlushScript`] finished: success ends the move now,
    /// failure waits the kick delay first.
    pub fn flush_script_finished(&mut self, ticket: Ticket, success: bool, now: u64) {
        let Some(key) = self.flush_tickets.remove(&ticket) else {
            return;
        };
        let kick_delay = u64::from(self.settings.kick_delay_secs);
        if self.kills.get(&key).map(|k| k.flush_ticket) != Some(Some(ticket)) {
            return;
        }
        if success {
            self.finish_kill(key, now);
        } else {
            tracing::warn!(hash = key.1, "flush script failed");
            self.kills.update(&key, |k| {
                k.flush_ticket = None;
                k.state = KillState::Delay;
                k.delay_deadline = Some(now.saturating_add(kick_delay));
            });
        }
    }

    pub(super) fn finish_kill(&mut self, key: (TagId, u32), now: u64) {
        let Some(k) = self.kills.remove(&key) else {
            return;
        };
        self.kills.shrink();
        if let Some(t) = k.flush_ticket {
            self.flush_tickets.remove(&t);
        }
        self.users.set_killing(key.0, key.1, false);
        if k.forced {
            self.users.remove(key.0, key.1);
        }
        self.retry_pending(now);
        self.run_reset_jobs(now);
    }

    // ---- ring hooks -----------------------------------------------------------------------

    /// Ring `USER-MOVE hash ip` from another director (not yet seen): apply and start the
    /// kill with "self-initiated = false". Returns false if the host is unknown (ignored).
    pub fn ring_user_move(&mut self, hash: u32, ip: IpAddr, now: u64) -> bool {
        let Some(host) = self.hosts.lookup(&ip) else {
            return false;
        };
        let tag = self
            .hosts
            .get(host)
            .map(|h| h.tag)
            .unwrap_or(TagId::UNTAGGED);
        self.start_move(tag, hash, host, false, now);
        true
    }

    /// Ring `USER-KILLED hash` from the left neighbour (§11.2).
    pub fn ring_user_killed(&mut self, hash: u32, now: u64) {
        let tags: Vec<TagId> = self.hosts.tag_ids().collect();
        for tag in tags {
            let key = (tag, hash);
            if self.users.peek(tag, hash).is_none() {
                continue;
            }
            match self.kills.get(&key).map(|k| k.state) {
                Some(KillState::Killing) => {
                    self.kills
                        .update(&key, |k| k.state = KillState::NotifyReceived);
                }
                Some(KillState::WaitingForNotify) => {
                    self.kills
                        .update(&key, |k| k.state = KillState::WaitingForEveryone);
                    self.effects.push_back(Effect::RingUserKilled { hash });
                }
                Some(KillState::NotifyReceived) => {}
                Some(KillState::WaitingForEveryone) => {
                    self.flush_step(key, now);
                    self.effects
                        .push_back(Effect::RingUserKilledEverywhere { hash });
                }
                None | Some(KillState::Flushing | KillState::Delay) => {
                    self.effects
                        .push_back(Effect::RingUserKilledEverywhere { hash });
                }
            }
        }
    }

    /// Ring `USER-KILLED-EVERYWHERE hash` (unseen seq). Returns true if the message should
    /// be forwarded (our user was waiting for everyone).
    ///
    /// Looked up tag by tag, as Dovecot does: a loaded ring has a kill context per moved
    /// user, and this message comes once per move.
    pub fn ring_user_killed_everywhere(&mut self, hash: u32, now: u64) -> bool {
        let mut forward = false;
        let tags: Vec<TagId> = self.hosts.tag_ids().collect();
        for tag in tags {
            let key = (tag, hash);
            if self.kills.get(&key).map(|k| k.state) == Some(KillState::WaitingForEveryone) {
                self.flush_step(key, now);
                forward = true;
            }
        }
        forward
    }

    /// Our own `USER-WEAK` came back round the ring: the user is no longer weak.
    pub fn ring_user_weak_returned(&mut self, hash: u32, now: u64) {
        let tags: Vec<TagId> = self.hosts.tag_ids().collect();
        for tag in tags {
            if self.users.set_weak(tag, hash, false) {
                if let Some(u) = self.users.refresh(tag, hash, now, now) {
                    self.broadcast_user(&u);
                }
            }
        }
        self.retry_pending(now);
    }
}
