//! The built-in mail proxy end to end, through the real `directord` binary and Dovecot's own
//! `doveadm`.
//!
//! Three real Dovecot 2.3 backends (IMAP, POP3, LMTP, Submission, ManageSieve) on their own
//! 127.x addresses, `directord` with a listener for every protocol on another one, real
//! clients (Python's imaplib, poplib, smtplib SMTP/LMTP; a raw ManageSieve client), and the
//! real `/usr/bin/doveadm` pointed at directord's admin socket:
//!
//! * routing: for 200 users, every protocol's login lands on the backend that `doveadm
//!   director status USER` names, as that backend's own log shows (and no other backend's
//!   log); LMTP transactions fan out and each message lands in the right backend's mailbox;
//!   a user's parallel sessions share one backend; a wrong password is refused by the
//!   backend and relayed;
//! * moves: `doveadm director move`, `flush HOST`, `flush all`, `kick`, `down`/`up` and
//!   `update` (with `flush`), `flush -F HOST|all` and `remove`, each with IMAP sessions
//!   open: the sessions that must go are closed, the next login goes where `doveadm director
//!   status` says (checked in the backends' logs), and after every step `doveadm who` on each
//!   backend shows no user on two backends.
//!
//! Needs `apt-get install -y dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd
//! dovecot-submissiond dovecot-managesieved python3`; a missing piece fails the test with that
//! hint.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::doveadm::RealDoveadm;
use common::imap::Imap;
use common::Daemon;
use testkit::{
    free_ports, mail_clients_script, run_mail_clients, DovecotBackend, LoopbackAllocator,
    BACKEND_PASSWORD, INSTALL_HINT,
};

/// Users in the routing test.
const USERS: usize = 200;
/// Recipients per LMTP transaction (each spans all three backends).
const LMTP_BATCH: usize = 50;
/// Concurrent sessions of one user in the parallel-session check.
const PARALLEL: usize = 6;
/// Hang guard for the Dovecot log process and anvil to catch up (a bound, not a timing
/// assertion).
const SETTLE: Duration = Duration::from_secs(30);
/// Poll interval of the bounded waits.
const POLL: Duration = Duration::from_millis(100);
/// How long one batch of Python logins may take at most (hang guard).
const PYTHON_WAIT: Duration = Duration::from_secs(300);

fn require_tools() {
    testkit::require_submission_and_sieve();
    testkit::require_python3();
}

/// Backend and proxy listener ports, one per protocol (the same on every backend).
#[derive(Clone, Copy)]
struct Ports {
    imap: u16,
    pop3: u16,
    lmtp: u16,
    submission: u16,
    sieve: u16,
}

struct Lab {
    backends: Vec<DovecotBackend>,
    /// Kept running for the test's length; reached through `doveadm`.
    _daemon: Daemon,
    proxy_ip: IpAddr,
    proxy: Ports,
    /// Minimal config for `doveadm director …` (it only needs a base_dir and the hash
    /// format, which is Dovecot's default `%Lu` on both sides).
    /// Dovecot's doveadm against the daemon.
    doveadm: RealDoveadm,
}

impl Lab {
    fn start() -> Lab {
        require_tools();
        let mut alloc = LoopbackAllocator::new();
        let proxy_ip = alloc.next_ip();
        let ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
        let [bi, bp, bl, bsub, bsieve] =
            free_ports(IpAddr::V4(ips[0]), [None; 5]).expect("free backend ports");
        let backends = DovecotBackend::start_group(&ips, [Some(bi), Some(bp), Some(bl)], |o| {
            o.with_submission_and_sieve(bsub, bsieve)
        })
        .expect("backends start");
        let pip = IpAddr::V4(proxy_ip);
        let [pi, pp, pl, psub, psieve] = free_ports(pip, [None; 5]).expect("free proxy ports");
        let servers: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
        let extra = format!(
            "director_mail_servers = {servers}\n\
             director_backend_port_imap = {bi}\n\
             director_backend_port_pop3 = {bp}\n\
             director_backend_port_lmtp = {bl}\n\
             director_backend_port_submission = {bsub}\n\
             director_backend_port_sieve = {bsieve}\n\
             disable_plaintext_auth = no\n\
             ssl = no\n\
             service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pi}\n }}\n}}\n\
             service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pp}\n }}\n}}\n\
             service submission-login {{\n inet_listener submission {{\n address = {pip}\n port = {psub}\n }}\n}}\n\
             service managesieve-login {{\n inet_listener sieve {{\n address = {pip}\n port = {psieve}\n }}\n}}\n\
             service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {pl}\n }}\n}}\n",
            servers = servers.join(" ")
        );
        let daemon = Daemon::start(&extra);
        let doveadm = RealDoveadm::for_daemon(&daemon);
        Lab {
            backends,
            _daemon: daemon,
            proxy_ip: pip,
            proxy: Ports {
                imap: pi,
                pop3: pp,
                lmtp: pl,
                submission: psub,
                sieve: psieve,
            },
            doveadm,
        }
    }

    fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.proxy_ip, port)
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

    /// `doveadm who -1` on one real backend (its own anvil): (user, protocol) per connection.
    fn who(&self, ip: IpAddr) -> Vec<(String, String)> {
        let out = Command::new("doveadm")
            .arg("-c")
            .arg(self.backend(ip).config_path())
            .args(["-f", "tab", "who", "-1"])
            .output()
            .unwrap_or_else(|e| panic!("run doveadm who ({e}); install it with `{INSTALL_HINT}`"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "doveadm who on {ip}: {:?} {text} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(u), Some(p)) = (col("username"), col("service").or(col("proto"))) else {
            assert!(text.trim().is_empty(), "unexpected who output {text:?}");
            return Vec::new();
        };
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[u].to_string(), f[p].to_string())
            })
            .collect()
    }

    /// Every user with an open session on some backend, and the backends serving it.
    fn served_by(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        let mut map: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for ip in self.ips() {
            for (user, _) in self.who(ip) {
                map.entry(user).or_default().insert(ip);
            }
        }
        map
    }

    /// The no-split invariant, from the backends' own session lists.
    fn assert_no_user_on_two_backends(&self, step: &str) {
        let split: Vec<_> = self
            .served_by()
            .into_iter()
            .filter(|(_, ips)| ips.len() > 1)
            .collect();
        assert!(
            split.is_empty(),
            "{step}: users served by two backends: {split:?}"
        );
    }

    /// Waits (bounded) until `doveadm who` shows exactly `n` sessions of `user` on `ip`.
    fn wait_sessions(&self, ip: IpAddr, user: &str, n: usize) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let who = self.who(ip);
            let have = who.iter().filter(|(u, _)| u == user).count();
            if have == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{user} has {have} sessions on {ip}, expected {n}: {who:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Sessions of `user` on `ip` per `doveadm who`.
    fn sessions_of(&self, ip: IpAddr, user: &str) -> usize {
        self.who(ip).iter().filter(|(u, _)| u == user).count()
    }

    /// Waits (bounded) until `doveadm who` on `ip` lists nobody.
    fn wait_no_sessions(&self, ip: IpAddr) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let who = self.who(ip);
            if who.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "sessions left on {ip}: {who:?}");
            std::thread::sleep(POLL);
        }
    }

    /// Number of IMAP logins of `user` in the backend's own log.
    fn imap_logins(&self, ip: IpAddr, user: &str) -> usize {
        let needle = format!("imap-login: Info: Login: user=<{user}>,");
        self.backend(ip)
            .log()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }

    /// Waits (bounded) until the backend's log has `n` IMAP logins of `user`.
    fn wait_imap_logins(&self, ip: IpAddr, user: &str, n: usize) {
        let deadline = Instant::now() + SETTLE;
        while self.imap_logins(ip, user) < n {
            assert!(
                Instant::now() < deadline,
                "{ip}'s log never showed {n} IMAP logins of {user}:\n{}",
                self.backend(ip).log()
            );
            std::thread::sleep(POLL);
        }
        assert_eq!(self.imap_logins(ip, user), n, "{user} on {ip}");
    }

    fn python(&self, args: Vec<String>) -> Vec<String> {
        run_mail_clients(&args, PYTHON_WAIT)
    }
}

/// One client batch's outcome: user → (`OK`/`NO`/`ERR` or a reply code, detail).
type ClientResults = BTreeMap<String, (String, String)>;

/// Splits `USER<TAB>STATUS<TAB>DETAIL` lines into a map by user.
fn by_user(lines: &[String]) -> ClientResults {
    lines
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, '\t').collect();
            assert_eq!(f.len(), 3, "bad client output line {l:?}");
            (f[0].to_string(), (f[1].to_string(), f[2].to_string()))
        })
        .collect()
}

/// The log lines that prove a login or delivery of `user` on a backend, per protocol.
fn log_proofs(user: &str) -> [(&'static str, String); 5] {
    [
        ("imap", format!("imap-login: Info: Login: user=<{user}>,")),
        ("pop3", format!("pop3-login: Info: Login: user=<{user}>,")),
        (
            "submission",
            format!("submission-login: Info: Login: user=<{user}>,"),
        ),
        (
            "managesieve",
            format!("managesieve-login: Info: Login: user=<{user}>,"),
        ),
        ("lmtp", format!("lmtp({user})<")),
    ]
}

fn has_proof(log: &str, proto: &str, needle: &str) -> bool {
    log.lines()
        .any(|l| l.contains(needle) && (proto != "lmtp" || l.contains("saved mail to INBOX")))
}

#[test]
fn every_protocol_lands_on_the_backend_doveadm_names() {
    let lab = Lab::start();
    let users: Vec<String> = (0..USERS)
        .map(|i| format!("route{i}@example.com"))
        .collect();

    // Dovecot's own doveadm names each user's backend before anyone logs in.
    let mut hashed = BTreeMap::new();
    for u in &users {
        let (current, h) = lab.doveadm.status(u);
        assert_eq!(current, None, "{u} not assigned before its first login");
        hashed.insert(u.clone(), h);
    }
    let per_backend: BTreeMap<IpAddr, usize> =
        hashed.values().fold(BTreeMap::new(), |mut m, ip| {
            *m.entry(*ip).or_default() += 1;
            m
        });
    assert_eq!(per_backend.len(), 3, "200 users spread over all backends");

    // LMTP first: transactions whose recipients span all three backends.
    let host = lab.proxy_ip.to_string();
    let mut args = vec![
        "lmtp".to_string(),
        host.clone(),
        lab.proxy.lmtp.to_string(),
        "sender@example.com".to_string(),
        LMTP_BATCH.to_string(),
    ];
    args.extend(users.iter().cloned());
    let lmtp = by_user(&lab.python(args));
    for u in &users {
        let (code, text) = lmtp
            .get(u)
            .unwrap_or_else(|| panic!("no LMTP reply for {u}"));
        assert_eq!(code, "250", "{u}: {text}");
    }

    // Then every login protocol, one Python process each, all at once.
    let batches: Vec<(&str, u16)> = vec![
        ("imap", lab.proxy.imap),
        ("pop3", lab.proxy.pop3),
        ("submission", lab.proxy.submission),
        ("sieve", lab.proxy.sieve),
    ];
    let results: Vec<(&str, ClientResults)> = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .iter()
            .map(|(proto, port)| {
                let mut args = vec![
                    proto.to_string(),
                    host.clone(),
                    port.to_string(),
                    BACKEND_PASSWORD.to_string(),
                ];
                args.extend(users.iter().cloned());
                let lab = &lab;
                (*proto, s.spawn(move || by_user(&lab.python(args))))
            })
            .collect();
        handles
            .into_iter()
            .map(|(p, h)| (p, h.join().unwrap()))
            .collect()
    });
    for (proto, res) in &results {
        for u in &users {
            let (st, detail) = res
                .get(u)
                .unwrap_or_else(|| panic!("{proto}: no result for {u}"));
            assert_eq!(st, "OK", "{proto} login of {u}: {detail}");
            match *proto {
                // The backend that served the IMAP session says who it is (ID backend-ip).
                "imap" => assert_eq!(detail, &hashed[u].to_string(), "IMAP {u}"),
                // The LMTP message was delivered where POP3 now logs in: the same backend.
                "pop3" => assert_eq!(detail, "1", "POP3 {u} sees its one message"),
                _ => {}
            }
        }
    }

    // After the logins doveadm shows each user assigned where it said.
    for u in &users {
        assert_eq!(
            lab.doveadm.status(u).0,
            Some(hashed[u]),
            "{u} current = hashed"
        );
    }

    // Each backend's own log has every login and delivery of its users, and no other's.
    let deadline = Instant::now() + SETTLE;
    let logs = loop {
        let logs: BTreeMap<IpAddr, String> = lab
            .ips()
            .into_iter()
            .map(|ip| (ip, lab.backend(ip).log()))
            .collect();
        let missing: Vec<String> = users
            .iter()
            .flat_map(|u| {
                let log = &logs[&hashed[u]];
                log_proofs(u)
                    .into_iter()
                    .filter(|(proto, needle)| !has_proof(log, proto, needle))
                    .map(|(proto, _)| format!("{proto} {u} on {}", hashed[u]))
                    .collect::<Vec<_>>()
            })
            .collect();
        if missing.is_empty() {
            break logs;
        }
        assert!(
            Instant::now() < deadline,
            "{} logins/deliveries missing from the backends' logs, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        std::thread::sleep(POLL);
    };
    for u in &users {
        for (ip, log) in &logs {
            if *ip == hashed[u] {
                continue;
            }
            for (proto, needle) in log_proofs(u) {
                assert!(
                    !has_proof(log, proto, &needle),
                    "{proto} of {u} also on {ip} (hashed {})",
                    hashed[u]
                );
            }
        }
        // The message sits in the right backend's mailbox and nowhere else.
        for ip in lab.ips() {
            let new = lab.backend(ip).mail_dir().join(u).join("Maildir/new");
            let cur = lab.backend(ip).mail_dir().join(u).join("Maildir/cur");
            let count = [new, cur]
                .iter()
                .filter_map(|d| std::fs::read_dir(d).ok())
                .map(|d| d.count())
                .sum::<usize>();
            let want = usize::from(ip == hashed[u]);
            assert_eq!(count, want, "messages of {u} in {ip}'s mailbox");
        }
    }

    // A user's parallel sessions all land on one backend: the one doveadm names, and the
    // backends' own session lists agree while they are open.
    let user = "parallel@example.com";
    let (_, want) = lab.doveadm.status(user);
    let script = mail_clients_script();
    let mut child = Command::new("python3")
        .arg(script)
        .args([
            "imap-hold",
            &host,
            &lab.proxy.imap.to_string(),
            BACKEND_PASSWORD,
            &PARALLEL.to_string(),
            user,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (install it with `apt-get install -y python3`)");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ips = Vec::new();
    loop {
        let line = rx.recv_timeout(PYTHON_WAIT).expect("imap-hold output");
        if line == "READY" {
            break;
        }
        assert!(!line.starts_with("ERR"), "parallel logins: {line}");
        ips.push(line);
    }
    assert_eq!(ips.len(), PARALLEL);
    assert!(
        ips.iter().all(|ip| *ip == want.to_string()),
        "parallel sessions of {user}: {ips:?}, doveadm says {want}"
    );
    lab.wait_sessions(want, user, PARALLEL);
    for ip in lab.ips().into_iter().filter(|ip| *ip != want) {
        lab.wait_sessions(ip, user, 0);
    }
    lab.wait_imap_logins(want, user, PARALLEL);
    stdin.write_all(b"go\n").unwrap();
    assert_eq!(rx.recv_timeout(PYTHON_WAIT).expect("imap-hold end"), "DONE");
    drop(stdin);
    assert!(child.wait().unwrap().success());

    // A wrong password: the backend refuses it (its log says so), and the client hears it.
    let user = "wrongpass@example.com";
    let (_, want) = lab.doveadm.status(user);
    for (proto, port) in [("imap", lab.proxy.imap), ("pop3", lab.proxy.pop3)] {
        let out = by_user(&lab.python(vec![
            proto.to_string(),
            host.clone(),
            port.to_string(),
            "not-the-password".to_string(),
            user.to_string(),
        ]));
        let (st, detail) = &out[user];
        assert_eq!(st, "NO", "{proto}: {detail}");
        let expect = if proto == "imap" {
            "AUTHENTICATIONFAILED"
        } else {
            "[AUTH]"
        };
        assert!(
            detail.contains(expect),
            "{proto} relays the backend's refusal: {detail}"
        );
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = lab.backend(want).log();
        let refused = |svc: &str| {
            log.lines().any(|l| {
                l.contains(&format!("{svc}-login: Info:"))
                    && l.contains(&format!("user=<{user}>"))
                    && l.contains("auth failed")
            })
        };
        if refused("imap") && refused("pop3") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{want}'s log does not show the refused logins of {user}:\n{log}"
        );
        std::thread::sleep(POLL);
    }
    for ip in lab.ips().into_iter().filter(|ip| *ip != want) {
        assert!(
            !lab.backend(ip).log().contains(&format!("user=<{user}>")),
            "{user} tried on {ip} too"
        );
    }
    lab.assert_no_user_on_two_backends("after routing");
}

fn open(lab: &Lab, user: &str, n: usize, want: IpAddr) -> Vec<Imap> {
    let before = lab.imap_logins(want, user);
    let had = lab.sessions_of(want, user);
    let sessions: Vec<Imap> = (0..n)
        .map(|_| {
            let (c, ip) = Imap::login(lab.addr(lab.proxy.imap), user);
            assert_eq!(ip, want, "{user} session served by {ip}, expected {want}");
            c
        })
        .collect();
    lab.wait_imap_logins(want, user, before + n);
    lab.wait_sessions(want, user, had + n);
    sessions
}

/// Logs a session out and waits until its backend no longer lists it.
fn close(lab: &Lab, c: Imap, user: &str, ip: IpAddr) {
    let had = lab.sessions_of(ip, user);
    c.logout();
    lab.wait_sessions(ip, user, had.saturating_sub(1));
}

/// The sessions were closed by the proxy, and the backend that held them shows none left.
fn assert_closed(lab: &Lab, sessions: Vec<Imap>, user: &str, old: IpAddr, step: &str) {
    for mut s in sessions {
        assert!(s.closed(), "{step}: {user}'s session on {old} closed");
    }
    lab.wait_sessions(old, user, 0);
}

/// The next login goes to `new` (the backend's own log counts it), the user is on no other
/// backend, and doveadm shows the assignment.
fn next_login_on(lab: &Lab, user: &str, new: IpAddr, step: &str) -> Imap {
    let ips = lab.ips();
    let logins: Vec<usize> = ips.iter().map(|ip| lab.imap_logins(*ip, user)).collect();
    let had = lab.sessions_of(new, user);
    let (c, ip) = Imap::login(lab.addr(lab.proxy.imap), user);
    assert_eq!(ip, new, "{step}: {user}'s next login");
    for (i, other) in ips.iter().enumerate() {
        if *other == new {
            lab.wait_imap_logins(new, user, logins[i] + 1);
        } else {
            assert_eq!(
                lab.imap_logins(*other, user),
                logins[i],
                "{step}: {user} on {other}"
            );
        }
    }
    lab.wait_sessions(new, user, had + 1);
    assert_eq!(
        lab.doveadm.status(user).0,
        Some(new),
        "{step}: doveadm status {user}"
    );
    lab.assert_no_user_on_two_backends(step);
    c
}

fn other_than(lab: &Lab, not: &[IpAddr]) -> IpAddr {
    lab.ips()
        .into_iter()
        .find(|ip| !not.contains(ip))
        .expect("a third backend")
}

/// Moves `user` to `to` with doveadm and waits until the move is over (a login lands there).
fn move_user(lab: &Lab, user: &str, to: IpAddr) {
    lab.doveadm.director(&[], "move", &[user, &to.to_string()]);
    let (c, ip) = Imap::login(lab.addr(lab.proxy.imap), user);
    assert_eq!(ip, to, "{user} after move to {to}");
    close(lab, c, user, to);
}

/// A session held open across the steps by a user who is not part of them.
struct Bystander {
    user: String,
    ip: IpAddr,
    session: Option<Imap>,
}

/// Every bystander still open is untouched; nobody is on two backends.
fn check_bystanders(lab: &Lab, bystanders: &mut [Bystander], step: &str) {
    for b in bystanders.iter_mut() {
        if let Some(s) = b.session.as_mut() {
            assert!(
                s.noop_ok(),
                "{step}: bystander {} on {} untouched",
                b.user,
                b.ip
            );
        }
    }
    lab.assert_no_user_on_two_backends(step);
}

/// The bystander on `ip` must have been closed by `step` (its user was on that host too).
fn bystander_closed(bystanders: &mut [Bystander], ip: IpAddr, step: &str) {
    for b in bystanders.iter_mut().filter(|b| b.ip == ip) {
        let mut s = b.session.take().expect("bystander open");
        assert!(s.closed(), "{step}: bystander {} on {ip} closed", b.user);
    }
}

/// Opens a new session for every bystander whose session was closed (on its hashed host).
fn reopen_bystanders(lab: &Lab, bystanders: &mut [Bystander]) {
    for b in bystanders.iter_mut().filter(|b| b.session.is_none()) {
        b.session = open(lab, &b.user, 1, b.ip).pop();
    }
}

#[test]
fn doveadm_move_flush_kick_down_and_remove_end_to_end() {
    let lab = Lab::start();

    // A bystander on every backend, open throughout: only the sessions a step must end
    // are ended.
    let mut bystanders: Vec<Bystander> = lab
        .ips()
        .into_iter()
        .map(|ip| {
            let user = lab.doveadm.user_hashed_to("calm", ip);
            let session = open(&lab, &user, 1, ip).pop();
            Bystander { user, ip, session }
        })
        .collect();

    // --- move: the old sessions are killed; a login during the move waits for it and
    // lands on the new backend.
    let user = "mover@example.com";
    let (_, old) = lab.doveadm.status(user);
    let sessions = open(&lab, user, 2, old);
    let new = other_than(&lab, &[old]);
    lab.doveadm.director(&[], "move", &[user, &new.to_string()]);
    let addr = lab.addr(lab.proxy.imap);
    let during = std::thread::spawn(move || Imap::login(addr, "mover@example.com"));
    assert_closed(&lab, sessions, user, old, "move");
    let (c, ip) = during.join().unwrap();
    assert_eq!(ip, new, "a login during the move goes to the new backend");
    lab.assert_no_user_on_two_backends("move (login during the move)");
    close(&lab, c, user, new);
    let c = next_login_on(&lab, user, new, "move");
    close(&lab, c, user, new);
    check_bystanders(&lab, &mut bystanders, "move");

    // --- kick: the sessions are closed; the assignment stays.
    let user = "kicked@example.com";
    let (_, home) = lab.doveadm.status(user);
    let sessions = open(&lab, user, 2, home);
    lab.doveadm.director(&[], "kick", &[user]);
    assert_closed(&lab, sessions, user, home, "kick");
    let c = next_login_on(&lab, user, home, "kick");
    close(&lab, c, user, home);
    check_bystanders(&lab, &mut bystanders, "kick");

    // --- flush HOST: users off their hashed host are moved back (sessions killed); users
    // already on their hashed host, like the bystander there, stay.
    let user = "flushed@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let away = other_than(&lab, &[hashed]);
    move_user(&lab, user, away);
    let sessions = open(&lab, user, 2, away);
    lab.doveadm.director(&[], "flush", &[&away.to_string()]);
    assert_closed(&lab, sessions, user, away, "flush HOST");
    let c = next_login_on(&lab, user, hashed, "flush HOST");
    close(&lab, c, user, hashed);
    check_bystanders(&lab, &mut bystanders, "flush HOST");

    // --- flush all.
    let user = "flushall@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let away = other_than(&lab, &[hashed]);
    move_user(&lab, user, away);
    let sessions = open(&lab, user, 2, away);
    lab.doveadm.director(&[], "flush", &["all"]);
    assert_closed(&lab, sessions, user, away, "flush all");
    let c = next_login_on(&lab, user, hashed, "flush all");
    close(&lab, c, user, hashed);
    check_bystanders(&lab, &mut bystanders, "flush all");

    // --- down HOST then flush, up HOST then flush back; the same with update 0 / 100.
    for (name, drain_vhosts, undo, undo_vhosts) in [
        ("down", None, "up", None),
        ("update", Some("0"), "update", Some("100")),
    ] {
        let user = format!("drained-{name}@example.com");
        let (_, home) = lab.doveadm.status(&user);
        let h = home.to_string();
        let newcomer = lab
            .doveadm
            .user_hashed_to(&format!("newcomer-{name}-"), home);
        let mut held = open(&lab, &user, 1, home).pop().unwrap();
        let args = |v: Option<&'static str>| -> Vec<&str> {
            let mut a = vec![h.as_str()];
            a.extend(v);
            a
        };
        lab.doveadm.director(&[], name, &args(drain_vhosts));
        // Existing assignments stay (Dovecot's semantics): the open session lives on and a
        // second login of the same user still goes home, so the user is never split...
        assert!(held.noop_ok(), "{name}: open session survives");
        let c = next_login_on(&lab, &user, home, name);
        close(&lab, c, &user, home);
        // ...while a new user that hashed there goes elsewhere.
        let (cur, elsewhere) = lab.doveadm.status(&newcomer);
        assert_eq!(cur, None);
        assert_ne!(elsewhere, home, "{name}: new users avoid {home}");
        let c = next_login_on(&lab, &newcomer, elsewhere, name);
        close(&lab, c, &newcomer, elsewhere);
        // A flush moves the users off the drained host, killing their sessions (the
        // bystander there included).
        let (_, target) = lab.doveadm.status(&user);
        assert_ne!(target, home);
        let step = format!("{name} + flush");
        lab.doveadm.director(&[], "flush", &[&h]);
        assert_closed(&lab, vec![held], &user, home, &step);
        bystander_closed(&mut bystanders, home, &step);
        let mut c = next_login_on(&lab, &user, target, &step);
        check_bystanders(&lab, &mut bystanders, &step);
        // Undrain, then a flush of the host the user is on moves it home again.
        lab.doveadm.director(&[], undo, &args(undo_vhosts));
        assert!(c.noop_ok(), "{name}: session survives {undo}");
        assert_eq!(lab.doveadm.status(&user).1, home);
        let step = format!("{undo} + flush");
        lab.doveadm.director(&[], "flush", &[&target.to_string()]);
        assert_closed(&lab, vec![c], &user, target, &step);
        let c = next_login_on(&lab, &user, home, &step);
        close(&lab, c, &user, home);
        // Everyone back to their hashed host; the bystander of `home` returns there.
        lab.doveadm.director(&[], "flush", &["all"]);
        reopen_bystanders(&lab, &mut bystanders);
        check_bystanders(&lab, &mut bystanders, &step);
    }

    // --- flush -F HOST: the host's users are dropped without a move, and every session
    // proxied there is closed (the bystander's too), or a user whose next login is hashed
    // elsewhere would be served by two backends.
    let user = "forced@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let away = other_than(&lab, &[hashed]);
    move_user(&lab, user, away);
    let sessions = open(&lab, user, 2, away);
    lab.doveadm
        .director(&[], "flush", &["-F", &away.to_string()]);
    assert_closed(&lab, sessions, user, away, "flush -F HOST");
    bystander_closed(&mut bystanders, away, "flush -F HOST");
    assert_eq!(
        lab.doveadm.status(user).0,
        None,
        "flush -F drops the host's users"
    );
    let c = next_login_on(&lab, user, hashed, "flush -F HOST");
    close(&lab, c, user, hashed);
    reopen_bystanders(&lab, &mut bystanders);
    check_bystanders(&lab, &mut bystanders, "flush -F HOST");

    // --- flush -F all: every session is closed; logins start over on the hashed hosts.
    let user = "forcedall@example.com";
    let (_, hashed) = lab.doveadm.status(user);
    let away = other_than(&lab, &[hashed]);
    move_user(&lab, user, away);
    let sessions = open(&lab, user, 2, away);
    lab.doveadm.director(&[], "flush", &["-F", "all"]);
    assert_closed(&lab, sessions, user, away, "flush -F all");
    for ip in lab.ips() {
        bystander_closed(&mut bystanders, ip, "flush -F all");
        lab.wait_no_sessions(ip);
    }
    let c = next_login_on(&lab, user, hashed, "flush -F all");
    close(&lab, c, user, hashed);
    reopen_bystanders(&lab, &mut bystanders);
    check_bystanders(&lab, &mut bystanders, "flush -F all");

    // --- remove HOST: sessions proxied to a host that no longer exists are closed (else
    // the user's next login, hashed elsewhere now, would split it), and the next login goes
    // to the user's new hashed host.
    let user = "removed@example.com";
    let (_, gone) = lab.doveadm.status(user);
    let sessions = open(&lab, user, 2, gone);
    lab.doveadm.director(&[], "remove", &[&gone.to_string()]);
    assert_closed(&lab, sessions, user, gone, "remove");
    bystander_closed(&mut bystanders, gone, "remove");
    let (cur, rehashed) = lab.doveadm.status(user);
    assert_eq!(cur, None, "remove drops the host's users");
    assert_ne!(rehashed, gone);
    let c = next_login_on(&lab, user, rehashed, "remove");
    check_bystanders(&lab, &mut bystanders, "remove");
    close(&lab, c, user, rehashed);
    lab.wait_no_sessions(gone);
}
