//! Parsers for the scalar field types Dovecot uses on director sockets, with
//! Dovecot's exact acceptance rules (spec §0).
//!
//! * [`parse_uint`] — `str_to_uint`: ASCII digits only, at least one, fits in 32 bits.
//! * [`parse_u64`] — the same rules up to `u64::MAX`.
//! * [`parse_port`] — `net_str2port`: 1–65535.
//! * [`parse_ip`] — `net_addr2ip`: a string containing `:` is IPv6 (optionally
//!   in `[...]`), anything else goes through glibc's `inet_aton`, which also
//!   accepts `12345`, `0x7f.1`, octal parts and trailing whitespace + junk.
//! * [`format_ip`] — `net_ip2addr`: dotted quad / compressed lowercase IPv6,
//!   no brackets.
//! * [`ip_cmp`] — `net_ip_cmp`: IPv4 before IPv6, then bytes.

use std::net::IpAddr;

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

/// Like [`parse_uint`] but up to `u64::MAX` (Dovecot's `str_to_uint64`/`str_to_uintmax`, for
/// sizes such as a PING's buffered byte count).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut v: u64 = 0;
    for &d in s {
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
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

/// Why [`split_host_port`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostPortError {
    /// `[` without `]`, or something other than `:port` after `]`.
    Malformed,
    /// The port is not in 1..=65535 ([`parse_port`]).
    BadPort,
}

/// Splits `host[:port]` the way Dovecot's `net_str2hostport` does: `[v6]:port`, `[v6]`,
/// `host:port` (exactly one colon), or a bare host or bare IPv6 address (no port).
pub fn split_host_port(spec: &str) -> Result<(&str, Option<u16>), HostPortError> {
    let port = |p: &str| parse_port(p.as_bytes()).ok_or(HostPortError::BadPort);
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(HostPortError::Malformed)?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, Some(port(p)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(HostPortError::Malformed),
        };
    }
    match spec.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h, Some(port(p)?))),
        // No colon, or a bare IPv6 address.
        _ => Ok((spec, None)),
    }
}

/// The address helpers live in the core (the lowest layer) so that every crate parses,
/// prints and orders addresses the same way:
/// * [`parse_ip`] — `net_addr2ip`: IPv6 (with optional brackets) if the text has `:`,
///   else glibc `inet_aton` rules ([`parse_inet_aton`]); non-UTF-8 is never an address;
/// * [`format_ip`] — `net_ip2addr`/`inet_ntop`: dotted quad, or compressed lowercase
///   IPv6 as glibc prints it (`::1.2.3.4` for IPv4-compatible addresses), no brackets;
/// * [`ip_cmp`] — `net_ip_cmp`: IPv4 before IPv6, then the network-order bytes.
pub use director_core::host::{inet_aton as parse_inet_aton, inet_ntop as format_ip, ip_cmp};

/// `net_addr2ip` on a wire field; see the core's [`director_core::host::parse_ip`].
pub fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    director_core::host::parse_ip_bytes(s)
}

/// Appends [`format_ip`] to `out` without allocating for IPv4 (the common case on the
/// `USER-LOOKUP` hot path).
pub fn write_ip(out: &mut Vec<u8>, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_uint(out, u64::from(*octet));
            }
        }
        IpAddr::V6(_) => out.extend_from_slice(format_ip(ip).as_bytes()),
    }
}

/// Appends a decimal number without going through `core::fmt`.
pub fn write_uint(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_port_forms() {
        use super::{split_host_port, HostPortError};
        assert_eq!(split_host_port("127.0.0.1:10"), Ok(("127.0.0.1", Some(10))));
        assert_eq!(split_host_port("127.0.0.1"), Ok(("127.0.0.1", None)));
        assert_eq!(split_host_port("[::1]:10"), Ok(("::1", Some(10))));
        assert_eq!(split_host_port("[::1]"), Ok(("::1", None)));
        assert_eq!(split_host_port("::1"), Ok(("::1", None)));
        assert_eq!(split_host_port("host:0"), Err(HostPortError::BadPort));
        assert_eq!(split_host_port("host:x"), Err(HostPortError::BadPort));
        assert_eq!(split_host_port("[::1"), Err(HostPortError::Malformed));
        assert_eq!(split_host_port("[::1]x"), Err(HostPortError::Malformed));
    }

    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;
    use std::net::Ipv4Addr;

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
    fn u64_rules() {
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"4294967296"), Some(1 << 32));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"-1"), None);
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
