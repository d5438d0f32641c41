//! Replays every malformed/edge conversation recorded against real Dovecot
//! 2.3.19.1 (lab/admin/transcripts/raw_probes.json) through our sans-I/O
//! admin server and checks that we close without a reply exactly when
//! Dovecot did, and log the same text.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use director_proto::admin::{AdminServerSession, ServerClose};
use serde_json::Value;

/// What our server does with a conversation.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Closed without replying; with the log line (if any).
    Closed(Option<String>),
    /// Accepted N requests and kept the connection open.
    Served(usize),
}

fn run(sent: &[u8]) -> Outcome {
    let mut session = AdminServerSession::new();
    let mut data = sent;
    let mut served = 0;
    loop {
        let n = session.feed(data);
        data = &data[n..];
        loop {
            match session.next_request() {
                Ok(Some(_)) => served += 1,
                Ok(None) => break,
                Err(e) => {
                    let log = e.dovecot_logs().then(|| e.to_string());
                    return Outcome::Closed(log);
                }
            }
        }
        if data.is_empty() {
            return Outcome::Served(served);
        }
        if n == 0 {
            // Buffer full without a line: next_request reported nothing?
            // Cannot happen: a full buffer yields LineTooLong.
            panic!("framer stalled");
        }
    }
}

/// Rebuilds the over-long probes from their recorded descriptions.
fn synthesize(label: &str) -> Option<Vec<u8>> {
    let hs = b"VERSION\tdirector-doveadm\t1\t0\n".to_vec();
    let mut v = hs.clone();
    match label {
        "overlong-line-64KiB (no LF)" => v.extend(std::iter::repeat_n(b'A', 65565 - hs.len())),
        "overlong-line-64KiB+LF" => {
            v.extend(std::iter::repeat_n(b'A', 65566 - hs.len() - 1));
            v.push(b'\n');
        }
        "overlong-line-1MiB+LF" => {
            v.extend(std::iter::repeat_n(b'A', 1 << 20));
            v.push(b'\n');
        }
        "long-username-8KiB USER-LOOKUP" => {
            v.extend_from_slice(b"USER-LOOKUP\t");
            v.extend(std::iter::repeat_n(b'u', 8235 - hs.len() - 12 - 2));
            v.extend_from_slice(b"\t\n");
            assert_eq!(v.len(), 8235);
        }
        _ => return None,
    }
    Some(v)
}

#[test]
fn replay_dovecot_probes() {
    let text = include_str!("data/raw_probes.json");
    let probes: Vec<Value> = serde_json::from_str(text).unwrap();
    assert_eq!(probes.len(), 57);
    let mut checked = 0;
    for p in &probes {
        let label = p["label"].as_str().unwrap();
        let closed = p["server_closed"].as_bool().unwrap();
        let replies = p["received"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == "data")
            .map(|r| r[1].as_str().unwrap().to_owned())
            .collect::<String>();
        let replied_beyond_greeting = replies.len() > "VERSION\tdirector-doveadm\t1\t0\n".len();
        let log = p["director_log"].as_str().unwrap();

        let sent: Vec<u8> = match synthesize(label) {
            Some(v) => v,
            None => p["sent"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s.as_str().unwrap().as_bytes().to_vec())
                .collect(),
        };
        let ours = run(&sent);

        match label {
            // Dovecot crashes on hash 0 (an assertion); we must not. The
            // parse layer accepts it and the daemon answers.
            "USER-MOVE hash 0" => {
                assert_eq!(ours, Outcome::Served(1), "{label}");
                continue;
            }
            // The client half-closed after a good command: the close is the
            // client's, the reply was sent.
            "half-close after command" => {
                assert_eq!(ours, Outcome::Served(1), "{label}");
                assert!(replied_beyond_greeting);
                continue;
            }
            _ => {}
        }

        let dovecot_closed_silently = closed && !replied_beyond_greeting;
        match &ours {
            Outcome::Closed(our_log) => {
                assert!(
                    dovecot_closed_silently,
                    "{label}: we close, Dovecot did not"
                );
                match our_log {
                    Some(text) => assert!(
                        log.contains(&format!("Error: {text}\n")),
                        "{label}: we log {text:?}, Dovecot logged {log:?}"
                    ),
                    None => assert!(log.is_empty(), "{label}: Dovecot logged {log:?}"),
                }
            }
            Outcome::Served(n) => {
                assert!(!closed, "{label}: Dovecot closed, we served {n}");
                // Every request Dovecot answered got its own reply; the
                // daemon produces them, here we only check we accepted.
            }
        }
        checked += 1;
    }
    assert_eq!(checked, 55);
}

#[test]
fn close_reason_variants_are_distinguishable() {
    let mut s = AdminServerSession::new();
    s.feed(b"HOST-LIST\n");
    assert!(matches!(s.next_request(), Err(ServerClose::Handshake(_))));
}

/// More conversations checked against a real Dovecot 2.3.19.1 director on
/// 2026-11-28 (after the handshake; `None` = Dovecot answered and kept the
/// connection, `Some(log)` = Dovecot closed without a reply and logged
/// `Error: <log>`).
const EXTRA_PROBES: &[(&[u8], Option<&str>)] = &[
    (b"USER-LIST\t\n", None),
    (b"USER-LIST\t127.0.1.1\n", None),
    (
        b"HOST-RESET-USERS\tbad\tx\n",
        Some("doveadm sent invalid HOST-RESET-USERS parameters"),
    ),
    (
        b"HOST-RESET-USERS\t127.0.1.1\t0\n",
        Some("doveadm sent invalid HOST-RESET-USERS parameters"),
    ),
    (
        b"HOST-RESET-USERS\t\t\n",
        Some("doveadm sent invalid HOST-RESET-USERS parameters"),
    ),
    (b"HOST-FLUSH\t\n", None),
    (
        b"DIRECTOR-ADD\t127.0.78.99\t\n",
        Some("doveadm sent invalid DIRECTOR-ADD parameters"),
    ),
    (
        b"DIRECTOR-ADD\t127.0.78.99\t0\n",
        Some("doveadm sent invalid DIRECTOR-ADD parameters"),
    ),
    (
        b"DIRECTOR-REMOVE\t127.0.78.99\t\n",
        Some("doveadm sent invalid DIRECTOR-REMOVE parameters"),
    ),
    (b"HOST-SET\t12345\t1\n", None),
    (b"HOST-SET\t1.2.3.4 junk\t1\n", None),
    (b"HOST-SET\t[::2]\t1\n", None),
    (b"HOST-SET\t127.0.1.9@a@b\t1\n", None),
    (
        b"HOST-SET\t127.0.1.9@\t\n",
        Some("doveadm sent invalid HOST-SET parameters"),
    ),
    (
        b"HOST-SET\t127.0.1.11\t 5\n",
        Some("doveadm sent invalid HOST-SET parameters"),
    ),
    (
        b"HOST-SET\t127.0.1.11\t+5\n",
        Some("doveadm sent invalid HOST-SET parameters"),
    ),
    (
        b"HOST-SET\t\t5\n",
        Some("doveadm sent invalid HOST-SET parameters"),
    ),
    (b"HOST-SET\t127.0.1.10@t\x010x\t1\n", None),
    (
        b"HOST-UPDATE\t127.0.1.9\t\n",
        Some("doveadm sent invalid HOST-UPDATE parameters"),
    ),
    (b"HOST-UPDATE\t127.0.1.9@zz\t3\n", None),
    (b"USER-KICK\t\n", None),
    (b"USER-KICK\tu\tnowait\n", None),
    (b"USER-KICK-ALT\tf\t\n", None),
    (
        b"HOST-UP\t\n",
        Some("doveadm sent invalid HOST-UP parameters: "),
    ),
    (b"HOST-DOWN\t1.2.3.4 junk\n", None),
    (
        b"HOST-DOWN\t127.0.1.1@tag\n",
        Some("doveadm sent invalid HOST-DOWN parameters: 127.0.1.1@tag"),
    ),
    (
        b"HOST-REMOVE\t\n",
        Some("doveadm sent invalid HOST-REMOVE parameters"),
    ),
    (
        b"HOST-REMOVE\t127.0.1.9@x\n",
        Some("doveadm sent invalid HOST-REMOVE parameters"),
    ),
    (
        b"USER-LIST\t127.0.1.1@x\n",
        Some("doveadm sent invalid USER-LIST parameters"),
    ),
    (b"USER-MOVE\t\t127.0.1.1\n", None),
    (
        b"USER-MOVE\tx\t\n",
        Some("doveadm sent invalid USER-MOVE parameters"),
    ),
    (b"USER-LOOKUP\tabc\x010def\t\n", None),
    (b"\t\n", Some("doveadm sent unknown command: \t")),
    (b"\r\n", Some("doveadm sent empty command line")),
    (
        b"HOST-LIST\r\r\n",
        Some("doveadm sent unknown command: HOST-LIST\r"),
    ),
    (
        b"FROB\targ\n",
        Some("doveadm sent unknown command: FROB\targ"),
    ),
    (
        b"FROB\x01targ\n",
        Some("doveadm sent unknown command: FROB\x01targ"),
    ),
    (
        b"HOST-\x01tLIST\n",
        Some("doveadm sent unknown command: HOST-\x01tLIST"),
    ),
    (b"HOST-LIST\x01\n", None),
    (
        b"HOST-LIST\x01x\n",
        Some("doveadm sent unknown command: HOST-LIST\x01x"),
    ),
];

#[test]
fn replay_extra_probes() {
    for (line, want) in EXTRA_PROBES {
        let mut sent = b"VERSION\tdirector-doveadm\t1\t0\n".to_vec();
        sent.extend_from_slice(line);
        let got = run(&sent);
        let expected = match want {
            None => Outcome::Served(1),
            Some(log) => Outcome::Closed(Some((*log).to_owned())),
        };
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(line));
    }
}

/// Handshake lines checked against Dovecot 2.3.19.1 (`true` = accepted).
#[test]
fn handshake_variants() {
    let cases: &[(&[u8], bool)] = &[
        (b"VERSION\tdirector-doveadm\t1\t0\tx\nHOST-LIST\n", false),
        (b"VERSION\tdirector-doveadm\t01\t0\nHOST-LIST\n", true),
        (
            b"VERSION\tdirector-doveadm\t1\t4294967296\nHOST-LIST\n",
            false,
        ),
        (b"VERSION\tdirector-doveadm\t1\t\nHOST-LIST\n", false),
    ];
    for (sent, ok) in cases {
        let got = run(sent);
        if *ok {
            assert_eq!(got, Outcome::Served(1));
        } else {
            assert_eq!(
                got,
                Outcome::Closed(Some(
                    "doveadm not compatible with this server (mixed old and new binaries?)".into()
                ))
            );
        }
    }
}
