//! SMTP wire pieces shared by Submission and LMTP: multi-line replies ([`ReplyReader`]),
//! `xtext` and the `XCLIENT` command.

use crate::connection::ConnInfo;
use crate::line::{split_word, LineBuffer};

/// Longest reply line from a backend.
pub const MAX_REPLY_LINE: usize = 8192;
/// Most lines in one multi-line reply (EHLO has about ten).
pub const MAX_REPLY_LINES: usize = 100;

/// A complete SMTP/LMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The raw lines, without CRLF.
    pub lines: Vec<Vec<u8>>,
}

impl Reply {
    /// The reply as wire bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for l in &self.lines {
            v.extend_from_slice(l);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    /// Text after the code of each line (`250-AUTH PLAIN` → `AUTH PLAIN`).
    pub fn texts(&self) -> impl Iterator<Item = &[u8]> {
        self.lines.iter().map(|l| l.get(4..).unwrap_or(&[]))
    }
}

/// Why a reply could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line did not start with a three-digit code followed by SP/`-`/EOL.
    #[error("malformed SMTP reply line")]
    Malformed,
    /// Line or line-count limit exceeded.
    #[error("SMTP reply too long")]
    TooLong,
}

/// Reads multi-line SMTP replies (`250-…` continues, `250 …` ends).
#[derive(Debug, Default)]
pub struct ReplyReader {
    lines: Vec<Vec<u8>>,
}

impl ReplyReader {
    /// Takes the next complete reply out of `buf`, if there is one.
    pub fn next(&mut self, buf: &mut LineBuffer) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(l) = buf.next_line().map_err(|_| ReplyError::TooLong)? else {
                return Ok(None);
            };
            if l.len() < 3 || !l[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Malformed);
            }
            let sep = l.get(3).copied();
            if !matches!(sep, None | Some(b' ') | Some(b'-')) {
                return Err(ReplyError::Malformed);
            }
            let code =
                u16::from(l[0] - b'0') * 100 + u16::from(l[1] - b'0') * 10 + u16::from(l[2] - b'0');
            if let Some(first) = self.lines.first() {
                if first[..3] != l[..3] {
                    return Err(ReplyError::Malformed);
                }
            }
            self.lines.push(l);
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError::TooLong);
            }
            if sep != Some(b'-') {
                return Ok(Some(Reply {
                    code,
                    lines: std::mem::take(&mut self.lines),
                }));
            }
        }
    }
}

/// xtext encoding (RFC 3461) for XCLIENT attribute values.
pub fn xtext(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for &b in v {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("+{b:02X}"));
        }
    }
    s
}

/// The EHLO keywords of a reply, upper-cased first word → rest.
pub(crate) fn ehlo_keywords(r: &Reply) -> Vec<(Vec<u8>, Vec<u8>)> {
    r.texts()
        .skip(1)
        .map(|t| {
            let (k, v) = split_word(t);
            (k.to_ascii_uppercase(), v.to_vec())
        })
        .collect()
}

/// The XCLIENT command for the attributes a backend advertised, in the
/// order Dovecot's submission proxy sends them (`HELO`, `PROTO`, `TTL`,
/// `PORT`, `ADDR`, `SESSION`). `proto` is `ESMTP` or `LMTP`.
pub fn xclient_command(
    advertised: &[u8],
    conn: &ConnInfo,
    helo: Option<&[u8]>,
    proto: &str,
) -> String {
    let has = |name: &str| {
        advertised
            .split(|&b| b == b' ')
            .any(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut parts = vec!["XCLIENT".to_string()];
    if has("HELO") {
        parts.push(format!(
            "HELO={}",
            helo.map(xtext).unwrap_or_else(|| "[UNAVAILABLE]".into())
        ));
    }
    if has("PROTO") {
        parts.push(format!("PROTO={proto}"));
    }
    if has("TTL") {
        parts.push(format!("TTL={}", conn.proxy_ttl));
    }
    if has("PORT") {
        parts.push(format!("PORT={}", conn.client_port));
    }
    if has("ADDR") {
        parts.push(format!("ADDR={}", conn.client_ip));
    }
    if let (true, Some(s)) = (has("SESSION"), &conn.session_id) {
        parts.push(format!("SESSION={}", xtext(s.as_bytes())));
    }
    parts.join(" ")
}
