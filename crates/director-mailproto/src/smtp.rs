//! SMTP wire pieces shared by Submission and LMTP: multi-line replies ([`ReplyReader`]),
//! `xtext` and the `XCLIENT` command.

use crate::connection::{parse_ttl, ConnInfo};
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

/// Decodes xtext (RFC 3461: `+XX` is the byte of two upper-case hex digits); `None` when
/// malformed.
pub fn xtext_decode(v: &[u8]) -> Option<Vec<u8>> {
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while let Some(&b) = v.get(i) {
        if b == b'+' {
            let (hi, lo) = (hex(*v.get(i + 1)?)?, hex(*v.get(i + 2)?)?);
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

/// What an inbound `XCLIENT` sets that the proxy uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct XclientAttrs {
    /// `TTL=`: the hops the client's logins may still take.
    pub ttl: Option<u32>,
}

/// Reads the parameters of an inbound `XCLIENT` (after the command name) as Dovecot's SMTP
/// server (lib-smtp) does: space-separated `NAME=xtext`, names in any case, a value of
/// `[UNAVAILABLE]` meaning absent. `ADDR` (also `IPV6:…`), `PORT`, `PROTO` and `TTL` are
/// checked; a bad one gives lib-smtp's reply (without CRLF) as the error. The other names
/// are accepted and ignored, and so (unlike lib-smtp, which refuses them with its parser's
/// message) is a parameter without `=` or with malformed xtext. `TTL=4294967295` is ignored,
/// as lib-smtp's `ttl_plus_1` wraps to "none".
pub fn parse_xclient(params: &[u8]) -> Result<XclientAttrs, &'static str> {
    let mut attrs = XclientAttrs::default();
    for param in params.split(|b| *b == b' ') {
        let Some(eq) = param.iter().position(|b| *b == b'=') else {
            continue;
        };
        let Some(value) = xtext_decode(&param[eq + 1..]) else {
            continue;
        };
        if value.eq_ignore_ascii_case(b"[UNAVAILABLE]") {
            continue;
        }
        match param[..eq].to_ascii_uppercase().as_slice() {
            b"ADDR" if !is_xclient_addr(&value) => return Err("501 5.5.4 Invalid ADDR parameter"),
            b"PORT"
                if !parse_ttl(&value).is_some_and(|p| (1..=u32::from(u16::MAX)).contains(&p)) =>
            {
                return Err("501 5.5.4 Invalid PORT parameter")
            }
            b"PROTO"
                if !matches!(
                    value.to_ascii_uppercase().as_slice(),
                    b"SMTP" | b"ESMTP" | b"LMTP"
                ) =>
            {
                return Err("501 5.5.4 Invalid PROTO parameter")
            }
            b"TTL" => match parse_ttl(&value) {
                Some(ttl) => attrs.ttl = (ttl < u32::MAX).then_some(ttl),
                None => return Err("501 5.5.4 Invalid TTL parameter"),
            },
            _ => {}
        }
    }
    Ok(attrs)
}

/// An `XCLIENT ADDR=` value lib-smtp accepts: an IP address (bare or in brackets), which
/// after an `IPV6:` prefix must be IPv6.
fn is_xclient_addr(value: &[u8]) -> bool {
    let (v6, ip) = match value.get(..5) {
        Some(p) if p.eq_ignore_ascii_case(b"IPV6:") => (true, &value[5..]),
        _ => (false, value),
    };
    let ip = ip
        .strip_prefix(b"[")
        .and_then(|v| v.strip_suffix(b"]"))
        .unwrap_or(ip);
    match std::str::from_utf8(ip).ok().and_then(|s| s.parse().ok()) {
        Some(std::net::IpAddr::V6(_)) => true,
        Some(std::net::IpAddr::V4(_)) => !v6,
        None => false,
    }
}

/// lib-smtp's reply to `XCLIENT` from a client outside `login_trusted_networks`.
pub const XCLIENT_UNTRUSTED: &str = "550 5.7.14 You are not from trusted IP";

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtext_round_trips_and_refuses_bad_escapes() {
        let raw = b"a+b=c \x01\xff";
        assert_eq!(
            xtext_decode(xtext(raw).as_bytes()).as_deref(),
            Some(&raw[..])
        );
        for bad in [&b"+"[..], b"+4", b"+4g", b"+4a", b"x+"] {
            assert_eq!(xtext_decode(bad), None);
        }
    }

    /// The recorded order of Dovecot's submission proxy, read back.
    #[test]
    fn inbound_xclient_as_lib_smtp_reads_it() {
        let ok = |p: &[u8]| parse_xclient(p).map(|a| a.ttl);
        assert_eq!(
            ok(b"HELO=x PROTO=ESMTP TTL=3 PORT=4711 ADDR=127.0.0.1 SESSION=a+2Bb"),
            Ok(Some(3))
        );
        assert_eq!(ok(b"ttl=2 addr=IPV6:::1 port=[UNAVAILABLE]"), Ok(Some(2)));
        assert_eq!(ok(b"ADDR=[UNAVAILABLE] LOGIN=u FORWARD=eA== X"), Ok(None));
        assert_eq!(ok(b"TTL=4294967295"), Ok(None));
        assert_eq!(ok(b"TTL=x"), Err("501 5.5.4 Invalid TTL parameter"));
        assert_eq!(ok(b"TTL=-1"), Err("501 5.5.4 Invalid TTL parameter"));
        assert_eq!(
            ok(b"ADDR=IPV6:127.0.0.1"),
            Err("501 5.5.4 Invalid ADDR parameter")
        );
        assert_eq!(ok(b"ADDR=host"), Err("501 5.5.4 Invalid ADDR parameter"));
        assert_eq!(ok(b"PORT=0"), Err("501 5.5.4 Invalid PORT parameter"));
        assert_eq!(ok(b"PROTO=HTTP"), Err("501 5.5.4 Invalid PROTO parameter"));
    }
}
