//! Ring protocol: arbitrary bytes through the line parser (both contexts) and
//! the bounded decoder; every message that parses must re-encode to a line
//! that parses back to the same message.
#![no_main]
use director_proto::ring::{parse_in, RingContext, RingDecoder, RING_MAX_LINE_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. The whole input as one line, in both contexts.
    for ctx in [RingContext::Normal, RingContext::HostHandshake] {
        if let Ok(msg) = parse_in(data, ctx) {
            let line = msg.encode();
            assert_eq!(line.last(), Some(&b'\n'));
            let body = &line[..line.len() - 1];
            assert!(!body.contains(&b'\n'), "encoded message spans lines");
            let again = parse_in(body, msg.context()).expect("re-encoded message must parse");
            assert_eq!(again, msg);
        }
    }
    // 2. As a connection's byte stream through the framer.
    let mut dec = RingDecoder::new();
    let mut rest = data;
    loop {
        let n = dec.feed(rest);
        rest = &rest[n..];
        assert!(dec.buffered() <= RING_MAX_LINE_LEN + 1);
        match dec.next_message() {
            Ok(Some(_)) | Err(director_proto::ring::RingDecodeError::Parse { .. }) => continue,
            Ok(None) if !rest.is_empty() => continue,
            _ => break,
        }
    }
});
