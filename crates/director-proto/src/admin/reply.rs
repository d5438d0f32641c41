//! Admin replies (spec §8.3/§8.4): encoders for the server and decoders for
//! the CLI.
//!
//! Two shapes exist on the wire:
//! * one line: `OK`, `NOTFOUND`, `TRYAGAIN`, a human-readable text such as
//!   `vhost count too large`, or the USER-LOOKUP tuple;
//! * a list (HOST-LIST, HOST-LIST-REMOVED, DIRECTOR-LIST, USER-LIST): zero or
//!   more lines, then an empty line.
//!
//! The client knows which command it sent, so decoding is driven by the
//! request: [`ReplyReader::new`] takes the request and is fed lines.

use std::net::IpAddr;

use thiserror::Error;

use super::request::AdminRequest;
use crate::tabescape::{escape_into, split_fields};
use crate::value::{format_ip, parse_ip, parse_uint, write_ip, write_uint};

/// Most lines a list reply may have before the client gives up (protects the
/// CLI from a runaway server). Dovecot has no such limit; 10 million users
/// is far beyond any real director.
pub const MAX_LIST_REPLY_LINES: usize = 10_000_000;

/// A single-line status reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StatusReply {
    /// `OK`
    Ok,
    /// `NOTFOUND`
    NotFound,
    /// `TRYAGAIN`
    TryAgain,
    /// Any other text line; see the `TEXT_*` constants for the known ones.
    Text(String),
}

/// HOST-SET/HOST-UPDATE with more than [`super::MAX_VHOST_COUNT`] vhosts.
pub const TEXT_VHOST_COUNT_TOO_LARGE: &str = "vhost count too large";
/// HOST-SET/UPDATE changing the tag of an existing host.
pub const TEXT_HOST_TAG_CANT_BE_CHANGED: &str = "host tag can't be changed";
/// Host changes while the ring is desynced.
pub const TEXT_HOST_BEING_UPDATED: &str = "host is already being updated - try again later";
/// A ring-sync-gated command waited more than 30 s.
pub const TEXT_RING_SYNC_TIMED_OUT: &str = "Ring sync timed out";

impl StatusReply {
    /// The line, without LF.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "OK",
            Self::NotFound => "NOTFOUND",
            Self::TryAgain => "TRYAGAIN",
            Self::Text(t) => t,
        }
    }

    /// Parses a status line (without LF).
    pub fn parse(line: &[u8]) -> Self {
        match line {
            b"OK" => Self::Ok,
            b"NOTFOUND" => Self::NotFound,
            b"TRYAGAIN" => Self::TryAgain,
            other => Self::Text(String::from_utf8_lossy(other).into_owned()),
        }
    }
}

/// The USER-LOOKUP answer: `current\texpire\thashed\tinitial`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserLookupReply {
    /// Host the user is assigned to now; `None` = not assigned (empty field).
    pub current: Option<IpAddr>,
    /// Expiry of the assignment (Unix seconds); 0 when not assigned.
    pub expire: i64,
    /// Host by the vhost ring now; `None` = no host (e.g. unknown tag).
    pub hashed: Option<IpAddr>,
    /// Host by the initial config; `None` = no host.
    pub initial: Option<IpAddr>,
}

/// One HOST-LIST line: `ip\tvhost_count\tuser_count\ttag\tU|D\tlast_updown_change`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostListEntry {
    /// Host IP.
    pub ip: IpAddr,
    /// Vhost count.
    pub vhost_count: u32,
    /// Users currently assigned.
    pub user_count: u32,
    /// Tag, empty when none.
    pub tag: String,
    /// `D` on the wire.
    pub down: bool,
    /// Unix time of the last up/down change; 0 = never.
    pub last_updown_change: i64,
}

/// One USER-LIST line: `hash\texpire\tip`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserListEntry {
    /// User hash.
    pub hash: u32,
    /// Expiry (Unix seconds).
    pub expire: i64,
    /// Host IP.
    pub ip: IpAddr,
}

/// One DIRECTOR-LIST line, kept as its fields: the line has several shapes
/// (spec §8.4) and doveadm renders it column by column as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectorListEntry {
    /// The unescaped fields, in order.
    pub fields: Vec<String>,
}

impl DirectorListEntry {
    /// No fields, or a single empty one: such a line would be the list's
    /// empty terminator on the wire.
    pub fn is_blank(&self) -> bool {
        matches!(self.fields.as_slice(), [] | [_]) && self.fields.iter().all(String::is_empty)
    }
}

/// A complete admin reply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AdminReply {
    /// Single-line status.
    Status(StatusReply),
    /// USER-LOOKUP answer.
    UserLookup(UserLookupReply),
    /// HOST-LIST.
    HostList(Vec<HostListEntry>),
    /// HOST-LIST-REMOVED: the IPs.
    HostListRemoved(Vec<IpAddr>),
    /// DIRECTOR-LIST.
    DirectorList(Vec<DirectorListEntry>),
    /// USER-LIST.
    UserList(Vec<UserListEntry>),
}

impl AdminReply {
    /// `OK`.
    pub const OK: Self = Self::Status(StatusReply::Ok);
    /// `NOTFOUND`.
    pub const NOT_FOUND: Self = Self::Status(StatusReply::NotFound);
    /// `TRYAGAIN`.
    pub const TRY_AGAIN: Self = Self::Status(StatusReply::TryAgain);

    /// A text status line such as [`TEXT_VHOST_COUNT_TOO_LARGE`].
    pub fn text(t: &str) -> Self {
        Self::Status(StatusReply::Text(t.to_owned()))
    }

    /// Encodes the reply: all its lines with LFs, including a list's
    /// terminating empty line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded reply to `out` (pipelined replies share one buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Status(s) => {
                // A status is one line: never let a text break the framing.
                out.extend(s.as_str().bytes().filter(|&b| b != b'\n' && b != b'\r'));
                out.push(b'\n');
            }
            Self::UserLookup(r) => {
                encode_user_lookup_into(out, r);
            }
            Self::HostList(entries) => {
                for e in entries {
                    encode_host_list_line_into(out, e);
                }
                out.push(b'\n');
            }
            Self::HostListRemoved(ips) => {
                for ip in ips {
                    out.extend_from_slice(format_ip(ip).as_bytes());
                    out.push(b'\n');
                }
                out.push(b'\n');
            }
            Self::DirectorList(entries) => {
                // An entry that would encode to an empty line would end the
                // list early; such entries carry nothing and are skipped.
                for e in entries.iter().filter(|e| !e.is_blank()) {
                    for (i, f) in e.fields.iter().enumerate() {
                        if i > 0 {
                            out.push(b'\t');
                        }
                        escape_into(out, f.as_bytes());
                    }
                    out.push(b'\n');
                }
                out.push(b'\n');
            }
            Self::UserList(entries) => {
                for e in entries {
                    encode_user_list_line_into(out, e);
                }
                out.push(b'\n');
            }
        }
    }
}

/// Appends the USER-LOOKUP line (with LF).
pub fn encode_user_lookup_into(out: &mut Vec<u8>, r: &UserLookupReply) {
    // The hot path of `doveadm director status USER`: no `format!`, no temporary strings.
    let opt = |out: &mut Vec<u8>, ip: &Option<IpAddr>| {
        if let Some(ip) = ip {
            write_ip(out, ip);
        }
    };
    opt(out, &r.current);
    out.push(b'\t');
    if r.expire < 0 {
        out.push(b'-');
    }
    write_uint(out, r.expire.unsigned_abs());
    out.push(b'\t');
    opt(out, &r.hashed);
    out.push(b'\t');
    opt(out, &r.initial);
    out.push(b'\n');
}

/// Appends one HOST-LIST line (with LF); the tag is tab-escaped.
pub fn encode_host_list_line_into(out: &mut Vec<u8>, e: &HostListEntry) {
    out.extend_from_slice(
        format!(
            "{}\t{}\t{}\t",
            format_ip(&e.ip),
            e.vhost_count,
            e.user_count
        )
        .as_bytes(),
    );
    escape_into(out, e.tag.as_bytes());
    let state = if e.down { 'D' } else { 'U' };
    out.extend_from_slice(format!("\t{state}\t{}\n", e.last_updown_change).as_bytes());
}

/// Appends one USER-LIST line (with LF).
pub fn encode_user_list_line_into(out: &mut Vec<u8>, e: &UserListEntry) {
    out.extend_from_slice(format!("{}\t{}\t{}\n", e.hash, e.expire, format_ip(&e.ip)).as_bytes());
}

/// A reply line the client could not understand.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyParseError {
    /// A line did not have the expected shape.
    #[error("invalid {what} reply line: {line}")]
    Invalid {
        /// Which reply.
        what: &'static str,
        /// The line (lossy UTF-8).
        line: String,
    },
    /// More than [`MAX_LIST_REPLY_LINES`] lines.
    #[error("list reply longer than {MAX_LIST_REPLY_LINES} lines")]
    TooManyLines,
}

fn invalid(what: &'static str, line: &[u8]) -> ReplyParseError {
    ReplyParseError::Invalid {
        what,
        line: String::from_utf8_lossy(line).into_owned(),
    }
}

/// `str_to_time`-like: optional `-`, decimal digits, fits in i64.
fn parse_time(s: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(s).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_opt_ip(s: &[u8]) -> Option<Option<IpAddr>> {
    if s.is_empty() {
        Some(None)
    } else {
        parse_ip(s).map(Some)
    }
}

/// Parses the USER-LOOKUP tuple (without LF).
pub fn parse_user_lookup(line: &[u8]) -> Result<UserLookupReply, ReplyParseError> {
    let f = split_fields(line);
    let err = || invalid("USER-LOOKUP", line);
    if f.len() < 3 {
        return Err(err());
    }
    Ok(UserLookupReply {
        current: parse_opt_ip(&f[0]).ok_or_else(err)?,
        expire: parse_time(&f[1]).ok_or_else(err)?,
        hashed: parse_opt_ip(&f[2]).ok_or_else(err)?,
        // 2.2.9 could omit the initial field.
        initial: match f.get(3) {
            Some(v) => parse_opt_ip(v).ok_or_else(err)?,
            None => None,
        },
    })
}

/// Parses one HOST-LIST line. 2.2-era directors send only
/// `ip\tvhosts\tusers`; missing fields default (no tag, up, 0).
pub fn parse_host_list_line(line: &[u8]) -> Result<HostListEntry, ReplyParseError> {
    let f = split_fields(line);
    let err = || invalid("HOST-LIST", line);
    if f.len() < 3 {
        return Err(err());
    }
    Ok(HostListEntry {
        ip: parse_ip(&f[0]).ok_or_else(err)?,
        vhost_count: parse_uint(&f[1]).ok_or_else(err)?,
        user_count: parse_uint(&f[2]).ok_or_else(err)?,
        tag: f
            .get(3)
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default(),
        down: f.get(4).is_some_and(|s| s.as_slice() == b"D"),
        last_updown_change: match f.get(5) {
            Some(v) => parse_time(v).ok_or_else(err)?,
            None => 0,
        },
    })
}

/// Parses one USER-LIST line.
pub fn parse_user_list_line(line: &[u8]) -> Result<UserListEntry, ReplyParseError> {
    let f = split_fields(line);
    let err = || invalid("USER-LIST", line);
    if f.len() < 3 {
        return Err(err());
    }
    Ok(UserListEntry {
        hash: parse_uint(&f[0]).ok_or_else(err)?,
        expire: parse_time(&f[1]).ok_or_else(err)?,
        ip: parse_ip(&f[2]).ok_or_else(err)?,
    })
}

/// What shape of reply a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Status,
    UserLookup,
    HostList,
    HostListRemoved,
    DirectorList,
    UserList,
}

/// Client-side reply decoder: feed it the reply lines (without LF) until it
/// returns a complete [`AdminReply`].
#[derive(Debug, Clone)]
pub struct ReplyReader {
    expect: Expect,
    reply: Option<AdminReply>,
    lines: usize,
}

impl ReplyReader {
    /// A reader for the reply to `req`.
    pub fn new(req: &AdminRequest) -> Self {
        let (expect, reply) = match req {
            AdminRequest::HostList => (Expect::HostList, Some(AdminReply::HostList(Vec::new()))),
            AdminRequest::HostListRemoved => (
                Expect::HostListRemoved,
                Some(AdminReply::HostListRemoved(Vec::new())),
            ),
            AdminRequest::DirectorList => (
                Expect::DirectorList,
                Some(AdminReply::DirectorList(Vec::new())),
            ),
            AdminRequest::UserList { .. } => {
                (Expect::UserList, Some(AdminReply::UserList(Vec::new())))
            }
            AdminRequest::UserLookup { .. } => (Expect::UserLookup, None),
            _ => (Expect::Status, None),
        };
        Self {
            expect,
            reply,
            lines: 0,
        }
    }

    /// Feeds one line. `Ok(Some(reply))` when the reply is complete.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<AdminReply>, ReplyParseError> {
        match self.expect {
            Expect::Status => return Ok(Some(AdminReply::Status(StatusReply::parse(line)))),
            Expect::UserLookup => {
                // The director answers TRYAGAIN when the hash format fails.
                if line == b"TRYAGAIN" {
                    return Ok(Some(AdminReply::TRY_AGAIN));
                }
                return Ok(Some(AdminReply::UserLookup(parse_user_lookup(line)?)));
            }
            _ => {}
        }
        if line.is_empty() {
            return Ok(self.reply.take());
        }
        self.lines += 1;
        if self.lines > MAX_LIST_REPLY_LINES {
            return Err(ReplyParseError::TooManyLines);
        }
        match (&mut self.reply, self.expect) {
            (Some(AdminReply::HostList(v)), _) => v.push(parse_host_list_line(line)?),
            (Some(AdminReply::HostListRemoved(v)), _) => {
                v.push(parse_ip(line).ok_or_else(|| invalid("HOST-LIST-REMOVED", line))?)
            }
            (Some(AdminReply::DirectorList(v)), _) => {
                let entry = DirectorListEntry {
                    fields: split_fields(line)
                        .into_iter()
                        .map(|f| String::from_utf8_lossy(&f).into_owned())
                        .collect(),
                };
                // A line such as "\x01" unescapes to nothing; Dovecot never
                // sends one, and it could not be re-encoded.
                if !entry.is_blank() {
                    v.push(entry);
                }
            }
            (Some(AdminReply::UserList(v)), _) => v.push(parse_user_list_line(line)?),
            _ => return Err(invalid("list", line)),
        }
        Ok(None)
    }
}
