//! The warnings Dovecot 2.3 logs for a slow handshake (`DIRECTOR_HANDSHAKE_WARN_SECS` 29)
//! and a slow PING or PONG (`DIRECTOR_CONNECTION_PINGPONG_WARN_MSECS` 5000,
//! `director-connection.c`), read back from our log. One test in its own binary: the log
//! is captured with a subscriber of the test's thread, which tests running in parallel
//! threads of one binary would race on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod one;

use std::io::Write;
use std::sync::{Arc, Mutex};

use director_proto::ring::RingMessage;
use director_ring::Direction;
use one::*;

/// The log lines written while `f` runs.
fn logs_of(f: impl FnOnce()) -> String {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    text
}

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(" WARN ")).collect()
}

fn a_handshake_of_29_s_or_more_is_logged_as_a_warning() {
    for (secs, warned) in [(28_999, false), (29_000, true)] {
        let log = logs_of(|| {
            let mut one = One::in_a_ring();
            let now = one.now();
            one.ring
                .connected(OTHER, daddr(3).ip, Direction::Incoming, now, &mut one.dir);
            let mut lines = one.incoming_handshake(3);
            let done = lines.pop().unwrap();
            one.feed(OTHER, &lines);
            one.now_ms += secs;
            one.feed(OTHER, &[done]);
        });
        let finished: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Handshake finished in"))
            .collect();
        let slow = format!(
            "Handshake finished in {}.{:03} secs",
            secs / 1000,
            secs % 1000
        );
        let line = finished
            .iter()
            .find(|l| l.contains(&slow))
            .unwrap_or_else(|| panic!("no {slow:?} in {log}"));
        assert_eq!(line.contains(" WARN "), warned, "{line}");
    }
}

fn slow_pings_and_pongs_are_logged_as_warnings() {
    let log = logs_of(|| {
        let mut one = One::in_a_ring();
        one.sync_returns();
        // Sending the SYNC pinged both neighbours; they answer at once.
        one.feed(LEFT, &[format!("PONG\t{}\t0", one.secs())]);
        one.feed(RIGHT, &[format!("PONG\t{}\t0", one.secs())]);
        // Our next PING to the left goes out after 15 s without input; its PONG comes 5.001 s
        // later.
        one.advance_ms(15_000);
        assert!(one
            .sent_on(LEFT)
            .iter()
            .any(|m| matches!(m, RingMessage::Ping(_))));
        one.advance_ms(5_001);
        one.feed(LEFT, &[format!("PONG\t{}\t12345", one.secs() - 1)]);
        // A PING from the right sent 5 s before it arrived.
        one.feed(RIGHT, &[format!("PING\t{}\t777", one.secs() - 5)]);
        // A PING 4 s late is not worth a warning.
        one.feed(RIGHT, &[format!("PING\t{}\t0", one.secs() - 4)]);
    });
    let w = warnings(&log);
    assert!(
        w.iter().any(|l| l.contains("PONG response took 5.001 secs")
            && l.contains("remote buffer size at PONG was 12345 bytes")),
        "{log}"
    );
    assert!(
        w.iter().any(|l| l
            .contains("PING response took 5 secs to receive (send buffer was 777 bytes)")),
        "{log}"
    );
    assert!(!w.iter().any(|l| l.contains("took 4 secs")), "{log}");
}

#[test]
fn slow_handshakes_and_pings_are_logged_as_warnings() {
    a_handshake_of_29_s_or_more_is_logged_as_a_warning();
    slow_pings_and_pongs_are_logged_as_warnings();
}
