//! Asks a real Dovecot director which ring lines it accepts, one line per
//! fresh director instance, and prints the answers as the vector file
//! `tests/data/ring/dovecot-acceptance.tsv`:
//!
//! ```sh
//! cargo run -p director-proto --example ring_probe > crates/director-proto/tests/data/ring/dovecot-acceptance.tsv
//! ```
//!
//! An argument runs only the probes whose line template contains it
//! (`… --example ring_probe -- LONG`).
//!
//! For each probe it starts a Dovecot director (testkit) whose
//! `director_servers` lists it and us, connects from our address, runs the
//! handshake (with the probed line inside it where the line belongs there),
//! then sends the probed line followed by `PING` (post-handshake probes). A
//! line is *accepted* when Dovecot finishes the handshake and answers the
//! PING, *rejected* when it closes the connection (it sends `QUIT` and logs
//! the reason, which is printed as a `#` comment above the row). Needs real
//! Dovecot (`apt-get install -y dovecot-core`). Takes about a second per probe.
//!
//! Only lines whose fate depends on parsing are probed: unknown host IPs in
//! `U` lines, a second `ME`, or handshake commands after `DONE` are refused
//! for reasons of connection state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testkit::{free_port, DirectorOptions, DovecotDirector, LoopbackAllocator};

/// How long to wait for Dovecot's answer to one probe.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the probed line goes.
#[derive(Clone, Copy)]
enum Place {
    /// After the handshake, followed by a PING.
    Post,
    /// Between HOST-HAND-END and DONE (`U` lines).
    BeforeDone,
    /// Inside the host list, as a handshake `HOST` line.
    HostList,
    /// As the `HOST-HAND-START`/`-END` argument.
    HandFlag,
    /// As the tail of our `ME` line (after `ME\t<ip>\t<port>`).
    MeTail,
}

/// The probes: placeholders `SELF` (our ip TAB port), `HOST` (a configured
/// mail host), `OTHER` (an address that is no host).
const PROBES: &[(Place, &str)] = &[
    // Field counts and optional fields.
    (Place::Post, "DIRECTOR\t1.2.3.4\t5"),
    (Place::Post, "DIRECTOR\t1.2.3.4\t5\textra"),
    (Place::Post, "DIRECTOR\t1.2.3.4\t0"),
    (Place::Post, "DIRECTOR-REMOVE\t1.2.3.4\t5\textra"),
    (Place::Post, "DIRECTOR-REMOVE\t1.2.3.4"),
    (Place::Post, "CONNECT\t1.2.3.4"),
    (Place::Post, "CONNECT\t1.2.3.4\t5\textra"),
    (Place::Post, "USER\tx5\tHOST\t5"),
    (Place::Post, "USER\t0x5\tHOST\t5"),
    (Place::Post, "USER\t5"),
    (Place::Post, "USER\t5\tHOST"),
    (Place::Post, "USER\t5\tHOST\t5\textra"),
    (Place::Post, "USER-WEAK\tSELF\t1\t5\tOTHER"),
    (Place::Post, "USER-WEAK\tSELF\t1\t5\tOTHER\textra"),
    (Place::Post, "USER-WEAK\tSELF\t1\t5\tbad"),
    (Place::Post, "USER-MOVE\tSELF\t1\t5\tOTHER"),
    (Place::Post, "USER-MOVE\tSELF\t1\t5\tOTHER\textra"),
    (Place::Post, "USER-KILLED\t5\textra"),
    (Place::Post, "USER-KILLED\t4294967296"),
    (Place::Post, "USER-KILLED-EVERYWHERE\tSELF\t1\t5\textra"),
    (Place::Post, "USER-KILLED-EVERYWHERE\tSELF\t1\t-1"),
    (Place::Post, "USER-KICK\tSELF\t1\t"),
    (Place::Post, "USER-KICK\tSELF\t1"),
    (Place::Post, "USER-KICK\tSELF\t1\tuser\textra"),
    (Place::Post, "USER-KICK-ALT\tSELF\t1\tf"),
    (Place::Post, "USER-KICK-ALT\tSELF\t1\tf\tv"),
    (Place::Post, "USER-KICK-ALT\tSELF\t1\tf\tv\textra"),
    (Place::Post, "USER-KICK-HASH\tSELF\t1\t5"),
    (Place::Post, "USER-KICK-HASH\tSELF\t1\t5\tOTHER"),
    (Place::Post, "USER-KICK-HASH\tSELF\t1\t5\tOTHER\textra"),
    (Place::Post, "HOST-REMOVE\tSELF\t1\tbad"),
    (Place::Post, "HOST-REMOVE\tSELF\t1\tOTHER\textra"),
    (Place::Post, "HOST-FLUSH\tSELF\t1"),
    (Place::Post, "HOST-FLUSH\tSELF\t1\tOTHER\textra"),
    (Place::Post, "HOST\tSELF\t1\tOTHER"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\tx\t\tU5\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tU0\t\textra"),
    (Place::Post, "SYNC\tSELF"),
    (Place::Post, "SYNC\tSELF\t1"),
    (Place::Post, "SYNC\tSELF\t1\t9"),
    (Place::Post, "SYNC\tSELF\t1\tx"),
    (Place::Post, "SYNC\tSELF\t1\t4294967296"),
    (Place::Post, "SYNC\tSELF\t1\t9\tx"),
    (Place::Post, "SYNC\tSELF\t1\t9\t5\tx"),
    (Place::Post, "SYNC\tSELF\t1\t9\t5\t4294967296"),
    (Place::Post, "SYNC\tSELF\t1\t9\t5\t0\textra"),
    (Place::Post, "PING"),
    (Place::Post, "PING\t5"),
    (Place::Post, "PING\tx\ty"),
    (Place::Post, "PING\t\t"),
    (Place::Post, "PONG\tx\ty"),
    (Place::Post, "PONG\t5"),
    (Place::Post, ""),
    (Place::Post, "FROB\tx"),
    // Timestamps: time_t (signed) or 32-bit unsigned?
    (Place::Post, "USER\t5\tHOST\t-5"),
    (Place::Post, "USER\t5\tHOST\t4294967296"),
    (Place::Post, "USER\t5\tHOST\t9223372036854775807"),
    (Place::Post, "USER\t5\tHOST\t9223372036854775808"),
    (Place::Post, "USER\t5\tHOST\t-9223372036854775808"),
    (Place::Post, "USER\t5\tHOST\t+5"),
    (Place::Post, "USER\t5\tHOST\t-"),
    (Place::Post, "USER\t5\tHOST\t5x"),
    (Place::Post, "USER\t5\tHOST\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tU-5\t"),
    (
        Place::Post,
        "HOST\tSELF\t1\tOTHER\t5\t\tU9223372036854775808\t",
    ),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tD+5\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tU\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tUx\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tu5\t"),
    (Place::Post, "HOST\tSELF\t1\tOTHER\t5\t\tX5\t"),
    (Place::Post, "SYNC\tSELF\t1\t9\t-5\t0"),
    (Place::Post, "SYNC\tSELF\t1\t9\t4294967295\t0"),
    (Place::Post, "SYNC\tSELF\t1\t9\t4294967296\t0"),
    (Place::BeforeDone, "U\t5\tHOST\t5"),
    (Place::BeforeDone, "U\t5\tHOST\t5\tw\textra"),
    (Place::BeforeDone, "U\t5\tHOST\t5\tx"),
    (Place::BeforeDone, "U\t5\tHOST"),
    (Place::BeforeDone, "U\t5\tHOST\t-5"),
    (Place::BeforeDone, "U\t5\tHOST\t4294967295"),
    (Place::BeforeDone, "U\t5\tHOST\t4294967296"),
    (Place::BeforeDone, "OPTIONS\tconsistent-hashing\tfoo"),
    (Place::HostList, "HOST\tHOST\t100\t\tU0\t\textra"),
    (Place::HostList, "HOST\tHOST\t100"),
    (Place::HostList, "HOST\tHOST\t100\t\tU-5\t"),
    (Place::HandFlag, "2"),
    (Place::HandFlag, "x"),
    (Place::HandFlag, "0\textra"),
    (Place::MeTail, ""),
    (Place::MeTail, "\t-5"),
    (Place::MeTail, "\t4294967296"),
    (Place::MeTail, "\tx"),
    (Place::MeTail, "\t5\textra"),
    // The line limit: `LONG<n>` is a USER-KICK line of exactly n bytes
    // (without its LF), padded in the username.
    (Place::Post, "LONG1023"),
    (Place::Post, "LONG1024"),
];

struct Outcome {
    accepted: bool,
    /// The line as sent (placeholders filled in).
    line: String,
    /// Dovecot's logged reason for a rejection.
    reason: String,
}

fn probe(place: Place, template: &str) -> Outcome {
    let mut alloc = LoopbackAllocator::new();
    let (d_ip, p_ip, host, other) = (
        alloc.next_ip(),
        alloc.next_ip(),
        alloc.next_ip(),
        alloc.next_ip(),
    );
    let d_port = free_port(IpAddr::V4(d_ip)).unwrap();
    let p_port = free_port(IpAddr::V4(p_ip)).unwrap();
    let fill = |t: &str| {
        t.replace("SELF", &format!("{p_ip}\t{p_port}"))
            .replace("HOST\t", &format!("{host}\t"))
            .replace("\tHOST", &format!("\t{host}"))
            .replace("OTHER", &other.to_string())
    };
    // `HOST\tHOST…`: the command name stays, the second HOST is the host.
    let fill_line = |t: &str| match t.strip_prefix("HOST\t") {
        Some(rest) => format!("HOST\t{}", fill(rest)),
        None => fill(t),
    };
    let d = DovecotDirector::start(
        DirectorOptions::new(host.to_string())
            .with_ip(d_ip)
            .with_ring_port(d_port)
            .with_director_servers(format!("{d_ip}:{d_port} {p_ip}:{p_port}"))
            .without_sync_wait(),
    )
    .unwrap();
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((p_ip, 0)).into()).unwrap();
    socket
        .connect_timeout(&SocketAddr::from((d_ip, d_port)).into(), ANSWER_TIMEOUT)
        .unwrap();
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let line = match place {
        Place::HandFlag => format!("HOST-HAND-START\t{template}"),
        Place::MeTail => format!("ME\t{p_ip}\t{p_port}{template}"),
        _ => match template.strip_prefix("LONG") {
            Some(n) => {
                let n: usize = n.parse().unwrap();
                let mut l = fill("USER-KICK\tSELF\t1\t");
                let pad = n.checked_sub(l.len()).unwrap();
                l.push_str(&"u".repeat(pad));
                l
            }
            None => fill_line(template),
        },
    };
    let me = match place {
        Place::MeTail => line.clone(),
        _ => format!("ME\t{p_ip}\t{p_port}\t{now}"),
    };
    let flag = match place {
        Place::HandFlag => template.to_owned(),
        _ => "0".to_owned(),
    };
    let mut out = format!(
        "VERSION\tdirector\t1\t9\n{me}\nDIRECTOR\t{d_ip}\t{d_port}\nDIRECTOR\t{p_ip}\t{p_port}\n\
         HOST-HAND-START\t{flag}\n"
    );
    match place {
        Place::HostList => out.push_str(&format!("{line}\n")),
        _ => out.push_str(&format!("HOST\t{host}\t100\t\tU0\t\n")),
    }
    out.push_str(&format!(
        "HOST-HAND-END\t{flag}\nOPTIONS\tconsistent-hashing\n"
    ));
    if let Place::BeforeDone = place {
        out.push_str(&format!("{line}\n"));
    }
    out.push_str("DONE\n");
    if let Place::Post = place {
        out.push_str(&format!("{line}\n"));
    }
    out.push_str(&format!("PING\t{now}\t0\n"));
    s.write_all(out.as_bytes()).unwrap();

    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let accepted = loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let text = String::from_utf8_lossy(&got);
        if text.contains("\nPONG\t") || text.starts_with("PONG\t") {
            break true;
        }
        if text.contains("QUIT\t") {
            break false;
        }
    };
    let reason = d
        .log()
        .lines()
        .filter(|l| l.contains("Error: ") && !l.contains("connect() failed"))
        .map(|l| l.split_once("Error: ").map_or(l, |(_, r)| r).to_owned())
        .collect::<Vec<_>>()
        .join(" / ");
    Outcome {
        accepted,
        line,
        reason,
    }
}

fn main() {
    let version = std::process::Command::new("dovecot")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| {
            panic!("real Dovecot is required (apt-get install -y dovecot-core): {e}")
        });
    println!("# Which ring lines Dovecot {version} accepts from a peer director.");
    println!("# Generated by `cargo run -p director-proto --example ring_probe` (see its docs):");
    println!("# one fresh director per line; accepted = handshake finished and the PING");
    println!("# after the line was answered, rejected = Dovecot sent QUIT and closed.");
    println!("# Columns: accepted|rejected TAB context (normal|host-handshake) TAB the line");
    println!("# (which itself contains TABs). `#` lines above a row hold Dovecot's log.");
    // An argument runs only the probes whose template contains it.
    let only = std::env::args().nth(1).unwrap_or_default();
    for &(place, template) in PROBES.iter().filter(|(_, t)| t.contains(only.as_str())) {
        let o = probe(place, template);
        let context = match place {
            Place::HostList => "host-handshake",
            _ => "normal",
        };
        if !o.reason.is_empty() && !o.accepted {
            println!("# {}", o.reason.replace('\t', "<TAB>"));
        }
        let verdict = if o.accepted { "accepted" } else { "rejected" };
        println!("{verdict}\t{context}\t{}", o.line);
    }
}
