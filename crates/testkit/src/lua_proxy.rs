//! A real Dovecot 2.3 proxy whose passdb is a Lua script (`dovecot-auth-lua`): the proxy tier
//! of sites that keep Dovecot proxies in front of a `directord` cluster and route with the
//! shipped `contrib/dovecot/director-auth-http.lua`.
//!
//! It serves IMAP and POP3 on its own 127.x address; the passdb runs the given script in an
//! auth worker (`blocking=yes`), with `DIRECTOR_AUTH_HTTP_URL` in its environment
//! (`import_environment`). Readiness is the IMAP greeting (a login would create an
//! assignment).

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::instance::Instance;
use crate::loopback::free_ports;
use crate::KitError;

/// Where Debian's `dovecot-auth-lua` puts the Lua passdb.
pub const AUTH_LUA_MODULE: &str = "/usr/lib/dovecot/modules/auth/libauthdb_lua.so";
/// How long the IMAP listener may take to greet.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Socket timeout of the readiness probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Panics with the install hint unless the Lua passdb is installed.
pub fn require_auth_lua() {
    if !Path::new(AUTH_LUA_MODULE).is_file() {
        panic!("{AUTH_LUA_MODULE} missing: install it with `apt-get install -y dovecot-auth-lua`");
    }
}

/// A running Lua-routed Dovecot proxy, stopped by PID on [`stop`](Self::stop) or drop.
pub struct DovecotLuaProxy {
    instance: Instance,
    ip: Ipv4Addr,
    imap_port: u16,
    pop3_port: u16,
}

impl DovecotLuaProxy {
    /// Starts a proxy on `ip` running `script` (copied into the instance) against `url`;
    /// its login processes notify every `proxy_refresh_secs` (`DIRECTOR_PROXY_REFRESH`)
    /// while a session is open, to `base_dir/login/proxy-notify`.
    pub fn start(
        ip: Ipv4Addr,
        script: &Path,
        url: &str,
        proxy_refresh_secs: u32,
    ) -> Result<Self, KitError> {
        require_auth_lua();
        let mut instance = Instance::new("lua-proxy")?;
        let [imap_port, pop3_port] = free_ports(IpAddr::V4(ip), [None, None])?;
        let copy = instance.root().join("director-auth-http.lua");
        fs::copy(script, &copy).map_err(|e| KitError::io("copying the Lua script", e))?;
        let mut config = instance.common_config();
        config.push_str(&format!(
            "listen = {ip}\n\
             protocols = imap pop3\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             hostname = lua-proxy-{ip}.testkit.invalid\n\
             import_environment = $import_environment DIRECTOR_AUTH_HTTP_URL={url} \
             DIRECTOR_PROXY_REFRESH={proxy_refresh_secs}\n\
             passdb {{\n  driver = lua\n  args = file={script} blocking=yes\n}}\n\
             userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup\n}}\n\
             service imap-login {{\n\
             \x20 inet_listener imap {{\n    address = {ip}\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = 0\n  }}\n\
             }}\n\
             service pop3-login {{\n\
             \x20 inet_listener pop3 {{\n    address = {ip}\n    port = {pop3_port}\n  }}\n\
             \x20 inet_listener pop3s {{\n    port = 0\n  }}\n\
             }}\n",
            script = copy.display(),
        ));
        instance.start(&config)?;
        let proxy = DovecotLuaProxy {
            instance,
            ip,
            imap_port,
            pop3_port,
        };
        let addr = proxy.imap_addr();
        proxy
            .instance
            .wait_until("no IMAP greeting", READY_TIMEOUT, PROBE_INTERVAL, || {
                greeting(addr)
            })?;
        Ok(proxy)
    }

    /// The client-facing IMAP listener.
    pub fn imap_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.imap_port)
    }

    /// The client-facing POP3 listener.
    pub fn pop3_addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ip), self.pop3_port)
    }

    /// Where its login processes write proxy-notify lines (`login_proxy_notify_path`
    /// inside their chroot).
    pub fn notify_path(&self) -> std::path::PathBuf {
        self.instance.base_dir().join("login/proxy-notify")
    }

    crate::instance::instance_accessors!();
}

fn greeting(addr: SocketAddr) -> Result<(), String> {
    let s = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PROBE_IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.starts_with("* OK") {
        Ok(())
    } else {
        Err(format!("greeting {line:?}"))
    }
}
