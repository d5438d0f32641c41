//! Host name lookups the way doveadm's `net_gethostbyname` does them: an IP
//! literal (anything `net_addr2ip` accepts, including `inet_aton` forms
//! like `12345`) is used as is; anything else goes to the system resolver
//! and yields every address it returns, in its order.

use std::net::IpAddr;

use director_config::{Resolver, SystemResolver};

/// Resolves `host`; the error is the resolver's message
/// (e.g. `Name or service not known`). Names go through
/// `director_config::SystemResolver`, the daemon's resolver, so both
/// programs see the same addresses in the same order.
pub fn lookup(host: &[u8]) -> Result<Vec<IpAddr>, String> {
    if let Some(ip) = director_proto::value::parse_ip(host) {
        return Ok(vec![ip]);
    }
    let Ok(name) = std::str::from_utf8(host) else {
        return Err("Name or service not known".to_owned());
    };
    match SystemResolver.resolve(name) {
        Ok(ips) if ips.is_empty() => Err("No address associated with hostname".to_owned()),
        Ok(ips) => Ok(ips),
        Err(e) => Err(resolver_message(&e)),
    }
}

/// Strips std's wording around the `gai_strerror` text.
fn resolver_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = s
        .strip_prefix("failed to lookup address information: ")
        .unwrap_or(&s);
    strip_os_error(s)
}

/// `strerror` text from an `io::Error` (std appends ` (os error N)`).
fn strip_os_error(s: &str) -> String {
    match s.rfind(" (os error ") {
        Some(p) if s.ends_with(')') => s[..p].to_owned(),
        _ => s.to_owned(),
    }
}

/// The `strerror` text for an I/O error.
pub fn strerror(e: &std::io::Error) -> String {
    strip_os_error(&e.to_string())
}

/// The text form of an IP as doveadm prints it.
pub fn ip_text(ip: &IpAddr) -> String {
    director_proto::value::format_ip(ip)
}
