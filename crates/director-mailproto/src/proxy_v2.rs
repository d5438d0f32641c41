//! HAProxy PROXY protocol v2 header encoder, for backends configured to take
//! it (Dovecot: `inet_listener { haproxy = yes }` + `haproxy_trusted_networks`).
//!
//! The header tells the backend the real client address instead of relying on
//! IMAP `ID` / `XCLIENT`. Only the binary v2 form with TCP over IPv4/IPv6 (and
//! LOCAL for health checks) is produced; verified against Dovecot 2.3.19's
//! haproxy listener (it logged `rip=10.9.8.7, lip=10.9.8.1`).

use std::net::{IpAddr, SocketAddr};

/// The 12-byte v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Header for a proxied TCP connection from `src` (client) to `dst` (the
/// address the client connected to). Mixed families are encoded as IPv6 with
/// the IPv4 address mapped (`::ffff:a.b.c.d`), as the spec requires one family.
pub fn encode(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11); // AF_INET, STREAM
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.push(0x21); // AF_INET6, STREAM
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6_octets(s));
            out.extend_from_slice(&v6_octets(d));
        }
    }
    out.extend_from_slice(&src.port().to_be_bytes());
    out.extend_from_slice(&dst.port().to_be_bytes());
    out
}

/// Header for a connection made by the proxy itself (health checks): LOCAL,
/// no addresses.
pub fn encode_local() -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

fn v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn tcp4_bytes() {
        let h = encode(
            "10.9.8.7:40000".parse().unwrap(),
            "10.9.8.1:143".parse().unwrap(),
        );
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[
            0x21, 0x11, 0, 12, 10, 9, 8, 7, 10, 9, 8, 1, 0x9c, 0x40, 0, 143,
        ]);
        assert_eq!(h, want);
    }

    #[test]
    fn tcp6_and_mixed() {
        let h = encode("[::1]:1".parse().unwrap(), "[::2]:2".parse().unwrap());
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        assert_eq!(h[16 + 15], 1);
        assert_eq!(h[32 + 15], 2);
        let m = encode("127.0.0.1:5".parse().unwrap(), "[::2]:6".parse().unwrap());
        assert_eq!(
            &m[16..32],
            &"::ffff:127.0.0.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        assert_eq!(&m[48..52], &[0, 5, 0, 6]);
        assert_eq!(encode_local(), [&SIGNATURE[..], &[0x20, 0, 0, 0]].concat());
    }
}
