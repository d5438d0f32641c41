//! The state that survives a restart, with the real binary: hosts (runtime changes
//! included) and user assignments are saved to `state_dir/director-state` and restored at
//! start, so users reach the same real Dovecot backend after `kill -9` or SIGTERM; a
//! truncated, garbage, wrong-version, altered or meaningless file is kept aside with a clear
//! log line and the director starts from its config; a second director started on the same
//! `state_dir` stops at start with an error naming the lock and the first one's PID, and the
//! first one keeps serving and saving.
//!
//! Nothing here waits for time to pass: the tests wait for the state file to hold what they
//! expect, or for a log line.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::imap::Imap;
use common::{Daemon, WAIT};
use director_core::{user_hash, HashFormat, Snapshot};
use director_proto::state_file;
use nix::sys::signal::Signal;
use testkit::{free_ports, require_dovecot, DovecotBackend, LoopbackAllocator, BACKEND_PASSWORD};

const STATE_FILE: &str = "director-state";

/// Three real backends, a fourth configured address with no backend, and the daemon's
/// IMAP proxy listener.
struct Setup {
    backends: Vec<DovecotBackend>,
    spare: Ipv4Addr,
    daemon: Daemon,
    imap: SocketAddr,
}

fn setup(save_interval: &str) -> Setup {
    require_dovecot();
    let mut alloc = LoopbackAllocator::new();
    let proxy_ip = alloc.next_ip();
    let ips: Vec<_> = (0..3).map(|_| alloc.next_ip()).collect();
    let spare = alloc.next_ip();
    let backends = DovecotBackend::start_group(&ips, [None; 3], |_| {}).expect("backends start");
    let bi = backends[0].imap_addr().port();
    let pip = IpAddr::V4(proxy_ip);
    let [pi] = free_ports(pip, [None]).expect("free proxy port");
    let servers: Vec<String> = ips.iter().chain([&spare]).map(|i| i.to_string()).collect();
    let extra = format!(
        "director_mail_servers = {}\n\
         director_state_save_interval = {save_interval}\n\
         director_backend_port_imap = {bi}\n\
         disable_plaintext_auth = no\n\
         ssl = no\n\
         service imap-login {{\n inet_listener imap {{\n address = {pip}\n port = {pi}\n }}\n}}\n",
        servers.join(" ")
    );
    let daemon = Daemon::start(&extra);
    Setup {
        backends,
        spare,
        daemon,
        imap: SocketAddr::new(pip, pi),
    }
}

fn request(d: &Daemon, line: &str) -> String {
    d.client().request(line)
}

/// `HOST-LIST` without the user counts (they change with every login).
fn hosts_without_counts(d: &Daemon) -> Vec<String> {
    request(d, "HOST-LIST")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut f: Vec<&str> = l.split('\t').collect();
            if f.len() > 2 {
                f.remove(2);
            }
            f.join("\t")
        })
        .collect()
}

/// The backend `USER-LOOKUP` gives as the user's current host (empty: none).
fn current_host(d: &Daemon, user: &str) -> String {
    let r = request(d, &format!("USER-LOOKUP\t{user}\t"));
    r.split('\t').next().unwrap_or_default().to_string()
}

fn hash(user: &str) -> u32 {
    user_hash(user.as_bytes(), &HashFormat::default()).expect("hash")
}

fn read_state(dir: &Path) -> Option<Snapshot> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    state_file::decode(&bytes).ok()
}

/// Waits (bounded) until the saved state satisfies `ok`.
fn wait_for_state(dir: &Path, what: &str, ok: impl Fn(&Snapshot) -> bool) -> Snapshot {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = read_state(dir) {
            if ok(&s) {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the state file never held {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Users (by hash) and their host in a snapshot.
fn saved_users(s: &Snapshot) -> BTreeMap<u32, IpAddr> {
    s.users
        .iter()
        .map(|u| (u.hash, s.hosts[u.host as usize].ip))
        .collect()
}

/// One IMAP login through the proxy that never panics: a storm runs into the kill.
fn try_login(addr: SocketAddr, user: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let s = TcpStream::connect_timeout(&addr, WAIT)?;
        s.set_read_timeout(Some(WAIT))?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line)?;
        r.get_mut()
            .write_all(format!("a LOGIN {user} {BACKEND_PASSWORD}\r\n").as_bytes())?;
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Ok(false);
            }
            if line.starts_with("a ") {
                return Ok(line.starts_with("a OK"));
            }
        }
    };
    attempt().unwrap_or(false)
}

/// Runtime host changes of every kind: the spare config host removed, a tagged host added,
/// a vhost count changed. Returns the `HOST-LIST` (without counts) they lead to.
fn change_hosts(s: &Setup) -> Vec<String> {
    let d = &s.daemon;
    let b0 = s.backends[0].ip();
    assert_eq!(request(d, &format!("HOST-REMOVE\t{}", s.spare)), "OK\n");
    assert_eq!(request(d, "HOST-SET\t127.0.0.2@blue\t30"), "OK\n");
    assert_eq!(request(d, &format!("HOST-UPDATE\t{b0}\t50")), "OK\n");
    hosts_without_counts(d)
}

#[test]
fn kill_9_during_a_login_storm_then_restart_brings_back_hosts_and_older_assignments() {
    let mut s = setup("1 secs");
    let hosts_before_down = change_hosts(&s);
    // Users spread over all three backends, each on the backend it logged in to.
    let mut before: Vec<(String, IpAddr)> = Vec::new();
    for i in 0..30 {
        let user = format!("kept{i}@example.com");
        let (c, ip) = Imap::login(s.imap, &user);
        c.logout();
        before.push((user, ip));
    }
    let used: HashSet<IpAddr> = before.iter().map(|(_, ip)| *ip).collect();
    assert_eq!(used.len(), 3, "users on every backend: {before:?}");
    // One backend goes down: its users stay, but a director that forgot them would now
    // send them elsewhere.
    let b2 = s.backends[2].ip();
    assert_eq!(request(&s.daemon, &format!("HOST-DOWN\t{b2}")), "OK\n");
    let hosts = hosts_without_counts(&s.daemon);
    assert_ne!(hosts, hosts_before_down);
    let state_dir = s.daemon.state_dir();
    // Wait for a save that holds every one of them with its host: they are then older
    // than the save interval.
    let want: BTreeMap<u32, IpAddr> = before.iter().map(|(u, ip)| (hash(u), *ip)).collect();
    wait_for_state(&state_dir, "the first 30 users and the down host", |snap| {
        let saved = saved_users(snap);
        want.iter().all(|(h, ip)| saved.get(h) == Some(ip))
            && snap.hosts.iter().any(|h| IpAddr::V4(b2) == h.ip && h.down)
    });

    // The storm: four clients log in new users as fast as they can; the director is killed
    // in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let storm: Vec<_> = (0..4)
        .map(|t| {
            let (stop, done, imap) = (Arc::clone(&stop), Arc::clone(&done), s.imap);
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    if try_login(imap, &format!("storm{t}-{n}@example.com")) {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    // A save during the storm, then more logins that no save holds yet: the kill falls
    // between two saves, with logins in flight.
    wait_for_state(&state_dir, "users of the storm", |snap| {
        snap.users.len() >= 40
    });
    let mark = done.load(Ordering::Relaxed) + 20;
    let deadline = Instant::now() + WAIT;
    while done.load(Ordering::Relaxed) < mark {
        assert!(Instant::now() < deadline, "the storm stopped");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.daemon.signal(Signal::SIGKILL);
    let status = s.daemon.wait_exit();
    assert_eq!(status.code(), None, "killed by a signal");
    stop.store(true, Ordering::Relaxed);
    for t in storm {
        t.join().expect("storm thread");
    }
    // The last save before the kill: every user in it must come back, storm users included.
    let last = read_state(&state_dir).expect("a whole state file after the kill");

    s.daemon.restart();
    let log = s.daemon.wait_log("restored the saved state");
    assert!(!log.contains("unusable"), "{log}");
    assert_eq!(
        hosts_without_counts(&s.daemon),
        hosts,
        "hosts as before the kill"
    );
    assert_eq!(
        request(&s.daemon, "HOST-LIST-REMOVED"),
        format!("{}\n\n", s.spare)
    );
    let listed: BTreeMap<u32, IpAddr> = request(&s.daemon, "USER-LIST")
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().expect("hash"), f[2].parse().expect("ip"))
        })
        .collect();
    assert_eq!(listed, saved_users(&last), "every saved assignment is back");
    for (user, ip) in &before {
        assert_eq!(current_host(&s.daemon, user), ip.to_string(), "{user}");
        let (c, reached) = Imap::login(s.imap, user);
        c.logout();
        assert_eq!(reached, *ip, "{user} reaches the same backend");
    }
}

#[test]
fn sigterm_saves_everything_and_a_restart_restores_it() {
    // An hour between saves: the state is saved once at start (nothing saved yet), then
    // only by the save at SIGTERM.
    let mut s = setup("1 hour");
    let state_dir = s.daemon.state_dir();
    wait_for_state(&state_dir, "the config's hosts", |snap| {
        snap.hosts.len() == 4
    });
    let hosts = change_hosts(&s);
    let mut before = Vec::new();
    for i in 0..20 {
        let user = format!("term{i}@example.com");
        let (c, ip) = Imap::login(s.imap, &user);
        c.logout();
        before.push((user, ip));
    }
    let on_disk = read_state(&state_dir).expect("the start-up save");
    assert_eq!((on_disk.hosts.len(), on_disk.users.len()), (4, 0));
    let users_before = request(&s.daemon, "USER-LIST");

    s.daemon.signal(Signal::SIGTERM);
    assert_eq!(s.daemon.wait_exit().code(), Some(0));
    assert!(s.daemon.log_text().contains("state saved at shutdown"));
    s.daemon.restart();
    s.daemon.wait_log("restored the saved state");
    assert_eq!(hosts_without_counts(&s.daemon), hosts);
    assert_eq!(request(&s.daemon, "USER-LIST"), users_before);
    for (user, ip) in &before {
        let (c, reached) = Imap::login(s.imap, user);
        c.logout();
        assert_eq!(reached, *ip, "{user}");
    }
}

/// Two directors on one `state_dir` would overwrite each other's saves: the second stops at
/// start (before it binds anything), naming the lock file and the first one's PID; the
/// first keeps routing logins to the real backends and saving.
#[test]
fn a_second_director_on_the_same_state_dir_stops_at_start_and_the_first_keeps_working() {
    let s = setup("1 secs");
    let state_dir = s.daemon.state_dir();
    // Every login must reach a real backend: no user on the address without one.
    assert_eq!(
        request(&s.daemon, &format!("HOST-REMOVE\t{}", s.spare)),
        "OK\n"
    );
    let (c, first_ip) = Imap::login(s.imap, "early@example.com");
    c.logout();
    wait_for_state(&state_dir, "the first user", |snap| {
        saved_users(snap).get(&hash("early@example.com")) == Some(&first_ip)
    });

    // The same config (its proxy listener included), its own base_dir and log, the first
    // one's state_dir.
    let other = tempfile::tempdir().expect("tempdir");
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_directord"))
        .arg("-c")
        .arg(&s.daemon.config)
        .arg("-o")
        .arg(format!("base_dir={}", other.path().join("run").display()))
        .arg("-o")
        .arg(format!(
            "log_path={}",
            other.path().join("directord.log").display()
        ))
        .arg("-o")
        .arg(format!("state_dir={}", state_dir.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the second directord");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = second.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = second.kill();
            let _ = second.wait();
            panic!("the second directord did not stop at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(
        &mut second.stderr.take().expect("stderr piped"),
        &mut stderr,
    )
    .expect("read the second one's stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let lock = state_dir.join("director-state.lock");
    for needle in [
        format!("lock {}", lock.display()),
        format!("PID {}", s.daemon.pid()),
        "two directors must not share one".to_string(),
    ] {
        assert!(stderr.contains(&needle), "{needle:?} not in {stderr:?}");
    }
    assert!(
        !other.path().join("run").join("director-admin").exists(),
        "the second one bound its admin socket"
    );

    // The first one serves logins, admin requests, and still saves.
    let (c, ip) = Imap::login(s.imap, "early@example.com");
    c.logout();
    assert_eq!(ip, first_ip);
    let (c, late_ip) = Imap::login(s.imap, "late@example.com");
    c.logout();
    assert_eq!(
        current_host(&s.daemon, "late@example.com"),
        late_ip.to_string()
    );
    wait_for_state(&state_dir, "the user logged in after the refusal", |snap| {
        saved_users(snap).get(&hash("late@example.com")) == Some(&late_ip)
    });
}

/// The corrupt-file cases: each is kept aside byte for byte, the log says why and where,
/// and the director serves the config's hosts.
#[test]
fn an_unusable_state_file_is_kept_aside_and_the_config_is_used() {
    let mut d = Daemon::start("");
    let config_hosts = hosts_without_counts(&d);
    assert_eq!(request(&d, "HOST-SET\t127.0.1.9\t20"), "OK\n");
    assert_eq!(request(&d, "HOST-DOWN\t127.0.1.2"), "OK\n");
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit().code(), Some(0));
    let state_dir = d.state_dir();
    let good = std::fs::read(state_dir.join(STATE_FILE)).expect("saved at SIGTERM");
    let snap = state_file::decode(&good).expect("a valid file");
    assert_eq!(snap.hosts.len(), 4);

    let text = String::from_utf8(good.clone()).expect("text");
    let altered = text.replacen("\t20\tU0", "\t21\tU0", 1);
    let mut meaningless = snap.clone();
    meaningless.hosts.push(meaningless.hosts[0].clone());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            good[..good.len() - 30].to_vec(),
            "truncated: the file ends before its end line",
        ),
        (
            "garbage",
            b"\x00\x01garbage\xff\n".to_vec(),
            "line 1 (byte 0): not a director state file",
        ),
        (
            "wrong version",
            text.replacen("director-state\t1\n", "director-state\t9\n", 1)
                .into_bytes(),
            "line 1 (byte 0): unsupported format version 9",
        ),
        (
            "checksum mismatch",
            altered.into_bytes(),
            "checksum mismatch",
        ),
        (
            "meaningless",
            state_file::encode(&meaningless),
            "is listed twice",
        ),
    ];
    for (name, bytes, reason) in cases {
        let asides_before = asides(&state_dir);
        std::fs::write(state_dir.join(STATE_FILE), &bytes).expect("plant the file");
        let log_len = d.log_text().len();
        d.restart();
        let new_log = d.wait_log_from(log_len, "starting from the config");
        let new_log = new_log.as_str();
        assert!(
            new_log.contains("the saved state is unusable") && new_log.contains(reason),
            "{name}: {new_log}"
        );
        let new: Vec<PathBuf> = asides(&state_dir)
            .into_iter()
            .filter(|p| !asides_before.contains(p))
            .collect();
        assert_eq!(new.len(), 1, "{name}: one copy kept aside");
        assert_eq!(std::fs::read(&new[0]).expect("aside"), bytes, "{name}");
        assert!(new_log.contains(&new[0].display().to_string()), "{name}");
        assert_eq!(
            hosts_without_counts(&d),
            config_hosts,
            "{name}: the config's hosts"
        );
        d.signal(Signal::SIGTERM);
        assert_eq!(d.wait_exit().code(), Some(0), "{name}: a clean exit");
    }
}

/// Copies kept aside in `dir`.
fn asides(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("director-state.corrupt-"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
