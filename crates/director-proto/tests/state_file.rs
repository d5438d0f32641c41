//! The saved-state file: `decode(encode(s)) == s`, every truncation and every single-byte
//! change is an error that names a line, and the decoder never panics on arbitrary bytes.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use director_core::{RingHost, SavedUser, Snapshot};
use director_proto::state_file::*;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

/// Text with the bytes the escaping must carry: TAB, LF, the escape byte, NUL, non-ASCII.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('\t'),
            Just('\n'),
            Just('\u{1}'),
            Just('\0'),
            Just('é'),
            Just('a'),
            Just('@')
        ],
        0..12,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn host() -> impl Strategy<Value = RingHost> {
    (
        ip(),
        any::<u32>(),
        text(),
        any::<bool>(),
        any::<u64>(),
        proptest::option::of(text()),
    )
        .prop_map(
            |(ip, vhost_count, tag, down, last_updown_change, hostname)| RingHost {
                ip,
                vhost_count,
                tag,
                down,
                last_updown_change,
                hostname: hostname.filter(|h| !h.is_empty()),
            },
        )
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (
        any::<u64>(),
        proptest::collection::vec(host(), 0..5),
        proptest::collection::vec(ip(), 0..5),
        proptest::collection::vec((any::<u32>(), any::<u32>(), any::<u32>()), 0..20),
    )
        .prop_map(|(saved_at, hosts, config_hosts, users)| Snapshot {
            saved_at,
            hosts,
            config_hosts,
            users: users
                .into_iter()
                .map(|(hash, host, timestamp)| SavedUser {
                    hash,
                    host,
                    timestamp,
                })
                .collect(),
        })
}

proptest! {
    #[test]
    fn round_trip(s in snapshot()) {
        prop_assert_eq!(decode(&encode(&s)), Ok(s));
    }

    #[test]
    fn every_truncation_is_an_error(s in snapshot(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&s);
        let at = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..at]).is_err());
    }

    #[test]
    fn every_single_byte_change_is_an_error(
        s in snapshot(),
        at in any::<prop::sample::Index>(),
        to in any::<u8>(),
    ) {
        let mut bytes = encode(&s);
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        prop_assert!(decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&data);
    }

    #[test]
    fn lines_of_a_valid_file_in_any_mix_never_panic(
        s in snapshot(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
    ) {
        let bytes = encode(&s);
        let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
        let mixed: Vec<u8> = picks.iter().flat_map(|p| lines[p.index(lines.len())].to_vec()).collect();
        let _ = decode(&mixed);
    }
}

fn sample() -> Snapshot {
    Snapshot {
        saved_at: 1_700_000_000,
        hosts: vec![
            RingHost {
                ip: "10.0.0.1".parse().unwrap(),
                vhost_count: 100,
                tag: String::new(),
                down: false,
                last_updown_change: 0,
                hostname: None,
            },
            RingHost {
                ip: "10.0.0.2".parse().unwrap(),
                vhost_count: 50,
                tag: "blue".into(),
                down: true,
                last_updown_change: 1_699_999_000,
                hostname: Some("mail2.example".into()),
            },
        ],
        config_hosts: vec!["10.0.0.1".parse().unwrap()],
        users: vec![
            SavedUser {
                hash: 42,
                host: 0,
                timestamp: 1_699_999_990,
            },
            SavedUser {
                hash: 7,
                host: 1,
                timestamp: 1_699_999_999,
            },
        ],
    }
}

#[test]
fn the_format_reads_as_documented() {
    let text = String::from_utf8(encode(&sample())).unwrap();
    let body = "director-state\t1\n\
                saved\t1700000000\n\
                host\t10.0.0.1\t100\tU0\t\t\n\
                host\t10.0.0.2\t50\tD1699999000\tblue\tmail2.example\n\
                config\t10.0.0.1\n\
                user\t42\t0\t1699999990\n\
                user\t7\t1\t1699999999\n";
    let crc = crc32fast_hash(body.as_bytes());
    assert_eq!(text, format!("{body}end\t2\t1\t2\t{crc:08x}\n"));
}

/// CRC-32 (IEEE), bitwise, as a second opinion on the checksum the codec writes.
fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn kind_of(bytes: &[u8]) -> (usize, StateFileErrorKind) {
    let e = decode(bytes).unwrap_err();
    (e.line, e.kind)
}

#[test]
fn errors_say_what_and_where() {
    let good = encode(&sample());
    // Cut before the last byte of line 6 (the end line is 19 bytes, line 7 is 20): line 6
    // has no LF, so it is the truncated one.
    let cut = good.len() - 40;
    let (line, kind) = kind_of(&good[..cut]);
    assert_eq!(kind, StateFileErrorKind::Truncated);
    assert_eq!(line, 6);

    assert_eq!(
        kind_of(b"hello world\n").1,
        StateFileErrorKind::NotAStateFile
    );
    assert_eq!(kind_of(b"").1, StateFileErrorKind::Truncated);
    let v2 = String::from_utf8(good.clone())
        .unwrap()
        .replacen("state\t1", "state\t2", 1);
    assert_eq!(
        kind_of(v2.as_bytes()).1,
        StateFileErrorKind::UnsupportedVersion("2".into())
    );

    // A changed user line: the checksum catches it on the end line (line 8).
    let changed = String::from_utf8(good.clone())
        .unwrap()
        .replacen("user\t42", "user\t43", 1);
    let (line, kind) = kind_of(changed.as_bytes());
    assert_eq!(line, 8);
    assert!(
        matches!(kind, StateFileErrorKind::ChecksumMismatch { .. }),
        "{kind:?}"
    );
    let e = decode(changed.as_bytes()).unwrap_err();
    let byte = changed.find("end\t").unwrap();
    assert_eq!(e.byte, byte);
    assert!(
        e.to_string()
            .starts_with(&format!("line 8 (byte {byte}): checksum mismatch")),
        "{e}"
    );

    let mut trailing = good.clone();
    trailing.extend_from_slice(b"x");
    assert_eq!(kind_of(&trailing).1, StateFileErrorKind::TrailingData);

    let long = format!(
        "director-state\t1\nsaved\t1\nhost\t{}\n",
        "x".repeat(MAX_LINE_LEN)
    );
    assert_eq!(
        kind_of(long.as_bytes()),
        (3, StateFileErrorKind::LineTooLong)
    );

    // Sections in order: a host after a user is out of place.
    let text = String::from_utf8(good).unwrap();
    let swapped = text.replacen("config\t10.0.0.1\n", "", 1).replacen(
        "user\t7",
        "config\t10.0.0.1\nuser\t7",
        1,
    );
    assert!(matches!(
        kind_of(swapped.as_bytes()).1,
        StateFileErrorKind::Unexpected(_)
    ));
}
