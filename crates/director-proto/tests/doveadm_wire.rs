//! Every admin conversation recorded between real doveadm and the real
//! director (Dovecot 2.3.19.1, lab/admin/transcripts/basic.json): our server
//! parser accepts doveadm's requests, our encoder produces the same request
//! bytes, our client decodes the director's replies, and re-encoding those
//! replies gives back the director's exact bytes.
#![allow(clippy::unwrap_used)]

use director_proto::admin::*;
use director_proto::line::LineBuffer;
use serde_json::Value;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn recorded_doveadm_conversations_roundtrip() {
    let doc: Value = serde_json::from_str(include_str!("data/doveadm_wire.json")).unwrap();
    let convs = doc["conversations"].as_array().unwrap();
    let mut requests_checked = 0;
    for conv in convs {
        let label = conv["label"].as_str().unwrap();
        let c2s = hex(conv["c2s_hex"].as_str().unwrap());
        let s2c = hex(conv["s2c_hex"].as_str().unwrap());
        assert!(c2s.starts_with(CLIENT_HANDSHAKE), "{label}");
        assert!(s2c.starts_with(SERVER_GREETING), "{label}");

        // Server side: parse what doveadm sent.
        let mut server = AdminServerSession::new();
        assert_eq!(server.feed(&c2s), c2s.len());
        let mut requests = Vec::new();
        while let Some(req) = server
            .next_request()
            .unwrap_or_else(|e| panic!("{label}: {e}"))
        {
            requests.push(req);
        }

        // Encoder: same bytes as doveadm, except that doveadm does not escape
        // USER-LOOKUP's username (NOTES.md §4), which we do.
        let encoded: Vec<u8> = requests.iter().flat_map(encode_request).collect();
        let sent = &c2s[CLIENT_HANDSHAKE.len()..];
        if encoded != sent {
            assert!(
                requests
                    .iter()
                    .any(|r| matches!(r, AdminRequest::UserLookup { .. })),
                "{label}: {:?} != {:?}",
                String::from_utf8_lossy(&encoded),
                String::from_utf8_lossy(sent)
            );
        }

        // Client side: decode each reply in order, re-encode, compare bytes.
        let mut lines = LineBuffer::new(CLIENT_MAX_LINE_LEN);
        let body = &s2c[SERVER_GREETING.len()..];
        assert_eq!(lines.feed(body), body.len());
        let mut reencoded = Vec::new();
        for req in &requests {
            let mut reader = ReplyReader::new(req);
            let reply = loop {
                let line = lines
                    .next_line()
                    .unwrap()
                    .unwrap_or_else(|| panic!("{label}: reply to {req:?} incomplete"));
                if let Some(reply) = reader.push_line(&line).unwrap() {
                    break reply;
                }
            };
            reencoded.extend(reply.encode());
            requests_checked += 1;
        }
        assert_eq!(
            String::from_utf8_lossy(&reencoded),
            String::from_utf8_lossy(body),
            "{label}"
        );
    }
    assert!(requests_checked >= 85, "only {requests_checked} requests");
}
