//! A real Dovecot 2.3 director **proxy**: the `director` service plus `imap-login` in director
//! mode, i.e. the whole proxy tier that `directord` replaces, to compare against in the same run.
//!
//! How it works (lab ring-proxy NOTES §1, §4): `imap-login` runs as `imap-login director`, so
//! its auth requests go through the director's `login/director` socket. The passdb is
//! `static` with `proxy=y nopassword=y port=<backend IMAP port>`: the director accepts any
//! password, adds `host=<the user's backend>` to the auth reply, and imap-login replays the
//! login (with `ID x-originating-ip …`) to that backend, which checks the password. The
//! backends must trust the proxy (`login_trusted_networks`, as [`DovecotBackend`](crate::DovecotBackend)
//! does for 127.0.0.0/8). The ring is this director alone; it has a TCP admin listener, and
//! `service director { process_min_avail = 1 }` starts the director process eagerly (it is
//! otherwise started on the first connection, lab NOTES §1).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::director::{director_service, wait_director_list};
use crate::instance::Instance;
use crate::loopback::free_ports;
use crate::{AdminClient, KitError, LoopbackAllocator, BACKEND_PASSWORD, RING_SYNC_TIMEOUT};

/// How long the proxy may take to proxy a first login to a backend (director process start,
/// ring sync, auth process start).
pub const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Socket timeout of a readiness probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Lines a readiness probe reads before giving up on a tagged reply.
const PROBE_MAX_LINES: usize = 100;

/// What to put in the generated director-proxy config.
#[derive(Debug, Clone)]
pub struct DirectorProxyOptions {
    /// `director_mail_servers`, verbatim (e.g. `"127.0.1.1 127.0.1.2 127.0.1.3"`).
    pub mail_servers: String,
    /// The IMAP port every backend listens on (passdb `port=`; Dovecot's director has no
    /// per-protocol backend port setting, the login proxy takes it from the passdb reply).
    pub backend_imap_port: u16,
    /// Address to listen on; `None` takes a fresh one from a new [`LoopbackAllocator`].
    pub ip: Option<Ipv4Addr>,
    /// Client-facing IMAP port; `None` picks a free one.
    pub imap_port: Option<u16>,
    /// `director_username_hash`; `None` keeps Dovecot's default (`%Lu`).
    pub username_hash: Option<String>,
    /// `service imap-login { service_count }`: 0 (the default here) keeps long-lived login
    /// processes, Dovecot's "high-performance mode" and what the lab measured.
    pub login_service_count: u32,
    /// `service imap-login { process_min_avail }` (default 2, one per core on the dev VM).
    pub login_process_min_avail: u32,
    /// Extra config lines appended verbatim at the end (later settings win).
    pub extra_config: Vec<String>,
}

impl DirectorProxyOptions {
    /// Options for a proxy in front of `mail_servers`, all listening for IMAP on
    /// `backend_imap_port`.
    pub fn new(mail_servers: impl Into<String>, backend_imap_port: u16) -> Self {
        DirectorProxyOptions {
            mail_servers: mail_servers.into(),
            backend_imap_port,
            ip: None,
            imap_port: None,
            username_hash: None,
            login_service_count: 0,
            login_process_min_avail: 2,
            extra_config: Vec::new(),
        }
    }
    /// Listens on this address instead of an allocated one.
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }
    /// Appends one raw config line.
    pub fn with_extra(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }
}

/// A running real Dovecot director proxy, stopped by PID on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct DovecotDirectorProxy {
    instance: Instance,
    ip: Ipv4Addr,
    imap_port: u16,
    ring_port: u16,
    admin_port: u16,
}

impl DovecotDirectorProxy {
    /// Generates the config, starts `dovecot -c CONF`, waits for `ring synced` on the admin
    /// listener and then until one probe login (`LOGIN probe@testkit.invalid
    /// <BACKEND_PASSWORD>`) is proxied to a backend and answered `OK`, bounded by
    /// [`PROXY_READY_TIMEOUT`]. The backends must already run.
    pub fn start(opts: DirectorProxyOptions) -> Result<Self, KitError> {
        let mut instance = Instance::new("director-proxy")?;
        let ip = match opts.ip {
            Some(ip) => ip,
            None => LoopbackAllocator::new().next_ip(),
        };
        let [imap_port, ring_port, admin_port] =
            free_ports(IpAddr::V4(ip), [opts.imap_port, None, None])?;
        let mut config = instance.common_config();
        config.push_str(&format!(
            "listen = {ip}\n\
             protocols = imap\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             hostname = director-proxy-{ip}.testkit.invalid\n\
             login_greeting = testkit director proxy {ip} ready.\n\
             passdb {{\n  driver = static\n  args = proxy=y nopassword=y port={bport}\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup\n}}\n\
             director_servers = {ip}:{ring_port}\n\
             director_mail_servers = {mail}\n",
            bport = opts.backend_imap_port,
            mail = opts.mail_servers,
        ));
        if let Some(hash) = &opts.username_hash {
            config.push_str(&format!("director_username_hash = {hash}\n"));
        }
        config.push_str(&director_service(
            ip,
            ring_port,
            admin_port,
            "  process_min_avail = 1\n",
        ));
        config.push_str(&format!(
            "service imap-login {{\n\
             \x20 executable = imap-login director\n\
             \x20 inet_listener imap {{\n    address = {ip}\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = 0\n  }}\n\
             \x20 service_count = {sc}\n\
             \x20 process_min_avail = {pma}\n\
             }}\n\
             service ipc {{\n  unix_listener ipc {{\n    user = dovecot\n  }}\n}}\n",
            sc = opts.login_service_count,
            pma = opts.login_process_min_avail,
        ));
        for line in &opts.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        instance.start(&config)?;
        let proxy = DovecotDirectorProxy {
            instance,
            ip,
            imap_port,
            ring_port,
            admin_port,
        };
        proxy.wait_ready()?;
        Ok(proxy)
    }

    fn wait_ready(&self) -> Result<(), KitError> {
        wait_director_list(
            &self.instance,
            self.admin_tcp_addr(),
            true,
            RING_SYNC_TIMEOUT,
        )?;
        let what = format!("no proxied login through {}", self.imap_addr());
        self.instance
            .wait_until(&what, PROXY_READY_TIMEOUT, PROBE_INTERVAL, || {
                probe_login(self.imap_addr())
            })
    }

    /// The client-facing IMAP listener.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.imap_port)
    }
    /// The TCP admin listener (`inet_listener director-doveadm`).
    pub fn admin_tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.admin_port)
    }
    /// The ring listener (`inet_listener director`).
    pub fn ring_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.ring_port)
    }
    /// The loopback address the instance listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// A fresh admin client over TCP (e.g. `USER-LOOKUP` to see where a user goes).
    pub fn admin_client(&self) -> Result<AdminClient, KitError> {
        AdminClient::connect_tcp(self.admin_tcp_addr())
    }
    crate::instance::instance_accessors!();
    /// The generated config text (for reports).
    pub fn config_text(&self) -> String {
        fs::read_to_string(self.config_path()).unwrap_or_default()
    }
}

/// One LOGIN+LOGOUT through the proxy; `Ok` once the backend accepted the replayed login.
fn probe_login(addr: SocketAddr) -> Result<(), String> {
    let stream = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(PROBE_IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(stream);
    let greeting = read_line(&mut r)?;
    if !greeting.starts_with("* OK") {
        return Err(format!("greeting {greeting:?}"));
    }
    r.get_mut()
        .write_all(format!("a LOGIN probe@testkit.invalid {BACKEND_PASSWORD}\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    for _ in 0..PROBE_MAX_LINES {
        let line = read_line(&mut r)?;
        if line.starts_with("a OK") {
            let _ = r.get_mut().write_all(b"b LOGOUT\r\n");
            return Ok(());
        }
        if line.starts_with("a ") {
            return Err(format!("login answered {line:?}"));
        }
    }
    Err("no tagged reply to LOGIN".into())
}

fn read_line(r: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err("EOF".into()),
        Ok(_) => Ok(line.trim_end().to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::{free_port, require_dovecot, BackendOptions, DovecotBackend};

    /// Sends `tag CMD` and returns every line up to the tagged reply.
    fn cmd(r: &mut BufReader<TcpStream>, tag: &str, command: &str) -> Vec<String> {
        r.get_mut()
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("write");
        let mut out = Vec::new();
        for _ in 0..PROBE_MAX_LINES {
            let l = read_line(r).unwrap_or_else(|e| panic!("{e} after {command}: {out:?}"));
            let done = l.starts_with(&format!("{tag} "));
            out.push(l);
            if done {
                return out;
            }
        }
        panic!("no tagged reply to {command}: {out:?}");
    }

    fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
        let s = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).expect("connect");
        s.set_read_timeout(Some(PROBE_IO_TIMEOUT)).expect("timeout");
        let mut r = BufReader::new(s);
        let g = read_line(&mut r).expect("greeting");
        assert!(g.starts_with("* OK"), "{g}");
        r
    }

    #[test]
    fn logins_are_replayed_to_the_backend_the_director_names() {
        require_dovecot();
        let mut alloc = LoopbackAllocator::new();
        let pip = alloc.next_ip();
        let ips = [alloc.next_ip(), alloc.next_ip()];
        let port = free_port(IpAddr::V4(ips[0])).expect("port");
        let _backends: Vec<DovecotBackend> = ips
            .iter()
            .map(|ip| {
                let mut o = BackendOptions::new(*ip);
                o.imap_port = Some(port);
                DovecotBackend::start_with(o).expect("backend starts")
            })
            .collect();
        let servers = format!("{} {}", ips[0], ips[1]);
        let proxy =
            DovecotDirectorProxy::start(DirectorProxyOptions::new(servers, port).with_ip(pip))
                .expect("director proxy starts");
        let mut admin = proxy.admin_client().expect("admin");
        // Users log in until both backends were named. The backends' addresses differ from
        // run to run, so how the names spread does too: a fixed handful all landed on one
        // backend now and then. Past 64 users that happens once in 2^63 runs.
        let mut seen: Vec<String> = Vec::new();
        for i in 0..64 {
            let user = format!("u{i}@example.com");
            let mut r = connect(proxy.imap_addr());
            let reply = cmd(&mut r, "a", &format!("LOGIN {user} {BACKEND_PASSWORD}"));
            assert!(
                reply.last().expect("reply").starts_with("a OK"),
                "{reply:?}"
            );
            let id = cmd(&mut r, "b", "ID NIL").join(" ");
            let current = admin
                .command(&format!("USER-LOOKUP\t{user}\t"))
                .expect("USER-LOOKUP");
            let host = current[0]
                .split('\t')
                .next()
                .expect("current host")
                .to_string();
            assert!(
                id.contains(&format!("\"backend-ip\" \"{host}\"")),
                "{user}: {id} vs {host}"
            );
            cmd(&mut r, "z", "LOGOUT");
            if !seen.contains(&host) {
                seen.push(host);
            }
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(seen.len(), 2, "64 users all on one backend: {seen:?}");
        // The director accepts any password (nopassword=y); the backend refuses it.
        let mut r = connect(proxy.imap_addr());
        let reply = cmd(&mut r, "a", "LOGIN u0@example.com wrong");
        assert!(
            reply.last().expect("reply").starts_with("a NO"),
            "{reply:?}"
        );
    }
}
