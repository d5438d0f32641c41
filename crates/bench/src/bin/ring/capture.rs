//! Counts the ring's messages on the wire: `tcpdump` captures the ring port on the loopback
//! interface while something happens, and the lines in the TCP payloads are counted. Neither
//! ring counts its messages itself (Dovecot's `DIRECTOR-LIST` has bytes only), so this is
//! how both are counted the same way.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

/// A running capture of one TCP port on `lo`.
pub struct Capture {
    child: Child,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump` on `port` into `dir` and returns once it listens.
    pub fn start(port: u16, dir: &Path, name: &str) -> anyhow::Result<Capture> {
        let file = dir.join(format!("{name}.pcap"));
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "--immediate-mode", "-U", "-s", "0", "-w"])
            .arg(&file)
            .arg(format!("tcp port {port}"))
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
        // Keep draining its stderr so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Capture { child, file })
    }

    /// Stops the capture (SIGINT, so that tcpdump flushes) and counts the lines in it.
    pub fn lines(mut self) -> anyhow::Result<u64> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
        self.child.wait()?;
        let bytes = std::fs::read(&self.file).with_context(|| self.file.display().to_string())?;
        count_payload_lines(&bytes)
    }
}

/// Newlines in the TCP payloads of a pcap file (IPv4; Ethernet or Linux cooked framing).
fn count_payload_lines(pcap: &[u8]) -> anyhow::Result<u64> {
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
    let mut lines = 0u64;
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
        if let Some(payload) = tcp.get(offset..) {
            lines += payload.iter().filter(|&&b| b == b'\n').count() as u64;
        }
    }
    Ok(lines)
}
