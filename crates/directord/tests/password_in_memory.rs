//! A client's password is not kept for the life of its session: once the backend accepted
//! the login, no copy of it is left anywhere in the real `directord`'s memory. The test reads
//! the daemon's whole address space (`/proc/PID/mem`, as root) while the sessions are open and
//! looks for the password's bytes, plain and base64-encoded (SASL PLAIN), in every form a
//! client sends them: IMAP `LOGIN`, IMAP `AUTHENTICATE PLAIN` (with a SASL initial response),
//! POP3 `USER`/`PASS`, Submission `AUTH PLAIN` and ManageSieve `AUTHENTICATE "PLAIN"`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use common::{Daemon, WAIT};
use director_mailproto::sasl::encode_plain;
use testkit::{free_ports, require_dovecot, BackendOptions, DovecotBackend, LoopbackAllocator};

/// Where `needle` occurs in the daemon's readable memory: `(mapping, the bytes around it)`.
fn find_in_memory(pid: u32, needle: &[u8]) -> Vec<(String, String)> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .expect("open /proc/PID/mem (the test runs as root)");
    let mut found = Vec::new();
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (range, perms) = (f[0], f[1]);
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut buf = vec![0u8; (end - start) as usize];
        if mem.seek(SeekFrom::Start(start)).is_err() || mem.read_exact(&mut buf).is_err() {
            continue;
        }
        for (i, w) in buf.windows(needle.len()).enumerate() {
            if w == needle {
                let around = &buf[i.saturating_sub(48)..(i + needle.len() + 16).min(buf.len())];
                found.push((
                    line.to_string(),
                    String::from_utf8_lossy(around).into_owned(),
                ));
            }
        }
    }
    found
}

fn read_until(r: &mut BufReader<TcpStream>, prefix: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).expect("read") > 0, "closed: {seen}");
        seen.push_str(&l);
        if l.starts_with(prefix) {
            return seen;
        }
    }
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    BufReader::new(s)
}

#[test]
fn no_copy_of_a_password_outlives_its_login() {
    require_dovecot();
    let password = "Pw-7f3e91c4-never-kept";
    let mut alloc = LoopbackAllocator::new();
    let proxy_ip = alloc.next_ip();
    let backend_ip = alloc.next_ip();
    let mut opts = BackendOptions::new(backend_ip);
    opts.password = password.to_string();
    let [bsub, bsieve] = free_ports(IpAddr::V4(backend_ip), [None; 2]).unwrap();
    opts.with_submission_and_sieve(bsub, bsieve);
    let backend = DovecotBackend::start_with(opts).expect("backend starts");
    let pip = IpAddr::V4(proxy_ip);
    let [imap, pop3, sub, sieve] = free_ports(pip, [None; 4]).unwrap();
    let daemon = Daemon::start(&format!(
        "director_mail_servers = {backend_ip}\n\
         director_backend_port_imap = {}\n\
         director_backend_port_pop3 = {}\n\
         director_backend_port_submission = {bsub}\n\
         director_backend_port_sieve = {bsieve}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {imap}\n }}\n}}\n\
         service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pop3}\n }}\n}}\n\
         service submission-login {{\n inet_listener submission {{\n address = {pip}\n port = {sub}\n }}\n}}\n\
         service managesieve-login {{\n inet_listener sieve {{\n address = {pip}\n port = {sieve}\n }}\n}}\n",
        backend.imap_addr().port(),
        backend.pop3_addr().port(),
    ));
    let imap = SocketAddr::new(pip, imap);
    let pop3 = SocketAddr::new(pip, pop3);
    let sub = SocketAddr::new(pip, sub);
    let sieve = SocketAddr::new(pip, sieve);

    let mut sessions = Vec::new();
    let mut c = connect(imap);
    read_until(&mut c, "* OK");
    c.get_mut()
        .write_all(format!("a LOGIN login@example.com {password}\r\n").as_bytes())
        .unwrap();
    read_until(&mut c, "a OK");
    sessions.push(c);

    // SASL PLAIN as the clients send it (no authzid).
    let b64 = |user: &str| encode_plain(b"", user.as_bytes(), password.as_bytes()).to_string();
    let plain = b64("plain@example.com");
    let mut c = connect(imap);
    read_until(&mut c, "* OK");
    c.get_mut()
        .write_all(format!("b AUTHENTICATE PLAIN {plain}\r\n").as_bytes())
        .unwrap();
    read_until(&mut c, "b OK");
    sessions.push(c);

    let mut c = connect(pop3);
    read_until(&mut c, "+OK");
    c.get_mut()
        .write_all(format!("USER pop@example.com\r\nPASS {password}\r\n").as_bytes())
        .unwrap();
    read_until(&mut c, "+OK");
    read_until(&mut c, "+OK");
    sessions.push(c);

    let mut c = connect(sub);
    read_until(&mut c, "220 ");
    c.get_mut()
        .write_all(format!("EHLO client\r\nAUTH PLAIN {}\r\n", b64("sub@example.com")).as_bytes())
        .unwrap();
    read_until(&mut c, "235 ");
    sessions.push(c);

    let mut c = connect(sieve);
    read_until(&mut c, "OK");
    c.get_mut()
        .write_all(
            format!(
                "AUTHENTICATE \"PLAIN\" \"{}\"\r\n",
                b64("sieve@example.com")
            )
            .as_bytes(),
        )
        .unwrap();
    read_until(&mut c, "OK");
    sessions.push(c);

    // The sessions are open and working.
    let c = &mut sessions[0];
    c.get_mut().write_all(b"n NOOP\r\n").unwrap();
    read_until(c, "n OK");

    let pid = daemon.pid().as_raw() as u32;
    // The scan reads the daemon's heap: the user name of an open session is found there.
    assert!(
        !find_in_memory(pid, b"login@example.com").is_empty(),
        "the memory scan found not even an open session's user name"
    );
    let sub_b64 = b64("sub@example.com");
    let sieve_b64 = b64("sieve@example.com");
    let found: Vec<_> = [
        password.as_bytes(),
        plain.as_bytes(),
        sub_b64.as_bytes(),
        sieve_b64.as_bytes(),
    ]
    .iter()
    .flat_map(|needle| find_in_memory(pid, needle))
    .collect();
    assert!(
        found.is_empty(),
        "the password is still in the daemon's memory while the sessions run: {found:#?}"
    );
    drop(sessions);
}
