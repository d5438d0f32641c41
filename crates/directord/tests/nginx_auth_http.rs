//! nginx's mail proxy in front of real Dovecot backends, routed by `directord`'s auth_http
//! listener, end to end with the real programs:
//!
//! * IMAP, POP3 and SMTP (AUTH on nginx's smtp listener, `xclient off`) logins through nginx
//!   land on the backend that Dovecot's own `doveadm director status USER` names (IMAP: the
//!   backend's `ID` answer; POP3: the backend's log; SMTP: the backend's EHLO host name), and
//!   the assignment is created (`status` names the host as current afterwards);
//! * after `doveadm director move USER HOST` the next login of each protocol goes to HOST;
//! * a wrong password is refused by the backend (its log shows the failed login; our answer
//!   to nginx was `Auth-Status: OK`); for SMTP nginx answers `235` itself and never passes the
//!   password on, and the backend refuses to send for the unauthenticated session;
//! * a request without `Auth-User` or with an unknown protocol gets its reason and no
//!   `Auth-Wait`; a login the director cannot answer (no host) gets `Auth-Wait` after
//!   `director_auth_http_login_timeout`. (The stopped driver: `src/auth_http/tests.rs`.)
//! * a real Dovecot 2.3 proxy with the shipped Lua passdb
//!   (`contrib/dovecot/director-auth-http.lua`) routes IMAP and POP3 the same way.
//!
//! Needs `apt-get install -y nginx libnginx-mod-mail dovecot-auth-lua` besides Dovecot (`dovecot-core
//! dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-submissiond dovecot-managesieved`); a
//! missing piece fails the test with that hint. nginx runs as root (it starts its workers as
//! `nobody`), on its own 127.x address, and is stopped by PID.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::doveadm::RealDoveadm;
use common::imap::Imap;
use common::{Daemon, WAIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use testkit::{free_ports, DovecotBackend, LoopbackAllocator, BACKEND_PASSWORD};

/// What to install when nginx or its mail module is missing.
const NGINX_HINT: &str = "apt-get install -y nginx libnginx-mod-mail";
/// nginx's mail module as Debian's `libnginx-mod-mail` installs it.
const MAIL_MODULE: &str = "/usr/lib/nginx/modules/ngx_mail_module.so";
/// Hang guard for the bounded waits (backend logs, nginx start and stop).
const SETTLE: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits.
const POLL: Duration = Duration::from_millis(50);
/// Socket read timeout of the raw clients (a hang guard: nginx retries after `Auth-Wait`).
const IO_TIMEOUT: Duration = Duration::from_secs(45);

fn nginx_binary() -> PathBuf {
    let found = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    let Some(bin) = found else {
        panic!("nginx not found: install it with `{NGINX_HINT}`");
    };
    if !Path::new(MAIL_MODULE).is_file() {
        panic!("nginx's mail module ({MAIL_MODULE}) not found: install it with `{NGINX_HINT}`");
    }
    bin
}

/// A real nginx master (`daemon off`), stopped by PID on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `mail_config` as its `mail { }` block and waits until the IMAP
    /// listener `imap` greets.
    fn start(mail_config: &str, imap: SocketAddr) -> Nginx {
        let bin = nginx_binary();
        let dir = tempfile::Builder::new()
            .prefix("nginx-test")
            .tempdir()
            .unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module {MAIL_MODULE};\n\
                 daemon off;\n\
                 worker_processes 1;\n\
                 pid {pid};\n\
                 error_log {log} info;\n\
                 events {{ worker_connections 256; }}\n\
                 {mail_config}",
                pid = dir.path().join("nginx.pid").display(),
                log = dir.path().join("error.log").display(),
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("run nginx ({e}); install it with `{NGINX_HINT}`"));
        let mut n = Nginx { child, dir };
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(st) = n.child.try_wait().unwrap() {
                panic!(
                    "nginx exited at start ({st}); error log:\n{}",
                    n.error_log()
                );
            }
            if let Ok(s) = TcpStream::connect_timeout(&imap, WAIT) {
                s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).is_ok() && line.starts_with("* OK") {
                    return n;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nginx never greeted on {imap}; error log:\n{}",
                n.error_log()
            );
            std::thread::sleep(POLL);
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ports of nginx's listeners.
struct Listeners {
    imap: SocketAddr,
    pop3: SocketAddr,
    smtp: SocketAddr,
}

struct Lab {
    backends: Vec<DovecotBackend>,
    daemon: Daemon,
    auth_http: SocketAddr,
    nginx: Nginx,
    at: Listeners,
    /// Dovecot's doveadm against the daemon.
    doveadm: RealDoveadm,
}

impl Lab {
    fn start() -> Lab {
        Self::start_with(|_| String::new())
    }

    /// Like [`start`](Self::start); `extra` gets the auth_http address before `directord`
    /// starts and returns more config lines for it.
    fn start_with(extra: impl FnOnce(SocketAddr) -> String) -> Lab {
        nginx_binary();
        testkit::require_submission_and_sieve();
        let mut alloc = LoopbackAllocator::new();
        let director_ip = IpAddr::V4(alloc.next_ip());
        let nginx_ip = IpAddr::V4(alloc.next_ip());
        let ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
        let [bi, bp, bl, bsub, bsieve] =
            free_ports(IpAddr::V4(ips[0]), [None; 5]).expect("free backend ports");
        let backends = DovecotBackend::start_group(&ips, [Some(bi), Some(bp), Some(bl)], |o| {
            o.with_submission_and_sieve(bsub, bsieve)
        })
        .expect("backends start");
        let [http] = free_ports(director_ip, [None]).expect("free auth_http port");
        let auth_http = SocketAddr::new(director_ip, http);
        let extra = extra(auth_http);
        let servers: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let daemon = Daemon::start(&format!(
            "director_mail_servers = {servers}\n\
             director_backend_port_imap = {bi}\n\
             director_backend_port_pop3 = {bp}\n\
             director_backend_port_submission = {bsub}\n\
             director_auth_http_allow_nets = {nginx_ip} 127.0.0.1\n\
             service director {{\n inet_listener director-auth-http {{\n address = {director_ip}\n port = {http}\n }}\n}}\n\
             {extra}",
            servers = servers.join(" ")
        ));
        daemon.wait_log("auth_http listener ready");
        let [ni, np, ns] = free_ports(nginx_ip, [None; 3]).expect("free nginx ports");
        let at = Listeners {
            imap: SocketAddr::new(nginx_ip, ni),
            pop3: SocketAddr::new(nginx_ip, np),
            smtp: SocketAddr::new(nginx_ip, ns),
        };
        // The README's nginx config, with this lab's addresses.
        let nginx = Nginx::start(
            &format!(
                "mail {{\n\
                 \x20   auth_http {auth_http}/auth;\n\
                 \x20   proxy_pass_error_message on;\n\
                 \x20   server {{\n        listen {imap};\n        protocol imap;\n    }}\n\
                 \x20   server {{\n        listen {pop3};\n        protocol pop3;\n    }}\n\
                 \x20   server {{\n        listen {smtp};\n        protocol smtp;\n        smtp_auth plain login;\n        xclient off;\n    }}\n\
                 }}\n",
                imap = at.imap,
                pop3 = at.pop3,
                smtp = at.smtp,
            ),
            at.imap,
        );
        let doveadm = RealDoveadm::for_daemon(&daemon);
        Lab {
            backends,
            daemon,
            auth_http,
            nginx,
            at,
            doveadm,
        }
    }

    fn ips(&self) -> Vec<IpAddr> {
        self.backends.iter().map(|b| IpAddr::V4(b.ip())).collect()
    }

    fn backend(&self, ip: IpAddr) -> &DovecotBackend {
        self.backends
            .iter()
            .find(|b| IpAddr::V4(b.ip()) == ip)
            .unwrap_or_else(|| panic!("no backend {ip}"))
    }

    /// Lines of backend `ip`'s log containing every one of `needles`.
    fn log_count(&self, ip: IpAddr, needles: &[&str]) -> usize {
        self.backend(ip)
            .log()
            .lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits (bounded) until backend `ip`'s log has `n` lines with all of `needles`.
    fn wait_log_count(&self, ip: IpAddr, needles: &[&str], n: usize) {
        let deadline = Instant::now() + SETTLE;
        while self.log_count(ip, needles) < n {
            assert!(
                Instant::now() < deadline,
                "{ip}'s log never showed {n} lines with {needles:?}:\n{}",
                self.backend(ip).log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// An IMAP login through nginx: the backend that served it (its `ID` answer).
    fn imap(&self, user: &str) -> IpAddr {
        let (c, ip) = Imap::login(self.at.imap, user);
        c.logout();
        ip
    }

    /// A POP3 login through nginx: the backend that served it (its own log). Every backend's
    /// log is checked, so a login elsewhere fails the test.
    fn pop3(&self, user: &str) -> IpAddr {
        let needle = format!("pop3-login: Info: Login: user=<{user}>,");
        let before: Vec<usize> = self
            .ips()
            .iter()
            .map(|ip| self.log_count(*ip, &[&needle]))
            .collect();
        let mut c = LineClient::connect(self.at.pop3);
        assert!(c.line().starts_with("+OK"));
        assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
        let r = c.cmd(&format!("PASS {BACKEND_PASSWORD}"));
        assert!(r.starts_with("+OK"), "POP3 login of {user}: {r}");
        assert!(c.cmd("QUIT").starts_with("+OK"));
        let deadline = Instant::now() + SETTLE;
        loop {
            let grew: Vec<IpAddr> = self
                .ips()
                .into_iter()
                .zip(&before)
                .filter(|(ip, n)| self.log_count(*ip, &[&needle]) > **n)
                .map(|(ip, _)| ip)
                .collect();
            match grew.as_slice() {
                [one] => return *one,
                [] => assert!(
                    Instant::now() < deadline,
                    "no backend logged the POP3 login of {user}"
                ),
                many => panic!("POP3 login of {user} on several backends: {many:?}"),
            }
            std::thread::sleep(POLL);
        }
    }

    /// An SMTP AUTH through nginx (`xclient off`), then EHLO again: the backend's host name
    /// (`backend-IP.testkit.invalid`) says who answers.
    fn smtp(&self, user: &str) -> IpAddr {
        let mut c = LineClient::connect(self.at.smtp);
        assert!(c.line().starts_with("220"));
        let ehlo = c.multi("EHLO client.invalid");
        assert!(ehlo.last().unwrap().starts_with("250 "), "{ehlo:?}");
        let plain = base64(format!("\0{user}\0{BACKEND_PASSWORD}").as_bytes());
        let r = c.cmd(&format!("AUTH PLAIN {plain}"));
        assert!(r.starts_with("235"), "SMTP AUTH of {user}: {r}");
        let ehlo = c.multi("EHLO client.invalid");
        let name = ehlo
            .first()
            .and_then(|l| l.get(4..))
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_default();
        let ip = name
            .strip_prefix("backend-")
            .and_then(|n| n.strip_suffix(".testkit.invalid"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no backend name in the EHLO answer {ehlo:?}"));
        let _ = c.cmd("QUIT");
        ip
    }

    /// Asks the auth_http listener directly (the bytes nginx would send), returns the answer.
    fn ask(&self, addr: SocketAddr, headers: &str) -> String {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(format!("GET /auth HTTP/1.0\r\nHost: {addr}\r\n{headers}\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

/// A CRLF line client for POP3 and SMTP.
struct LineClient {
    r: BufReader<TcpStream>,
}

impl LineClient {
    fn connect(addr: SocketAddr) -> LineClient {
        let s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        LineClient {
            r: BufReader::new(s),
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l.trim_end().to_string()
    }

    fn cmd(&mut self, cmd: &str) -> String {
        self.r
            .get_mut()
            .write_all(format!("{cmd}\r\n").as_bytes())
            .unwrap();
        self.line()
    }

    /// An SMTP command with a multi-line answer.
    fn multi(&mut self, cmd: &str) -> Vec<String> {
        let mut out = vec![self.cmd(cmd)];
        while out
            .last()
            .is_some_and(|l| l.as_bytes().get(3) == Some(&b'-'))
        {
            out.push(self.line());
        }
        out
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_encodes() {
    assert_eq!(base64(b"\0u\0p"), "AHUAcA==");
    assert_eq!(base64(b"abc"), "YWJj");
    assert_eq!(base64(b"ab"), "YWI=");
}

#[test]
fn nginx_logins_land_where_doveadm_says_and_follow_a_move() {
    let lab = Lab::start();
    type Login = fn(&Lab, &str) -> IpAddr;
    let protocols: [(&str, Login); 3] = [
        ("imap", Lab::imap),
        ("pop3", Lab::pop3),
        ("smtp", Lab::smtp),
    ];
    for (name, login) in protocols {
        for i in 0..6 {
            let user = format!("{name}-user{i}@example.com");
            let (current, hashed) = lab.doveadm.status(&user);
            assert_eq!(current, None, "{user} has no assignment yet");
            let served = login(&lab, &user);
            assert_eq!(served, hashed, "{name} login of {user}");
            // The login created the assignment, as a login through the built-in proxy does.
            assert_eq!(
                lab.doveadm.status(&user).0,
                Some(hashed),
                "{user} after the login"
            );
            // And the next login goes to the same backend.
            assert_eq!(login(&lab, &user), hashed, "second {name} login of {user}");
        }
        let user = format!("{name}-moved@example.com");
        let first = login(&lab, &user);
        let to = lab
            .ips()
            .into_iter()
            .find(|ip| *ip != first)
            .expect("another backend");
        lab.doveadm.director(&[], "move", &[&user, &to.to_string()]);
        assert_eq!(
            lab.doveadm.status(&user).0,
            Some(to),
            "{user} after the move"
        );
        assert_eq!(
            login(&lab, &user),
            to,
            "{name} login of {user} after the move"
        );
    }
    let log = lab.nginx.error_log();
    assert!(!log.contains("[error]"), "nginx logged errors:\n{log}");
}

#[test]
fn passwords_are_checked_by_the_backend_and_bad_requests_get_their_reason() {
    let lab = Lab::start();
    let user = "wrong-password@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    // Our answer does not depend on the password…
    let answer = lab.ask(
        lab.auth_http,
        &format!("Auth-Method: plain\r\nAuth-User: {user}\r\nAuth-Pass: nonsense\r\nAuth-Protocol: imap\r\nAuth-Login-Attempt: 1\r\nClient-IP: 127.0.0.1\r\n"),
    );
    assert!(
        answer.starts_with(&format!(
            "HTTP/1.0 200 OK\r\nAuth-Status: OK\r\nAuth-Server: {hashed}\r\n"
        )),
        "{answer}"
    );
    // …the backend refuses the login, and nginx relays its refusal.
    let mut c = Imap::connect(lab.at.imap);
    let r = c.cmd("a", &format!("LOGIN {user} nonsense"));
    assert!(r.last().unwrap().starts_with("a NO"), "{r:?}");
    lab.wait_log_count(hashed, &[&format!("user=<{user}>"), "auth failed"], 1);
    drop(c);

    // SMTP: nginx with `xclient off` does not log in to the backend, so nobody checks the
    // password there; the backend treats the session as unauthenticated and refuses to send.
    let mut c = LineClient::connect(lab.at.smtp);
    assert!(c.line().starts_with("220"));
    c.multi("EHLO client.invalid");
    let plain = base64(format!("\0{user}\0nonsense").as_bytes());
    let r = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert!(r.starts_with("235"), "nginx's own answer: {r}");
    c.multi("EHLO client.invalid");
    let r = c.cmd("MAIL FROM:<a@example.com>");
    assert!(r.starts_with("530 "), "the backend's answer: {r}");
    let r = c.cmd(&format!("AUTH PLAIN {plain}"));
    assert!(
        r.starts_with("535 "),
        "the backend checks the password: {r}"
    );

    let refused = |headers: &str, why: &str| {
        let answer = lab.ask(lab.auth_http, headers);
        assert_eq!(
            answer,
            format!(
                "HTTP/1.0 200 OK\r\nAuth-Status: {why}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            ),
            "{headers}"
        );
    };
    refused(
        "Auth-User: u\r\nAuth-Protocol: nntp\r\n",
        "unknown Auth-Protocol (imap, pop3 and smtp are routed)",
    );
    refused("Auth-Protocol: imap\r\n", "missing header Auth-User");
    refused("Auth-User: u\r\n", "missing header Auth-Protocol");
    // Not HTTP at all.
    let mut s = TcpStream::connect_timeout(&lab.auth_http, WAIT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(b"HELLO\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{out}");
}

/// No host to route to: the core queues the login; after `director_auth_http_login_timeout`
/// nginx is told to come back (`Auth-Wait`), and the client gets the temporary failure.
#[test]
fn a_login_the_director_cannot_answer_gets_auth_wait() {
    nginx_binary();
    testkit::require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let director_ip = IpAddr::V4(alloc.next_ip());
    let [http] = free_ports(director_ip, [None]).unwrap();
    let daemon = Daemon::start(&format!(
        "director_mail_servers =\n\
         director_auth_http_login_timeout = 1 secs\n\
         director_auth_http_wait = 1 secs\n\
         service director {{\n inet_listener director-auth-http {{\n address = {director_ip}\n port = {http}\n }}\n}}\n"
    ));
    daemon.wait_log("auth_http listener ready");
    let addr = SocketAddr::new(director_ip, http);
    let lab_ask = |headers: &str| {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(format!("GET /auth HTTP/1.0\r\n{headers}\r\n").as_bytes())
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert_eq!(
        lab_ask("Auth-User: u1\r\nAuth-Protocol: smtp\r\n"),
        "HTTP/1.0 200 OK\r\nAuth-Status: Temporary server problem, try again later\r\n\
         Auth-Error-Code: 451 4.3.0\r\nAuth-Wait: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );

    // Through a real nginx: the client gets the temporary failure, and may retry.
    let nginx_ip = IpAddr::V4(alloc.next_ip());
    let [ni] = free_ports(nginx_ip, [None]).unwrap();
    let imap = SocketAddr::new(nginx_ip, ni);
    let nginx = Nginx::start(
        &format!(
            "mail {{\n auth_http {addr}/auth;\n server {{\n listen {imap};\n protocol imap;\n }}\n}}\n"
        ),
        imap,
    );
    let mut c = Imap::connect(imap);
    let r = c.cmd("a", "LOGIN u1 pass");
    assert_eq!(
        r.last().unwrap(),
        "a NO Temporary server problem, try again later",
        "{r:?}"
    );
    // The session stays open for a retry (nginx closes only without Auth-Wait).
    let r = c.cmd("b", "NOOP");
    assert!(r.last().unwrap().starts_with("b OK"), "{r:?}");
    daemon.wait_log("auth_http login not routed within director_auth_http_login_timeout");
    drop(nginx);
}

/// A peer outside `director_auth_http_allow_nets` is closed without a reply (and logged); a
/// client that never finishes its request is closed after `director_auth_http_timeout`.
#[test]
fn strangers_and_slow_clients_are_closed_without_a_reply() {
    let mut alloc = LoopbackAllocator::new();
    let director_ip = IpAddr::V4(alloc.next_ip());
    let [http] = free_ports(director_ip, [None]).unwrap();
    let config = |allow: &str| {
        format!(
            "director_auth_http_allow_nets = {allow}\n\
             director_auth_http_timeout = 1 secs\n\
             service director {{\n inet_listener director-auth-http {{\n address = {director_ip}\n port = {http}\n }}\n}}\n"
        )
    };
    let read_all = |request: &[u8]| {
        let mut s = TcpStream::connect_timeout(&SocketAddr::new(director_ip, http), WAIT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        // A reset is a close too.
        let _ = s.read_to_end(&mut out);
        out
    };
    let request = b"GET /auth HTTP/1.0\r\nAuth-User: u\r\nAuth-Protocol: imap\r\n\r\n";
    {
        // Our clients connect from 127.0.0.1, which this list leaves out.
        let daemon = Daemon::start(&config("192.0.2.0/24"));
        daemon.wait_log("auth_http listener ready");
        assert_eq!(read_all(request), b"");
        daemon
            .wait_log("auth_http connection refused: address not in director_auth_http_allow_nets");
    }
    let daemon = Daemon::start(&config("127.0.0.1"));
    daemon.wait_log("auth_http listener ready");
    let started = Instant::now();
    assert_eq!(read_all(b"GET /auth HTTP/1.0\r\nAuth-User: u\r\n"), b"");
    assert!(
        started.elapsed() < IO_TIMEOUT,
        "closed by us, not by the read timeout"
    );
    daemon.wait_log("no complete request within director_auth_http_timeout");
    assert!(String::from_utf8(read_all(request))
        .unwrap()
        .starts_with("HTTP/1.0 200 OK\r\nAuth-Status: OK\r\n"));
}

/// A real Dovecot 2.3 proxy routed by the shipped Lua passdb
/// (`contrib/dovecot/director-auth-http.lua`) asks the same endpoint: IMAP and POP3 logins
/// land where `doveadm director status` says, follow a move, and a wrong password is refused
/// by the backend; while a session is open, its login process's proxy-notify lines keep the
/// user's assignment alive.
#[test]
fn a_dovecot_proxy_with_the_shipped_lua_script_routes_the_same() {
    testkit::require_auth_lua();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/dovecot/director-auth-http.lua");
    // The proxy starts first: directord's proxy-notify FIFO lives in its login directory.
    let mut started = None;
    let lab = Lab::start_with(|auth_http| {
        let proxy = testkit::DovecotLuaProxy::start(
            LoopbackAllocator::new().next_ip(),
            &script,
            &format!("http://{auth_http}/auth"),
            1,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let fifo = format!(
            "service director {{\n fifo_listener {} {{\n mode = 0666\n }}\n}}\n",
            proxy.notify_path().display()
        );
        started = Some(proxy);
        fifo
    });
    let proxy = started.unwrap();
    lab.daemon.wait_log("proxy-notify FIFO ready");
    for i in 0..6 {
        let user = format!("lua-user{i}@example.com");
        let (_, hashed) = lab.doveadm.status(&user);
        let (c, served) = Imap::login(proxy.imap_addr(), &user);
        c.logout();
        assert_eq!(
            served,
            hashed,
            "IMAP login of {user} through the Lua proxy:\n{}",
            proxy.log()
        );
        assert_eq!(lab.doveadm.status(&user).0, Some(hashed));
    }
    let user = "lua-moved@example.com";
    let (c, first) = Imap::login(proxy.imap_addr(), user);
    c.logout();
    let to = lab.ips().into_iter().find(|ip| *ip != first).unwrap();
    lab.doveadm.director(&[], "move", &[user, &to.to_string()]);
    let (c, served) = Imap::login(proxy.imap_addr(), user);
    c.logout();
    assert_eq!(served, to, "after the move");
    // POP3: the backend's log shows the login.
    let user = "lua-pop3@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let needle = format!("pop3-login: Info: Login: user=<{user}>,");
    let mut c = LineClient::connect(proxy.pop3_addr());
    assert!(c.line().starts_with("+OK"));
    assert!(c.cmd(&format!("USER {user}")).starts_with("+OK"));
    let r = c.cmd(&format!("PASS {BACKEND_PASSWORD}"));
    assert!(
        r.starts_with("+OK"),
        "POP3 through the Lua proxy: {r}\n{}",
        proxy.log()
    );
    lab.wait_log_count(hashed, &[&needle], 1);
    // A wrong password: the backend refuses it.
    let user = "lua-wrong@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let mut c = Imap::connect(proxy.imap_addr());
    let r = c.cmd("a", &format!("LOGIN {user} nonsense"));
    assert!(r.last().unwrap().starts_with("a NO"), "{r:?}");
    lab.wait_log_count(hashed, &[&format!("user=<{user}>"), "auth failed"], 1);

    // proxy-notify: an open session keeps its user's assignment fresh.
    let user = "lua-notify@example.com";
    let (c, _) = Imap::login(proxy.imap_addr(), user);
    let expire = |lab: &Lab| -> u64 {
        let r = lab.daemon.client().request(&format!("USER-LOOKUP\t{user}"));
        r.split('\t')
            .nth(1)
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("{r:?}"))
    };
    let first = expire(&lab);
    let deadline = Instant::now() + SETTLE;
    while expire(&lab) <= first {
        assert!(
            Instant::now() < deadline,
            "{user}'s assignment was never refreshed"
        );
        std::thread::sleep(POLL);
    }
    lab.daemon
        .wait_log(&format!("proxy-notify: refreshing user user={user}"));
    c.logout();
}
