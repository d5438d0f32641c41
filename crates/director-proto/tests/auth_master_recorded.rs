//! The auth-master codec against conversations recorded from real Dovecot
//! 2.3.19.1 (tests/data/auth_master_exchange.json).
#![allow(clippy::unwrap_used)]

use director_proto::auth_master::*;
use serde_json::Value;

fn conversations() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let doc: Value = serde_json::from_str(include_str!("data/auth_master_exchange.json")).unwrap();
    doc["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            // The file stores bytes as Latin-1 code points.
            let bytes = |v: &Value| {
                v.as_str()
                    .unwrap()
                    .chars()
                    .map(|ch| ch as u32 as u8)
                    .collect::<Vec<u8>>()
            };
            (
                c["label"].as_str().unwrap().to_owned(),
                bytes(&c["client"]),
                bytes(&c["server"]),
            )
        })
        .collect()
}

fn run_list(server: &[u8], id: u32) -> Result<Vec<Vec<u8>>, AuthMasterError> {
    let mut s = UserListSession::new(id, None, None);
    let mut users = Vec::new();
    let mut data = server;
    loop {
        let n = s.feed(data);
        data = &data[n..];
        while let Some(ev) = s.next_event()? {
            match ev {
                ListEvent::User(u) => users.push(u),
                ListEvent::Done => return Ok(users),
            }
        }
        assert!(!data.is_empty(), "ran out of data before DONE");
    }
}

#[test]
fn list_all_matches_recording() {
    let convs = conversations();
    let (_, client, server) = convs.iter().find(|c| c.0.starts_with("list-all")).unwrap();
    // Our request bytes are exactly what doveadm director map sent.
    assert_eq!(
        UserListSession::new(1, None, None).request_bytes(),
        client.as_slice()
    );
    let users = run_list(server, 1).unwrap();
    assert_eq!(
        users,
        vec![
            b"user1".to_vec(),
            b"user2@example.com".to_vec(),
            b"UsEr3".to_vec(),
            b"tab\tuser".to_vec()
        ]
    );
}

#[test]
fn list_with_mask_matches_recording() {
    let convs = conversations();
    let (_, client, _) = convs
        .iter()
        .find(|c| c.0.starts_with("list with user mask"))
        .unwrap();
    let s = UserListSession::new(1, Some(b"*"), Some(b"doveadm"));
    assert_eq!(s.request_bytes(), client.as_slice());
}

#[test]
fn failed_listing_is_an_error() {
    let convs = conversations();
    let (_, _, server) = convs
        .iter()
        .find(|c| c.0.contains("cannot iterate"))
        .unwrap();
    assert_eq!(run_list(server, 1), Err(AuthMasterError::ListFailed));
}

#[test]
fn second_list_on_the_connection_is_separate() {
    let convs = conversations();
    let (_, _, server) = convs.iter().find(|c| c.0.starts_with("two lists")).unwrap();
    // A session for id 2 skips id 1's lines.
    assert_eq!(run_list(server, 2).unwrap().len(), 4);
}

#[test]
fn every_recorded_server_line_parses() {
    for (label, client, server) in conversations() {
        for line in server.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            parse_reply(line).unwrap_or_else(|e| panic!("{label}: {e}"));
        }
        // Our encoder reproduces every recorded request line.
        for line in client
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .skip(1)
        {
            let reparsed = if line.starts_with(b"LIST") {
                let f: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                let id = std::str::from_utf8(f[1]).unwrap().parse().unwrap();
                let mask = f
                    .iter()
                    .find_map(|x| x.strip_prefix(b"user="))
                    .map(<[u8]>::to_vec);
                let service = f
                    .iter()
                    .find_map(|x| x.strip_prefix(b"service="))
                    .map(<[u8]>::to_vec);
                encode_request(&AuthMasterRequest::List {
                    id,
                    user_mask: mask,
                    service,
                })
            } else {
                let f: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                encode_request(&AuthMasterRequest::User {
                    id: std::str::from_utf8(f[1]).unwrap().parse().unwrap(),
                    user: f[2].to_vec(),
                    params: f[3..].iter().map(|x| x.to_vec()).collect(),
                })
            };
            let mut want = line.to_vec();
            want.push(b'\n');
            assert_eq!(reparsed, want, "{label}");
        }
    }
}

#[test]
fn user_lookup_replies() {
    assert_eq!(
        parse_reply(b"USER\t2\tuser1\tuid=1000\tgid=1000\thome=/home/user1").unwrap(),
        AuthMasterReply::User {
            id: 2,
            user: b"user1".to_vec(),
            fields: vec![
                b"uid=1000".to_vec(),
                b"gid=1000".to_vec(),
                b"home=/home/user1".to_vec()
            ]
        }
    );
    assert_eq!(
        parse_reply(b"NOTFOUND\t3").unwrap(),
        AuthMasterReply::NotFound { id: 3 }
    );
    assert_eq!(
        parse_reply(b"DONE\t1\t").unwrap(),
        AuthMasterReply::ListDone {
            id: 1,
            failed: false
        }
    );
    assert_eq!(
        parse_reply(b"DONE\t1\tfail").unwrap(),
        AuthMasterReply::ListDone {
            id: 1,
            failed: true
        }
    );
}
