//! Real mail clients (Python's imaplib, poplib, smtplib and a raw ManageSieve client) for the
//! proxy tests: one script, `mail_clients.py` next to this crate's manifest; its docstring
//! lists the commands and the output lines.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The script's path.
pub fn mail_clients_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("mail_clients.py")
}

/// Runs `mail_clients.py ARGS...` and returns its stdout lines. Panics (a test helper) when
/// python3 is missing (with the install hint), when the script fails (with its stderr), or
/// when it runs longer than `timeout` (it is killed by its own handle first).
pub fn run_mail_clients(args: &[String], timeout: Duration) -> Vec<String> {
    crate::require_python3();
    let what = args.join(" ");
    let mut child = Command::new("python3")
        .arg(mail_clients_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python3 runs ({e}; `apt-get install -y python3`)"));
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        panic!("mail_clients.py {what}: no pipes");
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let lines: Vec<String> = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect();
        let _ = tx.send(lines);
    });
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let Ok(lines) = rx.recv_timeout(timeout) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("mail_clients.py {what} hung for {timeout:?}");
    };
    let status = child.wait();
    let err = err.join().unwrap_or_default();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "mail_clients.py {what} failed ({status:?}): {err}"
    );
    lines
}
