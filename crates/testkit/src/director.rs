//! A standalone real Dovecot director: the oracle our director is compared against.
//!
//! The generated config has `protocols =` (no login services), a ring listener on its own
//! address, the default UNIX admin socket `base_dir/director-admin` and a TCP admin listener
//! (`inet_listener director-doveadm`). The director process starts on the first connection,
//! so `start` connects to the admin listener until `DIRECTOR-LIST` says `ring synced`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::instance::Instance;
use crate::loopback::free_ports;
use crate::tools::binary;
use crate::{AdminClient, KitError, LoopbackAllocator};

/// How long the director may take to report `ring synced` on its admin socket.
pub const RING_SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// What to put in the generated director config. Build with [`DirectorOptions::new`] and the
/// `with_*` methods, or fill the public fields.
#[derive(Debug, Clone, Default)]
pub struct DirectorOptions {
    /// `director_mail_servers`, verbatim (e.g. `"127.0.1.1 127.0.1.2@tagA 127.0.1.10-127.0.1.12"`).
    pub mail_servers: String,
    /// `director_username_hash`; `None` keeps Dovecot's default (`%Lu`).
    pub username_hash: Option<String>,
    /// Address to listen on; `None` takes a fresh one from a new [`LoopbackAllocator`].
    pub ip: Option<Ipv4Addr>,
    /// Ring port (`director_servers = IP:PORT`); `None` picks a free one.
    pub ring_port: Option<u16>,
    /// TCP admin port; `None` picks a free one.
    pub admin_port: Option<u16>,
    /// `director_servers`; `None` means just this director (`IP:RING_PORT`).
    pub director_servers: Option<String>,
    /// Extra config lines appended verbatim at the end (later settings win).
    pub extra_config: Vec<String>,
    /// Return from `start` as soon as the admin socket answers, without waiting for
    /// `ring synced` (the first director of a ring cannot sync until the others run; call
    /// [`DovecotDirector::wait_ring_synced`] on each once all are started).
    pub skip_sync_wait: bool,
}

impl DirectorOptions {
    /// Options for a director with these `director_mail_servers`.
    pub fn new(mail_servers: impl Into<String>) -> Self {
        DirectorOptions {
            mail_servers: mail_servers.into(),
            ..Self::default()
        }
    }
    /// Sets `director_username_hash`.
    pub fn with_username_hash(mut self, format: impl Into<String>) -> Self {
        self.username_hash = Some(format.into());
        self
    }
    /// Appends one raw config line.
    pub fn with_extra(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }
    /// Listens on this address instead of an allocated one.
    pub fn with_ip(mut self, ip: Ipv4Addr) -> Self {
        self.ip = Some(ip);
        self
    }
    /// Uses this ring port (needed to list several directors in `director_servers` before
    /// any of them starts; pre-allocate with [`free_port`](crate::free_port)).
    pub fn with_ring_port(mut self, port: u16) -> Self {
        self.ring_port = Some(port);
        self
    }
    /// Uses this TCP admin port.
    pub fn with_admin_port(mut self, port: u16) -> Self {
        self.admin_port = Some(port);
        self
    }
    /// Don't wait for `ring synced` in `start` (see [`DirectorOptions::skip_sync_wait`]).
    pub fn without_sync_wait(mut self) -> Self {
        self.skip_sync_wait = true;
        self
    }
    /// Sets `director_servers` (e.g. `"127.2.3.1:4001 127.2.3.2:4001"`) for a ring.
    pub fn with_director_servers(mut self, servers: impl Into<String>) -> Self {
        self.director_servers = Some(servers.into());
        self
    }
}

/// A running real Dovecot director, stopped by PID on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct DovecotDirector {
    instance: Instance,
    ip: Ipv4Addr,
    ring_port: u16,
    admin_port: u16,
}

impl DovecotDirector {
    /// Generates the config, starts `dovecot -c CONF`, waits for `master.pid` and then for
    /// `ring synced` on the TCP admin listener (bounded by [`RING_SYNC_TIMEOUT`]), or only for
    /// an answer to `DIRECTOR-LIST` with [`DirectorOptions::skip_sync_wait`].
    pub fn start(opts: DirectorOptions) -> Result<Self, KitError> {
        let mut instance = Instance::new("director")?;
        let ip = match opts.ip {
            Some(ip) => ip,
            None => LoopbackAllocator::new().next_ip(),
        };
        let [ring_port, admin_port] =
            free_ports(IpAddr::V4(ip), [opts.ring_port, opts.admin_port])?;
        let director_servers = opts
            .director_servers
            .clone()
            .unwrap_or_else(|| format!("{ip}:{ring_port}"));
        let mut config = instance.common_config();
        config.push_str(&format!(
            "listen = {ip}\n\
             protocols =\n\
             passdb {{\n  driver = static\n  args = proxy=y nopassword=y\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup\n}}\n\
             director_servers = {director_servers}\n\
             director_mail_servers = {mail}\n",
            mail = opts.mail_servers,
        ));
        if let Some(hash) = &opts.username_hash {
            config.push_str(&format!("director_username_hash = {hash}\n"));
        }
        config.push_str(&director_service(ip, ring_port, admin_port, ""));
        for line in &opts.extra_config {
            config.push_str(line);
            config.push('\n');
        }
        instance.start(&config)?;
        let director = DovecotDirector {
            instance,
            ip,
            ring_port,
            admin_port,
        };
        director.wait_admin(!opts.skip_sync_wait, RING_SYNC_TIMEOUT)?;
        Ok(director)
    }

    /// Waits (bounded by `timeout`) until this director's `DIRECTOR-LIST` shows
    /// `ring synced`, e.g. after all directors of a ring were started.
    pub fn wait_ring_synced(&self, timeout: Duration) -> Result<(), KitError> {
        self.wait_admin(true, timeout)
    }

    fn wait_admin(&self, want_synced: bool, timeout: Duration) -> Result<(), KitError> {
        wait_director_list(&self.instance, self.admin_tcp_addr(), want_synced, timeout)
    }

    /// The `director-userdb` socket: auth-master `PASS` lookups through the director, the
    /// path LMTP and doveadm proxying take to a user's backend.
    pub fn userdb_socket_path(&self) -> PathBuf {
        self.instance.base_dir().join("director-userdb")
    }

    /// The UNIX admin socket, `base_dir/director-admin` (what `doveadm director -a` takes).
    pub fn admin_socket_path(&self) -> PathBuf {
        self.instance.base_dir().join("director-admin")
    }
    /// The TCP admin listener (`inet_listener director-doveadm`).
    pub fn admin_tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.admin_port)
    }
    /// The ring listener (`inet_listener director`), as in `director_servers`.
    pub fn ring_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.ring_port)
    }
    /// The loopback address the instance listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    crate::instance::instance_accessors!();
    /// A fresh admin client over TCP.
    pub fn admin_client(&self) -> Result<AdminClient, KitError> {
        AdminClient::connect_tcp(self.admin_tcp_addr())
    }
    /// Runs the real `doveadm -c CONF director ARGS...` (which talks to this instance's
    /// `director-admin` socket by default).
    pub fn doveadm(&self, args: &[&str]) -> Result<Output, KitError> {
        Command::new(binary("doveadm"))
            .arg("-c")
            .arg(self.config_path())
            .arg("director")
            .args(args)
            .output()
            .map_err(|e| KitError::io("running doveadm", e))
    }
}

/// The `service director` block of a director instance: the login-side sockets, the ring
/// listener, the TCP admin listener, and `extra` lines inside the block.
pub(crate) fn director_service(
    ip: Ipv4Addr,
    ring_port: u16,
    admin_port: u16,
    extra: &str,
) -> String {
    format!(
        "service director {{\n\
         \x20 unix_listener login/director {{\n    mode = 0666\n  }}\n\
         \x20 fifo_listener login/proxy-notify {{\n    mode = 0600\n    user = $default_login_user\n  }}\n\
         \x20 unix_listener director-userdb {{\n    mode = 0600\n  }}\n\
         \x20 unix_listener director-admin {{\n    mode = 0600\n  }}\n\
         \x20 inet_listener director {{\n    address = {ip}\n    port = {ring_port}\n  }}\n\
         \x20 inet_listener director-doveadm {{\n    address = {ip}\n    port = {admin_port}\n  }}\n\
         {extra}\
         }}\n"
    )
}

/// Waits (bounded by `timeout`) until the director at `admin` answers `DIRECTOR-LIST`, and
/// with `want_synced` until that answer shows `ring synced`.
pub(crate) fn wait_director_list(
    instance: &Instance,
    admin: SocketAddr,
    want_synced: bool,
    timeout: Duration,
) -> Result<(), KitError> {
    let what = if want_synced {
        "no `ring synced`"
    } else {
        "no admin answer"
    };
    instance.wait_until(
        what,
        timeout,
        PROBE_INTERVAL,
        || match AdminClient::connect_tcp(admin).and_then(|mut c| c.command("DIRECTOR-LIST")) {
            Ok(lines) if !want_synced || lines.iter().any(|l| l.contains("ring synced")) => Ok(()),
            Ok(lines) => Err(format!("DIRECTOR-LIST = {lines:?}")),
            Err(e) => Err(e.to_string()),
        },
    )
}
