//! Unit tests of the ring codec's rules; the round-trip and never-panic
//! properties are in `tests/ring_roundtrip.rs`, the recorded Dovecot traffic
//! in `tests/ring_recorded.rs`.

use std::net::IpAddr;

use super::*;
use crate::line::LineTooLong;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn invalid(command: &'static [u8], field: &'static str, value: &str) -> RingParseError {
    RingParseError::InvalidField {
        command,
        field,
        value: value.to_owned(),
    }
}

fn missing(command: &'static [u8], field: &'static str) -> RingParseError {
    RingParseError::MissingField { command, field }
}

#[test]
fn errors_name_the_command_and_the_field() {
    let e = parse(b"SYNC\t127.0.0.1\t9090\tx").unwrap_err();
    assert_eq!(e, invalid(command::SYNC, "seq", "x"));
    assert_eq!(e.to_string(), "SYNC: invalid seq \"x\"");
    let e = parse(b"USER\t1").unwrap_err();
    assert_eq!(e, missing(command::USER, "host ip"));
    assert_eq!(e.to_string(), "USER: missing host ip");
}

#[test]
fn numbers_and_addresses_are_range_checked() {
    // USER, ME and HOST up/down times are signed time_t; U and SYNC times u32.
    let refused: &[(&[u8], &[u8], &str, &str)] = &[
        (
            b"DIRECTOR\t127.0.0.1\t0",
            command::DIRECTOR,
            "director port",
            "0",
        ),
        (
            b"DIRECTOR\t127.0.0.1\t65536",
            command::DIRECTOR,
            "director port",
            "65536",
        ),
        (
            b"USER-KILLED\t4294967296",
            command::USER_KILLED,
            "user hash",
            "4294967296",
        ),
        (b"USER\t1\t1.2.3.4\t+5", command::USER, "timestamp", "+5"),
        (
            b"USER\t1\t1.2.3.4\t9223372036854775808",
            command::USER,
            "timestamp",
            "9223372036854775808",
        ),
        (
            b"U\t1\t1.2.3.4\t4294967296",
            command::U,
            "timestamp",
            "4294967296",
        ),
        (
            b"SYNC\t1.2.3.4\t9090\t1\t9\t-5",
            command::SYNC,
            "timestamp",
            "-5",
        ),
        (
            b"HOST-REMOVE\t127.0.0.1\t9090\t1\tnot-an-ip",
            command::HOST_REMOVE,
            "host ip",
            "not-an-ip",
        ),
        (
            b"USER-MOVE\tx\t9090\t1\t2\t1.2.3.4",
            command::USER_MOVE,
            "origin ip",
            "x",
        ),
    ];
    for &(line, cmd, field, value) in refused {
        assert_eq!(
            parse(line).unwrap_err(),
            invalid(cmd, field, value),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(
        parse(b"USER\t1\t1.2.3.4\t-5").unwrap(),
        RingMessage::User {
            hash: 1,
            ip: ip("1.2.3.4"),
            timestamp: Some(-5)
        }
    );
    // PING/PONG arguments are informational: malformed ones read as absent.
    assert_eq!(
        parse(b"PING\t1\t18446744073709551616").unwrap(),
        RingMessage::Ping(None)
    );
    assert_eq!(
        parse(b"PING\t1\t18446744073709551615").unwrap(),
        RingMessage::Ping(Some(PingInfo {
            timestamp: 1,
            buffered: u64::MAX
        }))
    );
    // inet_aton forms are accepted (Dovecot's net_addr2ip) and printed canonically.
    let m = parse(b"USER\t1\t0x7f.1\t2").unwrap();
    assert_eq!(m.encode(), b"USER\t1\t127.0.0.1\t2\n");
    let m = parse(b"CONNECT\t[FE80::1]\t9090").unwrap();
    assert_eq!(m.encode(), b"CONNECT\tfe80::1\t9090\n");
}

#[test]
fn error_values_are_truncated() {
    let long = vec![b'x'; 500];
    let mut line = b"USER-KILLED\t".to_vec();
    line.extend_from_slice(&long);
    match parse(&line).unwrap_err() {
        RingParseError::InvalidField { value, .. } => assert_eq!(value.len(), ERROR_VALUE_MAX_LEN),
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_and_unknown_commands() {
    assert_eq!(parse(b"").unwrap_err(), RingParseError::EmptyCommand);
    assert_eq!(parse(b"\tDONE").unwrap_err(), RingParseError::EmptyCommand);
    assert_eq!(parse(b"\0DONE").unwrap_err(), RingParseError::EmptyCommand);
    assert_eq!(
        parse(b"FROB\ta\x01tb\t").unwrap(),
        RingMessage::Unknown {
            command: b"FROB".to_vec(),
            args: vec![b"a\tb".to_vec(), Vec::new()]
        }
    );
    // Names are case-sensitive.
    assert!(matches!(
        parse(b"done").unwrap(),
        RingMessage::Unknown { .. }
    ));
    // HOST-RESET-USERS exists only on the admin socket.
    assert!(matches!(
        parse(b"HOST-RESET-USERS\t1.2.3.4").unwrap(),
        RingMessage::Unknown { .. }
    ));
}

#[test]
fn extra_fields_are_ignored_and_nul_ends_the_line() {
    assert_eq!(parse(b"DONE\textra").unwrap(), RingMessage::Done);
    assert_eq!(parse(b"DONE\0\tgarbage").unwrap(), RingMessage::Done);
    assert_eq!(
        parse(b"USER\t7\t1.2.3.4\t5\tw").unwrap(),
        RingMessage::User {
            hash: 7,
            ip: ip("1.2.3.4"),
            timestamp: Some(5)
        }
    );
    assert_eq!(
        parse(b"SYNC\t1.2.3.4\t9090\t1\t9\t2\t3\tnext-minor-field").unwrap(),
        RingMessage::Sync {
            origin: DirectorAddr {
                ip: ip("1.2.3.4"),
                port: 9090
            },
            seq: 1,
            info: Some(SyncInfo::new(9, 2, 3))
        }
    );
}

#[test]
fn optional_fields_keep_their_shape() {
    for line in [
        &b"ME\t1.2.3.4\t9090"[..],
        b"ME\t1.2.3.4\t9090\t17",
        b"USER\t1\t1.2.3.4",
        b"PING",
        b"PONG\t5\t0",
        b"SYNC\t1.2.3.4\t9090\t3",
        b"SYNC\t1.2.3.4\t9090\t3\t9",
        b"SYNC\t1.2.3.4\t9090\t3\t1\t5",
        b"USER\t1\t1.2.3.4\t-5",
        b"ME\t1.2.3.4\t9090\t-1",
        b"PING\t-3\t0",
        b"SYNC\t1.2.3.4\t9090\t3\t9\t5\t0",
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100",
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\ttag",
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\ttag\tD5",
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\ttag\tU5\thost.example",
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tU0\t",
        b"OPTIONS",
        b"OPTIONS\tconsistent-hashing\tfuture-option",
        b"U\t1\t10.0.0.1\t5\tw",
        b"USER-KICK\t1.2.3.4\t9090\t2\tuser\x01tname",
        b"USER-KICK-ALT\t1.2.3.4\t9090\t2\tfield\tvalue",
        b"USER-KICK-HASH\t1.2.3.4\t9090\t2\t99\t10.0.0.1",
        b"USER-WEAK\t1.2.3.4\t9090\t2\t99\t10.0.0.1",
        b"HOST-FLUSH\t1.2.3.4\t9090\t2\t10.0.0.1",
        b"DIRECTOR-REMOVE\t1.2.3.4\t9090",
        b"QUIT\tShutting down",
    ] {
        let m = parse(line).unwrap();
        let mut want = line.to_vec();
        want.push(b'\n');
        assert_eq!(m.encode(), want, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn sync_minor_alone_and_lenient_ping() {
    assert_eq!(
        parse(b"SYNC\t1.2.3.4\t9090\t3\t9").unwrap(),
        RingMessage::Sync {
            origin: DirectorAddr {
                ip: ip("1.2.3.4"),
                port: 9090
            },
            seq: 3,
            info: Some(SyncInfo {
                minor: 9,
                stamp: None
            })
        }
    );
    assert_eq!(
        parse(b"SYNC\t1.2.3.4\t9090").unwrap_err(),
        missing(command::SYNC, "seq")
    );
    for line in [&b"PING\t5"[..], b"PING\tx\ty", b"PING\t\t", b"PONG\t5"] {
        let m = parse(line).unwrap();
        assert!(
            matches!(m, RingMessage::Ping(None) | RingMessage::Pong(None)),
            "{m:?}"
        );
    }
    assert_eq!(
        parse(b"PONG\t-5\t7\textra").unwrap(),
        RingMessage::Pong(Some(PingInfo {
            timestamp: -5,
            buffered: 7
        }))
    );
}

#[test]
fn strict_commands_refuse_extra_fields() {
    let cases: &[&[u8]] = &[
        b"USER-WEAK\t1.2.3.4\t9090\t1\t5\t10.0.0.1",
        b"USER-MOVE\t1.2.3.4\t9090\t1\t5\t10.0.0.1",
        b"USER-KILLED\t5",
        b"USER-KILLED-EVERYWHERE\t1.2.3.4\t9090\t1\t5",
        b"USER-KICK\t1.2.3.4\t9090\t1\tuser",
        b"USER-KICK-ALT\t1.2.3.4\t9090\t1\tf\tv",
        b"USER-KICK-HASH\t1.2.3.4\t9090\t1\t5\t10.0.0.1",
        b"HOST-REMOVE\t1.2.3.4\t9090\t1\t10.0.0.1",
        b"HOST-FLUSH\t1.2.3.4\t9090\t1\t10.0.0.1",
        b"CONNECT\t1.2.3.4\t9090",
    ];
    assert_eq!(cases.len(), STRICT_FIELD_COUNTS.len());
    for line in cases {
        let m = parse(line).unwrap();
        let expected = line.iter().filter(|&&b| b == b'\t').count();
        let mut longer = line.to_vec();
        longer.extend_from_slice(b"\textra");
        assert_eq!(
            parse(&longer).unwrap_err(),
            RingParseError::TooManyFields {
                command: command::ALL
                    .iter()
                    .copied()
                    .find(|c| *c == m.command_name())
                    .unwrap(),
                expected,
                got: expected + 1
            }
        );
    }
    assert_eq!(
        parse(b"CONNECT\t1.2.3.4\t9090\tx").unwrap_err().to_string(),
        "CONNECT: 3 fields, expected 2"
    );
    // An empty username is still a field.
    assert!(parse(b"USER-KICK\t1.2.3.4\t9090\t1\t").is_ok());
}

#[test]
fn host_state_field() {
    assert_eq!(
        parse(b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tX5\t").unwrap_err(),
        invalid(command::HOST, "up/down state", "X5")
    );
    assert_eq!(
        parse(b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tD\t").unwrap_err(),
        invalid(command::HOST, "up/down state", "D")
    );
    assert_eq!(
        parse(b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tD+5\t").unwrap_err(),
        invalid(command::HOST, "up/down state", "D+5")
    );
    let m = parse(b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tU-5\t").unwrap();
    assert!(
        matches!(&m, RingMessage::Host { host, .. } if host.state.last_updown_change == -5),
        "{m:?}"
    );
    assert_eq!(
        m.encode(),
        b"HOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tU-5\t\n"
    );
    // The handshake form has no origin; read in the wrong context it fails on the seq.
    assert_eq!(
        parse(b"HOST\t127.0.1.1\t100\t\tU0\t").unwrap_err(),
        invalid(command::HOST, "seq", "")
    );
    assert_eq!(
        parse_in(
            b"HOST\t127.0.1.1\t100\ta\x01tb\tD7\tmail1",
            RingContext::HostHandshake
        )
        .unwrap(),
        RingMessage::HandshakeHost(HostRecord::new(
            ip("127.0.1.1"),
            100,
            b"a\tb".to_vec(),
            HostState {
                down: true,
                last_updown_change: 7
            },
            b"mail1".to_vec()
        ))
    );
}

#[test]
fn with_fields_resets_what_is_not_sent() {
    let full = HostRecord::new(
        ip("10.0.0.1"),
        5,
        b"t".to_vec(),
        HostState {
            down: true,
            last_updown_change: 9,
        },
        b"h".to_vec(),
    );
    let short = full.clone().with_fields(HostFields::Tag);
    assert_eq!(short.tag, b"t");
    assert_eq!(short.state, HostState::default());
    assert!(short.hostname.is_empty());
    assert_eq!(
        RingMessage::HandshakeHost(short).encode(),
        b"HOST\t10.0.0.1\t5\tt\n"
    );
}

#[test]
fn handshake_user_weak_flag() {
    let weak = |line: &[u8]| match parse(line).unwrap() {
        RingMessage::HandshakeUser(u) => u.weak,
        other => panic!("{other:?}"),
    };
    assert!(weak(b"U\t1\t10.0.0.1\t5\tw"));
    assert!(weak(b"U\t1\t10.0.0.1\t5\tweak"));
    assert!(!weak(b"U\t1\t10.0.0.1\t5\tx"));
    assert!(!weak(b"U\t1\t10.0.0.1\t5"));
    assert_eq!(
        parse(b"U\t1\t10.0.0.1").unwrap_err(),
        missing(command::U, "timestamp")
    );
}

#[test]
fn version_and_handshake_flags() {
    assert_eq!(
        RingMessage::Version(Version::ours()).encode(),
        b"VERSION\tdirector\t1\t9\n"
    );
    assert!(Version::ours().is_compatible());
    let v = |line: &[u8]| match parse(line).unwrap() {
        RingMessage::Version(v) => v,
        other => panic!("{other:?}"),
    };
    assert!(!v(b"VERSION\tdirector\t2\t0").is_compatible());
    assert!(!v(b"VERSION\tdirector-doveadm\t1\t0").is_compatible());
    assert!(v(b"VERSION\tdirector\t1\t5").is_compatible());
    assert_eq!(
        parse(b"HOST-HAND-START\t1").unwrap(),
        RingMessage::HostHandStart {
            ring_handshaked: true
        }
    );
    assert_eq!(
        parse(b"HOST-HAND-END\tx").unwrap_err(),
        invalid(command::HOST_HAND_END, "ring-handshaked flag", "x")
    );
}

#[test]
fn min_peer_minor_follows_the_version_table() {
    let o = Origin {
        director: DirectorAddr {
            ip: ip("1.2.3.4"),
            port: 9090,
        },
        seq: 1,
    };
    let cases = [
        (parse(b"DONE").unwrap(), 0),
        (
            RingMessage::UserWeak {
                origin: o,
                hash: 1,
                ip: ip("1.2.3.4"),
            },
            1,
        ),
        (parse(b"DIRECTOR-REMOVE\t1.2.3.4\t1").unwrap(), 2),
        (parse(b"QUIT\tx").unwrap(), 3),
        (
            RingMessage::UserKick {
                origin: o,
                username: b"u".to_vec(),
            },
            4,
        ),
        (parse(b"OPTIONS").unwrap(), 5),
        (
            RingMessage::UserKickAlt {
                origin: o,
                field: b"f".to_vec(),
                value: b"v".to_vec(),
            },
            8,
        ),
        (parse(b"U\t1\t1.2.3.4\t1").unwrap(), 9),
    ];
    for (m, minor) in cases {
        assert_eq!(m.min_peer_minor(), minor, "{m:?}");
    }
}

#[test]
fn decoder_limits_and_context() {
    let mut dec = RingDecoder::new();
    let mut line = b"QUIT\t".to_vec();
    line.resize(RING_MAX_LINE_LEN, b'x');
    line.push(b'\n');
    assert_eq!(dec.feed(&line), line.len());
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::Quit { .. }))
    ));

    let mut dec = RingDecoder::new();
    let too_long = vec![b'x'; RING_MAX_LINE_LEN + 1];
    assert_eq!(dec.feed(&too_long), RING_MAX_LINE_LEN + 1);
    assert_eq!(
        dec.next_message(),
        Err(RingDecodeError::LineTooLong(LineTooLong {
            max_line_len: RING_MAX_LINE_LEN
        }))
    );

    let mut dec = RingDecoder::new();
    let input = b"HOST-HAND-START\t0\nHOST\t10.0.0.1\t100\t\tU0\t\nHOST-HAND-END\t0\nHOST\t1.2.3.4\t9090\t1\t10.0.0.1\t100\t\tU0\t\nbad\tline\nDONE\tx\n";
    assert_eq!(dec.feed(input), input.len());
    assert_eq!(dec.context(), RingContext::Normal);
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::HostHandStart { .. }))
    ));
    assert_eq!(dec.context(), RingContext::HostHandshake);
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::HandshakeHost(_)))
    ));
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::HostHandEnd { .. }))
    ));
    assert_eq!(dec.context(), RingContext::Normal);
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::Host { .. }))
    ));
    assert!(matches!(
        dec.next_message(),
        Ok(Some(RingMessage::Unknown { .. }))
    ));
    assert_eq!(dec.next_message(), Ok(Some(RingMessage::Done)));
    assert_eq!(dec.next_message(), Ok(None));

    let mut dec = RingDecoder::new();
    dec.feed(b"SYNC\tx\n");
    let err = dec.next_message().unwrap_err();
    assert_eq!(
        err.to_string(),
        "Invalid input \"SYNC\\tx\": SYNC: invalid director ip \"x\""
    );
}
