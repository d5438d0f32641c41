//! Mixed rings: our directors in one ring with real Dovecot 2.3 directors, the way an
//! operator migrates one director at a time. The ring forms and reports synced on both
//! kinds; host changes made through either kind's `doveadm` reach every director; user
//! assignments agree everywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::ring::{wait_same, wait_synced, wait_until, Member, RingSpec};
use testkit::require_dovecot;

/// Host add, update, down/up, move and remove through each director's `doveadm` show on
/// every director; `ours[i]` says whether director `i` is ours.
fn hosts_and_users_agree(ours: &[bool]) {
    require_dovecot();
    let spec = RingSpec::new(ours.len());
    let ring: Vec<Member> = ours
        .iter()
        .enumerate()
        .map(|(i, &mine)| if mine { spec.ours(i) } else { spec.dovecot(i) })
        .collect();
    wait_synced(&ring);
    for (i, m) in ring.iter().enumerate() {
        let ip = format!("127.0.1.{}", 20 + i);
        let has = |list: &[String], row: &str| list.iter().any(|h| h.starts_with(row));
        m.doveadm(&["add", &ip, "40"]);
        let list = wait_same(&ring, "host list", Member::hosts);
        assert!(has(&list, &format!("{ip}\t40\t")), "{}: {list:?}", m.name());
        m.doveadm(&["update", &ip, "60"]);
        m.doveadm(&["down", &ip]);
        let list = wait_same(&ring, "host list", Member::hosts);
        assert!(
            has(&list, &format!("{ip}\t60\t0\t\tD")),
            "{}: {list:?}",
            m.name()
        );
        m.doveadm(&["up", &ip]);
        let list = wait_same(&ring, "host list", Member::hosts);
        assert!(
            has(&list, &format!("{ip}\t60\t0\t\tU")),
            "{}: {list:?}",
            m.name()
        );
        let user = format!("user{i}@example.com");
        m.doveadm(&["move", &user, &ip]);
        wait_until("every director has the move", || {
            ring.iter().all(|o| o.current(&user) == ip)
        });
    }
    let users = wait_same(&ring, "user list", Member::users);
    assert_eq!(users.len(), ring.len(), "{users:?}");
    for (i, m) in ring.iter().enumerate() {
        m.doveadm(&["remove", &format!("127.0.1.{}", 20 + i)]);
    }
    let list = wait_same(&ring, "host list", Member::hosts);
    assert_eq!(
        list.len(),
        3,
        "only the configured hosts are left: {list:?}"
    );
    for m in &ring {
        let status = m.doveadm(&["ring", "status"]);
        assert_eq!(
            status.lines().filter(|l| l.contains("ring synced")).count(),
            1,
            "{}: {status}",
            m.name()
        );
    }
}

#[test]
fn one_of_ours_with_two_dovecot_directors() {
    hosts_and_users_agree(&[false, true, false]);
}

#[test]
fn two_of_ours_with_one_dovecot_director() {
    hosts_and_users_agree(&[true, false, true]);
}
