//! IP networks as Dovecot writes them in `login_trusted_networks` and friends: `IP/bits` or a
//! bare IP (one host), separated by spaces or commas. Used by `director_admin_allow_nets`.

use std::fmt;
use std::net::IpAddr;

/// Most networks one list may hold; a list this long is a mistake, not a policy.
pub const MAX_NETS: usize = 1024;

/// One network: an address and how many leading bits of it must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// The network of `addr` with `prefix` leading bits; `None` when the prefix is longer
    /// than the address (32 for IPv4, 128 for IPv6).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<IpNet> {
        (prefix <= max_prefix(addr)).then_some(IpNet {
            addr: addr.to_canonical(),
            prefix,
        })
    }

    /// The network holding exactly `addr`.
    pub fn host(addr: IpAddr) -> IpNet {
        let addr = addr.to_canonical();
        IpNet {
            addr,
            prefix: max_prefix(addr),
        }
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
    /// counts as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)) << 96, self.prefix)
                    == masked(u128::from(u32::from(ip)) << 96, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix) == masked(u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr.to_canonical() {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The top `prefix` bits of `bits` (an address left-aligned in 128 bits).
fn masked(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits & (u128::MAX << (128 - u32::from(p.min(128)))),
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parses one `IP/bits` or bare `IP`.
pub fn parse_net(word: &str) -> Result<IpNet, String> {
    let bad = || format!("Invalid network: {word}");
    let (ip, prefix) = match word.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (word, None),
    };
    let ip: IpAddr = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| bad())?;
    match prefix {
        None => Ok(IpNet::host(ip)),
        Some(bits) => {
            if bits.is_empty() || !bits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            let bits: u8 = bits.parse().map_err(|_| bad())?;
            IpNet::new(ip, bits).ok_or_else(bad)
        }
    }
}

/// Parses a space- or comma-separated list of networks (empty = none).
pub fn parse_nets(value: &str) -> Result<Vec<IpNet>, String> {
    let nets = value
        .split([' ', ',', '\t'])
        .filter(|w| !w.is_empty())
        .map(parse_net)
        .collect::<Result<Vec<_>, _>>()?;
    if nets.len() > MAX_NETS {
        return Err(format!("too many networks (at most {MAX_NETS})"));
    }
    Ok(nets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let nets = parse_nets("127.0.0.0/8 ::1, 10.1.2.3 2001:db8::/32").unwrap();
        assert_eq!(nets.len(), 4);
        assert_eq!(nets[0].to_string(), "127.0.0.0/8");
        assert_eq!(nets[1].to_string(), "::1/128");
        assert_eq!(nets[2].to_string(), "10.1.2.3/32");
        let allowed = |a: &str| nets.iter().any(|n| n.contains(ip(a)));
        assert!(allowed("127.255.0.9"));
        assert!(allowed("::ffff:127.0.0.1"), "IPv4-mapped counts as IPv4");
        assert!(allowed("::1"));
        assert!(allowed("10.1.2.3"));
        assert!(!allowed("10.1.2.4"));
        assert!(allowed("2001:db8:ffff::1"));
        assert!(!allowed("2001:db9::1"));
        assert!(!allowed("128.0.0.1"));
        assert!(!allowed("::2"));
    }

    #[test]
    fn edge_prefixes() {
        assert!(parse_net("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        assert!(!parse_net("0.0.0.0/0").unwrap().contains(ip("::1")));
        assert!(parse_net("::/0").unwrap().contains(ip("2001:db8::1")));
        assert!(parse_net("[::1]/128").unwrap().contains(ip("::1")));
        assert!(
            parse_net("::ffff:10.0.0.0/104").is_err(),
            "mapped is IPv4: /32 at most"
        );
        assert!(parse_net("::ffff:10.0.0.0/8")
            .unwrap()
            .contains(ip("10.9.9.9")));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "127.0.0.1/33",
            "::1/129",
            "host.example",
            "1.2.3.4/",
            "1.2.3.4/x",
            "1.2.3.4/-1",
        ] {
            let e = parse_nets(bad).unwrap_err();
            assert!(e.contains("Invalid network"), "{bad}: {e}");
        }
        assert_eq!(parse_nets("").unwrap(), vec![]);
        let many = vec!["10.0.0.1"; MAX_NETS + 1].join(" ");
        assert!(parse_nets(&many).unwrap_err().contains("too many"));
    }
}
