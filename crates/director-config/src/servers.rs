//! `director_mail_servers` (spec §2.7) and `director_servers` (§12) lists,
//! with host-name resolution behind [`Resolver`] so tests never touch DNS.

use std::net::{IpAddr, ToSocketAddrs};

use director_core::lookup::ConfigHost;
use director_proto::value::{format_ip, parse_ip, HostPortError};

/// Most hosts one `director_mail_servers` value may expand to (a guard
/// against absurd ranges; Dovecot limits a range to 256 / 65536 addresses).
pub const MAX_MAIL_SERVERS: usize = 65_536 * 4;

/// Resolves host names to every address they have. Tests use
/// [`SystemResolver`] only with `localhost` and IP literals, or a fixed map.
pub trait Resolver {
    /// All addresses of `host`, in the resolver's order.
    fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>>;
}

/// The system resolver (`getaddrinfo` through `std::net::ToSocketAddrs`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let mut ips: Vec<IpAddr> = Vec::new();
        for sa in (host, 0u16).to_socket_addrs()? {
            if !ips.contains(&sa.ip()) {
                ips.push(sa.ip());
            }
        }
        Ok(ips)
    }
}

/// One backend from `director_mail_servers`: the core's [`ConfigHost`] itself (address,
/// `ip@tag` tag or empty, and the host name it was resolved from), so the daemon hands the
/// parsed list to the core without converting it.
pub type MailServer = ConfigHost;

/// One ring peer from `director_servers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DirectorServer {
    /// Address.
    pub ip: IpAddr,
    /// Ring port (the item's `:port`, else the ring listener's port).
    pub port: u16,
}

/// Expands an inclusive range `a-b` (same family; only the last 8 bits of
/// IPv4 or 16 bits of IPv6 may differ). Error texts are the real director's
/// (checked with Dovecot 2.3.19.1).
fn expand_range(item: &str, a: IpAddr, b: IpAddr) -> Result<Vec<IpAddr>, String> {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let (x, y) = (u32::from(x), u32::from(y));
            if x >> 8 != y >> 8 {
                return Err(format!("IP address range too large: {item}"));
            }
            if x > y {
                return Err(format!("IP addresses reversed: {item}"));
            }
            Ok((x..=y).map(|v| IpAddr::V4(v.into())).collect())
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let (x, y) = (u128::from(x), u128::from(y));
            if x >> 16 != y >> 16 {
                return Err(format!("IP address range too large: {item}"));
            }
            if x > y {
                return Err(format!("IP addresses reversed: {item}"));
            }
            Ok((x..=y).map(|v| IpAddr::V6(v.into())).collect())
        }
        _ => Err(format!(
            "IP address family mismatch: {} vs {}",
            format_ip(&a),
            format_ip(&b)
        )),
    }
}

/// Parses `director_mail_servers`: space-separated `X[@tag]` where X is an
/// IP, an `ip1-ip2` range or a host name (every resolved address becomes a
/// host). Errors are messages without location (the caller adds it).
pub fn parse_mail_servers(value: &str, resolver: &dyn Resolver) -> Result<Vec<MailServer>, String> {
    let mut out = Vec::new();
    for item in value.split([' ', '\t', ',']).filter(|s| !s.is_empty()) {
        let (host, tag) = match item.split_once('@') {
            Some((h, t)) => (h, t),
            None => (item, ""),
        };
        let push = |out: &mut Vec<MailServer>,
                    ip: IpAddr,
                    hostname: Option<String>|
         -> Result<(), String> {
            if out.len() >= MAX_MAIL_SERVERS {
                return Err(format!(
                    "director_mail_servers lists more than {MAX_MAIL_SERVERS} hosts"
                ));
            }
            out.push(MailServer {
                ip,
                tag: tag.to_owned(),
                hostname,
            });
            Ok(())
        };
        if let Some((a, b)) = host.split_once('-') {
            if let (Some(a), Some(b)) = (parse_ip(a.as_bytes()), parse_ip(b.as_bytes())) {
                for ip in expand_range(host, a, b)? {
                    push(&mut out, ip, None)?;
                }
                continue;
            }
        }
        if let Some(ip) = parse_ip(host.as_bytes()) {
            push(&mut out, ip, None)?;
            continue;
        }
        let ips = resolver
            .resolve(host)
            .map_err(|_| format!("Unknown mail host: {host}"))?;
        if ips.is_empty() {
            return Err(format!("Unknown mail server host {host}: no addresses"));
        }
        for ip in ips {
            push(&mut out, ip, Some(host.to_owned()))?;
        }
    }
    Ok(out)
}

/// Splits `host[:port]` / `[v6]:port` / bare IPv6, with this setting's error messages.
fn split_host_port(item: &str) -> Result<(&str, Option<u16>), String> {
    director_proto::value::split_host_port(item).map_err(|e| match e {
        HostPortError::BadPort => format!("Invalid port in director_servers: {item}"),
        HostPortError::Malformed => format!("Invalid director_servers entry: {item}"),
    })
}

/// Parses `director_servers`: space-separated `host[:port]`; a host name
/// adds every address it resolves to. `default_port` is the ring listener's
/// port (required for items without a port).
pub fn parse_director_servers(
    value: &str,
    default_port: Option<u16>,
    resolver: &dyn Resolver,
) -> Result<Vec<DirectorServer>, String> {
    let mut out = Vec::new();
    for item in value.split([' ', '\t', ',']).filter(|s| !s.is_empty()) {
        let (host, port) = split_host_port(item)?;
        let port = port.or(default_port).ok_or_else(|| {
            format!("director_servers: {item} has no port and service director has no ring inet_listener port")
        })?;
        let ips = match parse_ip(host.as_bytes()) {
            Some(ip) => vec![ip],
            None => resolver
                .resolve(host)
                .map_err(|e| format!("Unknown director host {host}: {e}"))?,
        };
        for ip in ips {
            out.push(DirectorServer { ip, port });
        }
    }
    Ok(out)
}

/// Text form of a mail server list item as Dovecot would print it back
/// (`ip[@tag]`).
pub fn format_mail_server(m: &MailServer) -> String {
    if m.tag.is_empty() {
        format_ip(&m.ip)
    } else {
        format!("{}@{}", format_ip(&m.ip), m.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoDns;
    impl Resolver for NoDns {
        fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
            match host {
                "multi.test" => Ok(vec![
                    "127.0.2.1".parse().unwrap(),
                    "127.0.2.2".parse().unwrap(),
                ]),
                _ => Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not found",
                )),
            }
        }
    }

    #[test]
    fn mail_servers_forms() {
        let v =
            parse_mail_servers("127.0.1.1 127.0.1.2-127.0.1.4@t ::1 multi.test@x", &NoDns).unwrap();
        let ips: Vec<String> = v.iter().map(format_mail_server).collect();
        assert_eq!(
            ips,
            [
                "127.0.1.1",
                "127.0.1.2@t",
                "127.0.1.3@t",
                "127.0.1.4@t",
                "::1",
                "127.0.2.1@x",
                "127.0.2.2@x"
            ]
        );
        assert_eq!(v[5].hostname.as_deref(), Some("multi.test"));
        assert!(parse_mail_servers("1.2.3.4-1.2.4.1", &NoDns)
            .unwrap_err()
            .contains("IP address range too large"));
        assert_eq!(
            parse_mail_servers("1.2.3.9-1.2.3.4@t", &NoDns).unwrap_err(),
            "IP addresses reversed: 1.2.3.9-1.2.3.4"
        );
        assert_eq!(
            parse_mail_servers("127.0.1.1-::1", &NoDns).unwrap_err(),
            "IP address family mismatch: 127.0.1.1 vs ::1"
        );
        assert_eq!(
            parse_mail_servers("127.0.1.1-127.0.2.1", &NoDns).unwrap_err(),
            "IP address range too large: 127.0.1.1-127.0.2.1"
        );
        assert_eq!(
            parse_mail_servers("bad@x", &NoDns).unwrap_err(),
            "Unknown mail host: bad"
        );
        assert!(parse_mail_servers("nosuch.test", &NoDns).is_err());
    }

    #[test]
    fn localhost_resolves_with_the_system_resolver() {
        let v = parse_mail_servers("localhost", &SystemResolver).unwrap();
        assert!(v
            .iter()
            .all(|m| m.ip.is_loopback() && m.hostname.as_deref() == Some("localhost")));
    }

    #[test]
    fn director_servers_forms() {
        let v = parse_director_servers(
            "127.0.0.11:9090 127.0.0.12 [::1]:9091 ::2",
            Some(9000),
            &NoDns,
        )
        .unwrap();
        let got: Vec<(String, u16)> = v.iter().map(|d| (d.ip.to_string(), d.port)).collect();
        assert_eq!(
            got,
            [
                ("127.0.0.11".to_string(), 9090),
                ("127.0.0.12".to_string(), 9000),
                ("::1".to_string(), 9091),
                ("::2".to_string(), 9000)
            ]
        );
        assert!(parse_director_servers("127.0.0.1", None, &NoDns).is_err());
        assert!(parse_director_servers("127.0.0.1:0", Some(1), &NoDns).is_err());
    }
}
