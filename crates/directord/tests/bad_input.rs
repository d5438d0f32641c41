//! Hostile and broken clients: the daemon closes them, logs like Dovecot, stays up, and keeps
//! serving everyone else with bounded memory.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::Write;

use common::{raw_read_to_close, Daemon, HS};

/// Generous memory bound for the daemon after the abuse below (a memory bound, not timing).
const RSS_BOUND_KIB: u64 = 200 * 1024;

#[test]
fn one_mib_line_closes_silently_and_daemon_stays_up() {
    let d = Daemon::start("");
    let mut s = d.connect_raw();
    let mut line = HS.to_vec();
    line.extend_from_slice(b"HOST-LIST\t");
    line.extend(std::iter::repeat_n(b'A', 1 << 20));
    line.push(b'\n');
    // The server closes after 1 KiB; the write may fail with EPIPE/ECONNRESET.
    let _ = s.write_all(&line);
    let got = raw_read_to_close(&mut s);
    assert!(
        got.is_empty() || got == HS,
        "no reply expected besides the greeting, got {:?}",
        String::from_utf8_lossy(&got)
    );
    let mut c = d.client();
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
    // Dovecot logs nothing at error level for overlong lines.
    let log = d.log_text();
    assert!(!log.contains("ERROR"), "unexpected error log:\n{log}");
}

#[test]
fn line_of_exactly_1023_bytes_is_accepted_and_1024_is_not() {
    let d = Daemon::start("");
    // USER-LOOKUP\t + name = 1023 bytes.
    let name = "u".repeat(1023 - "USER-LOOKUP\t".len());
    let mut c = d.client();
    let reply = c.request(&format!("USER-LOOKUP\t{name}"));
    assert!(reply.ends_with('\n'), "{reply:?}");

    let name = "u".repeat(1024 - "USER-LOOKUP\t".len());
    c.send(format!("USER-LOOKUP\t{name}\n").as_bytes());
    assert_eq!(c.read_to_close(), b"");
}

#[test]
fn random_bytes_are_survived() {
    let d = Daemon::start("");
    // Deterministic pseudo-random garbage (xorshift), with and without a handshake first.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..40 {
        let mut s = d.connect_raw();
        let mut data = if round % 2 == 0 {
            HS.to_vec()
        } else {
            Vec::new()
        };
        let len = 1 + (round * 997) % 5000;
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.push((x & 0xff) as u8);
        }
        let _ = s.write_all(&data);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever happens, the server ends the conversation (reply or not) without hanging.
        let _ = raw_read_to_close(&mut s);
    }
    let mut c = d.client();
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
}

#[test]
fn five_thousand_idle_connections_then_a_normal_client() {
    let d = Daemon::start("");
    // Our own descriptor limit must allow 5000 sockets too.
    rlimit::increase_nofile_limit(u64::MAX).expect("raise test RLIMIT_NOFILE");
    let mut idle = Vec::with_capacity(5000);
    for i in 0..5000 {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket)
            .unwrap_or_else(|e| panic!("connect #{i}: {e}"));
        // Half of them complete the handshake, half never say anything.
        if i % 2 == 0 {
            s.write_all(HS).expect("handshake");
        }
        idle.push(s);
    }
    let mut c = d.client();
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
    assert!(
        c.request("DIRECTOR-LIST").contains("\tself\t"),
        "DIRECTOR-LIST broken under load"
    );
    let rss = d.rss_kib();
    assert!(
        rss < RSS_BOUND_KIB,
        "VmRSS {rss} KiB with 5000 idle clients"
    );
    drop(idle);
    let mut c2 = d.client();
    assert_eq!(c2.request("HOST-LIST-REMOVED"), "\n");
}

#[test]
fn many_overlong_lines_keep_memory_bounded() {
    let d = Daemon::start("");
    let junk = vec![b'x'; 64 * 1024];
    for _ in 0..200 {
        let mut s = d.connect_raw();
        let _ = s.write_all(HS);
        let _ = s.write_all(&junk);
        let _ = raw_read_to_close(&mut s);
    }
    let rss = d.rss_kib();
    assert!(rss < RSS_BOUND_KIB, "VmRSS {rss} KiB");
    let mut c = d.client();
    assert_eq!(c.request("HOST-LIST-REMOVED"), "\n");
}

#[test]
fn slow_reader_does_not_block_others() {
    let d = Daemon::start("");
    // A client that pipelines thousands of requests and never reads the replies: its own task
    // blocks in write; everyone else is still served.
    let mut slow = d.connect_raw();
    slow.write_all(HS).unwrap();
    let burst = "DIRECTOR-LIST\n".repeat(20_000);
    slow.set_nonblocking(true).unwrap();
    let _ = slow.write(burst.as_bytes());
    let mut c = d.client();
    assert!(c.request("DIRECTOR-LIST").contains("\tself\t"));
}
