//! The lab's ring recording (Dovecot 2.3.19.1, `tests/data/lab-ring-events.txt`, see
//! `tests/data/README.md`) replayed in the simulated ring: the same events at the same
//! clock times must produce the same lines.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use director_core::UserKey;
use sim::*;

/// One recorded protocol line.
struct Rec {
    src: String,
    dst: String,
    line: String,
}

fn lab() -> Vec<Rec> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/lab-ring-events.txt"
    );
    let text = std::fs::read_to_string(path).expect("lab transcript");
    text.lines()
        .filter(|l| !l.contains("##########"))
        .map(|l| {
            let (head, line) = l.split_once(" | ").expect("TIME SRC > DST | LINE");
            let mut parts = head.split(' ');
            let _time = parts.next();
            let src = parts.next().expect("src").to_string();
            let _gt = parts.next();
            let dst = parts.next().expect("dst").to_string();
            Rec {
                src,
                dst,
                line: line.to_string(),
            }
        })
        .collect()
}

/// The recorded lines of one TCP direction, up to and including the first `DONE`.
fn lab_until_done(lab: &[Rec], src: &str, dst: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in lab.iter().filter(|r| r.src == src && r.dst == dst) {
        out.push(r.line.clone());
        if r.line == "DONE" {
            break;
        }
    }
    out
}

/// Our lines from director `from` to `to` on the first connection opened by the
/// sender (`outgoing`) or by the receiver, up to and including the first `DONE`.
fn ours_until_done(
    net: &Net,
    from: usize,
    to: usize,
    outgoing: bool,
    skip_conns: usize,
) -> Vec<String> {
    let (f, t) = (daddr(from), daddr(to));
    let mut conns = Vec::new();
    for w in &net.wire {
        if w.from == f && w.to == t && w.on_senders_outgoing == outgoing && !conns.contains(&w.conn)
        {
            conns.push(w.conn);
        }
    }
    let conn = conns[skip_conns];
    let mut out = Vec::new();
    for w in net.wire.iter().filter(|w| w.conn == conn && w.from == f) {
        out.push(w.line.clone());
        if w.line == "DONE" {
            break;
        }
    }
    out
}

fn lines_since<'a>(net: &'a Net, mark: usize, prefix: &str) -> Vec<&'a Wire> {
    net.wire[mark..]
        .iter()
        .filter(|w| w.line.starts_with(prefix))
        .collect()
}

#[test]
fn replay_of_the_lab_recording() {
    let lab = lab();
    // Director numbers follow the lab: d1 = 127.0.0.11 = node 0.
    let mut net = Net::new(3);

    // --- d1 alone, then d2 (both at the lab's clock 1795896443) ---
    net.start(0);
    net.start(1);
    assert_eq!(
        ours_until_done(&net, 2, 1, true, 0),
        lab_until_done(&lab, "127.0.0.12:38773", "127.0.0.11:9090"),
        "d2's outgoing handshake to d1"
    );
    assert_eq!(
        ours_until_done(&net, 1, 2, false, 0),
        lab_until_done(&lab, "127.0.0.11:9090", "127.0.0.12:38773"),
        "d1's answer on that connection"
    );
    assert_eq!(
        ours_until_done(&net, 1, 2, true, 0),
        lab_until_done(&lab, "127.0.0.11:41559", "127.0.0.12:9090"),
        "d1's outgoing handshake to d2"
    );
    let sync = net.lines_starting("SYNC\t127.0.0.12\t9090\t");
    assert!(
        sync[0].line.ends_with("\t9\t1795896443\t1410458694"),
        "{}",
        sync[0].line
    );
    assert!(net.all_alive_synced());

    // --- d3 starts two seconds later ---
    net.advance(2);
    let mark = net.wire.len();
    net.start(2);
    let connect = lines_since(&net, mark, "CONNECT\t");
    assert_eq!(connect.len(), 1);
    assert_eq!(
        (
            connect[0].from,
            connect[0].to,
            connect[0].on_senders_outgoing,
            connect[0].line.as_str()
        ),
        (daddr(1), daddr(2), false, "CONNECT\t127.0.0.13\t9090"),
        "d1 tells its left (d2) to connect to d3"
    );
    let quit = lines_since(&net, mark, "QUIT\t");
    assert_eq!(
        (
            quit[0].from,
            quit[0].to,
            quit[0].on_senders_outgoing,
            quit[0].line.as_str()
        ),
        (daddr(2), daddr(1), true, "QUIT\tCONNECT requested"),
    );
    assert_eq!(
        ours_until_done(&net, 2, 3, true, 0),
        lab_until_done(&lab, "127.0.0.12:46813", "127.0.0.13:9090"),
        "d2's outgoing handshake to d3 (HOST-HAND-START 1: d2's ring is handshaked)"
    );
    // d3 adopted d2's hosts and announces them as its own HOST updates, to d1.
    let rebroadcast: Vec<String> = lines_since(&net, mark, "HOST\t127.0.0.13\t")
        .iter()
        .filter(|w| w.to == daddr(1))
        .map(|w| w.line.clone())
        .collect();
    let lab_rebroadcast: Vec<String> = lab
        .iter()
        .filter(|r| r.src == "127.0.0.13:32833" && r.line.starts_with("HOST\t127.0.0.13\t"))
        .map(|r| r.line.clone())
        .collect();
    assert_eq!(rebroadcast, lab_rebroadcast);
    net.advance(1);
    assert!(net.all_alive_synced());

    // --- login of user1 via d1 at 1795896449: four USER copies ---
    net.advance(3);
    assert_eq!(net.now, 1_795_896_449);
    let mark = net.wire.len();
    net.login(0, "user1").expect("routed");
    let ours: Vec<String> = lines_since(&net, mark, "USER\t")
        .iter()
        .map(|w| w.line.clone())
        .collect();
    let recorded: Vec<String> = lab
        .iter()
        .filter(|r| r.line.starts_with("USER\t617210206\t"))
        .map(|r| r.line.clone())
        .collect();
    assert_eq!(ours, recorded);

    // --- doveadm director add 127.0.1.4 50 on d1 at 1795896453 ---
    net.advance(4);
    let mark = net.wire.len();
    net.admin_host_set(0, backend(4), 50);
    let mut host: Vec<(String, String)> = lines_since(&net, mark, "HOST\t")
        .iter()
        .map(|w| (w.from.ip.to_string(), w.line.clone()))
        .collect();
    let mut lab_host: Vec<(String, String)> = lab
        .iter()
        .filter(|r| r.line.starts_with("HOST\t127.0.0.11\t"))
        .map(|r| (r.src.split(':').next().unwrap().to_string(), r.line.clone()))
        .collect();
    // The same four copies (the order on the wire depends on timing).
    host.sort();
    lab_host.sort();
    assert_eq!(host, lab_host);
    let sync = lines_since(&net, mark, "SYNC\t127.0.0.11\t");
    assert!(
        sync[0].line.ends_with("\t9\t1795896453\t2464432032"),
        "{}",
        sync[0].line
    );
    assert!(net.all_alive_synced());

    // The lab then updated, downed, upped and removed 127.0.1.4 on d1 (seq 2–5; those
    // lines are not in the excerpt) before moving user1 with seq 6.
    net.advance(1);
    net.admin_host_set(0, backend(4), 200);
    net.advance(1);
    net.admin_host_down(0, backend(4), true);
    net.advance(1);
    net.admin_host_down(0, backend(4), false);
    net.advance(1);
    net.admin_host_remove(0, backend(4));
    net.advance(5);

    // --- doveadm director move user1 127.0.1.3 on d1 ---
    let mark = net.wire.len();
    let now = net.now;
    let node = &mut net.nodes[0];
    node.dir
        .user_move(&UserKey::Name(b"user1".to_vec()), backend(3), now)
        .expect("move");
    net.pump();
    let recorded = |prefix: &str| -> Vec<String> {
        lab.iter()
            .filter(|r| r.line.starts_with(prefix))
            .map(|r| r.line.clone())
            .collect()
    };
    let texts = |prefix: &str| -> Vec<String> {
        lines_since(&net, mark, prefix)
            .iter()
            .map(|w| w.line.clone())
            .collect()
    };
    assert_eq!(texts("USER-MOVE\t"), recorded("USER-MOVE\t"));
    assert_eq!(
        texts("USER-KILLED-EVERYWHERE\t"),
        recorded("USER-KILLED-EVERYWHERE\t")
    );
    // USER-KILLED goes hop by hop to the right: d1 → d2 → d3 → d1.
    let hops: Vec<(u8, u8, String)> = lines_since(&net, mark, "USER-KILLED\t")
        .iter()
        .map(|w| (octet(w.from), octet(w.to), w.line.clone()))
        .collect();
    let k = "USER-KILLED\t617210206".to_string();
    assert_eq!(
        hops,
        vec![(11, 12, k.clone()), (12, 13, k.clone()), (13, 11, k)]
    );
    for i in 0..3 {
        assert_eq!(net.user_host(i, "user1"), Some(backend(3)), "director {i}");
    }

    // --- doveadm director kick user1 on d1 ---
    net.advance(3);
    let mark = net.wire.len();
    let now = net.now;
    let node = &mut net.nodes[0];
    node.dir.user_kick(b"user1", false, now);
    net.pump();
    assert_eq!(
        texts_owned(&net, mark, "USER-KICK\t"),
        recorded("USER-KICK\t")
    );
}

fn octet(a: director_proto::ring::DirectorAddr) -> u8 {
    match a.ip {
        std::net::IpAddr::V4(v4) => v4.octets()[3],
        std::net::IpAddr::V6(_) => 0,
    }
}

fn texts_owned(net: &Net, mark: usize, prefix: &str) -> Vec<String> {
    lines_since(net, mark, prefix)
        .iter()
        .map(|w| w.line.clone())
        .collect()
}
