//! systemd's service notification protocol (`sd_notify(3)`), for `Type=notify` units:
//! `READY=1` once the listeners are bound and the saved state is loaded, `RELOADING=1` while
//! a SIGHUP reload runs (then `READY=1` again), `STOPPING=1` when SIGTERM or SIGINT begins
//! the shutdown. Without `NOTIFY_SOCKET` in the environment (not started by systemd) it
//! does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where systemd listens, if it does.
pub struct ServiceNotify {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl ServiceNotify {
    /// From `NOTIFY_SOCKET`: a path, or `@name` for Linux's abstract namespace. A socket
    /// that cannot be used is logged and ignored: the service still runs, only systemd
    /// will not hear that it is ready (and says so when its start timeout passes).
    pub fn from_env() -> ServiceNotify {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return ServiceNotify { target: None };
        };
        let target = open(&name).map_err(|e| {
            tracing::error!(
                socket = %name.to_string_lossy(),
                error = %e,
                "NOTIFY_SOCKET cannot be used; systemd will not be told when directord is ready"
            );
        });
        ServiceNotify {
            target: target.ok(),
        }
    }

    /// Listeners bound, state loaded: serving.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload (SIGHUP) began; [`ServiceNotify::ready`] follows when it is done.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() * 1_000_000 + t.tv_nsec() / 1_000)
            .unwrap_or(0);
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading the configuration"
        ));
    }

    /// The shutdown began (sessions drain, the state is saved).
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        if let Some((socket, addr)) = &self.target {
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::warn!(error = %e, message, "could not notify systemd");
            }
        }
    }
}

fn open(name: &std::ffi::OsStr) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = name.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name)?
        }
        None => SocketAddr::from_pathname(std::path::Path::new(name))?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}
