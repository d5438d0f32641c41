//! The kit's real director starts, answers on both admin sockets, works with the real
//! doveadm and is gone after stop/drop.

use std::path::Path;

use testkit::{require_dovecot, run_doveadm_real, DirectorOptions, DovecotDirector};

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

#[test]
fn director_starts_synced_and_lists_hosts() {
    require_dovecot();
    let director = DovecotDirector::start(DirectorOptions::new("127.0.1.1 127.0.1.2@tagA"))
        .expect("director starts");
    let mut admin = director.admin_client().expect("tcp admin connects");
    assert!(admin
        .greeting()
        .starts_with("VERSION\tdirector-doveadm\t1\t"));
    let hosts = admin.command("HOST-LIST").expect("HOST-LIST");
    assert_eq!(
        hosts,
        vec![
            "127.0.1.1\t100\t0\t\tU\t0".to_string(),
            "127.0.1.2\t100\t0\ttagA\tU\t0".to_string()
        ]
    );
    let unix = testkit::AdminClient::connect_unix(&director.admin_socket_path())
        .expect("unix admin connects")
        .command("DIRECTOR-LIST")
        .expect("DIRECTOR-LIST");
    assert!(unix[0].contains("ring synced"), "{unix:?}");
    assert!(unix[0].starts_with(&format!(
        "{}\t{}\tself",
        director.ip(),
        director.ring_addr().port()
    )));

    let out = director.doveadm(&["status"]).expect("doveadm runs");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("127.0.1.2"));

    // run_doveadm_real against the same config, and `-a` with the TCP address.
    let tcp = director.admin_tcp_addr().to_string();
    let (stdout, stderr, code) = run_doveadm_real(
        &director.config_path(),
        &["director", "status", "-a", &tcp, "someone"],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("Hashed: 127.0.1.1"), "{stdout}");
    assert!(director.log().contains("starting up"), "{}", director.log());
    assert!(!director.config_path().starts_with(director.base_dir()));
}

#[test]
fn director_username_hash_and_extra_lines_are_applied() {
    require_dovecot();
    let director = DovecotDirector::start(
        DirectorOptions::new("127.0.1.1 127.0.1.2 127.0.1.3")
            .with_username_hash("%Ln")
            .with_extra("director_user_expire = 2 min"),
    )
    .expect("director starts");
    let (stdout, _, code) = run_doveadm_real(
        &director.config_path(),
        &["config", "-h", "director_username_hash"],
    );
    assert_eq!((stdout.trim(), code), ("%Ln", 0));
    // With %Ln the domain is ignored: both names hash like "user1".
    let a = director
        .doveadm(&["map", "-u", "user1@a.example"])
        .expect("map");
    let b = director.doveadm(&["map", "-u", "user1"]).expect("map");
    assert_eq!(
        String::from_utf8_lossy(&a.stdout).trim(),
        String::from_utf8_lossy(&b.stdout).trim()
    );
    assert_eq!(String::from_utf8_lossy(&b.stdout).trim(), "617210206");
}

#[test]
fn stop_kills_only_the_master_and_is_idempotent() {
    require_dovecot();
    let mut director =
        DovecotDirector::start(DirectorOptions::new("127.0.1.1")).expect("director starts");
    let pid = director.master_pid().expect("running");
    assert!(alive(pid));
    director.stop().expect("stop");
    assert!(!alive(pid));
    assert_eq!(director.master_pid(), None);
    director.stop().expect("second stop is a no-op");
}

#[test]
fn drop_stops_the_master() {
    require_dovecot();
    let director = DovecotDirector::start(DirectorOptions::new("127.0.1.1")).expect("starts");
    let pid = director.master_pid().expect("running");
    drop(director);
    assert!(!alive(pid));
}

#[test]
fn two_directors_run_in_parallel() {
    require_dovecot();
    let a = DovecotDirector::start(DirectorOptions::new("127.0.1.1")).expect("a starts");
    let b = DovecotDirector::start(DirectorOptions::new("127.0.1.2")).expect("b starts");
    assert_ne!(a.ip(), b.ip());
    let ha = a
        .admin_client()
        .and_then(|mut c| c.command("HOST-LIST"))
        .expect("a");
    let hb = b
        .admin_client()
        .and_then(|mut c| c.command("HOST-LIST"))
        .expect("b");
    assert_eq!(ha, vec!["127.0.1.1\t100\t0\t\tU\t0".to_string()]);
    assert_eq!(hb, vec!["127.0.1.2\t100\t0\t\tU\t0".to_string()]);
}

#[test]
fn two_real_directors_form_a_ring() {
    require_dovecot();
    let mut alloc = testkit::LoopbackAllocator::new();
    let (ip1, ip2) = (alloc.next_ip(), alloc.next_ip());
    let p1 = testkit::free_port(ip1.into()).expect("port");
    let p2 = testkit::free_port(ip2.into()).expect("port");
    let servers = format!("{ip1}:{p1} {ip2}:{p2}");
    let opts = |ip, port| {
        DirectorOptions::new("127.0.1.1 127.0.1.2")
            .with_ip(ip)
            .with_ring_port(port)
            .with_director_servers(servers.clone())
            .without_sync_wait()
    };
    let d1 = DovecotDirector::start(opts(ip1, p1)).expect("d1 starts");
    let d2 = DovecotDirector::start(opts(ip2, p2)).expect("d2 starts");
    for d in [&d1, &d2] {
        d.wait_ring_synced(std::time::Duration::from_secs(30))
            .expect("ring syncs");
    }
    // A host added on d2 reaches d1 over the ring.
    let out = d2.doveadm(&["add", "127.0.1.9", "7"]).expect("add");
    assert!(out.status.success(), "{out:?}");
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = d1
            .admin_client()
            .and_then(|mut c| c.command("HOST-LIST"))
            .expect("list");
        if seen.iter().any(|l| l.starts_with("127.0.1.9\t7\t")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        seen.iter().any(|l| l.starts_with("127.0.1.9\t7\t")),
        "{seen:?}"
    );
    let ring = d1.doveadm(&["ring", "status"]).expect("ring status");
    let text = String::from_utf8_lossy(&ring.stdout);
    assert!(text.contains(&ip2.to_string()), "{text}");
}
