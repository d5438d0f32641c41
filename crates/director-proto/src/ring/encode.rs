//! [`RingMessage`] → the bytes Dovecot sends.
//!
//! Numbers are plain decimal, IPs `inet_ntop` form (no brackets), free-text
//! fields tab-escaped ([`crate::tabescape::escape_into`]), fields joined by
//! TAB, the line ended by LF. A [`HostRecord`] whose host name is on the wire
//! but empty ends with a TAB, as Dovecot's does.
//!
//! The encoder does not check the ring's line limit
//! ([`super::RING_MAX_LINE_LEN`]): only free text (usernames, tags, host
//! names, kick values, QUIT reasons, OPTIONS) can make a line long, and the
//! caller that takes those from an admin decides what to do with a line a
//! peer would refuse.

use std::net::IpAddr;

use super::message::{
    DirectorAddr, HostFields, HostRecord, Origin, PingInfo, RingMessage, SyncInfo,
};
use crate::tabescape::escape_into;
use crate::value::{write_ip, write_uint};

impl RingMessage {
    /// Appends this message as one LF-terminated line to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer { out };
        match self {
            // An unknown name is free text: escape it like any other field.
            Self::Unknown { command, .. } => escape_into(w.out, command),
            _ => w.out.extend_from_slice(self.command_name()),
        }
        match self {
            Self::Version(v) => {
                w.text(&v.name);
                w.uint(v.major);
                w.uint(v.minor);
            }
            Self::Me(me) => {
                w.director(&me.director);
                if let Some(ts) = me.timestamp {
                    w.uint(ts);
                }
            }
            Self::HostHandStart { ring_handshaked } | Self::HostHandEnd { ring_handshaked } => {
                w.uint(u32::from(*ring_handshaked));
            }
            Self::HandshakeHost(host) => w.host(host),
            Self::HandshakeUser(u) => {
                w.uint(u.hash);
                w.ip(&u.ip);
                w.uint(u.timestamp);
                if u.weak {
                    w.text(b"w");
                }
            }
            Self::Options(options) => {
                for o in options {
                    w.text(o);
                }
            }
            Self::Done => {}
            Self::Director(d) | Self::DirectorRemove(d) | Self::Connect(d) => w.director(d),
            Self::Sync { origin, seq, info } => {
                w.director(origin);
                w.uint(*seq);
                if let Some(SyncInfo {
                    minor,
                    timestamp,
                    hosts_hash,
                }) = info
                {
                    w.uint(*minor);
                    w.uint(*timestamp);
                    if let Some(h) = hosts_hash {
                        w.uint(*h);
                    }
                }
            }
            Self::Ping(info) | Self::Pong(info) => {
                if let Some(PingInfo {
                    timestamp,
                    buffered,
                }) = info
                {
                    w.uint(*timestamp);
                    w.u64(*buffered);
                }
            }
            Self::Quit { reason } => w.text(reason),
            Self::User {
                hash,
                ip,
                timestamp,
            } => {
                w.uint(*hash);
                w.ip(ip);
                if let Some(ts) = timestamp {
                    w.uint(*ts);
                }
            }
            Self::UserWeak { origin, hash, ip } | Self::UserMove { origin, hash, ip } => {
                w.origin(origin);
                w.uint(*hash);
                w.ip(ip);
            }
            Self::UserKilled { hash } => w.uint(*hash),
            Self::UserKilledEverywhere { origin, hash } => {
                w.origin(origin);
                w.uint(*hash);
            }
            Self::UserKick { origin, username } => {
                w.origin(origin);
                w.text(username);
            }
            Self::UserKickAlt {
                origin,
                field,
                value,
            } => {
                w.origin(origin);
                w.text(field);
                w.text(value);
            }
            Self::UserKickHash {
                origin,
                hash,
                except_ip,
            } => {
                w.origin(origin);
                w.uint(*hash);
                w.ip(except_ip);
            }
            Self::Host { origin, host } => {
                w.origin(origin);
                w.host(host);
            }
            Self::HostRemove { origin, ip } | Self::HostFlush { origin, ip } => {
                w.origin(origin);
                w.ip(ip);
            }
            Self::Unknown { args, .. } => {
                for a in args {
                    w.text(a);
                }
            }
        }
        w.out.push(b'\n');
    }

    /// This message as one LF-terminated line.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode_into(&mut out);
        out
    }
}

/// Appends TAB-prefixed fields.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl Writer<'_> {
    fn tab(&mut self) {
        self.out.push(b'\t');
    }

    fn text(&mut self, v: &[u8]) {
        self.tab();
        escape_into(self.out, v);
    }

    fn uint(&mut self, v: u32) {
        self.u64(u64::from(v));
    }

    fn u64(&mut self, v: u64) {
        self.tab();
        write_uint(self.out, v);
    }

    fn ip(&mut self, ip: &IpAddr) {
        self.tab();
        write_ip(self.out, ip);
    }

    fn director(&mut self, d: &DirectorAddr) {
        self.ip(&d.ip);
        self.uint(u32::from(d.port));
    }

    fn origin(&mut self, o: &Origin) {
        self.director(&o.director);
        self.uint(o.seq);
    }

    fn host(&mut self, h: &HostRecord) {
        self.ip(&h.ip);
        self.uint(h.vhost_count);
        if h.fields >= HostFields::Tag {
            self.text(&h.tag);
        }
        if h.fields >= HostFields::State {
            self.tab();
            self.out.push(if h.state.down { b'D' } else { b'U' });
            write_uint(self.out, u64::from(h.state.last_updown_change));
        }
        if h.fields >= HostFields::All {
            self.text(&h.hostname);
        }
    }
}
