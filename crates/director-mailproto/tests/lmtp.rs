//! LMTP: server transcript recorded from Dovecot 2.3.19's LMTP (proxy mode),
//! fan-out planning, backend sessions and reply merging.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a panic is the failure report.

mod common;
use common::*;
use director_mailproto::lmtp::{
    dot_stuff, merge_replies, plan_fanout, DotStuffer, LmtpAction, LmtpBackendAction,
    LmtpBackendConfig, LmtpBackendSession, LmtpServer, LmtpServerConfig, Transaction,
    REPLY_SESSION_FAILED,
};
use proptest::prelude::*;

fn server() -> LmtpServer<u8> {
    LmtpServer::new(LmtpServerConfig {
        hostname: "f.lab.invalid".into(),
        greeting: "mp-f ready.".into(),
        ..LmtpServerConfig::default()
    })
}

fn sent_l(acts: &[LmtpAction<u8>]) -> String {
    acts.iter()
        .filter_map(|a| match a {
            LmtpAction::Send(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
        .collect()
}

fn deliver_of(acts: &[LmtpAction<u8>]) -> Option<Transaction<u8>> {
    acts.iter().find_map(|a| match a {
        LmtpAction::Deliver(t) => Some(t.clone()),
        _ => None,
    })
}

/// Feeds each client chunk and checks the exact text answered.
fn transcript(s: &mut LmtpServer<u8>, steps: &[(&[u8], &str)]) {
    for (input, want) in steps {
        assert_eq!(
            sent_l(&s.feed(input)),
            *want,
            "after {:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn server_transcript_recorded() {
    let mut s = server();
    assert_eq!(sent_l(&s.start()), "220 f.lab.invalid mp-f ready.\r\n");
    transcript(
        &mut s,
        &[
            (b"HELO c\r\n", "500 5.5.1 Unknown command\r\n"),
            (b"LHLO\r\n", "501 Missing hostname\r\n"),
            (
                b"MAIL FROM:a@b\r\n",
                "501 5.5.4 Invalid FROM: Missing '<' at beginning of path\r\n",
            ),
            (b"MAIL TO:<a>\r\n", "501 5.5.4 Invalid parameters\r\n"),
            (b"RCPT TO:<u>\r\n", "503 5.5.0 MAIL needed first\r\n"),
            (
                b"LHLO c\r\n",
                "250-f.lab.invalid\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n",
            ),
            (b"DATA\r\n", "503 5.5.0 MAIL needed first\r\n"),
            (b"MAIL FROM:<s@x>\r\n", "250 2.1.0 OK\r\n"),
            (b"MAIL FROM:<s@x>\r\n", "503 5.5.0 MAIL already given\r\n"),
            (b"DATA\r\n", "503 5.5.0 No valid recipients\r\n"),
            (
                b"RCPT TO:bad\r\n",
                "501 5.5.4 Invalid TO: Missing '<' at beginning of path\r\n",
            ),
        ],
    );
    // Pipelined RCPTs: the second waits until the first is resolved.
    let acts =
        s.feed(b"RCPT TO:<user1@x>\r\nRCPT TO:<user2>\r\nRCPT TO:<nobody+tag@y>\r\nDATA\r\n");
    assert_eq!(
        acts,
        vec![LmtpAction::Resolve {
            user: b"user1@x".to_vec(),
            address: b"user1@x".to_vec()
        }]
    );
    let acts = s.recipient_resolved(Some(1));
    assert_eq!(sent_l(&acts), "250 2.1.5 OK\r\n");
    assert!(matches!(acts.last(), Some(LmtpAction::Resolve { user, .. }) if user == b"user2"));
    let acts = s.recipient_resolved(Some(2));
    assert!(matches!(acts.last(), Some(LmtpAction::Resolve { user, .. }) if user == b"nobody@y"));
    let acts = s.recipient_resolved(None);
    assert_eq!(
        sent_l(&acts),
        "451 4.3.0 <nobody+tag@y> Temporary internal error\r\n354 OK\r\n"
    );
    let acts = s.feed(b"Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\nNOOP\r\n");
    let tx = deliver_of(&acts).expect("deliver");
    assert_eq!(tx.mail_from, b"<s@x>");
    assert_eq!(tx.data, b"Subject: t\r\n\r\n.dot\r\nbody\r\n");
    assert_eq!(tx.recipients.len(), 2);
    // Recorded final replies, one per accepted recipient, in RCPT order.
    let acts = s.delivered(vec![
        b"250 2.0.0 <user1@x> 4X8RFYVHC2vOFAAAg+zDdQ Saved".to_vec(),
        b"250 2.0.0 <user2> 4X8RFYVHC2vOFAAAg+zDdQ:R2 Saved".to_vec(),
    ]);
    assert_eq!(
        sent_l(&acts),
        "250 2.0.0 <user1@x> 4X8RFYVHC2vOFAAAg+zDdQ Saved\r\n250 2.0.0 <user2> 4X8RFYVHC2vOFAAAg+zDdQ:R2 Saved\r\n250 2.0.0 OK\r\n"
    );
    assert_eq!(
        sent_l(&s.feed(b"RSET\r\nFOO\r\n")),
        "250 2.0.0 OK\r\n500 5.5.1 Unknown command\r\n"
    );
    let acts = s.feed(b"QUIT\r\n");
    assert_eq!(sent_l(&acts), "221 2.0.0 Bye\r\n");
    assert_eq!(acts.last(), Some(&LmtpAction::Close));
}

#[test]
fn size_limit_and_long_lines() {
    let mut s: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig {
        max_message_size: 10,
        ..LmtpServerConfig::default()
    });
    s.feed(b"MAIL FROM:<>\r\nRCPT TO:<a>\r\n");
    s.recipient_resolved(Some(0));
    s.feed(b"DATA\r\n");
    let tx = deliver_of(&s.feed(b"0123456789abcdef\r\n.\r\n")).expect("deliver");
    assert!(tx.too_big);
    assert!(tx.data.is_empty());
    let mut s = server();
    let long = format!("MAIL FROM:<a@b> {}\r\nNOOP\r\n", "x".repeat(5000));
    assert_eq!(
        sent_l(&s.feed(long.as_bytes())),
        "500 5.5.2 Line too long\r\n250 2.0.0 OK\r\n"
    );
}

#[test]
fn fanout_merges_in_rcpt_order() {
    let mut s = server();
    s.feed(b"LHLO c\r\nMAIL FROM:<s@x>\r\n");
    for (addr, backend) in [("a", 1u8), ("b", 2), ("c", 1), ("d", 3), ("e", 2)] {
        s.feed(format!("RCPT TO:<{addr}>\r\n").as_bytes());
        s.recipient_resolved(Some(backend));
    }
    s.feed(b"DATA\r\n");
    let tx = deliver_of(&s.feed(b"hi\r\n.\r\n")).expect("deliver");
    let plans = plan_fanout(&tx.recipients);
    assert_eq!(
        plans
            .iter()
            .map(|p| (p.backend, p.recipients.clone()))
            .collect::<Vec<_>>(),
        vec![(1, vec![0, 2]), (2, vec![1, 4]), (3, vec![3])]
    );
    let results = vec![
        vec![b"250 a ok".to_vec(), b"250 c ok".to_vec()],
        vec![b"550 b no".to_vec(), b"250 e ok".to_vec()],
        vec![], // backend 3's session died before answering
    ];
    let merged = merge_replies(tx.recipients.len(), &plans, &results);
    assert_eq!(
        merged,
        vec![
            b"250 a ok".to_vec(),
            b"550 b no".to_vec(),
            b"250 c ok".to_vec(),
            REPLY_SESSION_FAILED.as_bytes().to_vec(),
            b"250 e ok".to_vec()
        ]
    );
}

fn tx() -> Transaction<u8> {
    let mut s = server();
    s.feed(b"LHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<user1@x>\r\n");
    s.recipient_resolved(Some(1));
    s.feed(b"RCPT TO:<user2>\r\n");
    s.recipient_resolved(Some(1));
    s.feed(b"DATA\r\n");
    deliver_of(&s.feed(b"Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\n")).expect("deliver")
}

#[test]
fn backend_session_recorded_flow() {
    let tx = tx();
    let plans = plan_fanout(&tx.recipients);
    let cfg = LmtpBackendConfig {
        lhlo_name: "f.lab.invalid".into(),
        send_xclient: true,
    };
    let mut b = LmtpBackendSession::new(
        cfg,
        conn(46988, 24, "4X8RFYVHC2vOFAAAg+zDdQ:P1"),
        Some(b"c"),
        &tx,
        &plans[0],
    );
    assert_eq!(
        b.feed(b"220 b.lab.invalid mp-b ready.\r\n"),
        vec![LmtpBackendAction::Send(b"LHLO f.lab.invalid\r\n".to_vec())]
    );
    let lhlo = b"250-b.lab.invalid\r\n250-8BITMIME\r\n250-CHUNKING\r\n250-ENHANCEDSTATUSCODES\r\n250-PIPELINING\r\n250-XCLIENT ADDR PORT PROTO HELO LOGIN SESSION TTL TIMEOUT\r\n250 XRCPTFORWARD\r\n";
    // Dovecot sent `XCLIENT HELO=c PROTO=LMTP SESSION=4X8RFYVHC2vOFAAAg+2BzDdQ:P1 TTL=5 PORT=46988 ADDR=127.0.0.1`
    // (same attributes; we use the submission proxy's order).
    assert_eq!(
        b.feed(lhlo),
        vec![LmtpBackendAction::Send(b"XCLIENT HELO=c PROTO=LMTP TTL=4 PORT=46988 ADDR=127.0.0.1 SESSION=4X8RFYVHC2vOFAAAg+2BzDdQ:P1\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"220 b.lab.invalid mp-b ready.\r\n"),
        vec![LmtpBackendAction::Send(b"LHLO f.lab.invalid\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(lhlo),
        vec![LmtpBackendAction::Send(
            b"MAIL FROM:<s@x>\r\nRCPT TO:<user1@x>\r\nRCPT TO:<user2>\r\n".to_vec()
        )]
    );
    assert_eq!(b.feed(b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n"), vec![]);
    assert_eq!(
        b.feed(b"250 2.1.5 OK\r\n"),
        vec![LmtpBackendAction::Send(b"DATA\r\n".to_vec())]
    );
    assert_eq!(
        b.feed(b"354 OK\r\n"),
        vec![LmtpBackendAction::Send(
            b"Subject: t\r\n\r\n..dot\r\nbody\r\n.\r\n".to_vec()
        )]
    );
    assert_eq!(
        b.feed(b"250 2.0.0 <user1@x> 4X8RFYVHC2vOFAAAg+zDdQ:P1 Saved\r\n250 2.0.0 <user2> 4X8RFYVHC2vOFAAAg+zDdQ:P1:R2 Saved\r\n"),
        vec![LmtpBackendAction::Done(vec![
            b"250 2.0.0 <user1@x> 4X8RFYVHC2vOFAAAg+zDdQ:P1 Saved".to_vec(),
            b"250 2.0.0 <user2> 4X8RFYVHC2vOFAAAg+zDdQ:P1:R2 Saved".to_vec()
        ])]
    );
}

#[test]
fn backend_session_partial_rejects_and_failure() {
    let tx = tx();
    let plans = plan_fanout(&tx.recipients);
    let mut b = LmtpBackendSession::new(
        LmtpBackendConfig::default(),
        conn(1, 24, "s"),
        None,
        &tx,
        &plans[0],
    );
    b.feed(b"220 ready\r\n");
    b.feed(b"250 b\r\n");
    assert_eq!(
        b.feed(b"250 OK\r\n550 5.1.1 <user1@x> User doesn't exist\r\n250 OK\r\n"),
        vec![LmtpBackendAction::Send(b"DATA\r\n".to_vec())]
    );
    b.feed(b"354 OK\r\n");
    assert_eq!(
        b.feed(b"250 2.0.0 <user2> Saved\r\n"),
        vec![LmtpBackendAction::Done(vec![
            b"550 5.1.1 <user1@x> User doesn't exist".to_vec(),
            b"250 2.0.0 <user2> Saved".to_vec()
        ])]
    );
    let mut b = LmtpBackendSession::new(
        LmtpBackendConfig::default(),
        conn(1, 24, "s"),
        None,
        &tx,
        &plans[0],
    );
    b.feed(b"220 ready\r\n");
    assert_eq!(
        b.failed(),
        vec![LmtpBackendAction::Done(vec![
            REPLY_SESSION_FAILED.as_bytes().to_vec(),
            REPLY_SESSION_FAILED.as_bytes().to_vec()
        ])]
    );
}

#[test]
fn streaming_session_asks_for_body() {
    let tx = tx();
    let plans = plan_fanout(&tx.recipients);
    let mut b = LmtpBackendSession::new_streaming(
        LmtpBackendConfig::default(),
        conn(1, 24, "s"),
        None,
        &tx,
        &plans[0],
    );
    b.feed(b"220 ready\r\n");
    b.feed(b"250 b\r\n");
    b.feed(b"250 OK\r\n250 OK\r\n250 OK\r\n");
    assert_eq!(b.feed(b"354 go\r\n"), vec![LmtpBackendAction::SendBody]);
    let mut d = DotStuffer::default();
    let mut wire = d.stuff(b"a\r\n.");
    wire.extend(d.stuff(b"b\r\n."));
    wire.extend(d.finish());
    assert_eq!(wire, b"a\r\n..b\r\n..\r\n.\r\n");
    assert!(
        matches!(b.feed(b"250 a\r\n250 b\r\n").as_slice(), [LmtpBackendAction::Done(r)] if r.len() == 2)
    );
}

#[test]
fn dot_stuffing() {
    assert_eq!(dot_stuff(b".a\r\nb\r\n..\r\n"), b"..a\r\nb\r\n...\r\n.\r\n");
    assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
    assert_eq!(dot_stuff(b""), b".\r\n");
}

proptest! {
    #[test]
    fn server_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..10), ok in any::<bool>(), stream_body in any::<bool>()) {
        let mut s: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig { max_message_size: 100, stream_body, ..LmtpServerConfig::default() });
        s.start();
        for c in chunks {
            let acts = s.feed(&c);
            for a in acts {
                match a {
                    LmtpAction::Resolve { .. } => { s.recipient_resolved(if ok { Some(1) } else { None }); }
                    LmtpAction::OpenData(_) => { s.data_opened(); }
                    LmtpAction::Deliver(t) => { let n = t.recipients.len(); s.delivered(vec![b"250 ok".to_vec(); n]); }
                    _ => {}
                }
            }
        }
    }

    /// Streaming mode hands out the same body as the buffered mode, however the input is
    /// cut, and what follows the final `.` is read as commands again.
    #[test]
    fn streamed_body_matches_buffered(
        lines in proptest::collection::vec("[.a-z \r\n]{0,12}", 0..10),
        cuts in proptest::collection::vec(1usize..40, 1..20),
    ) {
        let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let mut wire = b"MAIL FROM:<>\r\nRCPT TO:<a>\r\nDATA\r\n".to_vec();
        wire.extend(dot_stuff(body.as_bytes()));
        wire.extend_from_slice(b"NOOP\r\n");

        let mut buffered: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig::default());
        let mut acts = buffered.feed(&wire);
        if let Some(LmtpAction::Resolve { .. }) = acts.last() {
            acts = buffered.recipient_resolved(Some(0));
        }
        let want = deliver_of(&acts).expect("buffered deliver").data;

        let mut s: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig { stream_body: true, ..LmtpServerConfig::default() });
        let mut got = Vec::new();
        let mut delivered = false;
        let mut after = Vec::new();
        let mut rest = &wire[..];
        let mut k = 0;
        while !rest.is_empty() {
            let n = cuts[k % cuts.len()].min(rest.len());
            k += 1;
            let mut pending = s.feed(&rest[..n]);
            rest = &rest[n..];
            while !pending.is_empty() {
                let mut next = Vec::new();
                for a in pending {
                    match a {
                        LmtpAction::Resolve { .. } => next.extend(s.recipient_resolved(Some(0))),
                        LmtpAction::OpenData(tx) => {
                            prop_assert!(tx.data.is_empty());
                            next.extend(s.data_opened());
                        }
                        LmtpAction::BodyChunk(c) => got.extend(c),
                        LmtpAction::Deliver(tx) => {
                            prop_assert!(!tx.too_big);
                            delivered = true;
                            next.extend(s.delivered(vec![b"250 ok".to_vec()]));
                        }
                        LmtpAction::Send(b) if delivered => after.extend(b),
                        _ => {}
                    }
                }
                pending = next;
            }
        }
        prop_assert!(delivered);
        prop_assert_eq!(got, want);
        prop_assert_eq!(String::from_utf8_lossy(&after), "250 ok\r\n250 2.0.0 OK\r\n");
    }

    #[test]
    fn unstuff_roundtrip(lines in proptest::collection::vec("[.a-z ]{0,12}", 0..10)) {
        let body: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        let mut s: LmtpServer<u8> = LmtpServer::new(LmtpServerConfig::default());
        s.feed(b"MAIL FROM:<>\r\nRCPT TO:<a>\r\n");
        s.recipient_resolved(Some(0));
        s.feed(b"DATA\r\n");
        let acts = s.feed(&dot_stuff(body.as_bytes()));
        let tx = deliver_of(&acts).expect("deliver");
        prop_assert_eq!(tx.data, body.into_bytes());
    }

    #[test]
    fn backend_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8)) {
        let tx = tx();
        let plans = plan_fanout(&tx.recipients);
        let mut b = LmtpBackendSession::new(LmtpBackendConfig::default(), conn(1, 24, "s"), None, &tx, &plans[0]);
        for c in chunks { b.feed(&c); }
        b.failed();
    }
}
