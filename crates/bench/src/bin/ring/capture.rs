//! Counts the ring's messages on the wire: `tcpdump` captures the ring port on the loopback
//! interface while something happens, and the lines in the TCP payloads are counted. Neither
//! ring counts its messages itself (Dovecot's `DIRECTOR-LIST` has bytes only), so this is
//! how both are counted the same way.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

use anyhow::{bail, Context};

/// A running capture of one TCP port on `lo`.
pub struct Capture {
    child: Child,
    file: PathBuf,
    stderr: JoinHandle<Vec<String>>,
}

/// What a capture saw.
pub struct Counted {
    /// Newlines in the TCP payloads, each segment counted once (retransmissions are not).
    pub lines: u64,
    /// Payload bytes, each counted once.
    pub bytes: u64,
    /// Payload bytes missing between the first and last segment of some connection, and
    /// packets `tcpdump` says the kernel dropped: either makes `lines` an undercount.
    pub missing_bytes: u64,
    pub dropped_packets: u64,
}

impl Capture {
    /// Starts `tcpdump` on `port` between two of `hosts` into `dir` and returns once it
    /// listens. Both ends must be ring hosts: another client's ephemeral port can equal the
    /// ring port.
    pub fn start(port: u16, hosts: &[Ipv4Addr], dir: &Path, name: &str) -> anyhow::Result<Capture> {
        let either = |side: &str| {
            hosts
                .iter()
                .map(|h| format!("{side} host {h}"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        let file = dir.join(format!("{name}.pcap"));
        let mut child = Command::new("tcpdump")
            // A large kernel buffer (KiB): with the default, bursts of ring traffic lost
            // packets, and so lines.
            .args([
                "-i",
                "lo",
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-B",
                "65536",
                "-w",
            ])
            .arg(&file)
            .arg(format!(
                "tcp port {port} and ({}) and ({})",
                either("src"),
                either("dst")
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("tcpdump (apt-get install -y tcpdump) to count ring messages")?;
        let stderr = child.stderr.take().context("tcpdump's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => {
                    let _ = child.kill();
                    bail!("tcpdump did not start listening on lo");
                }
            }
        }
        // Keep draining its stderr so that it never blocks on a full pipe; its last lines
        // say how many packets the kernel dropped.
        let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect());
        Ok(Capture {
            child,
            file,
            stderr,
        })
    }

    /// Stops the capture (SIGINT, so that tcpdump flushes) and counts the lines in it.
    pub fn count(mut self) -> anyhow::Result<Counted> {
        super::interrupt(&mut self.child)?;
        let report = self.stderr.join().unwrap_or_default();
        let dropped_packets = report
            .iter()
            .filter_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum();
        let bytes = std::fs::read(&self.file).with_context(|| self.file.display().to_string())?;
        let (lines, bytes, missing_bytes) = count_payload_lines(&bytes)?;
        Ok(Counted {
            lines,
            bytes,
            missing_bytes,
            dropped_packets,
        })
    }
}

/// Newlines in the TCP payloads of a pcap file (IPv4; Ethernet or Linux cooked framing),
/// their payload bytes, and the payload bytes missing inside each connection's captured span.
fn count_payload_lines(pcap: &[u8]) -> anyhow::Result<(u64, u64, u64)> {
    let u32_at = |b: &[u8], at: usize, le: bool| -> anyhow::Result<u32> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .context("short pcap")?
            .try_into()
            .context("short pcap")?;
        Ok(if le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let le = match pcap.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) | Some([0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) | Some([0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => bail!("not a pcap file"),
    };
    let link_header = match u32_at(pcap, 20, le)? {
        1 => 14,   // Ethernet (what `lo` shows)
        113 => 16, // Linux cooked v1
        276 => 20, // Linux cooked v2
        other => bail!("pcap link type {other} not handled"),
    };
    let mut at = 24;
    // Per connection (addresses and ports), each segment's payload by sequence number.
    let mut flows: HashMap<[u8; 12], BTreeMap<u32, &[u8]>> = HashMap::new();
    while at + 16 <= pcap.len() {
        let caplen = u32_at(pcap, at + 8, le)? as usize;
        let packet = pcap
            .get(at + 16..at + 16 + caplen)
            .context("truncated packet")?;
        at += 16 + caplen;
        let Some(ip) = packet.get(link_header..) else {
            continue;
        };
        if ip.first().map(|b| b >> 4) != Some(4) || ip.get(9) != Some(&6) {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        let Some(tcp) = ip.get(ihl..total) else {
            continue;
        };
        let Some(offset) = tcp.get(12).map(|b| usize::from(b >> 4) * 4) else {
            continue;
        };
        let (Some(addresses), Some(ports), Some(seq)) =
            (ip.get(12..20), tcp.get(..4), tcp.get(4..8))
        else {
            continue;
        };
        let payload = tcp.get(offset..).unwrap_or_default();
        if payload.is_empty() {
            continue;
        }
        let mut flow = [0u8; 12];
        flow[..8].copy_from_slice(addresses);
        flow[8..].copy_from_slice(ports);
        let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
        flows.entry(flow).or_default().insert(seq, payload);
    }
    // Sequence numbers are taken as they come: a capture of a few seconds on loopback
    // never wraps them.
    let (mut lines, mut bytes, mut missing) = (0u64, 0u64, 0u64);
    for segments in flows.values() {
        let mut next: Option<u64> = None;
        for (&seq, payload) in segments {
            let (start, end) = (u64::from(seq), u64::from(seq) + payload.len() as u64);
            let fresh = match next {
                Some(n) if start > n => {
                    missing += start - n;
                    payload
                }
                // A retransmission or overlap: count only what is new.
                Some(n) => payload
                    .get(usize::try_from(n.saturating_sub(start))?..)
                    .unwrap_or_default(),
                None => payload,
            };
            lines += fresh.iter().filter(|&&b| b == b'\n').count() as u64;
            bytes += fresh.len() as u64;
            next = Some(next.map_or(end, |n| n.max(end)));
        }
    }
    Ok((lines, bytes, missing))
}
