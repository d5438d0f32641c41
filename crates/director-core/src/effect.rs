//! The move/kill state machine's vocabulary (§11): per-user kill contexts, the effects the
//! core asks its driver to perform, and the tickets that tie completions back.
//!
//! Shaped like quinn-proto: [`crate::director::Director`] methods take `now`, push
//! [`Effect`]s onto a queue that the driver drains with `poll_effect()`, and the driver
//! reports completions (`kick_finished`, `flush_script_finished`) with the effect's
//! [`Ticket`]. Timers are exposed as `next_timeout()` / `handle_timeout(now)`.
//!
//! States per user (§11.2): `Killing` (waiting for the local kick) → either the flush step
//! directly (alone in the ring) or `WaitingForNotify` / `WaitingForEveryone` while the
//! `USER-KILLED` token travels the ring → `Flushing` (flush script) → `Delay`
//! (`director_user_kick_delay`) → freed. A 30 s move timer frees the context from any
//! state but `Delay`.

use std::net::IpAddr;

use crate::host::TagId;

/// Moves that don't finish within this many seconds are abandoned ("move timed out").
pub const MOVE_TIMEOUT_SECS: u64 = 30;

/// Identifies an outstanding piece of work reported back by the driver (a kick, a flush
/// script run, or an admin command whose reply comes later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Identifies a login request that had to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Kill state of a user being moved or kicked (§11.2; "none" = no context).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillState {
    /// Waiting for the local kick of the user's connections.
    Killing,
    /// `USER-KILLED` arrived from the left before our own kick finished.
    NotifyReceived,
    /// Our kick finished; waiting for `USER-KILLED` from the left.
    WaitingForNotify,
    /// We sent `USER-KILLED` right; waiting for the token to come back round.
    WaitingForEveryone,
    /// The flush script is running.
    Flushing,
    /// Waiting `director_user_kick_delay` for backend processes to die.
    Delay,
}

/// What the user's old host looked like when the move started (flush script arguments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OldHost {
    /// Old host address.
    pub ip: IpAddr,
    /// Was it down?
    pub down: bool,
    /// Its vhost count.
    pub vhost_count: u32,
}

/// Kill context of one (tag, hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillCtx {
    /// Tag of the user's directory.
    pub tag: TagId,
    /// User hash.
    pub hash: u32,
    /// Current state.
    pub state: KillState,
    /// Host before the move (`None` if the user was new).
    pub old_host: Option<OldHost>,
    /// Host the user moves to (`None` for a forced kick with no host left).
    pub new_ip: Option<IpAddr>,
    /// New host's name (for `%h` in the flush socket).
    pub new_hostname: Option<String>,
    /// Started by this director (admin/reset) rather than by a ring `USER-MOVE`.
    pub self_initiated: bool,
    /// Forced kick (HOST-RESET-USERS with no host left): the user is dropped afterwards.
    pub forced: bool,
    /// The move timer: give up at this time (any state but `Delay`).
    pub move_deadline: u64,
    /// End of the `Delay` state.
    pub delay_deadline: Option<u64>,
    /// Outstanding local kick, if any.
    pub kick_ticket: Option<Ticket>,
    /// Outstanding flush script run, if any.
    pub flush_ticket: Option<Ticket>,
}

/// Arguments of the flush script (§11.3): `FLUSH <hash> <old ip> <new ip> down|up <old vhosts>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushScriptArgs {
    /// User hash.
    pub hash: u32,
    /// Old host.
    pub old_ip: IpAddr,
    /// New host.
    pub new_ip: IpAddr,
    /// Old host was down.
    pub old_down: bool,
    /// Old host's vhost count.
    pub old_vhost_count: u32,
}

impl FlushScriptArgs {
    /// The argument strings in order, as sent to the script.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "FLUSH".to_string(),
            self.hash.to_string(),
            crate::host::inet_ntop(&self.old_ip),
            crate::host::inet_ntop(&self.new_ip),
            if self.old_down { "down" } else { "up" }.to_string(),
            self.old_vhost_count.to_string(),
        ]
    }
}

/// The outcome of an admin command that answers with a bare status line (the protocol crate
/// encodes it; this is only the decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminStatus {
    /// `OK`
    Ok,
    /// `NOTFOUND`
    NotFound,
    /// `TRYAGAIN`
    TryAgain,
}

/// Where a login should go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Backend address.
    pub ip: IpAddr,
    /// Backend host name from the config, if known (sent as `host=`, with `hostip=`).
    pub hostname: Option<String>,
    /// This request created the user's assignment. If the backend then refuses the login,
    /// a director that has never been in a ring drops the assignment again
    /// ([`crate::Director::discard_new_user`]), so made-up names cost nothing.
    pub new_user: bool,
}

/// Why a login request waits (and the reason in its timeout message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The ring hasn't completed its first handshake.
    RingNotHandshaked,
    /// The ring is not synced and we need it to be.
    RingNotSynced,
    /// The user is being moved or kicked.
    KillWaiting,
    /// The user is weak (host change being confirmed by the ring).
    WeakUser,
    /// No host available for the user's tag.
    NoHosts,
}

impl WaitReason {
    /// Text used in logs and timeout errors (Dovecot's wording).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RingNotHandshaked => "ring not handshaked",
            Self::RingNotSynced => "ring not synced",
            Self::KillWaiting => "kill waiting",
            Self::WeakUser => "weak user",
            Self::NoHosts => "no hosts",
        }
    }
}

/// Why a login request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The username could not be hashed.
    #[error(transparent)]
    HashFailed(#[from] crate::hash::HashError),
    /// Queued longer than the request timeout.
    #[error("Timeout because {}", .0.as_str())]
    Timeout(WaitReason),
    /// Too many requests are already waiting.
    #[error("too many pending requests")]
    QueueFull,
}

/// Work the core asks its driver to do. Drain with `Director::poll_effect()`.
///
/// Variants named `Ring*` are messages for the director ring; a standalone director (no
/// ring peers) never gets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Kill local proxied connections whose user hash is `hash` (IPC `KICK-DIRECTOR-HASH`),
    /// except those to `except_ip`. Report with `kick_finished(ticket)`.
    KickDirectorHash {
        /// Completion ticket.
        ticket: Ticket,
        /// User hash.
        hash: u32,
        /// Keep connections to this backend.
        except_ip: Option<IpAddr>,
    },
    /// Kill local connections of `username` (IPC `KICK`). Report with `kick_finished`.
    Kick {
        /// Completion ticket.
        ticket: Ticket,
        /// Username.
        username: Vec<u8>,
    },
    /// Kill local connections whose passdb field `field` equals `value` (IPC `KICK-ALT`).
    KickAlt {
        /// Completion ticket.
        ticket: Ticket,
        /// passdb field (`user_<field>`).
        field: String,
        /// Value to match.
        value: String,
    },
    /// Kill every local proxied connection to backend `ip`: its users were dropped without a
    /// move (`HOST-REMOVE`, `HOST-FLUSH`), so their next logins may hash elsewhere while an
    /// old session still serves them there. Dovecot's director leaves those connections to
    /// the login processes; a director that is the whole proxy tier must close them.
    /// Nothing to report back.
    KickBackend {
        /// The backend.
        ip: IpAddr,
    },
    /// Run `director_flush_socket` (already `%i`/`%h`-expanded) with these arguments.
    /// Report with `flush_script_finished(ticket, success)`.
    RunFlushScript {
        /// Completion ticket.
        ticket: Ticket,
        /// Program-client URI (`unix:…`, `tcp:…`, `exec:…`).
        socket: String,
        /// Script arguments.
        args: FlushScriptArgs,
    },
    /// An admin command that returned a pending ticket has finished.
    AdminDone {
        /// The ticket the command returned.
        ticket: Ticket,
        /// Its outcome.
        status: AdminStatus,
    },
    /// A queued login request finished.
    RequestDone {
        /// The id `request()` returned.
        id: RequestId,
        /// Where to go, or why not.
        result: Result<Route, RequestError>,
    },
    /// Ring: broadcast `USER <hash> <ip> <timestamp>`.
    RingUser {
        /// User hash.
        hash: u32,
        /// Host.
        ip: IpAddr,
        /// Timestamp.
        timestamp: u32,
    },
    /// Ring: originate `USER-WEAK <hash> <ip>`.
    RingUserWeak {
        /// User hash.
        hash: u32,
        /// Host.
        ip: IpAddr,
    },
    /// Ring: originate `USER-MOVE <hash> <ip>`.
    RingUserMove {
        /// User hash.
        hash: u32,
        /// New host.
        ip: IpAddr,
    },
    /// Ring: send `USER-KILLED <hash>` to the right neighbour.
    RingUserKilled {
        /// User hash.
        hash: u32,
    },
    /// Ring: originate `USER-KILLED-EVERYWHERE <hash>`.
    RingUserKilledEverywhere {
        /// User hash.
        hash: u32,
    },
    /// Ring: originate `USER-KICK <username>`.
    RingUserKick {
        /// Username.
        username: Vec<u8>,
    },
    /// Ring: originate `USER-KICK-ALT <field> <value>`.
    RingUserKickAlt {
        /// Field.
        field: String,
        /// Value.
        value: String,
    },
}

/// Expands `%i`/`%{ip}` and `%h`/`%{host}` in `director_flush_socket` (§11.3): the new
/// host's IP and host name (empty if unknown). `%%` is a percent sign; other items are
/// kept literally.
pub fn expand_flush_socket(template: &str, ip: &IpAddr, hostname: Option<&str>) -> String {
    let ip_text = crate::host::inet_ntop(ip);
    let host = hostname.unwrap_or("");
    let mut out = String::with_capacity(template.len() + ip_text.len());
    let mut rest = template;
    while let Some(p) = rest.find('%') {
        out.push_str(&rest[..p]);
        let after = &rest[p + 1..];
        let (rep, used): (Option<&str>, usize) = if after.starts_with("{ip}") {
            (Some(&ip_text), 4)
        } else if after.starts_with("{host}") {
            (Some(host), 6)
        } else if after.starts_with('i') {
            (Some(&ip_text), 1)
        } else if after.starts_with('h') {
            (Some(host), 1)
        } else if after.starts_with('%') {
            (Some("%"), 1)
        } else {
            (None, 0)
        };
        match rep {
            Some(r) => {
                out.push_str(r);
                rest = &after[used..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_socket_expansion() {
        let ip: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(
            expand_flush_socket("unix:/run/flush-%i-%h", &ip, Some("b2")),
            "unix:/run/flush-10.0.0.2-b2"
        );
        assert_eq!(
            expand_flush_socket("tcp:%{host}:99 %{ip} 100%% %x", &ip, None),
            "tcp::99 10.0.0.2 100% %x"
        );
    }

    #[test]
    fn flush_args() {
        let a = FlushScriptArgs {
            hash: 5,
            old_ip: "10.0.0.1".parse().expect("ip"),
            new_ip: "::1".parse().expect("ip"),
            old_down: true,
            old_vhost_count: 100,
        };
        assert_eq!(
            a.to_args(),
            ["FLUSH", "5", "10.0.0.1", "::1", "down", "100"]
        );
    }
}
