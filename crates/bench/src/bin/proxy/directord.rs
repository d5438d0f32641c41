//! `directord` as a separate process: built, configured in Dovecot syntax, started, stopped.

use std::io::BufRead;
use std::io::BufReader as StdBufReader;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::AdminClient;

use crate::client::login_logout;

/// How long `directord` may take to accept and proxy a first login.
const DIRECTORD_READY: Duration = Duration::from_secs(20);
/// How long `directord` gets to exit after SIGTERM before SIGKILL.
const DIRECTORD_STOP: Duration = Duration::from_secs(5);
/// `directord`'s drain time on SIGTERM (no sessions are open by then).
const DIRECTORD_DRAIN: &str = "1s";
/// Pause between login attempts while waiting for `directord` to proxy.
const READY_POLL: Duration = Duration::from_millis(100);

/// `directord`'s configuration for the benchmark: the backends, its IMAP listener, and
/// whatever `DIRECTORD_EXTRA_CONFIG` adds.
pub fn config(mail_servers: &str, backend_imap_port: u16, imap: SocketAddr) -> String {
    format!(
        "director_mail_servers = {mail_servers}\n\
         director_backend_port_imap = {backend_imap_port}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         director_proxy_max_connections_per_ip = 10000\n\
         director_proxy_drain_time = {DIRECTORD_DRAIN}\n\
         service imap-login {{\n inet_listener imap {{\n address = {ip}\n port = {port}\n }}\n}}\n\
         {extra}\n",
        ip = imap.ip(),
        port = imap.port(),
        extra = std::env::var("DIRECTORD_EXTRA_CONFIG").unwrap_or_default(),
    )
}

/// The metrics listener's block for `directord`'s config (`--metrics`).
pub fn metrics_config(listener: SocketAddr) -> String {
    format!(
        "service director {{\n inet_listener director-metrics {{\n address = {}\n port = {}\n }}\n}}\n",
        listener.ip(),
        listener.port()
    )
}

/// How often `--health` probes the backends (`director_health_check_interval`).
pub const HEALTH_INTERVAL: &str = "1 s";
/// The test user of `--health`'s probes (every user has the backends' password).
const HEALTH_USER: &str = "health-probe@bench.invalid";

/// The health checks of `--health`: every backend every [`HEALTH_INTERVAL`], the greeting and
/// a test user's IMAP login.
pub fn health_config() -> String {
    format!(
        "director_health_check_interval = {HEALTH_INTERVAL}\n\
         director_health_check_protocols = imap\n\
         director_health_check_user = {HEALTH_USER}\n\
         director_health_check_password = {}\n",
        testkit::BACKEND_PASSWORD
    )
}

pub struct Directord {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    pub imap: SocketAddr,
    pub admin_socket: PathBuf,
    log: PathBuf,
}

impl Directord {
    pub fn start(bin: &Path, config_body: &str, imap: SocketAddr) -> anyhow::Result<Directord> {
        let dir = tempfile::Builder::new()
            .prefix("proxy-bench-directord-")
            .tempdir()?;
        let log = dir.path().join("directord.log");
        let config = dir.path().join("directord.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {run}\nstate_dir = {run}\nlog_path = {log}\ninfo_log_path =\ndebug_log_path =\n{config_body}",
                run = dir.path().join("run").display(),
                log = log.display(),
            ),
        )?;
        let mut child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("directord stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = StdBufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        let mut d = Directord {
            child: Some(child),
            _dir: dir,
            imap,
            admin_socket: PathBuf::new(),
            log,
        };
        let first = rx
            .recv_timeout(DIRECTORD_READY)
            .map_err(|_| anyhow::anyhow!("directord printed nothing; log:\n{}", d.log_text()))?;
        d.admin_socket = PathBuf::from(
            first
                .strip_prefix("directord: admin socket ")
                .with_context(|| format!("unexpected first line {first:?}"))?,
        );
        Ok(d)
    }

    /// Waits until a login through `directord` reaches a backend.
    pub async fn wait_until_proxying(&self) -> anyhow::Result<()> {
        let ready = Instant::now() + DIRECTORD_READY;
        loop {
            match login_logout(self.imap, "probe@example.com").await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > ready => {
                    bail!(
                        "directord never proxied a login: {e:#}; log:\n{}",
                        self.log_text()
                    )
                }
                Err(_) => tokio::time::sleep(READY_POLL).await,
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + DIRECTORD_STOP;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Directord {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `directord` binary: `DIRECTORD_BIN`, else `directord` next to this program, built
/// first with the `cargo` that runs us (same profile, same target dir).
pub fn directord_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("DIRECTORD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    // <target>/<profile>/proxy
    let profile_dir = exe.parent().context("cannot locate the target dir")?;
    let target_dir = profile_dir
        .parent()
        .context("cannot locate the target dir")?;
    let bin = profile_dir.join("directord");
    if let Some(cargo) = std::env::var_os("CARGO") {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "directord", "--manifest-path"]);
        build.arg(&manifest).arg("--target-dir").arg(target_dir);
        if release {
            build.arg("--release");
        }
        eprintln!("proxy: {build:?}");
        let st = build.status().context("running cargo build -p directord")?;
        if !st.success() {
            bail!("cargo build -p directord failed ({st})");
        }
    }
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p directord` first or set DIRECTORD_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// The hashed host of each user, from an admin `USER-LOOKUP` (`current expire hashed initial`).
pub fn lookup_homes(admin: &mut AdminClient, users: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    users
        .iter()
        .map(|u| {
            let lines = admin.command(&format!("USER-LOOKUP\t{u}\t"))?;
            let line = lines.first().cloned().unwrap_or_default();
            let f: Vec<&str> = line.split('\t').collect();
            let current = f.first().and_then(|s| s.parse::<IpAddr>().ok());
            let hashed = f.get(2).and_then(|s| s.parse::<IpAddr>().ok());
            current
                .or(hashed)
                .with_context(|| format!("USER-LOOKUP {u} answered {line:?}"))
        })
        .collect()
}
