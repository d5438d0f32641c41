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
    /// Proxy TTL to forward (Dovecot sends `x-proxy-ttl 4` / `TTL=4`: its
    /// default of 5 minus one hop). It stops proxy loops.
    pub proxy_ttl: u32,
}

impl ConnInfo {
    /// Dovecot's default TTL after one hop (`x-proxy-ttl "4"` in the lab).
    pub const DEFAULT_TTL: u32 = 4;
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
