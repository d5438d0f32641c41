//! The translation between the admin protocol and the director core's API.
//!
//! The driver speaks to [`director_core::Director`] through [`CoreState`]: admin requests in
//! (already parsed by `director-proto`), protocol replies out (now or later), effects and a
//! deadline. Keeping the translation here means a change in the core touches one file of the
//! driver. Time is whole Unix seconds, as the core wants it.

use std::time::Duration;

use director_core::effect::{AdminStatus, Effect, Ticket};
use director_core::hash::parse_user_key;
use director_core::lookup::ConfigHost;
use director_core::{
    AdminOutcome, CoreSettings, Director, HostError, RequestOutcome, UserMoveError,
};
use director_proto::admin::{
    AdminReply, AdminRequest, HostListEntry, UserListEntry, UserLookupReply,
};

/// The core's answer to an admin request.
pub enum AdminStart {
    /// The reply, now.
    Done(AdminReply),
    /// The reply will come as [`Effect::AdminDone`] with this ticket.
    Pending(Ticket),
}

/// Why the core could not be built or reloaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CoreError(pub String);

/// The core, as the driver sees it.
pub struct CoreState {
    director: Director,
}

fn secs(now: Duration) -> u64 {
    now.as_secs()
}

/// The wire's reply for the core's status (of a request finished now or of a pending ticket).
pub fn status_reply(status: AdminStatus) -> AdminReply {
    match status {
        AdminStatus::Ok => AdminReply::OK,
        AdminStatus::NotFound => AdminReply::NOT_FOUND,
        AdminStatus::TryAgain => AdminReply::TRY_AGAIN,
    }
}

fn host_result(r: Result<(), HostError>) -> AdminReply {
    match r {
        Ok(()) => AdminReply::OK,
        Err(HostError::NotFound) => AdminReply::NOT_FOUND,
        Err(e) => AdminReply::text(&e.reply()),
    }
}

/// `ip` and `ip@` mean "no tag given": Dovecot only checks a tag when it is non-empty.
fn tag_arg(tag: &str) -> Option<&str> {
    if tag.is_empty() {
        None
    } else {
        Some(tag)
    }
}

/// The core's Unix seconds as the wire's signed `time_t` (saturating; never reached).
fn wire_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl CoreState {
    /// Builds the core from settings.
    pub fn new(settings: CoreSettings) -> Result<Self, CoreError> {
        let director = Director::new(settings).map_err(|e| CoreError(e.to_string()))?;
        Ok(CoreState { director })
    }

    /// Starts an admin request. `DIRECTOR-*` commands are answered by the driver's ring view
    /// and never get here; if one does, it is a no-op `OK`.
    pub fn admin(&mut self, request: AdminRequest, now: Duration) -> AdminStart {
        let now = secs(now);
        let d = &mut self.director;
        let done = match request {
            AdminRequest::HostList => AdminReply::HostList(
                d.host_list()
                    .into_iter()
                    .map(|h| HostListEntry {
                        ip: h.ip,
                        vhost_count: h.vhost_count,
                        user_count: h.user_count,
                        tag: h.tag,
                        down: h.down,
                        last_updown_change: wire_time(h.last_updown_change),
                    })
                    .collect(),
            ),
            AdminRequest::HostListRemoved => AdminReply::HostListRemoved(d.host_list_removed()),
            AdminRequest::HostSet {
                ip,
                tag,
                vhost_count,
            } => host_result(d.host_set(ip, tag_arg(&tag), vhost_count, now)),
            AdminRequest::HostUpdate {
                ip,
                tag,
                vhost_count,
            } => host_result(d.host_update(ip, tag_arg(&tag), vhost_count, now)),
            AdminRequest::HostUp { ip } => host_result(d.host_up(ip, now)),
            AdminRequest::HostDown { ip } => host_result(d.host_down(ip, now)),
            AdminRequest::HostRemove { ip } => host_result(d.host_remove(ip, now)),
            AdminRequest::HostFlush { ip } => host_result(d.host_flush(ip, now)),
            AdminRequest::HostResetUsers {
                ip,
                max_moving_users,
            } => match d.reset_users(ip, max_moving_users.map(|m| m.get()), now) {
                Ok(ticket) => return AdminStart::Pending(ticket),
                Err(e) => host_result(Err(e)),
            },
            AdminRequest::UserLookup { user, tag } => {
                match d.user_lookup(&parse_user_key(&user), &tag, now) {
                    Ok(l) => AdminReply::UserLookup(UserLookupReply {
                        current: l.current.map(|(ip, _)| ip),
                        expire: l.current.map_or(0, |(_, e)| wire_time(e)),
                        hashed: l.hashed,
                        initial: l.initial,
                    }),
                    Err(e) => {
                        tracing::error!(error = %e, "USER-LOOKUP: username hash failed");
                        AdminReply::TRY_AGAIN
                    }
                }
            }
            AdminRequest::UserList { ip } => AdminReply::UserList(
                d.user_list(ip, now)
                    .into_iter()
                    .map(|u| UserListEntry {
                        hash: u.hash,
                        expire: wire_time(u.expire),
                        ip: u.ip,
                    })
                    .collect(),
            ),
            AdminRequest::UserMove { user, ip } => match d.user_move(&user, ip, now) {
                Ok(()) => AdminReply::OK,
                Err(UserMoveError::NotFound) => AdminReply::NOT_FOUND,
                Err(UserMoveError::TryAgain) => AdminReply::TRY_AGAIN,
            },
            AdminRequest::UserKick { user, nowait } => {
                return outcome(d.user_kick(&user, nowait, now))
            }
            AdminRequest::UserKickAlt {
                field,
                value,
                nowait,
            } => return outcome(d.user_kick_alt(&lossy(&field), &lossy(&value), nowait, now)),
            AdminRequest::DirectorList
            | AdminRequest::DirectorAdd { .. }
            | AdminRequest::DirectorRemove { .. } => AdminReply::OK,
        };
        AdminStart::Done(done)
    }

    /// A login for `username` (§6): a backend now, a queued request that ends in
    /// [`Effect::RequestDone`], or a failure. The proxy has no director tags: tag `""`.
    pub fn request(&mut self, username: &[u8], now: Duration) -> RequestOutcome {
        self.director.request(username, "", secs(now))
    }

    /// A login that created `username`'s assignment on `ip` was refused by the backend.
    pub fn discard_new_user(
        &mut self,
        username: &[u8],
        ip: std::net::IpAddr,
        now: Duration,
    ) -> bool {
        self.director.discard_new_user(username, "", ip, secs(now))
    }

    /// The core, read-only (snapshots, the change counter, the ring status).
    pub fn director(&self) -> &Director {
        &self.director
    }

    /// The core itself, for the ring, which applies what other directors tell it.
    pub fn director_mut(&mut self) -> &mut Director {
        &mut self.director
    }

    /// The IPs of every host.
    pub fn host_ips(&self) -> Vec<std::net::IpAddr> {
        self.director
            .host_list()
            .into_iter()
            .map(|h| h.ip)
            .collect()
    }

    /// A proxied session of `username` is still open (§3.4 proxy-notify).
    pub fn refresh_user(&mut self, username: &[u8], now: Duration) {
        self.director.refresh_user(username, secs(now));
    }

    /// Unix time (seconds) of the next timer, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        self.director.next_timeout()
    }

    /// Runs expired timers.
    pub fn on_timeout(&mut self, now: Duration) {
        self.director.handle_timeout(secs(now));
    }

    /// The next effect, if any.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.director.poll_effect()
    }

    /// A kick effect finished.
    pub fn kick_done(&mut self, ticket: Ticket, now: Duration) {
        self.director.kick_finished(ticket, secs(now));
    }

    /// A flush effect finished.
    pub fn flush_done(&mut self, ticket: Ticket, success: bool, now: Duration) {
        self.director
            .flush_script_finished(ticket, success, secs(now));
    }

    /// Replaces the configured mail servers (SIGHUP): the core merges them (new config hosts
    /// are added, live hosts are never dropped by a reload).
    pub fn reload_hosts(
        &mut self,
        hosts: Vec<ConfigHost>,
        now: Duration,
    ) -> Result<String, CoreError> {
        let report = self
            .director
            .reload_config_hosts(hosts, secs(now))
            .map_err(|e| CoreError(e.to_string()))?;
        Ok(format!(
            "added {:?}, not in config (kept) {:?}, tag conflicts {:?}",
            report.added, report.not_in_config, report.tag_conflicts
        ))
    }
}

fn outcome(o: AdminOutcome) -> AdminStart {
    match o {
        AdminOutcome::Done(status) => AdminStart::Done(status_reply(status)),
        AdminOutcome::Pending(t) => AdminStart::Pending(t),
    }
}
