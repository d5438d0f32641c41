//! Presence of the Dovecot binaries and running the real `doveadm`.
//!
//! Tests must fail loudly when Dovecot is missing: a skipped compatibility test would hide
//! exactly the regressions the kit exists to catch.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What to run to get the binaries the kit needs.
pub const INSTALL_HINT: &str =
    "apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd";

/// The binaries every kit instance needs.
const REQUIRED_BINARIES: [&str; 3] = ["dovecot", "doveadm", "doveconf"];

/// Directories searched in addition to `$PATH` (`dovecot` lives in `/usr/sbin`, which a
/// non-login `PATH` may lack).
const EXTRA_BIN_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"];

/// Panics with an install hint if `dovecot`, `doveadm` or `doveconf` is missing.
///
/// Call it first in every test that needs real Dovecot, so that a missing package makes the
/// test fail with `dovecot not found: install it with `apt-get install -y ...`` instead of
/// a confusing spawn error. Every `start` in this crate calls it too.
pub fn require_dovecot() {
    for bin in REQUIRED_BINARIES {
        if find_binary(bin).is_none() {
            panic!("dovecot not found: install it with `{INSTALL_HINT}` (missing `{bin}`)");
        }
    }
}

/// The Submission and ManageSieve services, with the Debian package of each.
const SUBMISSION_AND_SIEVE: [(&str, &str); 2] = [
    ("submission", "dovecot-submissiond"),
    ("managesieve", "dovecot-managesieved"),
];

/// Panics with an install hint unless the backend services ([`require_backend_services`])
/// and Dovecot's Submission and ManageSieve services are installed.
pub fn require_submission_and_sieve() {
    require_backend_services();
    for (service, package) in SUBMISSION_AND_SIEVE {
        let path = Path::new(DOVECOT_LIBEXEC).join(service);
        if !path.is_file() {
            panic!(
                "{} missing: install it with `apt-get install -y {package}`",
                path.display()
            );
        }
    }
}

/// Panics with an install hint unless `python3` runs (tests drive Python's imaplib,
/// poplib and smtplib as real clients).
pub fn require_python3() {
    let ok = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        panic!("python3 not found: install it with `apt-get install -y python3`");
    }
}

/// A Python 3 that can import `module` (from Debian's `package`): `python3` on the `PATH`,
/// else Debian's own `/usr/bin/python3` (where the package installs it, when the `PATH`
/// has another Python first). Panics with an install hint when neither can.
pub fn python3_with_module(module: &str, package: &str) -> PathBuf {
    require_python3();
    let imports = |python: &Path| {
        Command::new(python)
            .args(["-c", &format!("import {module}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| imports(p))
        .unwrap_or_else(|| {
            panic!("python3 cannot import {module}: install it with `apt-get install -y {package}`")
        })
}

/// Dovecot's service binaries a backend needs (from dovecot-imapd, -pop3d and -lmtpd).
const BACKEND_SERVICES: &[&str] = &["imap", "imap-login", "pop3", "pop3-login", "lmtp"];
/// Where Debian installs them.
const DOVECOT_LIBEXEC: &str = "/usr/lib/dovecot";

/// Panics with the install command unless the backend protocol packages are installed; a
/// backend without them would only fail to start with a less helpful error.
pub fn require_backend_services() {
    require_dovecot();
    for service in BACKEND_SERVICES {
        if !std::path::Path::new(DOVECOT_LIBEXEC)
            .join(service)
            .is_file()
        {
            panic!(
                "dovecot {service} not found in {DOVECOT_LIBEXEC}: install it with `{INSTALL_HINT}`"
            );
        }
    }
}

/// Finds an executable by name on `$PATH` or in the usual system directories.
pub(crate) fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_BIN_DIRS.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Resolves a binary for [`Command::new`], falling back to the bare name (so a spawn error
/// names it) when it is not found.
pub(crate) fn binary(name: &str) -> std::path::PathBuf {
    find_binary(name).unwrap_or_else(|| std::path::PathBuf::from(name))
}

/// Runs the real `doveadm -c CONF ARGS...` and returns `(stdout, stderr, exit code)`.
///
/// Output is decoded lossily as UTF-8. A process killed by a signal reports `128 + signal`,
/// like a shell; a spawn failure panics with the install hint (the caller needs doveadm).
pub fn run_doveadm_real(conf: &Path, args: &[&str]) -> (String, String, i32) {
    require_dovecot();
    let output = Command::new(binary("doveadm"))
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running doveadm failed ({e}); install it with `{INSTALL_HINT}`")
        });
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        exit_code(&output.status),
    )
}

/// Exit code of a finished process, `128 + signal` when it was killed.
pub(crate) fn exit_code(status: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}
