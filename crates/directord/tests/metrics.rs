//! The metrics listener of the real `directord` (`inet_listener director-metrics`): scraped
//! while real logins go through the built-in proxy to real Dovecot backends, parsed by
//! Prometheus's own Python client (`prometheus_client.parser`), and every counter checked
//! against what the test did.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::imap::Imap;
use common::{Client, Daemon, WAIT};
use testkit::{
    free_port, free_ports, python3_with_module, require_dovecot, DovecotBackend, LoopbackAllocator,
    BACKEND_PASSWORD,
};

/// Fetches `path` from `source` and parses the answer with Prometheus's text parser; prints
/// JSON. A connection closed without an answer prints `{"closed": true}`.
const SCRAPER: &str = r#"
import sys, json, http.client
from prometheus_client.parser import text_string_to_metric_families
host, port, src, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
c = http.client.HTTPConnection(host, port, timeout=20, source_address=(src, 0))
try:
    c.request("GET", path)
    r = c.getresponse()
except (http.client.RemoteDisconnected, ConnectionResetError):
    print(json.dumps({"closed": True}))
    sys.exit(0)
body = r.read().decode()
out = {"status": r.status, "content_type": r.getheader("Content-Type"), "types": {}, "samples": []}
if r.status == 200:
    for fam in text_string_to_metric_families(body):
        out["types"][fam.name] = fam.type
        for s in fam.samples:
            out["samples"].append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;

/// What one scrape returned.
#[derive(Debug)]
enum Answer {
    /// The listener closed the connection without a reply.
    Closed,
    /// An HTTP answer.
    Http {
        status: u16,
        content_type: String,
        /// Family name (without `_total` for counters) → type.
        types: BTreeMap<String, String>,
        samples: Vec<(String, BTreeMap<String, String>, f64)>,
    },
}

fn scrape_from(python: &Path, listener: SocketAddr, source: Ipv4Addr, path: &str) -> Answer {
    let out = Command::new(python)
        .args(["-c", SCRAPER])
        .arg(listener.ip().to_string())
        .arg(listener.port().to_string())
        .arg(source.to_string())
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "scraper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("scraper JSON");
    if v["closed"].as_bool() == Some(true) {
        return Answer::Closed;
    }
    let types = v["types"]
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_string()))
        .collect();
    let samples = v["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|s| {
            let labels = s[1]
                .as_object()
                .expect("labels")
                .iter()
                .map(|(k, l)| (k.clone(), l.as_str().unwrap_or_default().to_string()))
                .collect();
            (
                s[0].as_str().expect("name").to_string(),
                labels,
                s[2].as_f64().expect("value"),
            )
        })
        .collect();
    Answer::Http {
        status: u16::try_from(v["status"].as_u64().expect("status")).expect("status"),
        content_type: v["content_type"].as_str().unwrap_or_default().to_string(),
        types,
        samples,
    }
}

/// A parsed `/metrics` page.
struct Metrics {
    types: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Metrics {
    /// The sample `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// Like [`Metrics::get`], but the sample must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", self.samples))
    }

    /// Every sample of `name`: its labels and value.
    fn all(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, l, v)| (l.clone(), *v))
            .collect()
    }
}

fn scrape(python: &Path, listener: SocketAddr, source: Ipv4Addr) -> Metrics {
    match scrape_from(python, listener, source, "/metrics") {
        Answer::Http {
            status: 200,
            content_type,
            types,
            samples,
        } => {
            assert!(
                content_type.starts_with("text/plain; version=0.0.4"),
                "{content_type}"
            );
            Metrics { types, samples }
        }
        other => panic!("scrape failed: {other:?}"),
    }
}

/// Scrapes until `done` holds (the proxy closes sessions on its own time); panics after
/// [`WAIT`] with the last scrape.
fn scrape_until(
    python: &Path,
    listener: SocketAddr,
    source: Ipv4Addr,
    what: &str,
    done: impl Fn(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = scrape(python, listener, source);
        if done(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not reached, last scrape {:#?}",
            m.samples
        );
    }
}

/// Counts the admin requests the test sends, to compare with the daemon's counter.
struct Admin {
    client: Client,
    sent: u64,
}

impl Admin {
    fn request(&mut self, line: &str) -> String {
        self.sent += 1;
        self.client.request(line)
    }

    /// `USER-LOOKUP`: the hashed host.
    fn hashed(&mut self, user: &str) -> String {
        let r = self.request(&format!("USER-LOOKUP\t{user}\t"));
        r.trim_end()
            .split('\t')
            .nth(2)
            .unwrap_or_default()
            .to_string()
    }
}

/// One POP3 login and QUIT through the proxy; the `+OK`/`-ERR` of `PASS`.
fn pop3_login(addr: SocketAddr, user: &str) -> String {
    let s = TcpStream::connect_timeout(&addr, WAIT).expect("connect pop3");
    s.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut exchange = |r: &mut BufReader<TcpStream>, cmd: Option<&str>| {
        if let Some(cmd) = cmd {
            r.get_mut()
                .write_all(format!("{cmd}\r\n").as_bytes())
                .expect("write pop3");
        }
        line.clear();
        r.read_line(&mut line).expect("read pop3");
        line.trim_end().to_string()
    };
    assert!(exchange(&mut r, None).starts_with("+OK"));
    assert!(exchange(&mut r, Some(&format!("USER {user}"))).starts_with("+OK"));
    let pass = exchange(&mut r, Some(&format!("PASS {BACKEND_PASSWORD}")));
    if pass.starts_with("+OK") {
        assert!(exchange(&mut r, Some("QUIT")).starts_with("+OK"));
    }
    pass
}

#[test]
fn metrics_count_what_logins_and_admin_requests_did() {
    require_dovecot();
    let python = python3_with_module("prometheus_client", "python3-prometheus-client");
    let mut alloc = LoopbackAllocator::new();
    let proxy_ip = alloc.next_ip();
    let scraper = alloc.next_ip();
    let live: Vec<Ipv4Addr> = (0..2).map(|_| alloc.next_ip()).collect();
    // Listed as a mail server, but nothing listens there: its logins fail to connect.
    let dead = alloc.next_ip();
    let backends = DovecotBackend::start_group(&live, [None; 3], |_| {}).expect("backends start");
    let (bi, bp, bl) = (
        backends[0].imap_addr().port(),
        backends[0].pop3_addr().port(),
        backends[0].lmtp_addr().port(),
    );
    let pip = IpAddr::V4(proxy_ip);
    let [pi, pp, pl, mp] = free_ports(pip, [None; 4]).expect("free proxy ports");
    let extra = format!(
        "director_mail_servers = {} {} {dead}\n\
         director_backend_port_imap = {bi}\n\
         director_backend_port_pop3 = {bp}\n\
         director_backend_port_lmtp = {bl}\n\
         login_proxy_max_reconnects = 0\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         director_metrics_allow_nets = {scraper}\n\
         service director {{\n inet_listener director-metrics {{\n address = {pip}\n port = {mp}\n }}\n}}\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pi}\n }}\n}}\n\
         service pop3-login {{\n inet_listener pop3 {{\n address = {pip}\n port = {pp}\n }}\n}}\n\
         service lmtp {{\n inet_listener lmtp {{\n address = {pip}\n port = {pl}\n }}\n}}\n",
        live[0], live[1]
    );
    let daemon = Daemon::start(&extra);
    let (imap, pop3, listener) = (
        SocketAddr::new(pip, pi),
        SocketAddr::new(pip, pp),
        SocketAddr::new(pip, mp),
    );
    let all_hosts: Vec<String> = live
        .iter()
        .chain([&dead])
        .map(|ip| ip.to_string())
        .collect();

    let before = scrape(&python, listener, scraper);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        before.value("director_build_info", &[("version", version)]),
        1.0
    );
    assert_eq!(before.types["director_logins"], "counter");
    assert_eq!(before.types["director_login_duration_seconds"], "histogram");
    assert_eq!(before.types["director_backend_up"], "gauge");
    assert_eq!(before.value("director_ring_synced", &[]), 1.0);
    assert_eq!(before.value("director_ring_peers", &[]), 0.0);
    assert_eq!(before.value("director_users", &[]), 0.0);
    for ip in &all_hosts {
        assert_eq!(before.value("director_backend_up", &[("backend", ip)]), 1.0);
        assert_eq!(
            before.value("director_backend_vhosts", &[("backend", ip)]),
            100.0
        );
    }
    let admin_before = before.value("director_admin_requests_total", &[]);

    let mut admin = Admin {
        client: daemon.client(),
        sent: 0,
    };
    // Four users on live backends, one on the dead one.
    let mut users = Vec::new();
    let mut dead_user = None;
    for i in 0.. {
        let user = format!("m{i}@example.com");
        let hashed = admin.hashed(&user);
        if hashed == dead.to_string() {
            dead_user.get_or_insert(user);
        } else if users.len() < 4 {
            users.push((user, hashed));
        }
        if users.len() == 4 && dead_user.is_some() {
            break;
        }
        assert!(i < 1000, "no user hashes to {dead}");
    }
    let dead_user = dead_user.expect("a user on the dead backend");

    // IMAP: four logins (two stay open), two wrong passwords, one to the dead backend.
    let mut held = Vec::new();
    for (i, (user, hashed)) in users.iter().enumerate() {
        let (c, ip) = Imap::login(imap, user);
        assert_eq!(ip.to_string(), *hashed);
        if i < 2 {
            c.logout();
        } else {
            held.push(c);
        }
    }
    for _ in 0..2 {
        let mut c = Imap::connect(imap);
        let r = c.cmd("a", &format!("LOGIN {} wrong-password", users[0].0));
        assert!(r.last().expect("reply").starts_with("a NO"), "{r:?}");
    }
    let mut c = Imap::connect(imap);
    let r = c.cmd("a", &format!("LOGIN {dead_user} {BACKEND_PASSWORD}"));
    assert!(r.last().expect("reply").starts_with("a NO"), "{r:?}");
    drop(c);
    // POP3: one login.
    let pass = pop3_login(pop3, &users[0].0);
    assert!(pass.starts_with("+OK"), "{pass}");
    // LMTP: one transaction, two recipients delivered, one on the dead backend deferred.
    let finals = lmtp_deliver(
        SocketAddr::new(pip, pl),
        &[&users[0].0, &users[1].0, &dead_user],
    );
    assert!(
        finals[0].starts_with("250 ") && finals[1].starts_with("250 "),
        "{finals:?}"
    );
    assert!(finals[2].starts_with("451 "), "{finals:?}");

    // The two held sessions are the only ones left once the others have closed.
    let held_on = |n: usize| users[n].1.clone();
    let m = scrape_until(
        &python,
        listener,
        scraper,
        "only the held sessions open",
        |m| {
            let sessions = m.all("director_sessions");
            let total: f64 = sessions.iter().map(|(_, v)| v).sum();
            total == 2.0
        },
    );
    for n in [2, 3] {
        let want = if held_on(2) == held_on(3) { 2.0 } else { 1.0 };
        assert_eq!(
            m.value(
                "director_sessions",
                &[("backend", &held_on(n)), ("protocol", "imap")]
            ),
            want
        );
    }
    let expected = [
        ("imap", "ok", 4.0),
        ("imap", "rejected", 2.0),
        ("imap", "backend_failed", 1.0),
        ("pop3", "ok", 1.0),
    ];
    for (labels, v) in m.all("director_logins_total") {
        let (p, r) = (labels["protocol"].as_str(), labels["result"].as_str());
        let want = expected
            .iter()
            .find(|(ep, er, _)| *ep == p && *er == r)
            .map_or(0.0, |e| e.2);
        assert_eq!(v, want, "director_logins_total{{{p},{r}}}");
    }
    for (protocol, logins) in [("imap", 7.0), ("pop3", 1.0)] {
        let count = m.value(
            "director_login_duration_seconds_count",
            &[("protocol", protocol)],
        );
        assert_eq!(count, logins, "{protocol} logins timed");
        assert!(
            m.value(
                "director_login_duration_seconds_sum",
                &[("protocol", protocol)]
            ) > 0.0
        );
        let buckets: Vec<f64> = m
            .all("director_login_duration_seconds_bucket")
            .into_iter()
            .filter(|(l, _)| l["protocol"] == protocol)
            .map(|(_, v)| v)
            .collect();
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
        assert_eq!(buckets.last(), Some(&logins), "+Inf bucket");
    }
    for (result, want) in [
        ("delivered", 2.0),
        ("refused", 0.0),
        ("deferred", 1.0),
        ("no_backend", 0.0),
    ] {
        assert_eq!(
            m.value("director_lmtp_recipients_total", &[("result", result)]),
            want,
            "director_lmtp_recipients_total{{{result}}}"
        );
    }
    // The IMAP login and the LMTP delivery to the dead backend.
    assert_eq!(
        m.all("director_backend_connect_failures_total"),
        vec![(
            BTreeMap::from([("backend".to_string(), dead.to_string())]),
            2.0
        )]
    );
    // Users per backend as HOST-LIST says; the failed first login left no assignment.
    assert_eq!(m.value("director_users", &[]), 4.0);
    let host_list = admin.request("HOST-LIST");
    for line in host_list.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let users_there: f64 = f[2].parse().expect("user count");
        assert_eq!(
            m.value("director_backend_users", &[("backend", f[0])]),
            users_there,
            "{line}"
        );
    }

    // Admin: a kick, a move, a host marked down.
    let kicked = &users[3].0;
    assert_eq!(
        admin.request(&format!("USER-KICK\t{kicked}")).trim_end(),
        "OK"
    );
    let moved = &users[2].0;
    let other = live
        .iter()
        .map(|ip| ip.to_string())
        .find(|ip| *ip != users[2].1)
        .expect("another live backend");
    assert_eq!(
        admin
            .request(&format!("USER-MOVE\t{moved}\t{other}"))
            .trim_end(),
        "OK"
    );
    assert_eq!(
        admin.request(&format!("HOST-DOWN\t{dead}")).trim_end(),
        "OK"
    );
    for mut c in held {
        assert!(c.closed(), "kicked or moved session closed");
    }
    let m = scrape_until(&python, listener, scraper, "kicked sessions gone", |m| {
        m.all("director_sessions").is_empty()
    });
    assert_eq!(m.value("director_kicks_total", &[("kind", "user")]), 1.0);
    assert_eq!(
        m.value("director_kicks_total", &[("kind", "user_alt")]),
        0.0
    );
    assert_eq!(m.value("director_kicks_total", &[("kind", "backend")]), 0.0);
    assert_eq!(m.value("director_user_moves_total", &[]), 1.0);
    assert_eq!(m.value("director_proxy_buffer_bytes", &[]), 0.0);
    assert_eq!(
        m.value("director_proxy_buffer_limit_bytes", &[]),
        (128u64 << 20) as f64,
        "director_proxy_buffer_memory's default"
    );
    assert_eq!(
        m.value("director_backend_up", &[("backend", &dead.to_string())]),
        0.0
    );
    assert_eq!(
        m.value("director_backend_users", &[("backend", &other)]),
        f64::from(u8::from(users[0].1 == other))
            + f64::from(u8::from(users[1].1 == other))
            + f64::from(u8::from(users[3].1 == other))
            + 1.0,
        "the moved user counts on its new backend"
    );
    assert_eq!(
        m.value("director_admin_requests_total", &[]) - admin_before,
        admin.sent as f64
    );
    // No label carries a user name.
    for (_, labels, _) in &m.samples {
        for v in labels.values() {
            assert!(!v.contains('@'), "a user in a label: {labels:?}");
        }
    }
}

#[test]
fn metrics_listener_serves_its_allow_nets_and_path_only() {
    let python = python3_with_module("prometheus_client", "python3-prometheus-client");
    let mut alloc = LoopbackAllocator::new();
    let ip = alloc.next_ip();
    let allowed = alloc.next_ip();
    let stranger = alloc.next_ip();
    let port = free_port(IpAddr::V4(ip)).expect("free port");
    let daemon = Daemon::start(&format!(
        "director_metrics_allow_nets = {allowed}\n\
         service director {{\n inet_listener director-metrics {{\n address = {ip}\n port = {port}\n }}\n}}\n"
    ));
    let listener = SocketAddr::new(IpAddr::V4(ip), port);
    // Without the built-in proxy there are no login metrics, but the director's are there.
    let m = scrape(&python, listener, allowed);
    assert_eq!(m.value("director_ring_synced", &[]), 1.0);
    assert!(m.get("director_logins_total", &[]).is_none());
    assert!(m.all("director_logins_total").is_empty());
    assert_eq!(m.all("director_backend_up").len(), 3);
    match scrape_from(&python, listener, allowed, "/other") {
        Answer::Http { status: 404, .. } => {}
        other => panic!("/other: {other:?}"),
    }
    match scrape_from(&python, listener, stranger, "/metrics") {
        Answer::Closed => {}
        other => panic!("a stranger was answered: {other:?}"),
    }
    daemon.wait_log("metrics connection refused: address not in director_metrics_allow_nets");
}

/// One LMTP transaction to `rcpts`: their final replies, in order.
fn lmtp_deliver(addr: SocketAddr, rcpts: &[&str]) -> Vec<String> {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(addr).expect("lmtp connect");
    s.set_read_timeout(Some(common::WAIT)).expect("timeout");
    let mut r = BufReader::new(s);
    let mut wire = "LHLO t\r\nMAIL FROM:<s@example.com>\r\n".to_string();
    for rcpt in rcpts {
        wire.push_str(&format!("RCPT TO:<{rcpt}>\r\n"));
    }
    wire.push_str("DATA\r\n");
    r.get_mut().write_all(wire.as_bytes()).expect("lmtp write");
    let mut line = String::new();
    while !line.starts_with("354 ") {
        line.clear();
        assert!(r.read_line(&mut line).expect("lmtp read") > 0, "closed");
    }
    r.get_mut()
        .write_all(b"Subject: m\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        .expect("lmtp body");
    (0..rcpts.len())
        .map(|_| {
            line.clear();
            r.read_line(&mut line).expect("final reply");
            line.trim_end().to_string()
        })
        .collect()
}
