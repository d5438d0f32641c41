//! A real Dovecot 2.3 instance on a private loopback address, for the interop
//! tests: our machines must produce the same bytes as Dovecot's login
//! processes and must log in to a real Dovecot backend.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How long to wait for Dovecot to listen.
const START_TIMEOUT: Duration = Duration::from_secs(15);

static NEXT_HOST: AtomicU8 = AtomicU8::new(1);

/// A fresh 127.127.p.h address: 127.127/16 is outside the testkit
/// allocator's blocks (127.2–126.x.x) and the lab's 127.0.x.x.
pub fn fresh_ip() -> Ipv4Addr {
    let p = (std::process::id() % 250) as u8;
    let h = NEXT_HOST.fetch_add(1, Ordering::SeqCst);
    assert!(h < 250, "out of test addresses");
    Ipv4Addr::new(127, 127, p, h)
}

pub struct Dovecot {
    pub ip: Ipv4Addr,
    dir: tempfile::TempDir,
    pid: Option<i32>,
}

fn install_hint() -> &'static str {
    "real Dovecot is required: apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond dovecot-managesieved"
}

impl Dovecot {
    /// Starts an instance listening on `ip` (IMAP 143, POP3 110, Submission 587,
    /// ManageSieve 4190, LMTP 24, plus `haproxy = yes` IMAP on 10143).
    /// `passdb_args` is the static passdb's `args`; `extra` is appended.
    pub fn start(name: &str, ip: Ipv4Addr, passdb_args: &str, extra: &str) -> Self {
        let found = Command::new("dovecot").arg("--version").output();
        assert!(found.is_ok(), "{}", install_hint());
        for bin in [
            "imap-login",
            "pop3-login",
            "submission-login",
            "managesieve-login",
            "lmtp",
        ] {
            assert!(
                std::path::Path::new("/usr/lib/dovecot").join(bin).exists(),
                "/usr/lib/dovecot/{bin} missing; {}",
                install_hint()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("mailproto-dovecot-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for d in ["run", "state", "mail"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let nobody = Command::new("id").args(["-u", "nobody"]).output().unwrap();
        let uid: u32 = String::from_utf8_lossy(&nobody.stdout)
            .trim()
            .parse()
            .unwrap();
        std::os::unix::fs::chown(root.join("mail"), Some(uid), None).unwrap();
        let r = root.display();
        let conf = format!(
            r#"instance_name = mailproto-{name}-{ip}
base_dir = {r}/run
state_dir = {r}/state
log_path = {r}/dovecot.log
listen = {ip}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
postmaster_address = postmaster@test.invalid
hostname = {name}.test.invalid
login_greeting = {name} ready.
protocols = imap pop3 lmtp submission sieve
haproxy_trusted_networks = 127.0.0.0/8
service imap-login {{
  inet_listener imap {{
    port = 143
  }}
  inet_listener imaps {{
    port = 0
  }}
  inet_listener imapha {{
    port = 10143
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 110
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 587
  }}
  inet_listener submissions {{
    port = 0
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = 4190
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    port = 24
  }}
}}
submission_relay_host = 127.0.0.1
submission_relay_port = 9
mail_location = maildir:{r}/mail/%Lu/Maildir
first_valid_uid = {uid}
passdb {{
  driver = static
  args = {passdb_args}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={r}/mail/%Lu
}}
{extra}
"#
        );
        let conf_path = root.join("dovecot.conf.in");
        std::fs::write(&conf_path, conf).unwrap();
        // The master daemonizes and keeps its stdio: send it to files, never
        // to pipes (reading a pipe would wait for the daemon to exit).
        let stderr_path = root.join("start.stderr");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&conf_path)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(root.join("start.stdout")).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "dovecot failed to start: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        let mut me = Self { ip, dir, pid: None };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if me.pid.is_none() {
                if let Ok(s) = std::fs::read_to_string(root.join("run/master.pid")) {
                    me.pid = s.trim().parse().ok();
                }
            }
            let ready = [143u16, 110, 587, 4190, 24].iter().all(|p| {
                TcpStream::connect_timeout(&SocketAddr::from((ip, *p)), Duration::from_millis(200))
                    .is_ok()
            });
            if me.pid.is_some() && ready {
                return me;
            }
            assert!(
                Instant::now() < deadline,
                "dovecot did not start listening: {}",
                me.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    pub fn mail_dir(&self) -> PathBuf {
        self.dir.path().join("mail")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A blocking client connection with bounded reads.
pub struct Conn {
    pub s: TcpStream,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"))
    }

    /// Like [`Conn::connect`], but a refused connection is an `Err`.
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Self> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(Self { s })
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Reads until `done(&bytes)` says the reply is complete, the peer closes,
    /// or 20 s pass (Dovecot delays logins after a failed one by 2 s and more).
    pub fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline && !done(&out) {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        out
    }

    /// Reads whatever arrives until `quiet` passes with nothing new (after at
    /// least one byte), bounded by 10 s.
    pub fn read_quiet(&mut self, quiet: Duration) -> Vec<u8> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = Instant::now();
        let mut buf = [0u8; 65536];
        while Instant::now() < deadline {
            match self.s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    last = Instant::now();
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    if !out.is_empty() && last.elapsed() >= quiet {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        out
    }
}
