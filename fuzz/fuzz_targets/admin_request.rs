//! Admin server: arbitrary bytes through the framer, handshake and request
//! parser; accepted requests must re-encode to something that parses back
//! to the same request.
#![no_main]
use director_proto::admin::{encode_request, parse_request, AdminServerSession, CLIENT_HANDSHAKE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // 1. Raw line parser.
    if let Ok(req) = parse_request(data) {
        let line = encode_request(&req);
        let again = parse_request(&line[..line.len() - 1]).expect("re-encoded request must parse");
        assert_eq!(again, req);
    }
    // 2. Whole session, with and without a valid handshake in front.
    for prefix in [&b""[..], CLIENT_HANDSHAKE] {
        let mut s = AdminServerSession::new();
        let mut input = prefix.to_vec();
        input.extend_from_slice(data);
        let mut rest = &input[..];
        loop {
            let n = s.feed(rest);
            rest = &rest[n..];
            match s.next_request() {
                Ok(Some(_)) => continue,
                Ok(None) if !rest.is_empty() && n > 0 => continue,
                _ => break,
            }
        }
    }
});
