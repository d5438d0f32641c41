//! Offline replay of the lab recordings (`tests/data/basic.json`, copied
//! from `lab/admin/transcripts/`): for every recorded `doveadm director …`
//! run, a replay server plays the director's side of the recorded
//! admin-socket conversation, asserts that our client sends exactly the
//! recorded request bytes, and the test asserts our stdout, stderr and
//! exit code equal the real doveadm's.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

mod support;
use support::{data, texts};

const LAB_SPY_SOCK: &str = "/tmp/lab-admin/spy.sock";
const LAB_SPY_TCP: &str = "127.0.77.11:19191";
const LAB_CONF: &str = "/tmp/lab-admin/d1/dovecot.conf";
const LAB_USERS_SMALL: &str = "/tmp/lab-admin/users-small.txt";
/// How long a replay side waits for the client.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs we do not replay, and why.
const SKIP: &[(&str, &str)] = &[
    (
        "status-D",
        "-D prints Dovecot's plugin-loading debug lines; ours has no plugins",
    ),
    (
        "add-bad-ip",
        "999.1.1.1 goes to the system DNS resolver; no lookups may leave the machine",
    ),
    (
        "status-default-socket",
        "not recorded on the wire (real director socket)",
    ),
    (
        "status-tcp-real",
        "not recorded on the wire (real director listener)",
    ),
    (
        "map-no-users-file",
        "needs the auth-userdb socket; covered by tests/vs_real.rs",
    ),
];

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

trait Conn: Read + Write {}
impl<T: Read + Write> Conn for T {}

/// Plays the recorded director side; returns mismatches.
fn replay(listener: Listener, events: Vec<(String, Vec<u8>)>) -> Result<(), String> {
    let mut conn: Box<dyn Conn> = match listener {
        Listener::Unix(l) => {
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Box::new(s)
        }
        Listener::Tcp(l) => {
            let (s, _) = l.accept().map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(IO_TIMEOUT))
                .map_err(|e| e.to_string())?;
            Box::new(s)
        }
    };
    for (ev, bytes) in events {
        match ev.as_str() {
            "c2s" => {
                let mut got = vec![0u8; bytes.len()];
                conn.read_exact(&mut got)
                    .map_err(|e| format!("expected {:?}: {e}", String::from_utf8_lossy(&bytes)))?;
                if got != bytes {
                    return Err(format!(
                        "client sent {:?}, recorded {:?}",
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&bytes)
                    ));
                }
            }
            "s2c" => conn.write_all(&bytes).map_err(|e| e.to_string())?,
            _ => {}
        }
    }
    let mut rest = Vec::new();
    // The client must close without sending anything more.
    let _ = conn.read_to_end(&mut rest);
    if !rest.is_empty() {
        return Err(format!(
            "client sent extra bytes {:?}",
            String::from_utf8_lossy(&rest)
        ));
    }
    Ok(())
}

fn ours(args: &[String], dir: &Path) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_doveadm"))
        .args(args)
        .env("TZ", "UTC")
        .current_dir(dir)
        .output()
        .expect("run our doveadm");
    texts(out)
}

#[test]
fn basic_transcripts_replay_byte_for_byte() {
    let runs = data("basic.json");
    let runs = runs.as_array().expect("array of runs");
    let tmp = tempfile::tempdir().expect("tempdir");
    let sock: PathBuf = tmp.path().join("spy.sock");
    let conf = tmp.path().join("dovecot.conf");
    std::fs::write(&conf, format!("base_dir = {}/run\n", tmp.path().display())).expect("config");
    let users = tmp.path().join("users-small.txt");
    // Reconstructed from the recorded outputs: same hashes, same order.
    std::fs::write(&users, "user1\nUSER1\nuser2@example.com\nuser3\nuser4\n").expect("users file");
    // A SKIP entry must name a recorded run, so a renamed or dropped run
    // cannot leave a stale entry that hides nothing (or the wrong thing).
    for (label, why) in SKIP {
        assert!(
            runs.iter().any(|r| r["label"].as_str() == Some(label)),
            "SKIP names {label:?} ({why}), which is not in basic.json"
        );
    }
    let mut failures = Vec::new();
    let mut compared = 0;
    for run in runs {
        let label = run["label"].as_str().expect("label");
        if SKIP.iter().any(|(l, _)| *l == label) {
            continue;
        }
        let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let tcp_addr = tcp.local_addr().expect("addr").to_string();
        let subst = |s: &str| {
            s.replace(LAB_SPY_SOCK, &sock.display().to_string())
                .replace(LAB_SPY_TCP, &tcp_addr)
                .replace(LAB_CONF, &conf.display().to_string())
                .replace(LAB_USERS_SMALL, &users.display().to_string())
        };
        let args: Vec<String> = run["argv"].as_array().expect("argv")[1..]
            .iter()
            .map(|a| subst(a.as_str().expect("arg")))
            .collect();
        let wire = run["wire"].as_array().expect("wire");
        let events: Vec<(String, Vec<u8>)> = wire
            .iter()
            .map(|w| {
                let hex = w["hex"].as_str().unwrap_or_default();
                let bytes = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                (w["ev"].as_str().unwrap_or_default().to_owned(), bytes)
            })
            .collect();
        let server = if events.is_empty() {
            None
        } else {
            let _ = std::fs::remove_file(&sock);
            let listener = if args.iter().any(|a| a == &tcp_addr) {
                Listener::Tcp(tcp)
            } else {
                Listener::Unix(UnixListener::bind(&sock).expect("bind unix"))
            };
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(replay(listener, events));
            });
            Some(rx)
        };
        let (out, err, rc) = ours(&args, tmp.path());
        let want_out = subst(run["stdout"].as_str().expect("stdout"));
        let want_err = subst(run["stderr"].as_str().expect("stderr"));
        let want_rc = run["rc"].as_i64().expect("rc") as i32;
        if (out.as_str(), err.as_str(), rc) != (want_out.as_str(), want_err.as_str(), want_rc) {
            failures.push(format!(
                "{label}: args {args:?}\n  stdout {out:?}\n  want   {want_out:?}\n  stderr {err:?}\n  want   {want_err:?}\n  rc {rc} want {want_rc}"
            ));
        }
        if let Some(rx) = server {
            match rx.recv_timeout(IO_TIMEOUT * 2) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("{label}: wire: {e}")),
                Err(_) => failures.push(format!("{label}: replay server did not finish")),
            }
        }
        compared += 1;
    }
    assert!(compared >= 100, "only {compared} runs compared");
    assert!(
        failures.is_empty(),
        "{} of {compared} runs differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
