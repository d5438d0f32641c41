//! Test harness: starts the real `directord` binary on a private base_dir and talks to it over
//! real sockets.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};

pub mod doveadm;
pub mod imap;
pub mod ring;
pub mod tls;
use nix::unistd::Pid;

/// Bound on every wait in these tests (not a timing assertion: only a hang guard).
pub const WAIT: Duration = Duration::from_secs(20);

pub const HS: &[u8] = b"VERSION\tdirector-doveadm\t1\t0\n";

/// The lab director's config as far as the admin side sees it: a one-director "ring" whose
/// ring listener is 127.0.77.11:19090 (a ring of one binds nothing, but it names "self" in
/// DIRECTOR-LIST exactly as in the lab's recordings).
pub const LAB_CONFIG: &str = "\
director_servers = 127.0.77.11:19090
director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.3
service director {
  inet_listener {
    address = 127.0.77.11
    port = 19090
  }
}
";

/// A TCP connection to `to` from the local address `from` (blocking, with [`WAIT`] timeouts).
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let s = rt
        .block_on(async {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
            s.connect(to).await
        })
        .and_then(|s| s.into_std())
        .unwrap_or_else(|e| panic!("connect {from} -> {to}: {e}"));
    s.set_nonblocking(false)
        .and_then(|()| s.set_read_timeout(Some(WAIT)))
        .and_then(|()| s.set_write_timeout(Some(WAIT)))
        .expect("socket options");
    s
}

/// Reads until the server closes; everything that arrived. Panics after [`WAIT`].
pub fn read_to_close(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("server kept the connection open ({e}); got {out:?}"),
        }
    }
}

/// Replaces every 10-digit field (Unix timestamps) with `T`, so replies recorded from
/// Dovecot compare with ours.
pub fn mask_timestamps(s: &str) -> String {
    s.split('\n')
        .map(|line| {
            line.split('\t')
                .map(|f| {
                    if f.len() == 10 && f.bytes().all(|b| b.is_ascii_digit()) {
                        "T"
                    } else {
                        f
                    }
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running directord.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub base_dir: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub config: PathBuf,
    /// The extra command-line arguments it was started with.
    args: Vec<String>,
}

/// The config text every test daemon uses, with `extra` appended.
pub fn config_text(dir: &Path, extra: &str) -> String {
    format!(
        "base_dir = {run}\nlog_path = {log}\ninfo_log_path =\ndebug_log_path =\n{extra}\n",
        run = dir.join("run").display(),
        log = dir.join("directord.log").display(),
    )
}

impl Daemon {
    /// Starts with the default mail servers (127.0.1.1-3) plus `extra` config lines.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with_args(extra, &[])
    }

    pub fn start_with_args(extra: &str, args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("directord-test")
            .tempdir()
            .expect("tempdir");
        let config = dir.path().join("directord.conf");
        let extra = if extra.contains("director_mail_servers") {
            extra.to_string()
        } else {
            format!("director_mail_servers = 127.0.1.1 127.0.1.2 127.0.1.3\n{extra}")
        };
        std::fs::write(&config, config_text(dir.path(), &extra)).expect("write config");
        Self::start_in(dir, config, args)
    }

    /// Starts on an existing config file (e.g. one written for real Dovecot); `base_dir` and
    /// the log paths are overridden into a private temp dir.
    pub fn start_with_file(config: &Path, args: &[&str]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("directord-test")
            .tempdir()
            .expect("tempdir");
        let info = dir.path().join("directord.log");
        let mut all: Vec<String> = vec![
            "-o".into(),
            format!("info_log_path={}", info.display()),
            "-o".into(),
            format!("debug_log_path={}", info.display()),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Self::start_in(dir, config.to_path_buf(), &all)
    }

    fn start_in(dir: tempfile::TempDir, config: PathBuf, args: &[&str]) -> Daemon {
        let base_dir = dir.path().join("run");
        let log = dir.path().join("directord.log");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let (child, socket) = Self::launch(dir.path(), &config, &args);
        Daemon {
            child: Some(child),
            dir,
            base_dir,
            socket,
            log,
            config,
            args,
        }
    }

    /// Starts a new process on the same config, files and saved state, once the previous
    /// one has exited (see [`Daemon::wait_exit`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the previous directord still runs");
        let (child, socket) = Self::launch(self.dir.path(), &self.config, &self.args);
        self.child = Some(child);
        self.socket = socket;
    }

    /// Where the test daemon saves its state (`state_dir`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Starts the binary; returns it and the admin socket it printed.
    fn launch(dir: &Path, config: &Path, args: &[String]) -> (Child, PathBuf) {
        let base_dir = dir.join("run");
        let log = dir.join("directord.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_directord"));
        cmd.arg("-c").arg(config);
        // Keep every file of the test daemon inside its temp dir, whatever the config says.
        cmd.arg("-o")
            .arg(format!("base_dir={}", base_dir.display()));
        cmd.arg("-o").arg(format!("log_path={}", log.display()));
        cmd.arg("-o")
            .arg(format!("state_dir={}", dir.join("state").display()));
        cmd.args(args);
        cmd.env("DIRECTORD_LOG", "debug");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn directord");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let first = match rx.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "directord did not print its socket line; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        let socket = PathBuf::from(
            first
                .strip_prefix("directord: admin socket ")
                .unwrap_or_else(|| panic!("unexpected first line {first:?}")),
        );
        (child, socket)
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("kill");
    }

    /// Waits for exit (bounded); panics if it does not exit.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                return st;
            }
            assert!(Instant::now() < deadline, "directord did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?}; log:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (bounded) until the log past byte `from` contains `needle`; returns that part.
    pub fn wait_log_from(&self, from: usize, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.log_text();
            let tail = text.get(from..).unwrap_or_default();
            if tail.contains(needle) {
                return tail.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needle:?} after byte {from}; log:\n{tail}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw connection (greeting not consumed).
    pub fn connect_raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connect admin socket");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        s.set_write_timeout(Some(WAIT)).expect("timeout");
        s
    }

    /// A connection after a successful handshake.
    pub fn client(&self) -> Client {
        let mut c = Client {
            stream: self.connect_raw(),
            buf: Vec::new(),
        };
        c.stream.write_all(HS).expect("send handshake");
        assert_eq!(
            c.read_line().as_deref(),
            Some("VERSION\tdirector-doveadm\t1\t0")
        );
        c
    }

    /// VmRSS of the daemon in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    /// VmHWM (the most resident memory so far) of the daemon in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A handshaken admin client with a small line reader.
pub struct Client {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Client {
    /// Wraps an already-connected stream (greeting/handshake handled by the caller).
    pub fn from_stream(stream: UnixStream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// One line without LF; `None` at EOF.
    pub fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("read (timed out?)");
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one command line and returns the raw reply bytes: one line, or for list commands
    /// every line up to and including the empty terminator.
    pub fn request(&mut self, line: &str) -> String {
        self.send(format!("{line}\n").as_bytes());
        self.read_reply(line)
    }

    pub fn read_reply(&mut self, line: &str) -> String {
        let cmd = line.split('\t').next().unwrap_or("");
        let is_list = testkit::ADMIN_MULTILINE_COMMANDS.contains(&cmd);
        let mut out = String::new();
        loop {
            let l = self
                .read_line()
                .unwrap_or_else(|| panic!("connection closed while waiting for {line:?}"));
            out.push_str(&l);
            out.push('\n');
            if !is_list || l.is_empty() {
                return out;
            }
        }
    }

    /// Reads until the server closes; returns what arrived (buffered bytes first). Panics
    /// after [`WAIT`].
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        out.extend(raw_read_to_close(&mut self.stream));
        out
    }
}

/// Reads from a raw stream until the server closes (EOF or reset). Panics after [`WAIT`].
pub fn raw_read_to_close(s: &mut UnixStream) -> Vec<u8> {
    try_read_to_close(s).unwrap_or_else(|partial| {
        panic!(
            "server did not close the connection ({} bytes arrived)",
            partial.len()
        )
    })
}

/// Like [`raw_read_to_close`] but returns `Err(partial)` instead of panicking when the server
/// keeps the connection open past [`WAIT`].
pub fn try_read_to_close(s: &mut UnixStream) -> Result<Vec<u8>, Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(out),
            Err(_) => return Err(out),
        }
    }
}
