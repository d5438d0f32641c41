//! A drop-in replacement for Dovecot 2.3's `doveadm director …` command line.
//!
//! Why a library: the binary (`src/main.rs`) is a thin shell, and the tests
//! drive the renderers and the argument parser directly. Every user-visible
//! byte (usage texts, error texts, table layout, exit codes, admin-socket
//! requests) follows what Dovecot 2.3.19's `doveadm` does, as recorded in the
//! lab (`lab/admin/NOTES.md`) and re-checked against the real program.
//!
//! Layout: [`args`] (getopt-compatible parsing), [`client`] (admin socket),
//! [`commands`] (one module per subcommand), [`format`] (the `-f`
//! formatters), [`ui`] (stdout/stderr and the exit code), [`config`]
//! (the few settings doveadm reads), [`resolve`] (host name lookups),
//! [`auth_master`] (userdb user listing for `map`), [`timefmt`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod auth_master;
pub mod client;
pub mod commands;
pub mod config;
pub mod exit;
pub mod format;
pub mod resolve;
pub mod timefmt;
pub mod ui;

use std::ffi::OsString;

/// Runs `doveadm` with `args` (without the program name) and returns the
/// process exit code.
pub fn run(args: &[OsString]) -> i32 {
    let argv: Vec<Vec<u8>> = args.iter().map(os_to_bytes).collect();
    let mut ui = ui::Ui::new();
    let code = commands::main(&argv, &mut ui);
    ui.finish();
    code
}

#[cfg(unix)]
fn os_to_bytes(s: &OsString) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    s.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
fn os_to_bytes(s: &OsString) -> Vec<u8> {
    s.to_string_lossy().into_owned().into_bytes()
}
