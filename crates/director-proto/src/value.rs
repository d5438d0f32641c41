//! Parsers for the scalar field types Dovecot uses on director sockets, with
//! Dovecot's exact acceptance rules (spec §0).
//!
//! * [`parse_uint`] — `str_to_uint`: ASCII digits only, at least one, fits in 32 bits.
//! * [`parse_port`] — `net_str2port`: 1–65535.
//! * [`parse_ip`] — `net_addr2ip`: a string containing `:` is IPv6 (optionally
//!   in `[...]`), anything else goes through glibc's `inet_aton`, which also
//!   accepts `12345`, `0x7f.1`, octal parts and trailing whitespace + junk.
//! * [`format_ip`] — `net_ip2addr`: dotted quad / compressed lowercase IPv6,
//!   no brackets.
//! * [`ip_cmp`] — `net_ip_cmp`: IPv4 before IPv6, then bytes.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `str_to_uint`: decimal digits only (no sign, no spaces), at least one, ≤ `u32::MAX`.
pub fn parse_uint(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u32 = 0;
    for &d in s {
        v = v.checked_mul(10)?.checked_add(u32::from(d - b'0'))?;
    }
    Some(v)
}

/// `net_str2port`: a [`parse_uint`] value in 1..=65535 (0 is rejected).
pub fn parse_port(s: &[u8]) -> Option<u16> {
    let v = parse_uint(s)?;
    match u16::try_from(v) {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    }
}

/// `net_addr2ip`: parses an IP address the way Dovecot does.
///
/// If the text contains `:` it is IPv6 (`inet_pton`), with one optional pair
/// of surrounding brackets. Otherwise it is IPv4 via glibc `inet_aton` rules
/// (see [`parse_inet_aton`]). Non-UTF-8 input is never an address.
pub fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    if s.contains(&b':') {
        let inner = match (s.first(), s.last()) {
            (Some(b'['), Some(b']')) if s.len() >= 2 => &s[1..s.len() - 1],
            _ => s,
        };
        let text = std::str::from_utf8(inner).ok()?;
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        parse_inet_aton(s).map(IpAddr::V4)
    }
}

/// glibc `inet_aton`: 1–4 dot-separated parts, each decimal, octal (`0`
/// prefix) or hex (`0x`/`0X` prefix); the last part fills the remaining
/// bytes (`a`, `a.b` (b: 24 bits), `a.b.c` (c: 16 bits), `a.b.c.d`). Parsing
/// stops at the first ASCII whitespace, after which anything is accepted.
pub fn parse_inet_aton(s: &[u8]) -> Option<Ipv4Addr> {
    // Cut at the first whitespace (glibc accepts "1.2.3.4 junk").
    let end = s
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(s.len());
    let s = &s[..end];
    if s.is_empty() {
        return None;
    }
    let mut parts: Vec<u32> = Vec::with_capacity(4);
    for part in s.split(|&b| b == b'.') {
        if parts.len() == 4 {
            return None;
        }
        parts.push(parse_aton_part(part)?);
    }
    let (head, last) = parts.split_at(parts.len() - 1);
    let last = last[0];
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_max: u32 = match head.len() {
        0 => u32::MAX,
        1 => 0x00ff_ffff,
        2 => 0xffff,
        _ => 0xff,
    };
    if last > last_max {
        return None;
    }
    let mut value: u32 = last;
    for (i, &p) in head.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(value))
}

/// One `inet_aton` part: `0x` hex (at least one digit), `0` octal, or decimal.
fn parse_aton_part(p: &[u8]) -> Option<u32> {
    let (digits, radix) = if p.len() >= 2 && p[0] == b'0' && (p[1] == b'x' || p[1] == b'X') {
        (&p[2..], 16)
    } else if p.len() >= 2 && p[0] == b'0' {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() && radix != 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        let digit = char::from(d).to_digit(radix)?;
        v = v.checked_mul(radix)?.checked_add(digit)?;
    }
    Some(v)
}

/// `net_ip2addr`: the text form Dovecot prints (no brackets for IPv6).
pub fn format_ip(ip: &IpAddr) -> String {
    ip.to_string()
}

/// `net_ip_cmp`: every IPv4 address sorts before every IPv6 address, then by
/// the network-order bytes.
pub fn ip_cmp(a: &IpAddr, b: &IpAddr) -> Ordering {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => x.octets().cmp(&y.octets()),
        (IpAddr::V6(x), IpAddr::V6(y)) => x.octets().cmp(&y.octets()),
        (IpAddr::V4(_), IpAddr::V6(_)) => Ordering::Less,
        (IpAddr::V6(_), IpAddr::V4(_)) => Ordering::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uint_rules() {
        assert_eq!(parse_uint(b"0"), Some(0));
        assert_eq!(parse_uint(b"007"), Some(7));
        assert_eq!(parse_uint(b"4294967295"), Some(u32::MAX));
        assert_eq!(parse_uint(b"4294967296"), None);
        assert_eq!(parse_uint(b""), None);
        assert_eq!(parse_uint(b"-1"), None);
        assert_eq!(parse_uint(b"+1"), None);
        assert_eq!(parse_uint(b" 1"), None);
        assert_eq!(parse_uint(b"12abc"), None);
    }

    #[test]
    fn port_rules() {
        assert_eq!(parse_port(b"0"), None);
        assert_eq!(parse_port(b"1"), Some(1));
        assert_eq!(parse_port(b"65535"), Some(65535));
        assert_eq!(parse_port(b"65536"), None);
    }

    /// Vectors produced with Python's `socket.inet_aton` (glibc) on the lab machine.
    #[test]
    fn inet_aton_matches_glibc() {
        let cases: &[(&str, Option<&str>)] = &[
            ("1.2.3.4", Some("1.2.3.4")),
            ("1.2.3.4 junk", Some("1.2.3.4")),
            ("1.2.3.4\tx", Some("1.2.3.4")),
            ("12345", Some("0.0.48.57")),
            ("0x7f.1", Some("127.0.0.1")),
            ("0177.0.0.1", Some("127.0.0.1")),
            ("1.2.3.4.", None),
            ("1..2", None),
            ("08.1.1.1", None),
            ("1.2.3.256", None),
            ("1.16777215", Some("1.255.255.255")),
            ("4294967295", Some("255.255.255.255")),
            ("4294967296", None),
            ("", None),
            (" 1.2.3.4", None),
            ("1.2.3.4 ", Some("1.2.3.4")),
            ("0x", None),
            ("0xg", None),
            ("1.2.3.4\n", Some("1.2.3.4")),
            ("00000000000000001.2.3.4", Some("1.2.3.4")),
            ("0X10.1", Some("16.0.0.1")),
            ("bad", None),
            ("localhost", None),
            ("not-an-ip", None),
        ];
        for (input, want) in cases {
            let got = parse_inet_aton(input.as_bytes()).map(|ip| ip.to_string());
            assert_eq!(got.as_deref(), *want, "input {input:?}");
        }
    }

    #[test]
    fn ipv6_forms() {
        assert_eq!(parse_ip(b"::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(b"[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip(b"[::1"), None);
        assert_eq!(format_ip(&parse_ip(b"FE80:0:0::1").unwrap()), "fe80::1");
    }

    #[test]
    fn ordering_puts_v4_first() {
        let v4: IpAddr = "255.255.255.255".parse().unwrap();
        let v6: IpAddr = "::".parse().unwrap();
        assert_eq!(ip_cmp(&v4, &v6), Ordering::Less);
    }

    proptest! {
        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_ip(&data);
            let _ = parse_uint(&data);
            let _ = parse_port(&data);
        }

        #[test]
        fn dotted_quads_roundtrip(a: u8, b: u8, c: u8, d: u8) {
            let text = format!("{a}.{b}.{c}.{d}");
            prop_assert_eq!(parse_ip(text.as_bytes()), Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d))));
        }
    }
}
