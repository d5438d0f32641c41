//! Backend health checks with real Dovecot backends: a stopped backend is marked down within
//! the configured bound while logins keep succeeding on the others, and comes back when it
//! is started again; a backend that accepts TCP but never greets, or greets but refuses the
//! test user, is marked down; a host an operator marked down stays down; the last up host of
//! a tag is never marked down; a host whose checks alternate changes state at most once per
//! hold-down; in a ring one director decides and every director sees its decision, and when
//! it dies the next lowest-addressed director takes over.
//!
//! Every wait polls `HOST-LIST` (or the log) against a deadline computed from the settings.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::imap::Imap;
use common::ring::{wait_synced, wait_until, Member, RingSpec};
use common::tls::{make_ca, make_leaf};
use common::Daemon;
use rcgen::ExtendedKeyUsagePurpose::ServerAuth;
use testkit::{free_ports, require_dovecot, BackendOptions, DovecotBackend, LoopbackAllocator};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(500);
const FAILS: u32 = 2;
const SUCCESSES: u32 = 2;
const HOLD_DOWN: Duration = Duration::from_secs(1);

/// Longest a host may take to be marked down once it fails every probe: a round may have
/// just started, then `FAILS` rounds, each an interval plus a probe timeout.
fn down_bound() -> Duration {
    (INTERVAL + TIMEOUT) * (FAILS + 1)
}

/// Longest a recovered host may take to be marked up: the hold-down, then `SUCCESSES`
/// rounds.
fn up_bound() -> Duration {
    HOLD_DOWN + (INTERVAL + TIMEOUT) * (SUCCESSES + 1)
}

/// Slack for a loaded machine (process scheduling, not the checker's timing).
const SLACK: Duration = Duration::from_secs(2);

struct Setup {
    daemon: Daemon,
    imap: SocketAddr,
    imap_port: u16,
}

/// A daemon proxying IMAP to `hosts` (addresses, some perhaps without a backend) on
/// `imap_port`, with health checks every [`INTERVAL`].
fn start_daemon(
    mut alloc: LoopbackAllocator,
    hosts: &[Ipv4Addr],
    imap_port: u16,
    extra: &str,
) -> Setup {
    let pip = IpAddr::V4(alloc.next_ip());
    let [pi] = free_ports(pip, [None]).expect("free proxy port");
    let servers: Vec<String> = hosts.iter().map(|i| i.to_string()).collect();
    let extra = format!(
        "director_mail_servers = {}\n\
         director_backend_port_imap = {imap_port}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         {}\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pi}\n }}\n}}\n\
         {extra}",
        servers.join(" "),
        health_config(),
    );
    Setup {
        daemon: Daemon::start(&extra),
        imap: SocketAddr::new(pip, pi),
        imap_port,
    }
}

/// `n` real backends on their own addresses, and a daemon in front of them.
fn setup(n: usize) -> (Setup, Vec<DovecotBackend>) {
    setup_with(n, "")
}

/// [`setup`] with `extra` config lines.
fn setup_with(n: usize, extra: &str) -> (Setup, Vec<DovecotBackend>) {
    setup_configured(n, extra, |_| {})
}

/// [`setup_with`], with each backend's options adjusted by `configure`.
fn setup_configured(
    n: usize,
    extra: &str,
    configure: impl FnMut(&mut BackendOptions),
) -> (Setup, Vec<DovecotBackend>) {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
    let backends = DovecotBackend::start_group(&ips, [None; 3], configure).expect("backends start");
    let port = backends[0].imap_addr().port();
    (start_daemon(alloc, &ips, port, extra), backends)
}

/// The health-check lines of the config, as every test uses them.
fn health_config() -> String {
    format!(
        "director_health_check_interval = {} ms\n\
         director_health_check_timeout = {} ms\n\
         director_health_check_fails = {FAILS}\n\
         director_health_check_successes = {SUCCESSES}\n\
         director_health_check_hold_down = {} ms\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis(),
        HOLD_DOWN.as_millis(),
    )
}

/// Whether each host is down, from `HOST-LIST`.
fn host_states(d: &Daemon) -> Vec<(IpAddr, bool)> {
    d.client()
        .request("HOST-LIST")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().expect("host IP"), f[4] == "D")
        })
        .collect()
}

fn is_down(d: &Daemon, ip: Ipv4Addr) -> bool {
    host_states(d)
        .into_iter()
        .find(|(h, _)| *h == IpAddr::V4(ip))
        .expect("host listed")
        .1
}

/// Polls until `ip` is down (`down`) or up, failing `bound` (plus [`SLACK`]) after `start`
/// (when the backend changed); returns how long it took.
fn wait_state(d: &Daemon, ip: Ipv4Addr, down: bool, bound: Duration, start: Instant) -> Duration {
    loop {
        if is_down(d, ip) == down {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound + SLACK,
            "{ip} not {} within {bound:?}; hosts {:?}; log:\n{}",
            if down { "down" } else { "up" },
            host_states(d),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Logs in users named `prefix{i}` until one lands on `ip`; that user's name.
fn user_on(s: &Setup, ip: Ipv4Addr, prefix: &str) -> String {
    (0..200)
        .map(|i| format!("{prefix}{i}@example.com"))
        .find(|user| {
            let (mut c, at) = Imap::login(s.imap, user);
            c.cmd("z", "LOGOUT");
            at == IpAddr::V4(ip)
        })
        .unwrap_or_else(|| panic!("no user landed on {ip}"))
}

/// `USER-LIST` of host `ip`: one line per assigned user.
fn users_of(d: &Daemon, ip: Ipv4Addr) -> usize {
    d.client()
        .request(&format!("USER-LIST\t{ip}"))
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

/// Logs in `count` users through the proxy; every login succeeds, none on `not`.
fn logins_avoid(s: &Setup, not: Ipv4Addr, count: usize) {
    for i in 0..count {
        let (mut c, ip) = Imap::login(s.imap, &format!("user{i}@example.com"));
        assert_ne!(ip, IpAddr::V4(not), "user{i} sent to a host marked down");
        c.cmd("z", "LOGOUT");
    }
}

#[test]
fn a_stopped_backend_is_marked_down_within_the_bound_and_comes_back_when_started() {
    let (s, mut backends) = setup(3);
    assert!(host_states(&s.daemon).iter().all(|(_, down)| !down));
    let victim = backends[0].ip();
    user_on(&s, victim, "pinned");
    let stopped = Instant::now();
    backends[0].stop().expect("stop the backend");
    let took = wait_state(&s.daemon, victim, true, down_bound(), stopped);
    eprintln!("marked down after {took:?} (bound {:?})", down_bound());
    s.daemon.wait_log("health checks marked the host down");
    // As `doveadm director down`: its users stay assigned (no flush unless configured).
    assert!(
        users_of(&s.daemon, victim) > 0,
        "users of the down host dropped"
    );
    logins_avoid(&s, victim, 20);

    let mut opts = BackendOptions::new(victim);
    opts.imap_port = Some(s.imap_port);
    opts.pop3_port = Some(backends[0].pop3_addr().port());
    opts.lmtp_port = Some(backends[0].lmtp_addr().port());
    backends[0] = DovecotBackend::start_with(opts).expect("restart the backend");
    // It greets now (start_with waited for that).
    let took = wait_state(&s.daemon, victim, false, up_bound(), Instant::now());
    eprintln!("marked up after {took:?} (bound {:?})", up_bound());
    // Logins reach it again: some user hashes to it.
    let reached = (0..100).any(|i| {
        let (mut c, ip) = Imap::login(s.imap, &format!("back{i}@example.com"));
        c.cmd("z", "LOGOUT");
        ip == IpAddr::V4(victim)
    });
    assert!(reached, "no login reached the host after it came back");
}

/// `GET /metrics` from a `director-metrics` listener.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("send the request");
    let mut text = String::new();
    c.read_to_string(&mut text).expect("read the metrics");
    text
}

/// Also: the metrics count the probes, their failures and the decision.
#[test]
fn with_flush_on_the_users_of_a_host_marked_down_are_flushed() {
    let mip = LoopbackAllocator::new().next_ip();
    let [mport] = free_ports(IpAddr::V4(mip), [None]).expect("a free metrics port");
    let metrics = SocketAddr::new(IpAddr::V4(mip), mport);
    let (s, mut backends) = setup_with(
        2,
        &format!(
            "director_health_check_flush = yes\n\
             service director {{\n inet_listener director-metrics {{\n address = {mip}\n port = {mport}\n }}\n}}\n"
        ),
    );
    let victim = backends[0].ip();
    let user = user_on(&s, victim, "flushed");
    assert!(users_of(&s.daemon, victim) > 0);
    let stopped = Instant::now();
    backends[0].stop().expect("stop the backend");
    wait_state(&s.daemon, victim, true, down_bound(), stopped);
    let start = Instant::now();
    while users_of(&s.daemon, victim) > 0 {
        assert!(
            start.elapsed() < SLACK,
            "the down host's users were not flushed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut c, at) = Imap::login(s.imap, &user);
    c.cmd("z", "LOGOUT");
    assert_eq!(at, IpAddr::V4(backends[1].ip()), "{user} after the flush");

    let text = scrape(metrics);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    assert_eq!(value("director_health_marked_total{state=\"down\"}"), 1);
    assert_eq!(value("director_health_marked_total{state=\"up\"}"), 0);
    assert!(value("director_health_probe_failures_total") >= u64::from(FAILS));
    assert!(value("director_health_probes_total") > value("director_health_probe_failures_total"));
}

#[test]
fn with_a_test_user_a_backend_that_greets_but_refuses_the_login_is_marked_down() {
    let mut first = None;
    let (s, backends) = setup_configured(
        3,
        &format!(
            "director_health_check_user = probe@example.com\n\
             director_health_check_password = {}\n",
            testkit::BACKEND_PASSWORD
        ),
        |o| {
            // The first backend knows the user under another password.
            if *first.get_or_insert(o.ip) == o.ip {
                o.password = "another-password".to_owned();
            }
        },
    );
    let refusing = backends[0].ip();
    wait_state(&s.daemon, refusing, true, down_bound(), Instant::now());
    logins_avoid(&s, refusing, 20);
    for b in &backends[1..] {
        assert!(
            !is_down(&s.daemon, b.ip()),
            "{} accepts the test user",
            b.ip()
        );
    }
}

#[test]
fn a_backend_that_accepts_tcp_but_never_greets_is_marked_down() {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..2).map(|_| alloc.next_ip()).collect();
    let backends = DovecotBackend::start_group(&ips, [None; 3], |_| {}).expect("backends start");
    let port = backends[0].imap_addr().port();
    // The kernel completes the TCP handshake into the backlog; nothing ever greets.
    let mute_ip = alloc.next_ip();
    let mute = TcpListener::bind((mute_ip, port)).expect("bind the mute listener");
    let mut hosts = ips.clone();
    hosts.push(mute_ip);
    let s = start_daemon(alloc, &hosts, port, "");
    wait_state(&s.daemon, mute_ip, true, down_bound(), Instant::now());
    logins_avoid(&s, mute_ip, 20);
    for ip in ips {
        assert!(!is_down(&s.daemon, ip), "{ip} is healthy");
    }
    drop(mute);
}

#[test]
fn a_host_an_operator_marked_down_stays_down_while_healthy() {
    let (s, mut backends) = setup(3);
    let manual = backends[1].ip();
    assert_eq!(
        s.daemon
            .client()
            .request(&format!("HOST-DOWN\t{manual}"))
            .trim_end(),
        "OK"
    );
    // Take a second host down and back up: by the time the checker has brought it back,
    // the manually downed host has passed at least as many rounds.
    let victim = backends[0].ip();
    let stopped = Instant::now();
    backends[0].stop().expect("stop the backend");
    wait_state(&s.daemon, victim, true, down_bound(), stopped);
    let mut opts = BackendOptions::new(victim);
    opts.imap_port = Some(s.imap_port);
    opts.pop3_port = Some(backends[0].pop3_addr().port());
    opts.lmtp_port = Some(backends[0].lmtp_addr().port());
    backends[0] = DovecotBackend::start_with(opts).expect("restart the backend");
    wait_state(&s.daemon, victim, false, up_bound(), Instant::now());
    assert!(
        is_down(&s.daemon, manual),
        "the checker brought up a host marked down by hand"
    );
}

#[test]
fn the_last_up_host_is_never_marked_down() {
    let (s, mut backends) = setup(2);
    let first = backends[0].ip();
    let last = backends[1].ip();
    let stopped = Instant::now();
    backends[0].stop().expect("stop the first backend");
    wait_state(&s.daemon, first, true, down_bound(), stopped);
    let from = s.daemon.log_text().len();
    backends[1].stop().expect("stop the last backend");
    s.daemon
        .wait_log_from(from, "every up host of the tag fails its health checks");
    assert!(
        !is_down(&s.daemon, last),
        "the last up host was marked down"
    );
}

/// In a ring the lowest-addressed director decides and every director sees its decision.
/// The others probe and watch: when the decider dies, its successor brings up the host the
/// dead decider's checker marked down once it recovers, leaves a healthy host an operator
/// marked down alone, and marks down a host that fails from then on.
#[test]
fn in_a_ring_the_lowest_director_decides_every_director_sees_it_and_a_successor_takes_over() {
    require_dovecot();
    let spec = RingSpec::new(3);
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..4).map(|_| alloc.next_ip()).collect();
    let mut backends =
        DovecotBackend::start_group(&ips, [None; 3], |_| {}).expect("backends start");
    let port = backends[0].imap_addr().port();
    let mail: Vec<String> = ips.iter().map(|i| i.to_string()).collect();
    // The later director_mail_servers replaces the ring config's default one.
    let extra = format!(
        "director_mail_servers = {}\ndirector_backend_port_imap = {port}\n{}",
        mail.join(" "),
        health_config()
    );
    let mut directors: Vec<Member> = (0..3)
        .map(|i| Member::Ours(Daemon::start(&spec.config(i, &extra))))
        .collect();
    wait_synced(&directors);
    let log = |m: &Member| match m {
        Member::Ours(d) => d.log_text(),
        Member::Dovecot(_) => unreachable!("a ring of ours"),
    };
    let state_everywhere = |ring: &[Member], ip: Ipv4Addr, down: bool| {
        ring.iter().all(|d| {
            d.hosts()
                .iter()
                .any(|l| l.starts_with(&format!("{ip}\t")) && l.ends_with("\tD") == down)
        })
    };

    // An operator marks a healthy host down, on a director that does not decide.
    let manual = ips[3];
    assert_eq!(directors[1].admin(&format!("HOST-DOWN\t{manual}")), ["OK"]);
    wait_until(&format!("every director shows {manual} down"), || {
        state_everywhere(&directors, manual, true)
    });

    let first = ips[0];
    backends[0].stop().expect("stop a backend");
    wait_until(&format!("every director shows {first} down"), || {
        state_everywhere(&directors, first, true)
    });
    // The lowest-addressed director (the spec's first) decided; the others did not. It logs
    // its decision once the ring answered it, which may be after the others show it.
    let marked = "health checks marked the host down";
    wait_until("the first director logs its decision", || {
        log(&directors[0]).contains(marked)
    });
    for d in &directors[1..] {
        assert!(
            !log(d).contains(marked),
            "a second director decided:\n{}",
            log(d)
        );
    }
    // The others see the down while their own probes fail (the checker's), and saw the
    // operator's while theirs passed. Two failed probes of the host from now on: the second
    // is of a round that listed the host down.
    for d in &directors[1..] {
        let Member::Ours(d) = d else { unreachable!() };
        let from = d.log_text().len();
        let needle = format!("health probe failed host={first} ");
        wait_until("a non-deciding director probes the down host twice", || {
            d.log_text()
                .get(from..)
                .is_some_and(|t| t.matches(&needle).count() >= 2)
        });
    }

    // The decider dies; the ring closes around it and the next lowest decides.
    drop(directors.remove(0));
    wait_synced(&directors);
    let mut opts = BackendOptions::new(first);
    opts.imap_port = Some(port);
    opts.pop3_port = Some(backends[0].pop3_addr().port());
    opts.lmtp_port = Some(backends[0].lmtp_addr().port());
    backends[0] = DovecotBackend::start_with(opts).expect("restart the backend");
    wait_until(
        &format!("the successor brings {first} back up everywhere"),
        || state_everywhere(&directors, first, false),
    );
    // Its decision: logged once the ring answered it, perhaps after the others show it.
    wait_until("the successor logs that it brought the host up", || {
        log(&directors[0]).contains("health checks marked the host up")
    });
    assert!(
        state_everywhere(&directors, manual, true),
        "the successor brought up a host an operator marked down"
    );

    let second = ips[1];
    backends[1].stop().expect("stop another backend");
    wait_until(
        &format!("the remaining directors show {second} down"),
        || state_everywhere(&directors, second, true),
    );
    wait_until("the new decider logs its decision", || {
        log(&directors[0]).contains(marked)
    });
    assert!(
        !log(&directors[1]).contains(marked),
        "{}",
        log(&directors[1])
    );
}

#[test]
fn a_host_whose_checks_alternate_changes_state_at_most_once_per_hold_down() {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..2).map(|_| alloc.next_ip()).collect();
    let backends = DovecotBackend::start_group(&ips, [None; 3], |_| {}).expect("backends start");
    let port = backends[0].imap_addr().port();
    // A backend that fails `FAILS` probes, then greets `SUCCESSES` times, and so on: without
    // the hold-down it would change state every few rounds.
    let flappy = alloc.next_ip();
    let listener = TcpListener::bind((flappy, port)).expect("bind the flapping listener");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let period = (FAILS + SUCCESSES) as usize;
            for (n, conn) in listener.incoming().enumerate() {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                if n % period >= FAILS as usize {
                    use std::io::Write;
                    let _ = conn.write_all(b"* OK flappy ready\r\n");
                }
            }
        })
    };
    let mut hosts = ips.clone();
    hosts.push(flappy);
    let s = start_daemon(alloc, &hosts, port, "");

    // Watch the host's state until it has changed three times.
    let mut last = (is_down(&s.daemon, flappy), Instant::now());
    let mut gaps = Vec::new();
    let deadline = Instant::now() + (up_bound() + down_bound()) * 3 + SLACK;
    while gaps.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {} changes seen",
            gaps.len()
        );
        let now_down = is_down(&s.daemon, flappy);
        if now_down != last.0 {
            gaps.push(last.1.elapsed());
            last = (now_down, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // The first gap runs from the start of the watch, not from a change.
    for gap in &gaps[1..] {
        // Each change is seen up to one HOST-LIST poll late.
        assert!(
            *gap + Duration::from_millis(100) >= HOLD_DOWN,
            "two changes {gap:?} apart, hold-down {HOLD_DOWN:?}: {gaps:?}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(std::net::TcpStream::connect((flappy, port)));
    server.join().expect("the flapping listener's thread");
}

/// Real backends with TLS (a certificate for their address; STARTTLS on the plain ports,
/// implicit TLS on an `imaps` port) and Submission and ManageSieve, the last one with a
/// certificate from a CA the director does not trust; the CA file the director trusts.
struct TlsLab {
    backends: Vec<DovecotBackend>,
    files: tempfile::TempDir,
    imaps: u16,
    submission: u16,
    sieve: u16,
}

impl TlsLab {
    fn start(alloc: &mut LoopbackAllocator, n: usize) -> TlsLab {
        require_dovecot();
        let ips: Vec<Ipv4Addr> = (0..n).map(|_| alloc.next_ip()).collect();
        let files = tempfile::tempdir().expect("tempdir");
        let (trusted, stranger) = (make_ca("backend CA"), make_ca("some other CA"));
        std::fs::write(files.path().join("ca.pem"), trusted.0.pem()).expect("write CA");
        let [imaps, submission, sieve] =
            free_ports(IpAddr::V4(ips[0]), [None; 3]).expect("free ports");
        let last = ips[n - 1];
        let backends = DovecotBackend::start_group(&ips, [None; 3], |o| {
            let ip = o.ip;
            let ca = if ip == last { &stranger } else { &trusted };
            // An IP address SAN: the probes verify a host given by address.
            let (cert, key) = make_leaf(ca, &ip.to_string(), ServerAuth);
            let (cf, kf) = (
                files.path().join(format!("{ip}-cert.pem")),
                files.path().join(format!("{ip}-key.pem")),
            );
            std::fs::write(&cf, cert).expect("write cert");
            std::fs::write(&kf, key).expect("write key");
            o.with_submission_and_sieve(submission, sieve);
            o.extra_config.extend([
                "ssl = yes".to_owned(),
                format!("ssl_cert = <{}", cf.display()),
                format!("ssl_key = <{}", kf.display()),
                format!(
                    "service imap-login {{\n inet_listener imaps {{\n address = {ip}\n port = {imaps}\n ssl = yes\n }}\n}}"
                ),
            ]);
        })
        .expect("backends start");
        TlsLab {
            backends,
            files,
            imaps,
            submission,
            sieve,
        }
    }

    fn ips(&self) -> Vec<Ipv4Addr> {
        self.backends.iter().map(DovecotBackend::ip).collect()
    }

    /// The backend whose certificate the director does not trust.
    fn untrusted(&self) -> Ipv4Addr {
        self.backends[self.backends.len() - 1].ip()
    }

    /// Config lines: the CA file, the backends' ports, and the test user.
    fn config(&self) -> String {
        format!(
            "ssl_client_ca_file = <{}\n\
             director_backend_port_pop3 = {}\n\
             director_backend_port_submission = {}\n\
             director_backend_port_sieve = {}\n\
             director_health_check_user = probe@example.com\n\
             director_health_check_password = {}\n",
            self.files.path().join("ca.pem").display(),
            self.backends[0].pop3_addr().port(),
            self.submission,
            self.sieve,
            testkit::BACKEND_PASSWORD,
        )
    }
}

/// Waits (bounded) until `backend`'s Dovecot log shows the test user logged in through
/// each of `services` (`imap-login`, …), over TLS when `tls`.
fn wait_probe_logins(backend: &DovecotBackend, services: &[&str], tls: bool) {
    let deadline = Instant::now() + up_bound() + SLACK;
    loop {
        let log = backend.log();
        let missing: Vec<&&str> = services
            .iter()
            .filter(|service| {
                !log.lines().any(|l| {
                    l.contains(&format!("{service}: Info: Login: user=<probe@example.com>"))
                        && (!tls || l.contains(", TLS"))
                })
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no probe login (tls: {tls}) through {missing:?} on {}; log:\n{log}",
            backend.ip()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// With `director_backend_ssl = starttls`, the probes of every login protocol run STARTTLS
/// (STLS for POP3) and log the test user in over TLS, verified against
/// `ssl_client_ca_file` as the proxy's own backend connections are; a backend whose
/// certificate is not from that CA fails the handshake, is marked down with the reason in
/// the log, and gets no logins, while the proxy's logins (over STARTTLS too) go on.
#[test]
fn starttls_probes_log_in_on_every_protocol_and_an_untrusted_certificate_marks_the_host_down() {
    let mut alloc = LoopbackAllocator::new();
    let lab = TlsLab::start(&mut alloc, 3);
    let port = lab.backends[0].imap_addr().port();
    let s = start_daemon(
        alloc,
        &lab.ips(),
        port,
        &format!(
            "{}director_backend_ssl = starttls\n\
             director_health_check_protocols = imap pop3 submission sieve\n",
            lab.config()
        ),
    );
    let bad = lab.untrusted();
    let log = s.daemon.wait_log("health checks marked the host down");
    let line = log
        .lines()
        .find(|l| l.contains("health checks marked the host down"))
        .expect("the line waited for");
    assert!(line.contains(&bad.to_string()), "{line}");
    // STARTTLS, or POP3's STLS: whichever probe failed first.
    for needle in ["TLS handshake (ST", "invalid peer certificate"] {
        assert!(line.contains(needle), "{needle:?} not in {line}");
    }
    assert!(is_down(&s.daemon, bad));
    let services = [
        "imap-login",
        "pop3-login",
        "submission-login",
        "managesieve-login",
    ];
    for b in &lab.backends[..2] {
        assert!(!is_down(&s.daemon, b.ip()), "{} is healthy", b.ip());
        wait_probe_logins(b, &services, true);
    }
    logins_avoid(&s, bad, 20);
}

/// With `director_backend_ssl = yes` the probes speak TLS from the first byte, on the
/// backends' implicit-TLS port; the untrusted certificate fails there too.
#[test]
fn implicit_tls_probes_log_in_and_an_untrusted_certificate_marks_the_host_down() {
    let mut alloc = LoopbackAllocator::new();
    let lab = TlsLab::start(&mut alloc, 3);
    let s = start_daemon(
        alloc,
        &lab.ips(),
        lab.imaps,
        &format!(
            "{}director_backend_ssl = yes\ndirector_health_check_protocols = imap\n",
            lab.config()
        ),
    );
    let bad = lab.untrusted();
    wait_state(&s.daemon, bad, true, down_bound(), Instant::now());
    let log = s.daemon.wait_log("health checks marked the host down");
    assert!(
        log.lines()
            .any(|l| l.contains("health checks marked the host down")
                && l.contains("TLS handshake (implicit TLS)")
                && l.contains("invalid peer certificate")),
        "{log}"
    );
    for b in &lab.backends[..2] {
        assert!(!is_down(&s.daemon, b.ip()), "{} is healthy", b.ip());
        wait_probe_logins(b, &["imap-login"], true);
    }
    logins_avoid(&s, bad, 20);
}

/// The Submission (`AUTH PLAIN`) and ManageSieve (`AUTHENTICATE "PLAIN"`) probes log the
/// test user in: each alone marks down a backend that refuses it, and logs in on the others.
#[test]
fn submission_and_managesieve_probes_log_in_and_a_refusing_backend_is_marked_down() {
    require_dovecot();
    // Dovecot answers a wrong password after its auth_failure_delay (2 s): the probes wait
    // for that answer, so that the log says why.
    let refusal_timeout = Duration::from_secs(5);
    for (protocol, service, refusal) in [
        (
            "submission",
            "submission-login",
            "test user AUTH PLAIN refused",
        ),
        ("sieve", "managesieve-login", "test user AUTHENTICATE"),
    ] {
        // Backends of its own for each protocol: Dovecot's auth penalty delays every later
        // refusal to the same address, past any probe timeout.
        let mut alloc = LoopbackAllocator::new();
        let ips: Vec<Ipv4Addr> = (0..3).map(|_| alloc.next_ip()).collect();
        let [submission, sieve] = free_ports(IpAddr::V4(ips[0]), [None; 2]).expect("free ports");
        let refusing = ips[0];
        let backends = DovecotBackend::start_group(&ips, [None; 3], |o| {
            o.with_submission_and_sieve(submission, sieve);
            if o.ip == refusing {
                o.password = "another-password".to_owned();
            }
        })
        .expect("backends start");
        let port = backends[0].imap_addr().port();
        let s = start_daemon(
            alloc,
            &ips,
            port,
            &format!(
                "director_backend_port_submission = {submission}\n\
                 director_backend_port_sieve = {sieve}\n\
                 director_health_check_protocols = {protocol}\n\
                 director_health_check_timeout = {} ms\n\
                 director_health_check_user = probe@example.com\n\
                 director_health_check_password = {}\n",
                refusal_timeout.as_millis(),
                testkit::BACKEND_PASSWORD
            ),
        );
        let bound = (INTERVAL + refusal_timeout) * (FAILS + 1);
        wait_state(&s.daemon, refusing, true, bound, Instant::now());
        // The first refusal is in the log; later ones may time out instead (Dovecot's auth
        // penalty lengthens the delay after each failure from one address).
        let log = s.daemon.wait_log("health checks marked the host down");
        assert!(
            log.lines().any(|l| l.contains("health probe failed")
                && l.contains(&format!("host={refusing} "))
                && l.contains(refusal)),
            "{refusal:?} not in:\n{log}"
        );
        for b in &backends[1..] {
            assert!(
                !is_down(&s.daemon, b.ip()),
                "{} accepts the test user",
                b.ip()
            );
            wait_probe_logins(b, &[service], false);
        }
    }
}

/// With `director_proxy_protocol = yes` the backends' ports take a HAProxy PROXY v2 header
/// first (`haproxy = yes` in Dovecot); the probes send one (LOCAL: no client to name), as
/// the proxy's connections do, so healthy backends pass, the test user logs in, and no
/// probe fails.
#[test]
fn with_the_proxy_protocol_the_probes_send_the_header_and_healthy_backends_pass() {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let ips: Vec<Ipv4Addr> = (0..2).map(|_| alloc.next_ip()).collect();
    let [haproxy] = free_ports(IpAddr::V4(ips[0]), [None]).expect("a free port");
    let backends = DovecotBackend::start_group(&ips, [None; 3], |o| {
        let ip = o.ip;
        o.extra_config.extend([
            "haproxy_trusted_networks = 127.0.0.0/8".to_owned(),
            // A second IMAP listener that takes the header (the plain one stays for
            // testkit's readiness probe).
            format!(
                "service imap-login {{\n inet_listener imap_haproxy {{\n address = {ip}\n port = {haproxy}\n haproxy = yes\n }}\n}}"
            ),
        ]);
    })
    .expect("backends start");
    let s = start_daemon(
        alloc,
        &ips,
        haproxy,
        &format!(
            "director_proxy_protocol = yes\n\
             director_health_check_user = probe@example.com\n\
             director_health_check_password = {}\n",
            testkit::BACKEND_PASSWORD
        ),
    );
    for b in &backends {
        wait_probe_logins(b, &["imap-login"], false);
    }
    let log = s.daemon.log_text();
    assert!(!log.contains("health probe failed"), "{log}");
    assert!(host_states(&s.daemon).iter().all(|(_, down)| !down));
    // The proxy's own logins take the same port.
    let (c, _) = Imap::login(s.imap, "through@example.com");
    c.logout();
}
