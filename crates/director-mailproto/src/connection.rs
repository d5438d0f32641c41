//! Facts about one proxied connection (where it comes from and arrives at) and the
//! credentials its client gave.

use std::net::IpAddr;

/// Where a client connection comes from and arrives at. The backend machines
/// forward these (IMAP `ID x-originating-ip …`, POP3/SMTP/ManageSieve
/// `XCLIENT ADDR=… PORT=…`) so the backend logs and checks the real client,
/// as Dovecot's login proxy does when the backend trusts the director
/// (`login_trusted_networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Client address.
    pub client_ip: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Address the client connected to (ours).
    pub local_ip: IpAddr,
    /// Port the client connected to (ours).
    pub local_port: u16,
    /// Session id to forward (`x-session-id` / `SESSION=`), if any.
    pub session_id: Option<String>,
    /// Proxy TTL to forward: the client's TTL minus this hop ([`next_hop_ttl`]). Dovecot
    /// sends `x-proxy-ttl "4"` / `TTL=4` for a client that set none. It stops proxy loops.
    pub proxy_ttl: u32,
}

impl ConnInfo {
    /// The TTL sent for a client that set none: [`LOGIN_PROXY_TTL`] minus this hop
    /// (`x-proxy-ttl "4"` in the lab).
    pub const DEFAULT_TTL: u32 = LOGIN_PROXY_TTL - 1;
}

/// The hops a login may still take when its client did not say (Dovecot's
/// `LOGIN_PROXY_TTL`). Only a client in `login_trusted_networks` may say otherwise, with IMAP
/// `ID ("x-proxy-ttl" "N")` or `XCLIENT TTL=N` (POP3, ManageSieve, Submission).
pub const LOGIN_PROXY_TTL: u32 = 5;

/// What Dovecot's login processes log (at error level, after "Aborting due to remote server: ")
/// when a login arrives with no hop left: the proxies forward to each other in a loop.
pub const TTL_EXHAUSTED: &str = "TTL reached zero - proxies appear to be looping?";

/// The TTL to send to the backend for a client whose TTL is `ttl`, or `None` when no hop is
/// left (`ttl` is 1 or 0): the login must not be proxied, it is looping. Dovecot refuses
/// before connecting when its client's TTL is at most 1, and otherwise sends one less.
pub fn next_hop_ttl(ttl: u32) -> Option<u32> {
    ttl.checked_sub(1).filter(|t| *t > 0)
}

/// A TTL value as Dovecot reads it (`str_to_uint`): ASCII digits only, no sign, no spaces,
/// within 32 bits. Anything else is not a TTL.
pub fn parse_ttl(v: &[u8]) -> Option<u32> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// The SASL mechanism the client used (or LOGIN/USER+PASS, which are plain
/// text credentials too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// IMAP `LOGIN`, POP3 `USER`/`PASS`.
    Login,
    /// SASL PLAIN.
    Plain,
    /// SASL LOGIN.
    SaslLogin,
}

/// Credentials as the client gave them. Kept only in memory for the replay.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// SASL PLAIN authorization identity; empty when not given.
    pub authzid: Vec<u8>,
    /// Login name (authentication identity).
    pub authcid: Vec<u8>,
    /// Password.
    pub password: Vec<u8>,
    /// How the client sent them.
    pub mechanism: Mechanism,
}

/// The password is overwritten when the credentials are dropped: the proxy drops them as
/// soon as the backend accepted (or refused) the login, so a session never holds its
/// client's password, and freed memory does not keep it either.
impl Drop for Credentials {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.password);
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password (logs must not leak it).
        f.debug_struct("Credentials")
            .field("authzid", &String::from_utf8_lossy(&self.authzid))
            .field("authcid", &String::from_utf8_lossy(&self.authcid))
            .field("password", &"<hidden>")
            .field("mechanism", &self.mechanism)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that set no TTL gets Dovecot's 4 sent on; each hop sends one less; a login
    /// that arrives with 1 (or 0) left is refused rather than sent on with 0.
    #[test]
    fn each_hop_sends_one_less_and_the_last_hop_refuses() {
        assert_eq!(next_hop_ttl(LOGIN_PROXY_TTL), Some(ConnInfo::DEFAULT_TTL));
        assert_eq!(next_hop_ttl(4), Some(3));
        assert_eq!(next_hop_ttl(2), Some(1));
        assert_eq!(next_hop_ttl(1), None);
        assert_eq!(next_hop_ttl(0), None);
        assert_eq!(next_hop_ttl(u32::MAX), Some(u32::MAX - 1));
    }

    /// Digits within 32 bits, as Dovecot's `str_to_uint`; no sign, space, or overflow.
    #[test]
    fn a_ttl_is_digits_within_32_bits() {
        assert_eq!(parse_ttl(b"0"), Some(0));
        assert_eq!(parse_ttl(b"3"), Some(3));
        assert_eq!(parse_ttl(b"007"), Some(7));
        assert_eq!(parse_ttl(b"4294967295"), Some(u32::MAX));
        for bad in [
            &b""[..],
            b"4294967296",
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"1x",
            b"\xff",
        ] {
            assert_eq!(parse_ttl(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
