//! `admin-load`: drives a director's admin socket as fast as one client connection can, so
//! that the admin benchmark (`crates/bench/admin.py`) measures the server and not a slow
//! script.
//!
//! It speaks the admin protocol directly (one connection, blocking I/O, a fixed pipelining
//! window) and works the same against our `directord` and a Dovecot director, so both are
//! measured by the same client in the same run.
#![forbid(unsafe_code)]

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  admin-load lookup --addr SOCKET|IP:PORT [--secs 5] [--window 1] [--users 100000] [--prefix perfu]
  admin-load assign --addr SOCKET|IP:PORT --host IP [--count 100000] [--start 0] [--window 100] [--prefix perfu]";

/// Read buffer of the admin connection: many pipelined replies per read.
const READ_BUFFER: usize = 1 << 16;
/// `--window` unless given: `lookup` measures unpipelined requests, `assign` fills quickly.
const LOOKUP_WINDOW: usize = 1;
const ASSIGN_WINDOW: usize = 100;

struct Opts {
    addr: String,
    secs: f64,
    window: usize,
    users: u64,
    count: u64,
    start: u64,
    prefix: String,
    host: String,
}

fn parse(args: &[String], window: usize) -> Result<Opts> {
    let mut o = Opts {
        addr: String::new(),
        secs: 5.0,
        window,
        users: 100_000,
        count: 100_000,
        start: 0,
        prefix: "perfu".into(),
        host: String::new(),
    };
    let mut it = args.iter();
    while let Some(k) = it.next() {
        let v = it
            .next()
            .with_context(|| format!("{k} needs a value\n{USAGE}"))?;
        match k.as_str() {
            "--addr" => o.addr = v.clone(),
            "--secs" => o.secs = v.parse()?,
            "--window" => o.window = v.parse()?,
            "--users" => o.users = v.parse()?,
            "--count" => o.count = v.parse()?,
            "--start" => o.start = v.parse()?,
            "--prefix" => o.prefix = v.clone(),
            "--host" => o.host = v.clone(),
            _ => bail!("unknown option {k}\n{USAGE}"),
        }
    }
    if o.addr.is_empty() || o.window == 0 || o.users == 0 {
        bail!("{USAGE}");
    }
    Ok(o)
}

/// Runs `f` with a writer and a buffered reader over one connection (a UNIX socket when
/// `addr` is a path, TCP otherwise), after the admin handshake.
fn with_session<T>(
    addr: &str,
    f: impl FnOnce(&mut dyn Write, &mut dyn BufRead) -> Result<T>,
) -> Result<T> {
    let (mut w, r): (Box<dyn Write>, Box<dyn Read>) = if addr.contains('/') {
        let s = UnixStream::connect(addr).with_context(|| format!("connect({addr})"))?;
        (Box::new(s.try_clone()?), Box::new(s))
    } else {
        let s = TcpStream::connect(addr).with_context(|| format!("connect({addr})"))?;
        s.set_nodelay(true)?;
        (Box::new(s.try_clone()?), Box::new(s))
    };
    let mut r = BufReader::with_capacity(READ_BUFFER, r);
    greet(&mut w, &mut r)?;
    f(&mut w, &mut r)
}

fn greet(w: &mut dyn Write, r: &mut dyn BufRead) -> Result<()> {
    w.write_all(b"VERSION\tdirector-doveadm\t1\t0\n")?;
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    if !line.starts_with(b"VERSION\tdirector-doveadm\t1\t") {
        bail!("unexpected greeting {:?}", String::from_utf8_lossy(&line));
    }
    Ok(())
}

fn read_reply(r: &mut dyn BufRead, line: &mut Vec<u8>) -> Result<()> {
    line.clear();
    if r.read_until(b'\n', line)? == 0 {
        bail!("director closed the connection");
    }
    Ok(())
}

/// `USER-LOOKUP` for `secs` seconds with at most `window` requests outstanding.
fn lookup(o: &Opts) -> Result<()> {
    with_session(&o.addr, |w, r| {
        let deadline = Instant::now() + Duration::from_secs_f64(o.secs);
        let started = Instant::now();
        let (mut sent, mut received, mut outstanding) = (0u64, 0u64, 0usize);
        let mut batch = Vec::with_capacity(o.window * 32);
        let mut line = Vec::new();
        let mut sample = Vec::new();
        loop {
            if Instant::now() < deadline {
                batch.clear();
                while outstanding < o.window {
                    batch.extend_from_slice(b"USER-LOOKUP\t");
                    batch.extend_from_slice(o.prefix.as_bytes());
                    batch.extend_from_slice((sent % o.users).to_string().as_bytes());
                    batch.extend_from_slice(b"\t\n");
                    sent += 1;
                    outstanding += 1;
                }
                if !batch.is_empty() {
                    w.write_all(&batch)?;
                }
            } else if outstanding == 0 {
                break;
            }
            read_reply(r, &mut line)?;
            if sample.is_empty() {
                sample = line.clone();
            }
            received += 1;
            outstanding -= 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "window={} replies={received} secs={secs:.2} rate={:.0}/s sample_reply={:?}",
            o.window,
            received as f64 / secs,
            String::from_utf8_lossy(&sample)
        );
        Ok(())
    })
}

/// Creates `count` assignments with pipelined `USER-MOVE <name> <host>`; the director hashes
/// a non-numeric first field as a user name.
fn assign(o: &Opts) -> Result<()> {
    if o.host.is_empty() {
        bail!("assign needs --host\n{USAGE}");
    }
    with_session(&o.addr, |w, r| {
        let started = Instant::now();
        let (mut sent, mut received, mut outstanding) = (0u64, 0u64, 0usize);
        let mut batch = Vec::new();
        let mut line = Vec::new();
        let mut failures = 0u64;
        while received < o.count {
            batch.clear();
            while outstanding < o.window && sent < o.count {
                batch.extend_from_slice(b"USER-MOVE\t");
                batch.extend_from_slice(o.prefix.as_bytes());
                batch.extend_from_slice((o.start + sent).to_string().as_bytes());
                batch.push(b'\t');
                batch.extend_from_slice(o.host.as_bytes());
                batch.push(b'\n');
                sent += 1;
                outstanding += 1;
            }
            if !batch.is_empty() {
                w.write_all(&batch)?;
            }
            read_reply(r, &mut line)?;
            if line != b"OK\n" {
                failures += 1;
            }
            received += 1;
            outstanding -= 1;
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "assigned={received} failures={failures} secs={secs:.2} rate={:.0}/s",
            received as f64 / secs
        );
        Ok(())
    })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        bail!("{USAGE}");
    };
    match cmd.as_str() {
        "lookup" => lookup(&parse(rest, LOOKUP_WINDOW)?),
        "assign" => assign(&parse(rest, ASSIGN_WINDOW)?),
        _ => bail!("{USAGE}"),
    }
}
