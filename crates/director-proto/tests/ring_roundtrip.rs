//! Property tests for the ring codec: `parse(encode(m)) == m` for every
//! message kind, encoded lines are single lines, and the parser, the decoder
//! and the re-encode round trip never panic on arbitrary bytes.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use director_proto::ring::*;
use proptest::prelude::*;

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        any::<u128>().prop_map(|v| IpAddr::V6(Ipv6Addr::from(v))),
    ]
}

/// Free text: any bytes, including TAB, LF, NUL and the escape byte.
fn text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        proptest::collection::vec(
            prop_oneof![Just(b'\t'), Just(1u8), Just(0u8), Just(b'a')],
            0..8
        ),
    ]
}

fn director() -> impl Strategy<Value = DirectorAddr> {
    (ip(), 1u16..).prop_map(|(ip, port)| DirectorAddr { ip, port })
}

fn origin() -> impl Strategy<Value = Origin> {
    (director(), any::<u32>()).prop_map(|(director, seq)| Origin { director, seq })
}

fn host() -> impl Strategy<Value = HostRecord> {
    let fields = prop_oneof![
        Just(HostFields::IpVhosts),
        Just(HostFields::Tag),
        Just(HostFields::State),
        Just(HostFields::All),
    ];
    (
        ip(),
        any::<u32>(),
        text(),
        any::<bool>(),
        any::<u32>(),
        text(),
        fields,
    )
        .prop_map(|(ip, vhosts, tag, down, ts, hostname, fields)| {
            HostRecord::new(
                ip,
                vhosts,
                tag,
                HostState {
                    down,
                    last_updown_change: ts,
                },
                hostname,
            )
            .with_fields(fields)
        })
}

fn ping_info() -> impl Strategy<Value = Option<PingInfo>> {
    proptest::option::of(
        (any::<u32>(), any::<u64>()).prop_map(|(timestamp, buffered)| PingInfo {
            timestamp,
            buffered,
        }),
    )
}

fn unknown_command() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..12).prop_filter("known names are not unknown", |c| {
        !command::ALL.contains(&&c[..])
    })
}

fn message() -> impl Strategy<Value = RingMessage> {
    use RingMessage as M;
    prop_oneof![
        (text(), any::<u32>(), any::<u32>()).prop_map(|(name, major, minor)| M::Version(Version {
            name,
            major,
            minor
        })),
        (director(), proptest::option::of(any::<u32>())).prop_map(|(director, timestamp)| M::Me(
            Me {
                director,
                timestamp
            }
        )),
        any::<bool>().prop_map(|ring_handshaked| M::HostHandStart { ring_handshaked }),
        host().prop_map(M::HandshakeHost),
        any::<bool>().prop_map(|ring_handshaked| M::HostHandEnd { ring_handshaked }),
        (any::<u32>(), ip(), any::<u32>(), any::<bool>()).prop_map(
            |(hash, ip, timestamp, weak)| {
                M::HandshakeUser(HandshakeUser {
                    hash,
                    ip,
                    timestamp,
                    weak,
                })
            }
        ),
        proptest::collection::vec(text(), 0..4).prop_map(M::Options),
        Just(M::Done),
        director().prop_map(M::Director),
        director().prop_map(M::DirectorRemove),
        director().prop_map(M::Connect),
        (
            director(),
            any::<u32>(),
            proptest::option::of((
                any::<u32>(),
                any::<u32>(),
                proptest::option::of(any::<u32>())
            ))
        )
            .prop_map(|(origin, seq, info)| M::Sync {
                origin,
                seq,
                info: info.map(|(minor, timestamp, hosts_hash)| SyncInfo {
                    minor,
                    timestamp,
                    hosts_hash
                }),
            }),
        ping_info().prop_map(M::Ping),
        ping_info().prop_map(M::Pong),
        text().prop_map(|reason| M::Quit { reason }),
        (any::<u32>(), ip(), proptest::option::of(any::<u32>())).prop_map(
            |(hash, ip, timestamp)| M::User {
                hash,
                ip,
                timestamp
            }
        ),
        (origin(), any::<u32>(), ip()).prop_map(|(origin, hash, ip)| M::UserWeak {
            origin,
            hash,
            ip
        }),
        (origin(), any::<u32>(), ip()).prop_map(|(origin, hash, ip)| M::UserMove {
            origin,
            hash,
            ip
        }),
        any::<u32>().prop_map(|hash| M::UserKilled { hash }),
        (origin(), any::<u32>())
            .prop_map(|(origin, hash)| M::UserKilledEverywhere { origin, hash }),
        (origin(), text()).prop_map(|(origin, username)| M::UserKick { origin, username }),
        (origin(), text(), text()).prop_map(|(origin, field, value)| M::UserKickAlt {
            origin,
            field,
            value
        }),
        (origin(), any::<u32>(), ip()).prop_map(|(origin, hash, except_ip)| M::UserKickHash {
            origin,
            hash,
            except_ip
        }),
        (origin(), host()).prop_map(|(origin, host)| M::Host { origin, host }),
        (origin(), ip()).prop_map(|(origin, ip)| M::HostRemove { origin, ip }),
        (origin(), ip()).prop_map(|(origin, ip)| M::HostFlush { origin, ip }),
        (unknown_command(), proptest::collection::vec(text(), 0..4))
            .prop_map(|(command, args)| M::Unknown { command, args }),
    ]
}

fn arbitrary_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // Known command names with random TAB-separated fields reach the
        // field parsers far more often than random bytes do.
        (
            proptest::sample::select(command::ALL),
            proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..12),
                    "[0-9]{0,11}".prop_map(String::into_bytes),
                    "[UD][0-9]{0,11}".prop_map(String::into_bytes),
                    ip().prop_map(|ip| ip.to_string().into_bytes()),
                ],
                0..9
            )
        )
            .prop_map(|(cmd, fields)| {
                let mut line = cmd.to_vec();
                for f in fields {
                    line.push(b'\t');
                    line.extend_from_slice(&f);
                }
                line
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_of_encode_is_identity(m in message()) {
        let line = m.encode();
        prop_assert_eq!(line.last(), Some(&b'\n'));
        let body = &line[..line.len() - 1];
        prop_assert!(!body.contains(&b'\n') && !body.contains(&b'\r') && !body.contains(&0));
        let back = parse_in(body, m.context());
        prop_assert_eq!(back.as_ref(), Ok(&m), "line {:?}", String::from_utf8_lossy(&line));
        // Through the framer as well (when it fits the ring's limit).
        if body.len() <= RING_MAX_LINE_LEN {
            let mut dec = RingDecoder::new();
            if m.context() == RingContext::HostHandshake {
                dec.feed(b"HOST-HAND-START\t1\n");
                prop_assert!(dec.next_message().unwrap().is_some());
            }
            prop_assert_eq!(dec.feed(&line), line.len());
            prop_assert_eq!(dec.next_message().unwrap(), Some(m));
        }
    }

    #[test]
    fn parse_never_panics_and_reencodes_stably(line in arbitrary_line()) {
        for ctx in [RingContext::Normal, RingContext::HostHandshake] {
            if let Ok(m) = parse_in(&line, ctx) {
                let again = m.encode();
                let reparsed = parse_in(&again[..again.len() - 1], m.context());
                prop_assert_eq!(reparsed, Ok(m));
            }
        }
    }

    #[test]
    fn decoder_never_panics_and_stays_bounded(data in proptest::collection::vec(any::<u8>(), 0..3000), chunk in 1usize..700) {
        let mut dec = RingDecoder::new();
        for piece in data.chunks(chunk) {
            let mut rest = piece;
            loop {
                let n = dec.feed(rest);
                rest = &rest[n..];
                prop_assert!(dec.buffered() <= RING_MAX_LINE_LEN + 1);
                match dec.next_message() {
                    Ok(Some(_)) => continue,
                    Ok(None) => {}
                    Err(RingDecodeError::LineTooLong(_)) => return Ok(()),
                    Err(RingDecodeError::Parse { line, .. }) => {
                        prop_assert!(line.len() <= RING_MAX_LINE_LEN);
                        continue;
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
    }
}
