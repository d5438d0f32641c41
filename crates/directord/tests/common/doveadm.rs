//! Dovecot's own `doveadm director …`, run against one of our daemons with a config of its
//! own (so it never reads the machine's /etc/dovecot).

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use testkit::INSTALL_HINT;

use super::Daemon;

/// The real `doveadm`, pointed at a daemon's admin socket.
pub struct RealDoveadm {
    conf: PathBuf,
    socket: PathBuf,
}

impl RealDoveadm {
    /// Writes doveadm's config into the daemon's temp dir.
    pub fn for_daemon(daemon: &Daemon) -> RealDoveadm {
        let conf = daemon.dir.path().join("doveadm.conf");
        std::fs::write(
            &conf,
            format!(
                "base_dir = {}\nssl = no\nlog_path = /dev/stderr\n",
                daemon.dir.path().join("doveadm-run").display()
            ),
        )
        .expect("write doveadm.conf");
        RealDoveadm {
            conf,
            socket: daemon.socket.clone(),
        }
    }

    /// The config it runs with (`doveadm -c`).
    pub fn conf(&self) -> &std::path::Path {
        &self.conf
    }

    /// `doveadm [GLOBAL] director SUB -a SOCKET ARGS…`; panics unless it exits 0.
    pub fn director(&self, global: &[&str], sub: &str, args: &[&str]) -> String {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .args(global)
            .arg("director")
            .arg(sub)
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run doveadm ({e}); install it with `{INSTALL_HINT}`"));
        assert!(
            out.status.success(),
            "doveadm director {sub} {args:?}: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `doveadm -f tab director status USER`: (current, hashed).
    pub fn status(&self, user: &str) -> (Option<IpAddr>, IpAddr) {
        let out = self.director(&["-f", "tab"], "status", &[user]);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let values: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let field = |name: &str| {
            header
                .iter()
                .position(|h| *h == name)
                .and_then(|i| values.get(i))
                .copied()
                .unwrap_or_else(|| panic!("no {name} in status output {out:?}"))
        };
        let current = field("status").parse().ok();
        let hashed = field("hashed")
            .parse()
            .unwrap_or_else(|_| panic!("no hashed host for {user}: {out:?}"));
        (current, hashed)
    }

    /// A user name starting with `prefix` whose hashed backend is `ip` (consistent hashing
    /// spreads users evenly, so a few tries find one).
    pub fn user_hashed_to(&self, prefix: &str, ip: IpAddr) -> String {
        (0..200)
            .map(|i| format!("{prefix}{i}@example.com"))
            .find(|u| self.status(u).1 == ip)
            .unwrap_or_else(|| panic!("no {prefix}* user hashes to {ip}"))
    }
}
