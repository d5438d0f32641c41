//! A backend accepts IMAP LOGIN with the kit password, says which IP served the session via
//! IMAP ID, and speaks POP3 and LMTP on its own ports.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testkit::{require_dovecot, DovecotBackend, LoopbackAllocator, BACKEND_PASSWORD};

/// Connects with a read timeout; returns the writing half and a line reader.
fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let writer = stream.try_clone().expect("clone");
    (writer, BufReader::new(stream))
}

fn read_until_tag(reader: &mut BufReader<TcpStream>, tag: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..100 {
        let mut line = String::new();
        let n = reader.read_line(&mut line).expect("read");
        assert!(n > 0, "connection closed after {lines:?}");
        let done = line.starts_with(tag);
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("no tagged reply {tag}: {lines:?}");
}

#[test]
fn imap_login_and_id_show_the_backend_ip() {
    require_dovecot();
    let ip = LoopbackAllocator::new().next_ip();
    let backend = DovecotBackend::start(ip).expect("backend starts");
    let (mut writer, mut reader) = connect(backend.imap_addr());
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    assert!(greeting.starts_with("* OK"), "{greeting}");

    writer
        .write_all(format!("a1 LOGIN Someone@Example.com {BACKEND_PASSWORD}\r\n").as_bytes())
        .expect("write");
    let reply = read_until_tag(&mut reader, "a1 ");
    assert!(
        reply.last().expect("reply").starts_with("a1 OK"),
        "{reply:?}"
    );

    writer.write_all(b"a2 ID NIL\r\n").expect("write");
    let reply = read_until_tag(&mut reader, "a2 ");
    let id = reply.join("");
    assert!(id.contains(&format!("\"backend-ip\" \"{ip}\"")), "{id}");

    writer.write_all(b"a3 SELECT INBOX\r\n").expect("write");
    let reply = read_until_tag(&mut reader, "a3 ");
    assert!(
        reply.last().expect("reply").starts_with("a3 OK"),
        "{reply:?}"
    );
    writer.write_all(b"a4 LOGOUT\r\n").expect("write");
    let _ = read_until_tag(&mut reader, "a4 ");
    assert!(backend.mail_dir().join("someone@example.com").exists());

    // A wrong password is refused.
    let (mut writer, mut reader) = connect(backend.imap_addr());
    let _ = read_until_tag(&mut reader, "* OK");
    writer
        .write_all(b"b1 LOGIN someone wrong\r\n")
        .expect("write");
    let reply = read_until_tag(&mut reader, "b1 ");
    assert!(
        reply.last().expect("reply").starts_with("b1 NO"),
        "{reply:?}"
    );
}

#[test]
fn pop3_and_lmtp_listen() {
    require_dovecot();
    let ip = LoopbackAllocator::new().next_ip();
    let backend = DovecotBackend::start(ip).expect("backend starts");
    for (addr, prefix) in [(backend.pop3_addr(), "+OK"), (backend.lmtp_addr(), "220 ")] {
        let (_, mut reader) = connect(addr);
        let mut line = String::new();
        reader.read_line(&mut line).expect("greeting");
        assert!(line.starts_with(prefix), "{addr}: {line}");
    }
    let (mut writer, mut reader) = connect(backend.pop3_addr());
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    for cmd in [
        "USER pop-user\r\n".to_string(),
        format!("PASS {}\r\n", backend.password()),
    ] {
        writer.write_all(cmd.as_bytes()).expect("write");
        line.clear();
        reader.read_line(&mut line).expect("reply");
        assert!(line.starts_with("+OK"), "{cmd}: {line}");
    }
}
