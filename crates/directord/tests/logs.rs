//! What an operator reads in the log: every host state change, move and flush at info level,
//! and each login decision at debug level, with user, hash and host as fields.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use common::Daemon;
use testkit::{free_port, LoopbackAllocator};

#[test]
fn host_changes_moves_flushes_and_login_decisions_are_logged_with_their_fields() {
    let ip = LoopbackAllocator::new().next_ip();
    let port = free_port(IpAddr::V4(ip)).unwrap();
    let d = Daemon::start(&format!(
        "service director {{\n inet_listener director-auth-http {{\n address = {ip}\n port = {port}\n }}\n}}\n"
    ));
    let mut c = d.client();
    for (request, line) in [
        (
            "HOST-SET\t127.0.1.9\t20",
            "host added host=127.0.1.9 tag=\"\" vhosts=20",
        ),
        (
            "HOST-UPDATE\t127.0.1.9\t30",
            "vhost count changed host=127.0.1.9 from=20 to=30",
        ),
        (
            "HOST-DOWN\t127.0.1.9",
            "host state changed host=127.0.1.9 state=\"down\"",
        ),
        (
            "HOST-UP\t127.0.1.9",
            "host state changed host=127.0.1.9 state=\"up\"",
        ),
        ("USER-MOVE\talice\t127.0.1.9", "user moved user_hash="),
        (
            "HOST-FLUSH\t127.0.1.9",
            "host flushed host=127.0.1.9 users=1",
        ),
        (
            "HOST-REMOVE\t127.0.1.9",
            "host removed host=127.0.1.9 users=0",
        ),
    ] {
        assert_eq!(c.request(request), "OK\n", "{request}");
        let log = d.wait_log(line);
        let logged = log.lines().find(|l| l.contains(line)).unwrap();
        assert!(logged.contains(" INFO "), "{logged}");
    }
    // A login (here nginx's auth_http request) is decided at debug level.
    let mut s = TcpStream::connect(SocketAddr::new(IpAddr::V4(ip), port)).unwrap();
    s.write_all(b"GET /auth HTTP/1.0\r\nAuth-User: bob\r\nAuth-Protocol: imap\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("Auth-Status: OK"), "{answer}");
    let log = d.wait_log("login routed user=bob host=127.0.1.");
    let logged = log.lines().find(|l| l.contains("login routed")).unwrap();
    assert!(
        logged.contains("DEBUG") && logged.contains("new_user=true"),
        "{logged}"
    );
}
