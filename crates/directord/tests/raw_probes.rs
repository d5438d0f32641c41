//! Replays all 57 raw admin conversations recorded against Dovecot 2.3.19's director
//! (lab/admin/transcripts/raw_probes.json, copied to tests/data) against our daemon, in the
//! same order and from the same starting state, and checks the same outcome: the same reply
//! bytes (10-digit Unix timestamps masked), and closed exactly when Dovecot closed.
//!
//! Two recorded conversations are not reproducible on purpose:
//! * `USER-MOVE hash 0` crashed Dovecot (assertion, process restarted with an empty state);
//!   we must not crash. We accept any reply (or a close) and then require the daemon to be up.
//! * `half-close after command` ran on the restarted Dovecot (3 hosts only), so we compare the
//!   shape (a HOST-LIST reply, then the server closes) instead of the bytes.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::Write;

use common::{mask_timestamps as mask, Daemon, HS, LAB_CONFIG};
use serde_json::Value;

/// The state the lab director had when the probes ran (from the doveadm runs before them).
const SETUP: &[&str] = &[
    "HOST-SET\t127.0.1.4\t80",
    "HOST-SET\t127.0.1.6\t0",
    "HOST-SET\t127.0.1.7@tagA",
    "HOST-SET\t127.0.1.8@tagB\t20",
    "HOST-DOWN\t127.0.1.2",
    "HOST-DOWN\t127.0.1.3",
    "HOST-UP\t127.0.1.2",
    "HOST-UP\t127.0.1.3",
];

const SENTINEL: &str = "DIRECTOR-LIST\n";
const SENTINEL_REPLY: &str = "127.0.77.11\t19090\tself\t0\tring synced\t0\n\n";

fn sent_bytes(label: &str, sent: &[Value]) -> Vec<Vec<u8>> {
    let big = |tail: Vec<u8>| {
        let mut v = HS.to_vec();
        v.extend(tail);
        vec![v]
    };
    match label {
        "overlong-line-64KiB (no LF)" => big(vec![b'A'; 65536]),
        "overlong-line-64KiB+LF" => {
            let mut t = vec![b'A'; 65536];
            t.push(b'\n');
            big(t)
        }
        "overlong-line-1MiB+LF" => {
            let mut t = b"HOST-LIST\t".to_vec();
            t.extend(std::iter::repeat_n(b'A', 1 << 20));
            t.push(b'\n');
            big(t)
        }
        "long-username-8KiB USER-LOOKUP" => {
            let mut t = b"USER-LOOKUP\t".to_vec();
            t.extend(std::iter::repeat_n(b'u', 8192));
            t.extend_from_slice(b"\t\n");
            big(t)
        }
        _ => sent
            .iter()
            .map(|s| {
                // The recorder stored bytes as latin-1 text.
                s.as_str()
                    .expect("sent item")
                    .chars()
                    .map(|c| u8::try_from(u32::from(c)).expect("latin-1"))
                    .collect()
            })
            .collect(),
    }
}

fn recorded_data(received: &[Value]) -> String {
    received
        .iter()
        .filter(|ev| ev[0] == "data")
        .map(|ev| ev[1].as_str().expect("data").to_string())
        .collect()
}

#[test]
fn replay_all_raw_probes_like_dovecot() {
    let probes: Vec<Value> =
        serde_json::from_str(include_str!("data/raw_probes.json")).expect("raw_probes.json");
    assert_eq!(probes.len(), 57);
    let mut d = Daemon::start(LAB_CONFIG);
    {
        let mut c = d.client();
        for cmd in SETUP {
            assert_eq!(c.request(cmd), "OK\n", "setup {cmd}");
        }
    }
    let greeting = String::from_utf8_lossy(HS).into_owned();
    let mut failures = Vec::new();
    for probe in &probes {
        let label = probe["label"].as_str().expect("label");
        let sent = sent_bytes(label, probe["sent"].as_array().expect("sent"));
        let expect_closed = probe["server_closed"].as_bool().expect("server_closed");
        let expected = recorded_data(probe["received"].as_array().expect("received"));
        let expected_rest = expected
            .strip_prefix(&greeting)
            .unwrap_or(&expected)
            .to_string();

        let mut s = d.connect_raw();
        for chunk in &sent {
            // After a close, further writes fail (EPIPE/ECONNRESET) exactly as in the lab.
            if s.write_all(chunk).is_err() {
                break;
            }
        }
        let handshaken = sent
            .first()
            .is_some_and(|c| c.starts_with(b"VERSION\tdirector-doveadm\t1\t"));
        if label == "half-close after command" {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        // Dovecot crashed on this one; we answer instead, so read it like an open connection.
        let wait_close =
            (expect_closed && label != "USER-MOVE hash 0") || label == "half-close after command";
        let got = if wait_close {
            match common::try_read_to_close(&mut s) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Err(partial) => format!("{}<NOT CLOSED>", String::from_utf8_lossy(&partial)),
            }
        } else if handshaken {
            let _ = s.write_all(SENTINEL.as_bytes());
            let mut c = common::Client::from_stream(s);
            let mut out = String::new();
            // Read until the sentinel's reply (a self line, then the empty terminator) arrived.
            // The probe's own DIRECTOR-LISTs end the same way, so count them in.
            let own_lists = sent
                .iter()
                .map(|c| c.windows(14).filter(|w| w == b"DIRECTOR-LIST\n").count())
                .sum::<usize>();
            let mut lists_seen = 0;
            let mut prev_self = false;
            loop {
                match c.read_line() {
                    Some(l) => {
                        if prev_self && l.is_empty() {
                            lists_seen += 1;
                        }
                        prev_self = l.contains("\tself\t");
                        out.push_str(&l);
                        out.push('\n');
                        if lists_seen > own_lists {
                            break;
                        }
                    }
                    None => {
                        out.push_str("<CLOSED>");
                        break;
                    }
                }
            }
            match out.strip_suffix(SENTINEL_REPLY) {
                Some(rest) => rest.to_string(),
                None => format!("{out}<SENTINEL MISMATCH>"),
            }
        } else {
            // connect-and-wait: only the greeting, and the server must not close on its own.
            let mut g = vec![0u8; HS.len()];
            std::io::Read::read_exact(&mut s, &mut g).expect("greeting");
            String::from_utf8_lossy(&g).into_owned()
        };
        let got_rest = got.strip_prefix(&greeting).unwrap_or(&got).to_string();

        match label {
            "USER-MOVE hash 0" => {
                // Dovecot crashed here; we only require to still be alive afterwards.
                assert!(d.is_running(), "daemon died on USER-MOVE hash 0");
                continue;
            }
            "half-close after command" => {
                let ok = got_rest.ends_with("\n\n")
                    && got_rest.starts_with("127.0.1.1\t")
                    && !got_rest.contains("<CLOSED>");
                if !ok {
                    failures.push(format!("{label}: got {got_rest:?}"));
                }
                continue;
            }
            _ => {}
        }
        if mask(&got_rest) != mask(&expected_rest) {
            failures.push(format!(
                "{label}: expected {:?} (closed={expect_closed}), got {:?}",
                expected_rest, got_rest
            ));
        }
    }
    assert!(d.is_running(), "daemon died during the probes");
    // Dovecot's log lines for the rejected probes appear in ours with the same wording.
    let log = d.log_text();
    for probe in &probes {
        let dlog = probe["director_log"].as_str().unwrap_or("");
        for line in dlog.lines() {
            if let Some(msg) = line.split(" director: Error: ").nth(1) {
                if !log.contains(msg) {
                    failures.push(format!("log lacks {msg:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
