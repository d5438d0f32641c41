//! A real IMAP/POP3/LMTP backend for proxy tests.
//!
//! It accepts any user with [`BACKEND_PASSWORD`] (static passdb), stores mail as `nobody`
//! (Dovecot refuses uid 0), trusts 127.0.0.0/8 so that a proxy can forward the client address
//! (IMAP `ID`, POP3 `XCLIENT`), and answers IMAP `ID` with `backend-ip <ip>` so a test can see
//! which backend served a session.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::unistd::{Group, User};

use crate::instance::Instance;
use crate::loopback::free_ports;
use crate::KitError;

/// The password every user has on a backend unless [`BackendOptions::password`] says otherwise.
pub const BACKEND_PASSWORD: &str = "pass";
/// How long the IMAP listener may take to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Socket timeout of the readiness probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Unprivileged owner of the mail (Dovecot refuses uid 0).
const MAIL_USER: &str = "nobody";
/// Group of [`MAIL_USER`] on Debian.
const MAIL_GROUP: &str = "nogroup";

/// What to put in the generated backend config.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Address to listen on (its own 127.x.y.z; the proxy hashes only addresses).
    pub ip: Ipv4Addr,
    /// IMAP port; `None` picks a free one. A director proxies to the same port on every
    /// backend, so proxy tests usually set one port for all backends.
    pub imap_port: Option<u16>,
    /// POP3 port; `None` picks a free one.
    pub pop3_port: Option<u16>,
    /// LMTP port; `None` picks a free one.
    pub lmtp_port: Option<u16>,
    /// The password of every user.
    pub password: String,
    /// Extra config lines appended verbatim at the end.
    pub extra_config: Vec<String>,
    /// The only users that exist (a passwd-file passdb and userdb, every one with
    /// `password`); `None`: every name exists (static passdb and userdb). With a list, LMTP
    /// refuses other recipients (`550 5.1.1 … User doesn't exist`) and logins of other names
    /// fail.
    pub users: Option<Vec<String>>,
}

impl BackendOptions {
    /// Defaults for a backend on `ip`: free ports, password [`BACKEND_PASSWORD`].
    pub fn new(ip: Ipv4Addr) -> Self {
        BackendOptions {
            ip,
            imap_port: None,
            pop3_port: None,
            lmtp_port: None,
            password: BACKEND_PASSWORD.to_string(),
            extra_config: Vec::new(),
            users: None,
        }
    }

    /// Also serves Submission and ManageSieve on `ip` at these ports (Submission needs a
    /// relay to start; nothing is ever relayed).
    /// Panics with the install command when Dovecot's submission or managesieve service is
    /// missing, so that every test asking for them says what to install.
    pub fn with_submission_and_sieve(&mut self, submission_port: u16, sieve_port: u16) {
        crate::tools::require_submission_and_sieve();
        let ip = self.ip;
        self.extra_config.extend([
            "protocols = imap pop3 lmtp submission sieve".to_string(),
            "submission_relay_host = 127.0.0.1".to_string(),
            "submission_relay_port = 9".to_string(),
            format!(
                "service submission-login {{\n inet_listener submission {{\n address = {ip}\n port = {submission_port}\n }}\n}}\n\
                 service managesieve-login {{\n inet_listener sieve {{\n address = {ip}\n port = {sieve_port}\n }}\n}}"
            ),
        ]);
    }
}

/// A running real backend, stopped by PID on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct DovecotBackend {
    instance: Instance,
    ip: Ipv4Addr,
    imap_port: u16,
    pop3_port: u16,
    lmtp_port: u16,
    password: String,
}

impl DovecotBackend {
    /// Starts a backend on `ip` with free ports and [`BACKEND_PASSWORD`].
    pub fn start(ip: Ipv4Addr) -> Result<Self, KitError> {
        Self::start_with(BackendOptions::new(ip))
    }

    /// Starts one backend per address of `ips`, all on the same IMAP, POP3 and LMTP ports (a
    /// director proxies to one port per protocol on every host): `ports` as given, or free
    /// on the first address (the others are distinct addresses, so the ports are free there
    /// too unless something else took them; then the start fails loudly). `configure`
    /// adjusts each backend's options before it starts.
    pub fn start_group(
        ips: &[Ipv4Addr],
        ports: [Option<u16>; 3],
        mut configure: impl FnMut(&mut BackendOptions),
    ) -> Result<Vec<DovecotBackend>, KitError> {
        let Some(first) = ips.first() else {
            return Ok(Vec::new());
        };
        let [imap, pop3, lmtp] = free_ports(IpAddr::V4(*first), ports)?;
        ips.iter()
            .map(|ip| {
                let mut o = BackendOptions::new(*ip);
                (o.imap_port, o.pop3_port, o.lmtp_port) = (Some(imap), Some(pop3), Some(lmtp));
                configure(&mut o);
                DovecotBackend::start_with(o)
            })
            .collect()
    }

    /// Starts a backend as described by `opts` and waits for its IMAP greeting.
    pub fn start_with(opts: BackendOptions) -> Result<Self, KitError> {
        crate::tools::require_backend_services();
        let mut instance = Instance::new("backend")?;
        let ip = opts.ip;
        let [imap_port, pop3_port, lmtp_port] = free_ports(
            IpAddr::V4(ip),
            [opts.imap_port, opts.pop3_port, opts.lmtp_port],
        )?;

        let mail_root = instance.root().join("mail");
        fs::create_dir_all(&mail_root).map_err(|e| KitError::io("creating mail dir", e))?;
        let user = User::from_name(MAIL_USER)
            .ok()
            .flatten()
            .ok_or_else(|| instance.start_error(format!("system user {MAIL_USER} missing")))?;
        let group = Group::from_name(MAIL_GROUP)
            .ok()
            .flatten()
            .ok_or_else(|| instance.start_error(format!("system group {MAIL_GROUP} missing")))?;
        std::os::unix::fs::chown(
            &mail_root,
            Some(user.uid.as_raw()),
            Some(group.gid.as_raw()),
        )
        .map_err(|e| KitError::io("chown mail dir", e))?;

        let mail = mail_root.display();
        let password = &opts.password;
        let auth = match &opts.users {
            None => format!(
                "passdb {{\n  driver = static\n  args = password={password}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={MAIL_USER} gid={MAIL_GROUP} home={mail}/%Lu\n}}\n"
            ),
            Some(users) => {
                let file = instance.root().join("users");
                let lines: String = users
                    .iter()
                    .map(|u| format!("{u}:{{PLAIN}}{password}::::::\n"))
                    .collect();
                fs::write(&file, lines).map_err(|e| KitError::io("writing the users file", e))?;
                let file = file.display();
                format!(
                    "passdb {{\n  driver = passwd-file\n  args = {file}\n}}\n\
                     userdb {{\n  driver = passwd-file\n  args = {file}\n  \
                     default_fields = uid={MAIL_USER} gid={MAIL_GROUP} home={mail}/%Lu\n}}\n"
                )
            }
        };
        let mut config = instance.common_config();
        config.push_str(&format!(
            "listen = {ip}\n\
             protocols = imap pop3 lmtp\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             postmaster_address = postmaster@testkit.invalid\n\
             hostname = backend-{ip}.testkit.invalid\n\
             login_greeting = testkit backend {ip} ready.\n\
             imap_id_send = backend-ip {ip}\n\
             login_trusted_networks = 127.0.0.0/8\n\
             mail_location = maildir:{mail}/%Lu/Maildir\n\
             first_valid_uid = 1\n\
             {auth}\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = {ip}\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = 0\n  }}\n\
             }}\n\
             service pop3-login {{\n\
             \x20 inet_listener pop3 {{\n    address = {ip}\n    port = {pop3_port}\n  }}\n\
             \x20 inet_listener pop3s {{\n    port = 0\n  }}\n\
             }}\n\
             service lmtp {{\n\
             \x20 inet_listener lmtp {{\n    address = {ip}\n    port = {lmtp_port}\n  }}\n\
             }}\n\
             service submission-login {{\n\
             \x20 inet_listener submission {{\n    port = 0\n  }}\n\
             }}\n",
            mail = mail_root.display(),
        ));
        for line in &opts.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        instance.start(&config)?;
        let backend = DovecotBackend {
            instance,
            ip,
            imap_port,
            pop3_port,
            lmtp_port,
            password: opts.password,
        };
        backend.wait_imap_greeting()?;
        Ok(backend)
    }

    fn wait_imap_greeting(&self) -> Result<(), KitError> {
        let what = format!("no IMAP greeting on {}", self.imap_addr());
        self.instance.wait_until(
            &what,
            READY_TIMEOUT,
            PROBE_INTERVAL,
            || match probe_greeting(self.imap_addr()) {
                Ok(line) if line.starts_with("* OK") => Ok(()),
                Ok(line) => Err(format!("greeting {line:?}")),
                Err(e) => Err(e.to_string()),
            },
        )
    }

    /// The backend's address (what goes into `director_mail_servers`).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// IMAP listener.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.imap_port)
    }
    /// POP3 listener.
    pub fn pop3_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.pop3_port)
    }
    /// LMTP listener.
    pub fn lmtp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.lmtp_port)
    }
    /// The password every user has.
    pub fn password(&self) -> &str {
        &self.password
    }
    /// Where mail is stored (`<mail_dir>/<lowercased user>/Maildir`).
    pub fn mail_dir(&self) -> PathBuf {
        self.instance.root().join("mail")
    }
    crate::instance::instance_accessors!();
}

fn probe_greeting(addr: SocketAddr) -> Result<String, KitError> {
    let stream = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT)
        .map_err(|e| KitError::io(format!("connecting to {addr}"), e))?;
    stream
        .set_read_timeout(Some(PROBE_IO_TIMEOUT))
        .map_err(|e| KitError::io("set_read_timeout", e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| KitError::io(format!("reading greeting from {addr}"), e))?;
    Ok(line.trim_end().to_string())
}
