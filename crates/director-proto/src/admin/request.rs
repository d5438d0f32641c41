//! Admin requests (spec §8.3): parsing with Dovecot 2.3.19's exact
//! acceptance rules, and encoding for the CLI.
//!
//! Rules recorded from the real director (lab/admin/transcripts/raw_probes.*):
//! * the line is read as a C string: everything from the first NUL on is
//!   invisible (`HOST-\0LIST` → unknown command `HOST-`);
//! * command names are case-sensitive; an empty line is "empty command line";
//! * extra fields are ignored everywhere (`HOST-SET\tip\t5\textra` → OK);
//! * IPs use `net_addr2ip` rules ([`crate::value::parse_ip`]), numbers
//!   `str_to_uint` ([`crate::value::parse_uint`]), ports `net_str2port`;
//! * any error closes the connection without a reply; [`AdminParseError`]'s
//!   `Display` is the text Dovecot logs.

use std::net::IpAddr;
use std::num::NonZeroU32;

use thiserror::Error;

use crate::line::cut_at_nul;
use crate::tabescape::{escape_into, unescape};
use crate::value::{format_ip, parse_ip, parse_port, parse_uint};

/// Most fields any admin command looks at (USER-KICK-ALT: name + 3). Fields
/// past this are ignored without being unescaped.
pub const ADMIN_MAX_USED_FIELDS: usize = 4;

/// Largest vhost count the director accepts in HOST-SET/HOST-UPDATE; larger
/// values get the reply `vhost count too large` (a semantic check done by the
/// daemon, not a parse error). The core's limit, named for the wire.
pub const MAX_VHOST_COUNT: u32 = director_core::host::VHOST_MAX;

/// The vhost count a host gets when none is given (the core's default).
pub const DEFAULT_VHOST_COUNT: u32 = director_core::host::VHOST_DEFAULT;

/// Who a USER-MOVE is about: the core's [`UserKey`](director_core::hash::UserKey),
/// parsed by its [`parse_user_key`](director_core::hash::parse_user_key) as for every
/// other command: a decimal u32 is taken as the user hash, anything else is a username the
/// director hashes itself with `director_username_hash` (observed: `abc`, `12abc` and
/// `4294967296` are all accepted and hashed as names). Hash 0 crashes Dovecot 2.3.19; the
/// daemon must handle it gracefully.
pub use director_core::hash::UserKey as UserRef;

/// One admin command with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRequest {
    /// `HOST-LIST`: list mail hosts.
    HostList,
    /// `HOST-LIST-REMOVED`: config hosts no longer present.
    HostListRemoved,
    /// `DIRECTOR-LIST`: ring status.
    DirectorList,
    /// `DIRECTOR-ADD\tip[\tport]`; no port = own ring port.
    DirectorAdd {
        /// Director IP.
        ip: IpAddr,
        /// Ring port; `None` means "my own ring port".
        port: Option<u16>,
    },
    /// `DIRECTOR-REMOVE\tip[\tport]`; no port = first director with that IP.
    DirectorRemove {
        /// Director IP.
        ip: IpAddr,
        /// Ring port, if given.
        port: Option<u16>,
    },
    /// `HOST-SET\tip[@tag][\tvhosts]`: create or update a host.
    HostSet {
        /// Host IP.
        ip: IpAddr,
        /// Tag; empty when absent (`ip` and `ip@` are the same).
        tag: String,
        /// New vhost count; `None` keeps it (new hosts get 100).
        vhost_count: Option<u32>,
    },
    /// `HOST-UPDATE\tip[@tag]\tvhosts`: update an existing host only.
    HostUpdate {
        /// Host IP.
        ip: IpAddr,
        /// Tag; empty when absent.
        tag: String,
        /// New vhost count.
        vhost_count: u32,
    },
    /// `HOST-UP\tip`.
    HostUp {
        /// Host IP.
        ip: IpAddr,
    },
    /// `HOST-DOWN\tip`.
    HostDown {
        /// Host IP.
        ip: IpAddr,
    },
    /// `HOST-REMOVE\tip`.
    HostRemove {
        /// Host IP.
        ip: IpAddr,
    },
    /// `HOST-FLUSH[\tip]`: forget users' assignments right away.
    HostFlush {
        /// Host IP; `None` (missing or empty field) = all hosts.
        ip: Option<IpAddr>,
    },
    /// `HOST-RESET-USERS[\tip[\tmax]]`: move users back to their hashed host.
    HostResetUsers {
        /// Host IP; `None` (missing or empty field) = all hosts.
        ip: Option<IpAddr>,
        /// Max users moving in parallel; `None` = `director_max_parallel_moves`.
        max_moving_users: Option<NonZeroU32>,
    },
    /// `USER-LOOKUP[\tuser[\ttag]]`: both fields optional (empty when absent).
    UserLookup {
        /// Username, or a decimal hash (the daemon decides, §3.5).
        user: Vec<u8>,
        /// Tag; empty = untagged hosts.
        tag: String,
    },
    /// `USER-LIST[\tip]`.
    UserList {
        /// Only users on this host, if given.
        ip: Option<IpAddr>,
    },
    /// `USER-MOVE\tuser|hash\tip`.
    UserMove {
        /// The user.
        user: UserRef,
        /// Destination host.
        ip: IpAddr,
    },
    /// `USER-KICK\tuser[\tnowait]`.
    UserKick {
        /// Username (raw bytes).
        user: Vec<u8>,
        /// `nowait`: answer TRYAGAIN instead of waiting for a kick slot.
        nowait: bool,
    },
    /// `USER-KICK-ALT\tfield\tvalue[\tnowait]`.
    UserKickAlt {
        /// passdb field name.
        field: Vec<u8>,
        /// Field value.
        value: Vec<u8>,
        /// `nowait`: answer TRYAGAIN instead of waiting for a kick slot.
        nowait: bool,
    },
}

/// Why a request line was rejected. `Display` is exactly what Dovecot logs
/// (at error level); the connection is then closed without a reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdminParseError {
    /// The line had no fields.
    #[error("doveadm sent empty command line")]
    EmptyCommand,
    /// The command name is not known (case-sensitive). Carries the whole
    /// raw line (up to a NUL), which is what Dovecot logs: `FROB\targ` is
    /// logged as `unknown command: FROB<TAB>arg`.
    #[error("doveadm sent unknown command: {0}")]
    UnknownCommand(String),
    /// Missing or malformed arguments.
    #[error("doveadm sent invalid {command} parameters")]
    InvalidParameters {
        /// Command name.
        command: &'static str,
    },
    /// HOST-UP / HOST-DOWN with a missing or bad IP; Dovecot appends the argument.
    #[error("doveadm sent invalid {command} parameters: {arg}")]
    InvalidHostArgument {
        /// Command name.
        command: &'static str,
        /// The offending argument (empty when missing).
        arg: String,
    },
    /// HOST-RESET-USERS with a bad IP.
    #[error("doveadm sent invalid HOST-RESET-USERS ip: {0}")]
    InvalidResetUsersIp(String),
}

/// Command names, as sent on the wire.
pub mod command {
    #![allow(missing_docs)]
    pub const HOST_LIST: &str = "HOST-LIST";
    pub const HOST_LIST_REMOVED: &str = "HOST-LIST-REMOVED";
    pub const DIRECTOR_LIST: &str = "DIRECTOR-LIST";
    pub const DIRECTOR_ADD: &str = "DIRECTOR-ADD";
    pub const DIRECTOR_REMOVE: &str = "DIRECTOR-REMOVE";
    pub const HOST_SET: &str = "HOST-SET";
    pub const HOST_UPDATE: &str = "HOST-UPDATE";
    pub const HOST_UP: &str = "HOST-UP";
    pub const HOST_DOWN: &str = "HOST-DOWN";
    pub const HOST_REMOVE: &str = "HOST-REMOVE";
    pub const HOST_FLUSH: &str = "HOST-FLUSH";
    pub const HOST_RESET_USERS: &str = "HOST-RESET-USERS";
    pub const USER_LOOKUP: &str = "USER-LOOKUP";
    pub const USER_LIST: &str = "USER-LIST";
    pub const USER_MOVE: &str = "USER-MOVE";
    pub const USER_KICK: &str = "USER-KICK";
    pub const USER_KICK_ALT: &str = "USER-KICK-ALT";
}

impl AdminRequest {
    /// The wire name of the command.
    pub fn command_name(&self) -> &'static str {
        use command::*;
        match self {
            Self::HostList => HOST_LIST,
            Self::HostListRemoved => HOST_LIST_REMOVED,
            Self::DirectorList => DIRECTOR_LIST,
            Self::DirectorAdd { .. } => DIRECTOR_ADD,
            Self::DirectorRemove { .. } => DIRECTOR_REMOVE,
            Self::HostSet { .. } => HOST_SET,
            Self::HostUpdate { .. } => HOST_UPDATE,
            Self::HostUp { .. } => HOST_UP,
            Self::HostDown { .. } => HOST_DOWN,
            Self::HostRemove { .. } => HOST_REMOVE,
            Self::HostFlush { .. } => HOST_FLUSH,
            Self::HostResetUsers { .. } => HOST_RESET_USERS,
            Self::UserLookup { .. } => USER_LOOKUP,
            Self::UserList { .. } => USER_LIST,
            Self::UserMove { .. } => USER_MOVE,
            Self::UserKick { .. } => USER_KICK,
            Self::UserKickAlt { .. } => USER_KICK_ALT,
        }
    }

    /// Marked **\[G\]** in spec §8.2: the command waits until the ring is
    /// synced before it runs (bounded by 30 s → `Ring sync timed out`).
    pub fn waits_for_ring_sync(&self) -> bool {
        matches!(
            self,
            Self::DirectorAdd { .. }
                | Self::DirectorRemove { .. }
                | Self::HostSet { .. }
                | Self::HostUpdate { .. }
                | Self::HostUp { .. }
                | Self::HostDown { .. }
                | Self::HostRemove { .. }
                | Self::HostFlush { .. }
        )
    }

    /// Marked **\[S\]** in spec §8.2: `OK` is sent only after the change has
    /// travelled the ring (immediately when alone).
    pub fn ok_after_ring_sync(&self) -> bool {
        self.waits_for_ring_sync() && !matches!(self, Self::DirectorAdd { .. })
    }

    /// Whether the reply is a list terminated by an empty line.
    pub fn has_list_reply(&self) -> bool {
        matches!(
            self,
            Self::HostList | Self::HostListRemoved | Self::DirectorList | Self::UserList { .. }
        )
    }
}

/// Splits the used fields of a line (at most `ADMIN_MAX_USED_FIELDS`),
/// unescaping each; the rest is ignored like Dovecot ignores extra args.
fn used_fields(line: &[u8]) -> Vec<Vec<u8>> {
    if line.is_empty() {
        return Vec::new();
    }
    line.split(|&b| b == b'\t')
        .take(ADMIN_MAX_USED_FIELDS)
        .map(|f| {
            // Dovecot uses the unescaped fields as C strings: an escaped NUL
            // (`\x01 '0'`) ends the field.
            let mut v = unescape(f);
            let len = cut_at_nul(&v).len();
            v.truncate(len);
            v
        })
        .collect()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ip[@tag]`: the tag starts after the first `@`.
fn parse_ip_tag(field: &[u8]) -> Option<(IpAddr, String)> {
    let (ip, tag) = match field.iter().position(|&b| b == b'@') {
        Some(at) => (&field[..at], &field[at + 1..]),
        None => (field, &b""[..]),
    };
    Some((parse_ip(ip)?, lossy(tag)))
}

/// Parses one request line (without LF/CR) received after the handshake.
pub fn parse_request(line: &[u8]) -> Result<AdminRequest, AdminParseError> {
    use command::*;
    let line = cut_at_nul(line);
    let fields = used_fields(line);
    let Some((name, args)) = fields.split_first() else {
        return Err(AdminParseError::EmptyCommand);
    };
    let arg = |i: usize| args.get(i).map(Vec::as_slice);
    let invalid = |command: &'static str| AdminParseError::InvalidParameters { command };

    let req = match name.as_slice() {
        n if n == HOST_LIST.as_bytes() => AdminRequest::HostList,
        n if n == HOST_LIST_REMOVED.as_bytes() => AdminRequest::HostListRemoved,
        n if n == DIRECTOR_LIST.as_bytes() => AdminRequest::DirectorList,
        n if n == DIRECTOR_ADD.as_bytes() || n == DIRECTOR_REMOVE.as_bytes() => {
            let cmd = if n == DIRECTOR_ADD.as_bytes() {
                DIRECTOR_ADD
            } else {
                DIRECTOR_REMOVE
            };
            let ip = arg(0).and_then(parse_ip).ok_or(invalid(cmd))?;
            let port = match arg(1) {
                None => None,
                Some(p) => Some(parse_port(p).ok_or(invalid(cmd))?),
            };
            if cmd == DIRECTOR_ADD {
                AdminRequest::DirectorAdd { ip, port }
            } else {
                AdminRequest::DirectorRemove { ip, port }
            }
        }
        n if n == HOST_SET.as_bytes() => {
            let (ip, tag) = arg(0).and_then(parse_ip_tag).ok_or(invalid(HOST_SET))?;
            let vhost_count = match arg(1) {
                None => None,
                Some(v) => Some(parse_uint(v).ok_or(invalid(HOST_SET))?),
            };
            AdminRequest::HostSet {
                ip,
                tag,
                vhost_count,
            }
        }
        n if n == HOST_UPDATE.as_bytes() => {
            let (ip, tag) = arg(0).and_then(parse_ip_tag).ok_or(invalid(HOST_UPDATE))?;
            let vhost_count = arg(1).and_then(parse_uint).ok_or(invalid(HOST_UPDATE))?;
            AdminRequest::HostUpdate {
                ip,
                tag,
                vhost_count,
            }
        }
        n if n == HOST_UP.as_bytes() || n == HOST_DOWN.as_bytes() => {
            let cmd = if n == HOST_UP.as_bytes() {
                HOST_UP
            } else {
                HOST_DOWN
            };
            let raw = arg(0).unwrap_or_default();
            let ip =
                arg(0)
                    .and_then(parse_ip)
                    .ok_or_else(|| AdminParseError::InvalidHostArgument {
                        command: cmd,
                        arg: lossy(raw),
                    })?;
            if cmd == HOST_UP {
                AdminRequest::HostUp { ip }
            } else {
                AdminRequest::HostDown { ip }
            }
        }
        n if n == HOST_REMOVE.as_bytes() => {
            let ip = arg(0).and_then(parse_ip).ok_or(invalid(HOST_REMOVE))?;
            AdminRequest::HostRemove { ip }
        }
        n if n == HOST_FLUSH.as_bytes() => {
            let ip = match arg(0) {
                None | Some(b"") => None,
                Some(v) => Some(parse_ip(v).ok_or(invalid(HOST_FLUSH))?),
            };
            AdminRequest::HostFlush { ip }
        }
        n if n == HOST_RESET_USERS.as_bytes() => {
            // Dovecot checks the max before the IP: `bad\tx` is logged as
            // "invalid HOST-RESET-USERS parameters".
            let max_moving_users = match arg(1) {
                None => None,
                Some(v) => Some(
                    parse_uint(v)
                        .and_then(NonZeroU32::new)
                        .ok_or(invalid(HOST_RESET_USERS))?,
                ),
            };
            let ip = match arg(0) {
                None | Some(b"") => None,
                Some(v) => Some(
                    parse_ip(v).ok_or_else(|| AdminParseError::InvalidResetUsersIp(lossy(v)))?,
                ),
            };
            AdminRequest::HostResetUsers {
                ip,
                max_moving_users,
            }
        }
        n if n == USER_LOOKUP.as_bytes() => AdminRequest::UserLookup {
            user: arg(0).unwrap_or_default().to_vec(),
            tag: lossy(arg(1).unwrap_or_default()),
        },
        n if n == USER_LIST.as_bytes() => {
            // An empty field means "all hosts" (checked with Dovecot).
            let ip = match arg(0) {
                None | Some(b"") => None,
                Some(v) => Some(parse_ip(v).ok_or(invalid(USER_LIST))?),
            };
            AdminRequest::UserList { ip }
        }
        n if n == USER_MOVE.as_bytes() => {
            let (Some(user), Some(ip)) = (arg(0), arg(1)) else {
                return Err(invalid(USER_MOVE));
            };
            let ip = parse_ip(ip).ok_or(invalid(USER_MOVE))?;
            let user = director_core::hash::parse_user_key(user);
            AdminRequest::UserMove { user, ip }
        }
        n if n == USER_KICK.as_bytes() => {
            let user = arg(0).ok_or(invalid(USER_KICK))?.to_vec();
            AdminRequest::UserKick {
                user,
                nowait: arg(1) == Some(b"nowait"),
            }
        }
        n if n == USER_KICK_ALT.as_bytes() => {
            let (Some(field), Some(value)) = (arg(0), arg(1)) else {
                return Err(invalid(USER_KICK_ALT));
            };
            AdminRequest::UserKickAlt {
                field: field.to_vec(),
                value: value.to_vec(),
                nowait: arg(2) == Some(b"nowait"),
            }
        }
        _ => return Err(AdminParseError::UnknownCommand(lossy(line))),
    };
    Ok(req)
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    out.push(b'\t');
    escape_into(out, field);
}

fn push_ip_tag(out: &mut Vec<u8>, ip: &IpAddr, tag: &str) {
    let mut v = format_ip(ip).into_bytes();
    if !tag.is_empty() {
        v.push(b'@');
        v.extend_from_slice(tag.as_bytes());
    }
    push_field(out, &v);
}

/// Encodes a request as one line **with** its LF, the way doveadm 2.3 sends
/// it (fields tab-escaped; see the note on USER-LOOKUP).
///
/// Differences from doveadm, on purpose: doveadm sends USER-LOOKUP's user
/// unescaped (a TAB in the name becomes a tag); we escape it, which the
/// director accepts. For ordinary names the bytes are identical.
pub fn encode_request(req: &AdminRequest) -> Vec<u8> {
    let mut out = req.command_name().as_bytes().to_vec();
    match req {
        AdminRequest::HostList | AdminRequest::HostListRemoved | AdminRequest::DirectorList => {}
        AdminRequest::DirectorAdd { ip, port } | AdminRequest::DirectorRemove { ip, port } => {
            push_field(&mut out, format_ip(ip).as_bytes());
            if let Some(port) = port {
                push_field(&mut out, port.to_string().as_bytes());
            }
        }
        AdminRequest::HostSet {
            ip,
            tag,
            vhost_count,
        } => {
            push_ip_tag(&mut out, ip, tag);
            if let Some(n) = vhost_count {
                push_field(&mut out, n.to_string().as_bytes());
            }
        }
        AdminRequest::HostUpdate {
            ip,
            tag,
            vhost_count,
        } => {
            push_ip_tag(&mut out, ip, tag);
            push_field(&mut out, vhost_count.to_string().as_bytes());
        }
        AdminRequest::HostUp { ip }
        | AdminRequest::HostDown { ip }
        | AdminRequest::HostRemove { ip } => {
            push_field(&mut out, format_ip(ip).as_bytes());
        }
        AdminRequest::HostFlush { ip } | AdminRequest::UserList { ip } => {
            if let Some(ip) = ip {
                push_field(&mut out, format_ip(ip).as_bytes());
            }
        }
        AdminRequest::HostResetUsers {
            ip,
            max_moving_users,
        } => {
            let ip_text = ip.as_ref().map(format_ip).unwrap_or_default();
            match max_moving_users {
                // doveadm: `flush --max-parallel 5 all` → `HOST-RESET-USERS\t\t5`.
                Some(max) => {
                    push_field(&mut out, ip_text.as_bytes());
                    push_field(&mut out, max.to_string().as_bytes());
                }
                None if ip.is_some() => push_field(&mut out, ip_text.as_bytes()),
                None => {}
            }
        }
        AdminRequest::UserLookup { user, tag } => {
            push_field(&mut out, user);
            push_field(&mut out, tag.as_bytes());
        }
        AdminRequest::UserMove { user, ip } => {
            match user {
                UserRef::Hash(h) => push_field(&mut out, h.to_string().as_bytes()),
                UserRef::Name(n) => push_field(&mut out, n),
            }
            push_field(&mut out, format_ip(ip).as_bytes());
        }
        AdminRequest::UserKick { user, nowait } => {
            push_field(&mut out, user);
            if *nowait {
                push_field(&mut out, b"nowait");
            }
        }
        AdminRequest::UserKickAlt {
            field,
            value,
            nowait,
        } => {
            push_field(&mut out, field);
            push_field(&mut out, value);
            if *nowait {
                push_field(&mut out, b"nowait");
            }
        }
    }
    out.push(b'\n');
    out
}
