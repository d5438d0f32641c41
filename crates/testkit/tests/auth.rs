//! The auth-only instance authenticates and lists its users, so `doveadm director map`
//! can show real usernames.

use testkit::{require_dovecot, DirectorOptions, DovecotAuth, DovecotDirector};

#[test]
fn auth_lists_and_authenticates_users() {
    require_dovecot();
    let auth = DovecotAuth::start(&[("alice", "secret1"), ("bob@example.com", "secret2")])
        .expect("auth starts");
    let (stdout, stderr, code) = auth.doveadm(&["user", "*"]);
    assert_eq!(code, 0, "{stderr}");
    let mut listed: Vec<&str> = stdout.lines().collect();
    listed.sort_unstable();
    assert_eq!(listed, vec!["alice", "bob@example.com"]);

    let (_, stderr, code) = auth.doveadm(&["auth", "test", "alice", "secret1"]);
    assert_eq!(code, 0, "{stderr}");
    let (_, _, code) = auth.doveadm(&["auth", "test", "alice", "wrong"]);
    assert_ne!(code, 0);
    assert!(auth.auth_userdb_socket_path().exists());
}

#[test]
fn doveadm_director_map_lists_users_from_auth() {
    require_dovecot();
    let auth = DovecotAuth::start(&[("alice", "x"), ("bob", "y")]).expect("auth starts");
    let director =
        DovecotDirector::start(DirectorOptions::new("127.0.1.1")).expect("director starts");
    let admin = director.admin_socket_path();
    let admin = admin.to_str().expect("temp paths are UTF-8");
    let moved = director
        .doveadm(&["move", "alice", "127.0.1.1"])
        .expect("move");
    assert!(moved.status.success(), "{moved:?}");
    let (stdout, stderr, code) = auth.doveadm(&["director", "map", "-a", admin]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    // alice is assigned (by the move) and named through the auth userdb listing.
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("alice "))
        .unwrap_or_else(|| panic!("alice not listed: {stdout}"));
    assert!(row.contains("127.0.1.1"), "{row}");
    assert!(!stdout.contains("<unknown>"), "{stdout}");
}
