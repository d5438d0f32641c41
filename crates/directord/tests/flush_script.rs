//! `director_flush_socket` end to end: a user moved between hosts makes the daemon run the
//! flush script over the script protocol, with Dovecot's arguments.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT};

/// `USER-MOVE`s until the reply is not `TRYAGAIN` (the previous move's kill still running);
/// bounded by [`WAIT`].
fn move_user(c: &mut common::Client, line: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let r = c.request(line);
        if r != "TRYAGAIN\n" || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Accepts the daemon's flush connection, failing (instead of hanging) after [`WAIT`].
fn accept_bounded(listener: &UnixListener) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the daemon never connected to the flush socket"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept on the flush socket: {e}"),
        }
    }
}

#[test]
fn moving_a_user_runs_the_unix_flush_script() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("flush.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let d = Daemon::start(&format!(
        "director_flush_socket = unix:{}\ndirector_user_kick_delay = 0\n",
        sock.display()
    ));
    let mut c = d.client();
    // First assignment: no old host, so no flush.
    assert_eq!(move_user(&mut c, "USER-MOVE\tuser9\t127.0.1.1"), "OK\n");
    // Real move .1 -> .2: the flush script runs with the old and new host.
    assert_eq!(move_user(&mut c, "USER-MOVE\tuser9\t127.0.1.2"), "OK\n");

    let mut s = accept_bounded(&listener);
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    s.write_all(b"+\n").unwrap();
    drop(s);
    // user9 hashes (MD5, %Lu) to 2282266939.
    // The daemon is still serving after the script answered.
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
    assert_eq!(
        String::from_utf8_lossy(&got),
        "VERSION\tscript\t4\t0\n-\nFLUSH\n2282266939\n127.0.1.1\n127.0.1.2\nup\n100\n\n"
    );
}
