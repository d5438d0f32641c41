//! Client side of Dovecot's auth-master protocol (the `auth-userdb` /
//! `auth-master` sockets), as far as the director tools need it: user
//! iteration for `doveadm director map` without `-f`, and userdb lookups.
//!
//! Wire format, recorded from Dovecot 2.3.19.1 (tests/data/auth_master_exchange.json):
//!
//! ```text
//! C: VERSION\t1\t0
//! C: LIST\t1                      (doveadm director map; `doveadm user` adds \tuser=*\tservice=doveadm)
//! S: VERSION\t1\t1
//! S: SPID\t12830
//! S: LIST\t1\tuser1               (one line per user, username tab-escaped)
//! S: DONE\t1\t                    (success: empty third field)
//! S: DONE\t1\tfail                (the userdbs cannot iterate / failed)
//! C: USER\t2\tuser1\tservice=doveadm
//! S: USER\t2\tuser1\tuid=1000\tgid=1000\thome=/home/user1
//! S: NOTFOUND\t3
//! ```
//!
//! Note the server sends **`LIST`** (upper case) for each user and reports
//! failure as `DONE\t<id>\tfail`, not with a separate `FAIL` line.

use thiserror::Error;

use crate::line::{LineBuffer, LineTooLong};
use crate::tabescape::{escape_into, split_fields};
use crate::value::parse_uint;

/// The client's VERSION line (major 1, minor 0, as doveadm sends).
pub const CLIENT_HANDSHAKE: &[u8] = b"VERSION\t1\t0\n";
/// The protocol major version; the server's must match.
pub const MAJOR_VERSION: u32 = 1;
/// Longest reply line accepted (userdb replies carry arbitrary fields;
/// Dovecot's own client allows lines of this order).
pub const AUTH_MASTER_MAX_LINE_LEN: usize = 64 * 1024;
/// Most fields taken from one reply line.
pub const AUTH_MASTER_MAX_FIELDS: usize = 256;

/// A request to the auth-master socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMasterRequest {
    /// `LIST\t<id>[\tuser=<mask>][\tservice=<service>]`: iterate users.
    List {
        /// Request id, echoed in every reply line.
        id: u32,
        /// `user=` mask (e.g. `*`); the server may ignore it (passwd-file
        /// does), so callers filter too.
        user_mask: Option<Vec<u8>>,
        /// `service=` name.
        service: Option<Vec<u8>>,
    },
    /// `USER\t<id>\t<user>[\tkey=value...]`: userdb lookup.
    User {
        /// Request id.
        id: u32,
        /// Username.
        user: Vec<u8>,
        /// Extra `key=value` parameters, e.g. `service=doveadm`.
        params: Vec<Vec<u8>>,
    },
}

/// Encodes a request line (with LF). Send [`CLIENT_HANDSHAKE`] first.
pub fn encode_request(req: &AuthMasterRequest) -> Vec<u8> {
    let mut out = Vec::new();
    match req {
        AuthMasterRequest::List {
            id,
            user_mask,
            service,
        } => {
            out.extend_from_slice(format!("LIST\t{id}").as_bytes());
            if let Some(mask) = user_mask {
                out.extend_from_slice(b"\tuser=");
                escape_into(&mut out, mask);
            }
            if let Some(service) = service {
                out.extend_from_slice(b"\tservice=");
                escape_into(&mut out, service);
            }
        }
        AuthMasterRequest::User { id, user, params } => {
            out.extend_from_slice(format!("USER\t{id}\t").as_bytes());
            escape_into(&mut out, user);
            for p in params {
                out.push(b'\t');
                escape_into(&mut out, p);
            }
        }
    }
    out.push(b'\n');
    out
}

/// One reply line from the auth server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMasterReply {
    /// `VERSION\t<major>\t<minor>`.
    Version {
        /// Major version (must be 1).
        major: u32,
        /// Minor version.
        minor: u32,
    },
    /// `SPID\t<pid>`: the auth server's process id.
    Spid(u32),
    /// `LIST\t<id>\t<user>`: one user of an iteration.
    ListUser {
        /// Request id.
        id: u32,
        /// Username (unescaped).
        user: Vec<u8>,
    },
    /// `DONE\t<id>[\tfail]`: end of an iteration.
    ListDone {
        /// Request id.
        id: u32,
        /// `true` when the third field is `fail`.
        failed: bool,
    },
    /// `USER\t<id>\t<user>\tfields...`: lookup result.
    User {
        /// Request id.
        id: u32,
        /// Username.
        user: Vec<u8>,
        /// userdb fields (`key=value`), unescaped.
        fields: Vec<Vec<u8>>,
    },
    /// `NOTFOUND\t<id>`.
    NotFound {
        /// Request id.
        id: u32,
    },
    /// `FAIL\t<id>[\tfields]`: lookup failed.
    Fail {
        /// Request id.
        id: u32,
        /// Extra fields such as `reason=...`.
        fields: Vec<Vec<u8>>,
    },
}

/// A reply line we cannot use.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthMasterError {
    /// Wrong shape or unknown reply.
    #[error("auth-master: invalid reply line: {0}")]
    Invalid(String),
    /// The server's major version is not 1.
    #[error("auth-master: server version {0} not compatible")]
    Incompatible(u32),
    /// A reply line longer than [`AUTH_MASTER_MAX_LINE_LEN`].
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    /// The server said the listing failed.
    #[error("auth-master: userdb list: User listing returned failure")]
    ListFailed,
}

fn invalid(line: &[u8]) -> AuthMasterError {
    AuthMasterError::Invalid(String::from_utf8_lossy(line).into_owned())
}

/// Parses one reply line (without LF).
pub fn parse_reply(line: &[u8]) -> Result<AuthMasterReply, AuthMasterError> {
    let mut fields = split_fields(line);
    fields.truncate(AUTH_MASTER_MAX_FIELDS);
    let num = |i: usize| {
        fields
            .get(i)
            .and_then(|f| parse_uint(f))
            .ok_or_else(|| invalid(line))
    };
    let Some(name) = fields.first() else {
        return Err(invalid(line));
    };
    Ok(match name.as_slice() {
        b"VERSION" => AuthMasterReply::Version {
            major: num(1)?,
            minor: num(2)?,
        },
        b"SPID" => AuthMasterReply::Spid(num(1)?),
        b"LIST" => AuthMasterReply::ListUser {
            id: num(1)?,
            user: fields.get(2).cloned().ok_or_else(|| invalid(line))?,
        },
        b"DONE" => AuthMasterReply::ListDone {
            id: num(1)?,
            failed: fields.get(2).is_some_and(|f| f.as_slice() == b"fail"),
        },
        b"USER" => AuthMasterReply::User {
            id: num(1)?,
            user: fields.get(2).cloned().ok_or_else(|| invalid(line))?,
            fields: fields.get(3..).map(<[Vec<u8>]>::to_vec).unwrap_or_default(),
        },
        b"NOTFOUND" => AuthMasterReply::NotFound { id: num(1)? },
        b"FAIL" => AuthMasterReply::Fail {
            id: num(1)?,
            fields: fields.get(2..).map(<[Vec<u8>]>::to_vec).unwrap_or_default(),
        },
        _ => return Err(invalid(line)),
    })
}

/// What a user iteration produced so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListEvent {
    /// One username.
    User(Vec<u8>),
    /// The iteration finished successfully.
    Done,
}

/// Sans-I/O user iteration: write [`UserListSession::request_bytes`], then
/// feed what the server sends and pop [`ListEvent`]s.
#[derive(Debug, Clone)]
pub struct UserListSession {
    lines: LineBuffer,
    id: u32,
    greeted: bool,
    finished: bool,
    request: Vec<u8>,
}

impl UserListSession {
    /// A session for `LIST` with the given id, optional user mask and service.
    pub fn new(id: u32, user_mask: Option<&[u8]>, service: Option<&[u8]>) -> Self {
        let mut request = CLIENT_HANDSHAKE.to_vec();
        request.extend(encode_request(&AuthMasterRequest::List {
            id,
            user_mask: user_mask.map(<[u8]>::to_vec),
            service: service.map(<[u8]>::to_vec),
        }));
        Self {
            lines: LineBuffer::new(AUTH_MASTER_MAX_LINE_LEN),
            id,
            greeted: false,
            finished: false,
            request,
        }
    }

    /// Everything the client sends (handshake + LIST), at once: Dovecot's
    /// client does not wait for the server's VERSION first.
    pub fn request_bytes(&self) -> &[u8] {
        &self.request
    }

    /// Whether `DONE` was received.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Copies as many bytes as fit; see [`LineBuffer::feed`].
    pub fn feed(&mut self, data: &[u8]) -> usize {
        self.lines.feed(data)
    }

    /// Free buffer space to read into; see [`LineBuffer::spare_mut`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.lines.spare_mut()
    }

    /// Marks bytes read into [`spare_mut`](Self::spare_mut) as data.
    pub fn commit(&mut self, n: usize) {
        self.lines.commit(n)
    }

    /// The next event, `Ok(None)` if more bytes are needed.
    pub fn next_event(&mut self) -> Result<Option<ListEvent>, AuthMasterError> {
        while !self.finished {
            let Some(line) = self.lines.next_line()? else {
                return Ok(None);
            };
            match parse_reply(&line)? {
                AuthMasterReply::Version { major, .. } => {
                    if major != MAJOR_VERSION {
                        return Err(AuthMasterError::Incompatible(major));
                    }
                    self.greeted = true;
                }
                _ if !self.greeted => return Err(invalid(&line)),
                AuthMasterReply::Spid(_) => {}
                AuthMasterReply::ListUser { id, user } if id == self.id => {
                    return Ok(Some(ListEvent::User(user)))
                }
                AuthMasterReply::ListDone { id, failed } if id == self.id => {
                    self.finished = true;
                    if failed {
                        return Err(AuthMasterError::ListFailed);
                    }
                    return Ok(Some(ListEvent::Done));
                }
                // Replies to other requests are not ours; Dovecot's client
                // ignores them too.
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encodes_like_doveadm() {
        let req = AuthMasterRequest::List {
            id: 1,
            user_mask: None,
            service: None,
        };
        assert_eq!(encode_request(&req), b"LIST\t1\n");
        let req = AuthMasterRequest::List {
            id: 1,
            user_mask: Some(b"*".to_vec()),
            service: Some(b"doveadm".to_vec()),
        };
        assert_eq!(encode_request(&req), b"LIST\t1\tuser=*\tservice=doveadm\n");
        let req = AuthMasterRequest::User {
            id: 2,
            user: b"user1".to_vec(),
            params: vec![b"service=doveadm".to_vec()],
        };
        assert_eq!(encode_request(&req), b"USER\t2\tuser1\tservice=doveadm\n");
    }

    proptest! {
        #[test]
        fn never_panics(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&line);
            let mut s = UserListSession::new(1, None, None);
            s.feed(&line);
            for _ in 0..4 { if s.next_event().is_err() { break; } }
        }
    }
}
