//! The built-in mail proxy inside the real `directord` binary: IMAP/POP3/LMTP logins to real
//! Dovecot backends land where the daemon's own `USER-LOOKUP` says, admin `USER-KICK` and
//! `USER-MOVE` close the user's proxied sessions, and new logins follow the move.
//!
//! Every backend listens on the same ports of its own 127.x address, and the daemon is told
//! those ports with `director_backend_port_*` (no privileged ports, no clash with a system
//! Dovecot).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::imap::Imap;
use common::{Daemon, WAIT};
use testkit::{free_ports, require_dovecot, DovecotBackend, LoopbackAllocator};

struct Setup {
    _backends: Vec<DovecotBackend>,
    daemon: Daemon,
    imap: SocketAddr,
    pop3: SocketAddr,
    lmtp: SocketAddr,
}

fn setup() -> Setup {
    setup_with("")
}

/// [`setup`] with more config lines for the daemon.
fn setup_with(more: &str) -> Setup {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let proxy_ip = alloc.next_ip();
    let ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
    let backends = DovecotBackend::start_group(&ips, [None; 3], |_| {}).expect("backends start");
    let (bi, bp, bl) = (
        backends[0].imap_addr().port(),
        backends[0].pop3_addr().port(),
        backends[0].lmtp_addr().port(),
    );
    let pip = IpAddr::V4(proxy_ip);
    let [pi, pp, pl] = free_ports(pip, [None; 3]).expect("free proxy ports");
    let servers: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    let extra = format!(
        "director_mail_servers = {}\n\
         director_backend_port_imap = {bi}\n\
         director_backend_port_pop3 = {bp}\n\
         director_backend_port_lmtp = {bl}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pi}\n }}\n}}\n\
         service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pp}\n }}\n}}\n\
         service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {pl}\n }}\n}}\n\
         {more}",
        servers.join(" ")
    );
    let daemon = Daemon::start(&extra);
    Setup {
        _backends: backends,
        daemon,
        imap: SocketAddr::new(pip, pi),
        pop3: SocketAddr::new(pip, pp),
        lmtp: SocketAddr::new(pip, pl),
    }
}

/// `USER-LOOKUP`: (current, hashed).
fn lookup(d: &Daemon, user: &str) -> (String, String) {
    let mut c = d.client();
    let r = c.request(&format!("USER-LOOKUP\t{user}\t"));
    let r = r.trim_end();
    let f: Vec<&str> = r.split('\t').collect();
    (f[0].to_string(), f[2].to_string())
}

#[test]
fn logins_follow_the_core_and_kicks_and_moves_close_sessions() {
    let s = setup();
    // Logins land where USER-LOOKUP says (current after the login = hashed before it).
    for i in 0..20 {
        let user = format!("user{i}@example.com");
        let (_, hashed) = lookup(&s.daemon, &user);
        let (mut c, ip) = Imap::login(s.imap, &user);
        assert_eq!(ip.to_string(), hashed, "{user}");
        assert_eq!(lookup(&s.daemon, &user).0, hashed, "{user} assigned");
        c.cmd("z", "LOGOUT");
    }

    // USER-KICK closes the user's sessions (no BYE), others stay.
    let (mut k, _) = Imap::login(s.imap, "kicked@example.com");
    let (mut other, _) = Imap::login(s.imap, "other@example.com");
    let mut admin = s.daemon.client();
    assert_eq!(
        admin.request("USER-KICK\tkicked@example.com").trim_end(),
        "OK"
    );
    assert!(k.closed(), "kicked session closed");
    let r = other.cmd("n", "NOOP");
    assert!(r.last().expect("reply").starts_with("n OK"), "{r:?}");

    // USER-MOVE kills the session on the old host; the next login goes to the new one.
    let user = "moved@example.com";
    let (mut m, old) = Imap::login(s.imap, user);
    let new = s
        ._backends
        .iter()
        .map(|b| IpAddr::V4(b.ip()))
        .find(|ip| *ip != old)
        .expect("another backend");
    assert_eq!(
        admin
            .request(&format!("USER-MOVE\t{user}\t{new}"))
            .trim_end(),
        "OK"
    );
    assert!(m.closed(), "moved user's old session closed");
    let (mut m2, ip) = Imap::login(s.imap, user);
    assert_eq!(ip, new, "login after the move goes to the new host");
    m2.cmd("z", "LOGOUT");
    other.cmd("z", "LOGOUT");

    // POP3 and LMTP through the daemon too.
    let user = "popper@example.com";
    let (_, hashed) = lookup(&s.daemon, user);
    let lm = TcpStream::connect_timeout(&s.lmtp, WAIT).expect("lmtp");
    lm.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut lm = BufReader::new(lm);
    let mut l = String::new();
    lm.read_line(&mut l).expect("greeting");
    lm.get_mut()
        .write_all(
            format!(
                "LHLO test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<{user}>\r\nDATA\r\n\
                 Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
            )
            .as_bytes(),
        )
        .expect("lmtp write");
    let mut all = String::new();
    for _ in 0..30 {
        l.clear();
        if lm.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        all.push_str(&l);
    }
    assert!(all.contains("250 2.0.0 <popper@example.com>"), "{all}");
    let p = TcpStream::connect_timeout(&s.pop3, WAIT).expect("pop3");
    p.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut p = BufReader::new(p);
    l.clear();
    p.read_line(&mut l).expect("greeting");
    p.get_mut()
        .write_all(format!("USER {user}\r\nPASS pass\r\nSTAT\r\nQUIT\r\n").as_bytes())
        .expect("pop3 write");
    let mut lines = Vec::new();
    for _ in 0..6 {
        l.clear();
        if p.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        lines.push(l.trim_end().to_string());
    }
    assert!(
        lines.iter().any(|l| l.starts_with("+OK 1 ")),
        "one message via POP3: {lines:?}"
    );
    assert_eq!(lookup(&s.daemon, user).0, hashed);
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn sigterm_stops_accepting_and_drains_open_sessions() {
    let mut s = setup();
    let (mut c, _) = Imap::login(s.imap, "drainer@example.com");
    s.daemon.signal(nix::sys::signal::Signal::SIGTERM);
    // Stops accepting (bounded wait for the listener to go away).
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect_timeout(&s.imap, WAIT).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "proxy listener closed after SIGTERM");
    // The open session keeps working while it drains...
    let r = c.cmd("n", "NOOP");
    assert!(r.last().expect("reply").starts_with("n OK"), "{r:?}");
    assert!(s.daemon.is_running(), "still draining");
    // ...and once it logs out the daemon exits cleanly.
    c.cmd("z", "LOGOUT");
    let st = s.daemon.wait_exit();
    assert!(st.success(), "{st:?}");
}

/// The first line a new IMAP connection gets.
fn imap_greeting(addr: SocketAddr) -> String {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect to the proxy");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut l = String::new();
    BufReader::new(s).read_line(&mut l).expect("greeting");
    l.trim_end().to_string()
}

#[test]
fn sighup_gives_new_connections_the_new_proxy_settings() {
    let s = setup();
    assert!(
        imap_greeting(s.imap).ends_with("Dovecot ready."),
        "default greeting"
    );
    let (mut c, _) = Imap::login(s.imap, "steady@example.com");
    let original = std::fs::read_to_string(&s.daemon.config).expect("config");
    std::fs::write(
        &s.daemon.config,
        format!("{original}login_greeting = Reloaded proxy ready.\n"),
    )
    .expect("write config");
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    s.daemon.wait_log("mail proxy settings reloaded");
    assert!(
        imap_greeting(s.imap).ends_with("Reloaded proxy ready."),
        "new connections see the reloaded greeting"
    );
    let r = c.cmd("n", "NOOP");
    assert!(r.last().expect("reply").starts_with("n OK"), "{r:?}");

    // A config the proxy cannot use (an implicit-TLS listener without a certificate) is
    // refused as a whole, and the proxy keeps its settings.
    std::fs::write(
        &s.daemon.config,
        format!(
            "{original}login_greeting = Never shown.\nssl = yes\n\
             service imap-login {{\n inet_listener imaps {{\n port = 1993\n ssl = yes\n }}\n}}\n"
        ),
    )
    .expect("write config");
    s.daemon.signal(nix::sys::signal::Signal::SIGHUP);
    s.daemon
        .wait_log("reload failed, keeping the old configuration");
    assert!(imap_greeting(s.imap).ends_with("Reloaded proxy ready."));
    c.cmd("z", "LOGOUT");
}

/// An LMTP client at `DATA`: greeted, envelope for `user` accepted, `354` read.
fn lmtp_at_data(addr: SocketAddr, user: &str) -> BufReader<TcpStream> {
    let lm = TcpStream::connect_timeout(&addr, WAIT).expect("lmtp");
    lm.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut lm = BufReader::new(lm);
    lm.get_mut()
        .write_all(
            format!("LHLO test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<{user}>\r\nDATA\r\n")
                .as_bytes(),
        )
        .expect("lmtp write");
    let mut seen = String::new();
    while !seen.contains("354 ") {
        let mut l = String::new();
        assert!(
            lm.read_line(&mut l).expect("lmtp read") > 0,
            "closed: {seen}"
        );
        seen.push_str(&l);
    }
    lm
}

/// The size `STAT` gives for `user`'s mailbox, through the proxy.
fn pop3_stat(addr: SocketAddr, user: &str) -> String {
    let p = TcpStream::connect_timeout(&addr, WAIT).expect("pop3");
    p.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut p = BufReader::new(p);
    p.get_mut()
        .write_all(format!("USER {user}\r\nPASS pass\r\nSTAT\r\nQUIT\r\n").as_bytes())
        .expect("pop3 write");
    let mut l = String::new();
    for _ in 0..4 {
        l.clear();
        p.read_line(&mut l).expect("pop3 read");
    }
    l.trim_end().to_string()
}

/// Hostile MTAs used to make the proxy hold every message whole (and copies of it): 6
/// unterminated 48 MB bodies took it from 7 MB to 303 MB. The body now streams to the
/// backends as it arrives, so the proxy holds a chunk per connection, and the message that
/// is finished arrives whole.
#[test]
fn lmtp_bodies_stream_to_the_backends_in_bounded_memory() {
    const CONNECTIONS: usize = 6;
    const BODY: usize = 32 << 20;
    let s = setup();
    let before = s.daemon.peak_rss_kib();
    let line = format!("{}\r\n", "a".repeat(998));
    let senders: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let addr = s.lmtp;
            let line = line.clone();
            std::thread::spawn(move || {
                let mut lm = lmtp_at_data(addr, &format!("bulk{i}@example.com"));
                let chunk = line.repeat(64);
                for _ in 0..BODY / chunk.len() {
                    lm.get_mut().write_all(chunk.as_bytes()).expect("body");
                }
                lm
            })
        })
        .collect();
    let mut conns: Vec<_> = senders
        .into_iter()
        .map(|t| t.join().expect("sender"))
        .collect();
    let peak = s.daemon.peak_rss_kib();
    let sent_mib = (CONNECTIONS * BODY) >> 20;
    eprintln!("peak RSS: {before} KiB before, {peak} KiB with {sent_mib} MiB of bodies in flight");
    assert!(
        peak < before + 40 * 1024,
        "{sent_mib} MiB of unfinished bodies took the proxy from {before} KiB to {peak} KiB"
    );
    // One message is finished: its recipient gets it, all of it.
    let mut done = conns.remove(0);
    done.get_mut().write_all(b".\r\n").expect("end of body");
    let mut reply = String::new();
    done.read_line(&mut reply).expect("final reply");
    assert!(
        reply.starts_with("250 2.0.0 <bulk0@example.com>"),
        "{reply}"
    );
    let stat = pop3_stat(s.pop3, "bulk0@example.com");
    let size: usize = stat
        .strip_prefix("+OK 1 ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("one message: {stat}"));
    assert!(
        size >= BODY - line.len() * 64,
        "the whole body arrived: {size} bytes"
    );
}

/// A client that sends a byte now and then used to hold an LMTP delivery for ever: each byte
/// reset the idle deadline. The whole body now has one deadline,
/// `director_lmtp_data_timeout`, and nothing of it is delivered.
#[test]
fn an_lmtp_body_that_trickles_is_cut_off_at_the_data_deadline() {
    let s = setup_with("director_lmtp_data_timeout = 2 s\n");
    let mut lm = lmtp_at_data(s.lmtp, "trickle@example.com");
    lm.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut got = String::new();
    while !got.ends_with('\n') {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no end to the trickling body"
        );
        // One byte of body per 100 ms read timeout, far inside the idle timeout.
        let _ = lm.get_mut().write_all(b"x");
        let mut l = String::new();
        match lm.read_line(&mut l) {
            Ok(0) => break,
            Ok(_) => got.push_str(&l),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                got.push_str(&l)
            }
            Err(e) => panic!("lmtp read: {e}"),
        }
    }
    assert_eq!(
        got.trim_end(),
        "421 4.4.2 Message not received in time, closing"
    );
    assert_eq!(pop3_stat(s.pop3, "trickle@example.com"), "+OK 0 0");
}
