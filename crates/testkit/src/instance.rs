//! One private Dovecot instance: temp dir, config file, start, `master.pid`, stop by PID.
//!
//! Dovecot daemonizes, so the kit never owns a child handle: the only safe way to stop it is
//! the PID in `base_dir/master.pid`, checked to still be a `dovecot` process before it is
//! signalled. The config lives outside `base_dir` because Dovecot puts a `dovecot.conf`
//! symlink there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::tools::{binary, exit_code, require_dovecot};
use crate::KitError;

/// How long `master.pid` may take to appear after `dovecot` returns.
const PID_FILE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the master gets to exit after SIGTERM before it is sent SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// How long to wait for the master to vanish after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Poll interval of every bounded wait here.
const POLL: Duration = Duration::from_millis(50);
/// Bytes of log included in start failure messages.
const LOG_TAIL_BYTES: usize = 4000;

/// Directory layout and lifecycle of one Dovecot instance.
#[derive(Debug)]
pub(crate) struct Instance {
    dir: TempDir,
    name: String,
    master_pid: Option<i32>,
}

impl Instance {
    /// Creates the temp dir (world-traversable, because Dovecot's unprivileged processes,
    /// e.g. auth as `dovecot` and mail as `nobody`, must reach files below it).
    pub(crate) fn new(kind: &str) -> Result<Self, KitError> {
        require_dovecot();
        let dir = tempfile::Builder::new()
            .prefix(&format!("testkit-{kind}-"))
            .tempdir()
            .map_err(|e| KitError::io("creating instance temp dir", e))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| KitError::io("chmod instance temp dir", e))?;
        let name = format!(
            "testkit-{kind}-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .rsplit('-')
                .next()
                .unwrap_or_default()
        );
        Ok(Instance {
            dir,
            name,
            master_pid: None,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        self.dir.path()
    }
    pub(crate) fn config_path(&self) -> PathBuf {
        self.root().join("dovecot.conf")
    }
    pub(crate) fn base_dir(&self) -> PathBuf {
        self.root().join("run")
    }
    pub(crate) fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }
    pub(crate) fn log_path(&self) -> PathBuf {
        self.root().join("dovecot.log")
    }
    pub(crate) fn master_pid(&self) -> Option<i32> {
        self.master_pid
    }

    /// The settings every instance shares: identity, private dirs, logging.
    pub(crate) fn common_config(&self) -> String {
        let log = self.log_path();
        format!(
            "instance_name = {name}\n\
             base_dir = {base}\n\
             state_dir = {state}\n\
             log_path = {log}\n\
             info_log_path = {log}\n\
             debug_log_path = {log}\n\
             ssl = no\n",
            name = self.name,
            base = self.base_dir().display(),
            state = self.state_dir().display(),
            log = log.display(),
        )
    }

    /// The whole log so far (empty if none was written yet).
    pub(crate) fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(LOG_TAIL_BYTES);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    pub(crate) fn start_error(&self, detail: impl Into<String>) -> KitError {
        KitError::Start {
            conf: self.config_path(),
            detail: format!("{}\n--- log tail ---\n{}", detail.into(), self.log_tail()),
        }
    }

    /// Calls `probe` every `interval` until it returns `Ok` or `timeout` has passed; the
    /// start error then reads "WHAT within N s (last: <the probe's last Err>)" plus the log
    /// tail. Every launcher's readiness wait is this loop with its own probe.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        interval: Duration,
        mut probe: impl FnMut() -> Result<(), String>,
    ) -> Result<(), KitError> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            match probe() {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            sleep(interval);
        }
        Err(self.start_error(format!(
            "{what} within {} s (last: {last})",
            timeout.as_secs()
        )))
    }

    /// Writes the config and runs `dovecot -c CONF`, then waits for `master.pid`.
    pub(crate) fn start(&mut self, config: &str) -> Result<(), KitError> {
        fs::create_dir_all(self.state_dir()).map_err(|e| KitError::io("creating state_dir", e))?;
        fs::write(self.config_path(), config).map_err(|e| KitError::io("writing config", e))?;
        // The daemonized master inherits stdout/stderr; pipes would never see EOF, so the
        // launcher's output goes to a file instead.
        let out_path = self.root().join("dovecot-start.out");
        let out = fs::File::create(&out_path)
            .map_err(|e| KitError::io("creating dovecot-start.out", e))?;
        let err = out
            .try_clone()
            .map_err(|e| KitError::io("cloning dovecot-start.out", e))?;
        let status = Command::new(binary("dovecot"))
            .arg("-c")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .map_err(|e| KitError::io("spawning dovecot", e))?;
        if !status.success() {
            return Err(self.start_error(format!(
                "`dovecot -c` exited {}: {}",
                exit_code(&status),
                fs::read_to_string(&out_path).unwrap_or_default()
            )));
        }
        let pid_file = self.base_dir().join("master.pid");
        let deadline = Instant::now() + PID_FILE_TIMEOUT;
        loop {
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                if is_dovecot_process(pid) {
                    self.master_pid = Some(pid);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(self.start_error(format!(
                    "{} did not appear within {} s",
                    pid_file.display(),
                    PID_FILE_TIMEOUT.as_secs()
                )));
            }
            sleep(POLL);
        }
    }

    /// Stops the master by PID: SIGTERM, bounded wait, then SIGKILL. Idempotent.
    pub(crate) fn stop(&mut self) -> Result<(), KitError> {
        let Some(pid) = self.master_pid.take() else {
            return Ok(());
        };
        if !is_dovecot_process(pid) {
            return Ok(());
        }
        signal(pid, Signal::SIGTERM)?;
        if wait_gone(pid, TERM_GRACE) {
            return Ok(());
        }
        if is_dovecot_process(pid) {
            signal(pid, Signal::SIGKILL)?;
        }
        if wait_gone(pid, KILL_GRACE) {
            Ok(())
        } else {
            Err(KitError::Timeout {
                what: format!("dovecot master {pid} to exit after SIGKILL"),
                secs: KILL_GRACE.as_secs(),
            })
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Errors cannot propagate out of Drop; the PID check makes a failed stop harmless.
        let _ = self.stop();
    }
}

fn signal(pid: i32, sig: Signal) -> Result<(), KitError> {
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(source) => Err(KitError::Signal { pid, source }),
    }
}

/// True while `pid` is a live (non-zombie) process whose command name is `dovecot`, so a
/// recycled PID is never signalled.
fn is_dovecot_process(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Format: "PID (COMM) STATE ..."; COMM may contain spaces, so split at the last ')'.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    comm == "dovecot" && !matches!(state, Some('Z') | Some('X'))
}

fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if !is_dovecot_process(pid) {
            return true;
        }
        sleep(POLL);
    }
    !is_dovecot_process(pid)
}

/// The accessors every launcher (backend, director, auth, director proxy) offers, forwarded
/// to its `instance: Instance` field: one definition instead of a copy per launcher.
macro_rules! instance_accessors {
    () => {
        /// The generated config file (outside `base_dir`).
        pub fn config_path(&self) -> std::path::PathBuf {
            self.instance.config_path()
        }
        /// The instance's `base_dir`.
        pub fn base_dir(&self) -> std::path::PathBuf {
            self.instance.base_dir()
        }
        /// The instance's temp dir (config, log, base_dir and state_dir live below it).
        pub fn root_dir(&self) -> &std::path::Path {
            self.instance.root()
        }
        /// The master PID from `master.pid` (`None` after [`stop`](Self::stop)); its
        /// children are the instance's service processes.
        pub fn master_pid(&self) -> Option<i32> {
            self.instance.master_pid()
        }
        /// The whole Dovecot log so far.
        pub fn log(&self) -> String {
            self.instance.log()
        }
        /// Stops the master by PID (SIGTERM, bounded wait, SIGKILL). Drop does the same.
        pub fn stop(&mut self) -> Result<(), crate::error::KitError> {
            self.instance.stop()
        }
    };
}
pub(crate) use instance_accessors;
