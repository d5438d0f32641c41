//! Pipelined `USER-MOVE`s on one director of a ring of three (`--moves N`): every move is
//! a kill flow round the ring (`USER-MOVE`, `USER-KILLED`, `USER-KILLED-EVERYWHERE`), so a
//! long pipeline on one admin connection is the hardest sustained load an operator can put
//! on a ring. Measured: the time until every move is answered, and until every director
//! reports the ring synced and lists the same users; ours and Dovecot's ring in one run.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use director_proto::admin::CLIENT_HANDSHAKE;

use super::{start_synced, Ring};

/// The host every user is moved to (one of the ring's `director_mail_servers`).
const TARGET: &str = "127.0.1.2";
/// How long an answer may take before the run fails (a wedged director must not hang it).
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the ring may take to settle after the last answer (then it is reported as not
/// settled, with what each director lists).
const SETTLE: Duration = Duration::from_secs(120);

/// What one ring did with the moves.
struct Moved {
    answered: Duration,
    ok: u64,
    other: u64,
    /// When every director was synced and listed the same users; `None`: not within
    /// [`SETTLE`].
    settled: Option<Duration>,
    /// Users each director lists at the end.
    users: Vec<usize>,
    /// The most bytes ever queued for one ring connection, over all directors (from
    /// `DIRECTOR-LIST`; Dovecot does not count a peak: 0).
    peak_queued: u64,
    /// Polls a director did not answer within the admin client's 10 s.
    unanswered: u32,
}

pub fn run(bin: &std::path::Path, kinds: &[&str], moves: u64) -> anyhow::Result<()> {
    println!("## {moves} pipelined USER-MOVEs on director 0 of a ring of three\n");
    println!(
        "| ring | all answered, s | OK / other | ring synced with the same users everywhere, s | users listed (each director) | most bytes queued for a peer | polls unanswered in 10 s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut settled = Vec::new();
    for &kind in kinds {
        let (ring, mut admins) = start_synced(bin, kind, 3)?;
        let m = move_all(&ring, &mut admins, moves)?;
        let users: Vec<String> = m.users.iter().map(ToString::to_string).collect();
        println!(
            "| {kind} | {:.2} | {} / {} | {} | {} | {} | {} |",
            m.answered.as_secs_f64(),
            m.ok,
            m.other,
            m.settled
                .map_or(format!("not within {} s", SETTLE.as_secs()), |s| format!(
                    "{:.2}",
                    s.as_secs_f64()
                )),
            users.join(" / "),
            m.peak_queued,
            m.unanswered
        );
        settled.push(m.settled.map(|s| s.as_secs_f64()));
    }
    if let [Some(ours), Some(dovecot)] = settled[..] {
        println!("| ours / dovecot | | | **{:.2}** | | | |", ours / dovecot);
    }
    println!();
    Ok(())
}

/// Sends `moves` `USER-MOVE`s down one connection to director 0 while reading the answers,
/// then waits for the ring to settle.
fn move_all(ring: &Ring, admins: &mut [testkit::AdminClient], moves: u64) -> anyhow::Result<Moved> {
    let (mut reader, mut writer): (Box<dyn Read + Send>, Box<dyn Write + Send>) = match ring {
        Ring::Ours(v) => {
            let s = UnixStream::connect(&v[0].socket).context("our admin socket")?;
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
        Ring::Dovecot(v) => {
            let s = TcpStream::connect(v[0].admin_tcp_addr()).context("Dovecot's admin port")?;
            s.set_read_timeout(Some(READ_TIMEOUT))?;
            (Box::new(s.try_clone()?), Box::new(s))
        }
    };
    writer.write_all(CLIENT_HANDSHAKE)?;
    let mut reader = BufReader::with_capacity(1 << 16, &mut reader);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    if !greeting.starts_with("VERSION\t") {
        bail!("unexpected admin greeting {greeting:?}");
    }
    let started = Instant::now();
    let sender = std::thread::spawn(move || -> std::io::Result<()> {
        let mut batch = Vec::with_capacity(1 << 16);
        for i in 0..moves {
            batch.extend_from_slice(format!("USER-MOVE\tmv{i}@example.com\t{TARGET}\n").as_bytes());
            if batch.len() >= 1 << 16 {
                writer.write_all(&batch)?;
                batch.clear();
            }
        }
        writer.write_all(&batch)?;
        writer.flush()
    });
    let (mut ok, mut other) = (0u64, 0u64);
    let mut line = String::new();
    for _ in 0..moves {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!(
                "the director closed the admin connection after {} answers",
                ok + other
            );
        }
        if line == "OK\n" {
            ok += 1;
        } else {
            other += 1;
        }
    }
    let answered = started.elapsed();
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the sender panicked"))??;
    // Settled: every director synced, and all list the same number of users, on two polls
    // in a row; the time is the first of them.
    let deadline = Instant::now() + SETTLE;
    let mut last: Option<(usize, Duration)> = None;
    let mut unanswered = 0u32;
    loop {
        let polled_at = started.elapsed();
        let mut synced = true;
        let mut counts = Vec::new();
        for (i, a) in admins.iter_mut().enumerate() {
            let asked = Instant::now();
            // A director that does not answer within the client's 10 s is polled again on a
            // fresh connection: that it was that busy is part of the result.
            let polled = a.command("DIRECTOR-LIST").and_then(|rows| {
                let listed = Instant::now();
                let users = a.command("USER-LIST")?.len();
                Ok((rows, listed, users))
            });
            match polled {
                Ok((rows, listed, users)) => {
                    synced &= rows
                        .iter()
                        .any(|l| l.contains("\tself\t") && l.contains("ring synced"));
                    counts.push(users);
                    eprintln!(
                        "moves: at {:.2} s director {i}: DIRECTOR-LIST {:.2} s, USER-LIST {:.2} s",
                        polled_at.as_secs_f64(),
                        (listed - asked).as_secs_f64(),
                        listed.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    eprintln!(
                        "moves: at {:.2} s director {i} did not answer ({e}); reconnecting",
                        polled_at.as_secs_f64()
                    );
                    unanswered += 1;
                    synced = false;
                    counts.push(usize::MAX);
                    *a = ring.admins()?.swap_remove(i);
                }
            }
        }
        let same = counts.iter().all(|c| *c == counts[0]);
        let settled = last
            .filter(|l| synced && same && l.0 == counts[0])
            .map(|l| l.1);
        if settled.is_some() || Instant::now() > deadline {
            let mut peak_queued = 0;
            for a in admins.iter_mut() {
                for row in a.command("DIRECTOR-LIST").unwrap_or_default() {
                    let f: Vec<&str> = row.split('\t').collect();
                    if let Some(p) = f.get(9).and_then(|p| p.parse::<u64>().ok()) {
                        peak_queued = peak_queued.max(p);
                    }
                }
            }
            return Ok(Moved {
                answered,
                ok,
                other,
                settled,
                users: counts,
                peak_queued,
                unanswered,
            });
        }
        last = (synced && same).then_some((counts[0], polled_at));
        std::thread::sleep(Duration::from_millis(200));
    }
}
