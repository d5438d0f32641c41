//! Ring line → [`RingMessage`].
//!
//! Rules (spec §0, §10.4; lab recording of Dovecot 2.3.19.1):
//! * the line is read as a C string: a NUL ends it;
//! * fields are split on TAB, then each is unescaped (Dovecot's
//!   `t_strsplit_tabescaped`); the command name is matched case-sensitively
//!   after unescaping;
//! * hashes, seqs, vhost counts, minors and hosts_hash are `str_to_uint`
//!   (digits only, 32 bits), ports `net_str2port` (1–65535), IPs
//!   `net_addr2ip` ([`crate::value::parse_ip`]), timestamps digits only up to
//!   `u32::MAX` ([`Timestamp`]), PING/PONG buffer sizes digits only up to
//!   `u64::MAX`;
//! * fields past the ones a command defines are ignored, as Dovecot ignores
//!   them (newer minors append fields); a missing required field or a
//!   malformed one is a [`RingParseError`] naming the command and the field;
//! * unknown command names are not errors here: they come back as
//!   [`RingMessage::Unknown`] for the caller to judge.

use std::borrow::Cow;
use std::net::IpAddr;

use thiserror::Error;

use super::message::{
    command as cmd, DirectorAddr, HandshakeUser, HostFields, HostRecord, HostState, Me, Origin,
    PingInfo, RingContext, RingMessage, SyncInfo, Timestamp, Version,
};
use crate::line::cut_at_nul;
use crate::tabescape::{unescape, ESCAPE_BYTE};
use crate::value::{parse_ip, parse_port, parse_u64, parse_uint};

/// Longest piece of an offending field quoted in a [`RingParseError`].
pub const ERROR_VALUE_MAX_LEN: usize = 64;

/// Why a ring line could not be read. `Display` names the command and the
/// field, e.g. `SYNC: invalid seq "x"`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RingParseError {
    /// The line (up to a NUL) is empty or its command name is empty.
    #[error("empty command name")]
    EmptyCommand,
    /// A required field is missing.
    #[error("{}: missing {field}", String::from_utf8_lossy(command))]
    MissingField {
        /// Command name.
        command: &'static [u8],
        /// Which field.
        field: &'static str,
    },
    /// A field is present but malformed or out of range.
    #[error("{}: invalid {field} {value:?}", String::from_utf8_lossy(command))]
    InvalidField {
        /// Command name.
        command: &'static [u8],
        /// Which field.
        field: &'static str,
        /// The field (unescaped, lossy UTF-8, at most [`ERROR_VALUE_MAX_LEN`] bytes).
        value: String,
    },
}

/// Parses one ring line (without its LF) read outside the handshake's host
/// list ([`RingContext::Normal`]).
pub fn parse(line: &[u8]) -> Result<RingMessage, RingParseError> {
    parse_in(line, RingContext::Normal)
}

/// Parses one ring line (without its LF) in `context`.
pub fn parse_in(line: &[u8], context: RingContext) -> Result<RingMessage, RingParseError> {
    let line = cut_at_nul(line);
    let mut raw = line.split(|&b| b == b'\t');
    let name = unescaped(raw.next().unwrap_or_default());
    if name.is_empty() {
        return Err(RingParseError::EmptyCommand);
    }
    let args: Vec<&[u8]> = raw.collect();
    let Some(command) = cmd::ALL.iter().copied().find(|c| *c == &name[..]) else {
        return Ok(RingMessage::Unknown {
            command: name.into_owned(),
            args: args.iter().map(|a| unescape(a)).collect(),
        });
    };
    let a = Args { command, args };
    Ok(match command {
        cmd::VERSION => RingMessage::Version(Version {
            name: a.text(0, "name")?,
            major: a.uint(1, "major version")?,
            minor: a.uint(2, "minor version")?,
        }),
        cmd::ME => RingMessage::Me(Me {
            director: a.director(0)?,
            timestamp: a.opt_timestamp(2, "timestamp")?,
        }),
        cmd::HOST_HAND_START => RingMessage::HostHandStart {
            ring_handshaked: a.uint(0, "ring-handshaked flag")? != 0,
        },
        cmd::HOST_HAND_END => RingMessage::HostHandEnd {
            ring_handshaked: a.uint(0, "ring-handshaked flag")? != 0,
        },
        cmd::HOST => match context {
            RingContext::HostHandshake => RingMessage::HandshakeHost(a.host(0)?),
            RingContext::Normal => RingMessage::Host {
                origin: a.origin()?,
                host: a.host(3)?,
            },
        },
        cmd::U => RingMessage::HandshakeUser(HandshakeUser {
            hash: a.uint(0, "user hash")?,
            ip: a.ip(1, "host ip")?,
            timestamp: a.timestamp(2, "timestamp")?,
            weak: a.get(3).is_some_and(|w| w.first() == Some(&b'w')),
        }),
        cmd::OPTIONS => RingMessage::Options(a.args.iter().map(|o| unescape(o)).collect()),
        cmd::DONE => RingMessage::Done,
        cmd::DIRECTOR => RingMessage::Director(a.director(0)?),
        cmd::DIRECTOR_REMOVE => RingMessage::DirectorRemove(a.director(0)?),
        cmd::CONNECT => RingMessage::Connect(a.director(0)?),
        cmd::SYNC => RingMessage::Sync {
            origin: a.director(0)?,
            seq: a.uint(2, "seq")?,
            info: match a.get(3) {
                None => None,
                Some(_) => Some(SyncInfo {
                    minor: a.uint(3, "minor version")?,
                    timestamp: a.timestamp(4, "timestamp")?,
                    hosts_hash: a.opt_uint(5, "hosts_hash")?,
                }),
            },
        },
        cmd::PING => RingMessage::Ping(a.ping_info()?),
        cmd::PONG => RingMessage::Pong(a.ping_info()?),
        cmd::QUIT => RingMessage::Quit {
            reason: a.get(0).map(|r| r.into_owned()).unwrap_or_default(),
        },
        cmd::USER => RingMessage::User {
            hash: a.uint(0, "user hash")?,
            ip: a.ip(1, "host ip")?,
            timestamp: a.opt_timestamp(2, "timestamp")?,
        },
        cmd::USER_WEAK => RingMessage::UserWeak {
            origin: a.origin()?,
            hash: a.uint(3, "user hash")?,
            ip: a.ip(4, "host ip")?,
        },
        cmd::USER_MOVE => RingMessage::UserMove {
            origin: a.origin()?,
            hash: a.uint(3, "user hash")?,
            ip: a.ip(4, "host ip")?,
        },
        cmd::USER_KILLED => RingMessage::UserKilled {
            hash: a.uint(0, "user hash")?,
        },
        cmd::USER_KILLED_EVERYWHERE => RingMessage::UserKilledEverywhere {
            origin: a.origin()?,
            hash: a.uint(3, "user hash")?,
        },
        cmd::USER_KICK => RingMessage::UserKick {
            origin: a.origin()?,
            username: a.text(3, "username")?,
        },
        cmd::USER_KICK_ALT => RingMessage::UserKickAlt {
            origin: a.origin()?,
            field: a.text(3, "passdb field")?,
            value: a.text(4, "value")?,
        },
        cmd::USER_KICK_HASH => RingMessage::UserKickHash {
            origin: a.origin()?,
            hash: a.uint(3, "user hash")?,
            except_ip: a.ip(4, "except ip")?,
        },
        cmd::HOST_REMOVE => RingMessage::HostRemove {
            origin: a.origin()?,
            ip: a.ip(3, "host ip")?,
        },
        cmd::HOST_FLUSH => RingMessage::HostFlush {
            origin: a.origin()?,
            ip: a.ip(3, "host ip")?,
        },
        // `cmd::ALL` and this match list the same names; an entry missing
        // here reads as unknown rather than panicking.
        _ => RingMessage::Unknown {
            command: name.into_owned(),
            args: a.args.iter().map(|o| unescape(o)).collect(),
        },
    })
}

/// A field unescaped, borrowed when it holds no escape byte (the usual case).
fn unescaped(raw: &[u8]) -> Cow<'_, [u8]> {
    if raw.contains(&ESCAPE_BYTE) {
        Cow::Owned(unescape(raw))
    } else {
        Cow::Borrowed(raw)
    }
}

/// The raw (still escaped) fields after the command name.
struct Args<'a> {
    command: &'static [u8],
    args: Vec<&'a [u8]>,
}

impl<'a> Args<'a> {
    fn get(&self, i: usize) -> Option<Cow<'a, [u8]>> {
        self.args.get(i).map(|raw| unescaped(raw))
    }

    fn required(&self, i: usize, field: &'static str) -> Result<Cow<'a, [u8]>, RingParseError> {
        self.get(i).ok_or(RingParseError::MissingField {
            command: self.command,
            field,
        })
    }

    fn invalid(&self, field: &'static str, value: &[u8]) -> RingParseError {
        let shown = &value[..value.len().min(ERROR_VALUE_MAX_LEN)];
        RingParseError::InvalidField {
            command: self.command,
            field,
            value: String::from_utf8_lossy(shown).into_owned(),
        }
    }

    fn text(&self, i: usize, field: &'static str) -> Result<Vec<u8>, RingParseError> {
        Ok(self.required(i, field)?.into_owned())
    }

    fn uint(&self, i: usize, field: &'static str) -> Result<u32, RingParseError> {
        let v = self.required(i, field)?;
        parse_uint(&v).ok_or_else(|| self.invalid(field, &v))
    }

    fn opt_uint(&self, i: usize, field: &'static str) -> Result<Option<u32>, RingParseError> {
        match self.get(i) {
            None => Ok(None),
            Some(_) => self.uint(i, field).map(Some),
        }
    }

    fn timestamp(&self, i: usize, field: &'static str) -> Result<Timestamp, RingParseError> {
        self.uint(i, field)
    }

    fn opt_timestamp(
        &self,
        i: usize,
        field: &'static str,
    ) -> Result<Option<Timestamp>, RingParseError> {
        self.opt_uint(i, field)
    }

    fn ip(&self, i: usize, field: &'static str) -> Result<IpAddr, RingParseError> {
        let v = self.required(i, field)?;
        parse_ip(&v).ok_or_else(|| self.invalid(field, &v))
    }

    fn port(&self, i: usize, field: &'static str) -> Result<u16, RingParseError> {
        let v = self.required(i, field)?;
        parse_port(&v).ok_or_else(|| self.invalid(field, &v))
    }

    /// `<ip>\t<port>` at `i`.
    fn director(&self, i: usize) -> Result<DirectorAddr, RingParseError> {
        Ok(DirectorAddr {
            ip: self.ip(i, "director ip")?,
            port: self.port(i + 1, "director port")?,
        })
    }

    /// The `<orig_ip>\t<orig_port>\t<seq>` prefix of seq-tracked messages.
    fn origin(&self) -> Result<Origin, RingParseError> {
        Ok(Origin {
            director: DirectorAddr {
                ip: self.ip(0, "origin ip")?,
                port: self.port(1, "origin port")?,
            },
            seq: self.uint(2, "seq")?,
        })
    }

    /// `<ip>\t<vhosts>[\t<tag>[\t<U|D><ts>[\t<hostname>]]]` at `i`.
    fn host(&self, i: usize) -> Result<HostRecord, RingParseError> {
        let ip = self.ip(i, "host ip")?;
        let vhost_count = self.uint(i + 1, "vhost count")?;
        let mut rec = HostRecord::new(
            ip,
            vhost_count,
            Vec::new(),
            HostState::default(),
            Vec::new(),
        )
        .with_fields(HostFields::IpVhosts);
        let Some(tag) = self.get(i + 2) else {
            return Ok(rec);
        };
        rec.tag = tag.into_owned();
        rec.fields = HostFields::Tag;
        let Some(state) = self.get(i + 3) else {
            return Ok(rec);
        };
        rec.state = self.host_state(&state)?;
        rec.fields = HostFields::State;
        let Some(hostname) = self.get(i + 4) else {
            return Ok(rec);
        };
        rec.hostname = hostname.into_owned();
        rec.fields = HostFields::All;
        Ok(rec)
    }

    /// `U<ts>` or `D<ts>`.
    fn host_state(&self, v: &[u8]) -> Result<HostState, RingParseError> {
        const FIELD: &str = "up/down state";
        let down = match v.first() {
            Some(b'U') => false,
            Some(b'D') => true,
            _ => return Err(self.invalid(FIELD, v)),
        };
        let last_updown_change = parse_uint(&v[1..]).ok_or_else(|| self.invalid(FIELD, v))?;
        Ok(HostState {
            down,
            last_updown_change,
        })
    }

    /// The optional `<time>\t<buffered>` of PING/PONG: both or neither.
    fn ping_info(&self) -> Result<Option<PingInfo>, RingParseError> {
        if self.args.is_empty() {
            return Ok(None);
        }
        let timestamp = self.timestamp(0, "timestamp")?;
        let buffered = self.required(1, "buffered bytes")?;
        let buffered =
            parse_u64(&buffered).ok_or_else(|| self.invalid("buffered bytes", &buffered))?;
        Ok(Some(PingInfo {
            timestamp,
            buffered,
        }))
    }
}
