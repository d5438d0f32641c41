//! The saved-state file (`state_dir/director-state`): a [`Snapshot`] of the director's hosts
//! and users as text, so that an operator can read a file that was kept aside.
//!
//! ```text
//! director-state<TAB>1
//! saved<TAB><unix time>
//! host<TAB><ip><TAB><vhosts><TAB><U|D><last up/down change><TAB><tag><TAB><hostname>
//! config<TAB><ip>
//! user<TAB><hash><TAB><host index><TAB><timestamp>
//! end<TAB><hosts><TAB><configs><TAB><users><TAB><CRC-32 of every byte before this line>
//! ```
//!
//! Lines end in LF; the sections come in this order (each may be empty); tag and hostname
//! are tab-escaped; a user's host index counts the `host` lines from 0; users are oldest
//! first. The `end` line's counts and checksum make a truncated or altered file an error
//! rather than a smaller state. [`decode`] has hard limits and never panics; it checks the
//! format only, [`director_core::Director::restore`] checks the meaning.

use std::net::IpAddr;

use director_core::{RingHost, SavedUser, Snapshot};

use crate::tabescape::{escape_into, unescape};
use crate::value::write_uint;

/// First word of the first line.
pub const MAGIC: &str = "director-state";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;
/// Longest line accepted (a host line with a 1000-byte tag, escaped, fits).
pub const MAX_LINE_LEN: usize = 8192;
/// Most `host` lines (the core's host limit).
pub const MAX_HOSTS: usize = director_core::host::MAX_HOSTS;
/// Most `config` lines.
pub const MAX_CONFIG_HOSTS: usize = director_core::host::MAX_HOSTS;
/// Most `user` lines: far above any deployment (1 M users make a 26 MB file), low enough
/// that a hostile file cannot make the decoder allocate without bound.
pub const MAX_USERS: usize = 50_000_000;
/// Largest file read at all (checked by the reader before [`decode`]).
pub const MAX_FILE_LEN: u64 = 2 << 30;

/// Why a file is not a valid state file, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} (byte {byte}): {kind}")]
pub struct StateFileError {
    /// 1-based line number of the offending line (one past the last for a truncated file).
    pub line: usize,
    /// Byte offset of the start of that line.
    pub byte: usize,
    /// What is wrong.
    pub kind: StateFileErrorKind,
}

/// What is wrong with a state file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateFileErrorKind {
    /// The first line is not `director-state<TAB>N`.
    #[error("not a director state file")]
    NotAStateFile,
    /// A version this code does not read.
    #[error("unsupported format version {0} (this directord reads version {VERSION})")]
    UnsupportedVersion(String),
    /// The file ends before its `end` line (or in the middle of a line).
    #[error("truncated: the file ends before its end line")]
    Truncated,
    /// A line longer than [`MAX_LINE_LEN`].
    #[error("line longer than {MAX_LINE_LEN} bytes")]
    LineTooLong,
    /// A line that does not parse.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A line of a section that is already over, or an unknown line.
    #[error("unexpected line {0:?}")]
    Unexpected(String),
    /// More lines of a kind than the limit.
    #[error("more than {limit} {what} lines")]
    TooMany {
        /// Which lines.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The `end` line's count differs from the lines read.
    #[error("end line says {said} {what} lines, the file has {found}")]
    CountMismatch {
        /// Which lines.
        what: &'static str,
        /// The end line's count.
        said: u64,
        /// Lines read.
        found: usize,
    },
    /// The body does not match the `end` line's checksum.
    #[error("checksum mismatch: end line says {stored:08x}, the body has {computed:08x}")]
    ChecksumMismatch {
        /// From the end line.
        stored: u32,
        /// Of the bytes read.
        computed: u32,
    },
    /// Bytes after the `end` line.
    #[error("data after the end line")]
    TrailingData,
}

/// Encodes `snapshot` (its users in the order given, hosts indexed as given).
pub fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + snapshot.hosts.len() * 64 + snapshot.users.len() * 26);
    out.extend_from_slice(MAGIC.as_bytes());
    out.push(b'\t');
    write_uint(&mut out, u64::from(VERSION));
    out.extend_from_slice(b"\nsaved\t");
    write_uint(&mut out, snapshot.saved_at);
    out.push(b'\n');
    for h in &snapshot.hosts {
        out.extend_from_slice(b"host\t");
        out.extend_from_slice(h.ip.to_string().as_bytes());
        out.push(b'\t');
        write_uint(&mut out, u64::from(h.vhost_count));
        out.extend_from_slice(if h.down { b"\tD" } else { b"\tU" });
        write_uint(&mut out, h.last_updown_change);
        out.push(b'\t');
        escape_into(&mut out, h.tag.as_bytes());
        out.push(b'\t');
        escape_into(&mut out, h.hostname.as_deref().unwrap_or("").as_bytes());
        out.push(b'\n');
    }
    for ip in &snapshot.config_hosts {
        out.extend_from_slice(b"config\t");
        out.extend_from_slice(ip.to_string().as_bytes());
        out.push(b'\n');
    }
    for u in &snapshot.users {
        out.extend_from_slice(b"user\t");
        write_uint(&mut out, u64::from(u.hash));
        out.push(b'\t');
        write_uint(&mut out, u64::from(u.host));
        out.push(b'\t');
        write_uint(&mut out, u64::from(u.timestamp));
        out.push(b'\n');
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(b"end\t");
    write_uint(&mut out, snapshot.hosts.len() as u64);
    out.push(b'\t');
    write_uint(&mut out, snapshot.config_hosts.len() as u64);
    out.push(b'\t');
    write_uint(&mut out, snapshot.users.len() as u64);
    out.push(b'\t');
    out.extend_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
    out
}

/// Where the decoder is: each section may only follow the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Hosts,
    Config,
    Users,
}

/// Decodes a whole state file.
pub fn decode(input: &[u8]) -> Result<Snapshot, StateFileError> {
    let mut lines = Lines {
        input,
        pos: 0,
        line: 0,
        last_start: 0,
    };
    let err = |lines: &Lines, kind| StateFileError {
        line: lines.line,
        byte: lines.start(),
        kind,
    };

    let header = lines.next().map_err(|k| err(&lines, k))?;
    let version = match header.split(|&b| b == b'\t').collect::<Vec<_>>().as_slice() {
        [magic, version] if *magic == MAGIC.as_bytes() => *version,
        _ => return Err(err(&lines, StateFileErrorKind::NotAStateFile)),
    };
    if version != VERSION.to_string().as_bytes() {
        return Err(err(
            &lines,
            StateFileErrorKind::UnsupportedVersion(String::from_utf8_lossy(version).into_owned()),
        ));
    }
    let saved = lines.next().map_err(|k| err(&lines, k))?;
    let saved_at = match fields::<2>(saved) {
        Some([b"saved", t]) => parse_u64(t),
        _ => None,
    }
    .ok_or_else(|| err(&lines, StateFileErrorKind::Malformed("saved line")))?;

    let mut snapshot = Snapshot {
        saved_at,
        ..Snapshot::default()
    };
    let mut section = Section::Hosts;
    loop {
        let body_len = lines.pos;
        let line = lines.next().map_err(|k| err(&lines, k))?;
        let kind = line.split(|&b| b == b'\t').next().unwrap_or_default();
        let (this, parsed) = match kind {
            b"host" => (
                Section::Hosts,
                parse_host(line).map(|h| snapshot.hosts.push(h)),
            ),
            b"config" => (
                Section::Config,
                parse_config(line).map(|ip| snapshot.config_hosts.push(ip)),
            ),
            b"user" => (
                Section::Users,
                parse_user(line).map(|u| snapshot.users.push(u)),
            ),
            b"end" => {
                check_end(line, &input[..body_len], &snapshot).map_err(|k| err(&lines, k))?;
                if lines.pos != input.len() {
                    return Err(StateFileError {
                        line: lines.line + 1,
                        byte: lines.pos,
                        kind: StateFileErrorKind::TrailingData,
                    });
                }
                return Ok(snapshot);
            }
            _ => return Err(err(&lines, StateFileErrorKind::Unexpected(preview(line)))),
        };
        if this < section {
            return Err(err(&lines, StateFileErrorKind::Unexpected(preview(line))));
        }
        section = this;
        parsed.map_err(|k| err(&lines, k))?;
        let (what, count, limit) = match this {
            Section::Hosts => ("host", snapshot.hosts.len(), MAX_HOSTS),
            Section::Config => ("config", snapshot.config_hosts.len(), MAX_CONFIG_HOSTS),
            Section::Users => ("user", snapshot.users.len(), MAX_USERS),
        };
        if count > limit {
            return Err(err(&lines, StateFileErrorKind::TooMany { what, limit }));
        }
    }
}

/// The first bytes of a line, for an error message.
fn preview(line: &[u8]) -> String {
    let cut = &line[..line.len().min(40)];
    crate::log_text::LogText(cut).to_string()
}

fn check_end(line: &[u8], body: &[u8], s: &Snapshot) -> Result<(), StateFileErrorKind> {
    let Some([_, hosts, configs, users, crc]) = fields::<5>(line) else {
        return Err(StateFileErrorKind::Malformed("end line"));
    };
    let stored = std::str::from_utf8(crc)
        .ok()
        // Lowercase only, as written: any other byte is an altered file.
        .filter(|c| c.len() == 8 && c.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or(StateFileErrorKind::Malformed("end line checksum"))?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(StateFileErrorKind::ChecksumMismatch { stored, computed });
    }
    for (what, field, found) in [
        ("host", hosts, s.hosts.len()),
        ("config", configs, s.config_hosts.len()),
        ("user", users, s.users.len()),
    ] {
        let said = parse_u64(field).ok_or(StateFileErrorKind::Malformed("end line count"))?;
        if said != found as u64 {
            return Err(StateFileErrorKind::CountMismatch { what, said, found });
        }
    }
    Ok(())
}

fn parse_host(line: &[u8]) -> Result<RingHost, StateFileErrorKind> {
    let bad = StateFileErrorKind::Malformed("host line");
    let Some([_, ip, vhosts, updown, tag, hostname]) = fields::<6>(line) else {
        return Err(bad);
    };
    let down = match updown.first() {
        Some(b'U') => false,
        Some(b'D') => true,
        _ => return Err(bad),
    };
    let text = |b: &[u8]| String::from_utf8(unescape(b)).ok();
    let hostname = text(hostname).ok_or(StateFileErrorKind::Malformed("host name"))?;
    Ok(RingHost {
        ip: parse_ip(ip).ok_or(StateFileErrorKind::Malformed("host address"))?,
        vhost_count: parse_u32(vhosts).ok_or(StateFileErrorKind::Malformed("vhost count"))?,
        tag: text(tag).ok_or(StateFileErrorKind::Malformed("host tag"))?,
        down,
        last_updown_change: parse_u64(&updown[1..]).ok_or(bad)?,
        hostname: Some(hostname).filter(|h| !h.is_empty()),
    })
}

fn parse_config(line: &[u8]) -> Result<IpAddr, StateFileErrorKind> {
    match fields::<2>(line) {
        Some([_, ip]) => parse_ip(ip).ok_or(StateFileErrorKind::Malformed("config address")),
        None => Err(StateFileErrorKind::Malformed("config line")),
    }
}

fn parse_user(line: &[u8]) -> Result<SavedUser, StateFileErrorKind> {
    let bad = StateFileErrorKind::Malformed("user line");
    let Some([_, hash, host, timestamp]) = fields::<4>(line) else {
        return Err(bad);
    };
    Ok(SavedUser {
        hash: parse_u32(hash).ok_or(bad.clone())?,
        host: parse_u32(host).ok_or(bad.clone())?,
        timestamp: parse_u32(timestamp).ok_or(bad)?,
    })
}

/// Exactly `N` tab-separated fields.
fn fields<const N: usize>(line: &[u8]) -> Option<[&[u8]; N]> {
    let mut out = [&line[..0]; N];
    let mut it = line.split(|&b| b == b'\t');
    for slot in &mut out {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

/// Strict decimal: digits only, no sign, no leading zeros beyond a lone `0`.
fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &d| {
        let digit = char::from(d).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn parse_u32(b: &[u8]) -> Option<u32> {
    parse_u64(b).and_then(|v| u32::try_from(v).ok())
}

fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// LF-terminated lines with a length limit; a last line without LF is a truncation.
struct Lines<'a> {
    input: &'a [u8],
    pos: usize,
    /// Number of the line last returned (1-based).
    line: usize,
    /// Byte offset where that line starts.
    last_start: usize,
}

impl<'a> Lines<'a> {
    /// Start of the line last returned (or of the missing one after a truncation).
    fn start(&self) -> usize {
        self.last_start
    }

    fn next(&mut self) -> Result<&'a [u8], StateFileErrorKind> {
        self.line += 1;
        self.last_start = self.pos;
        let rest = &self.input[self.pos..];
        let window = &rest[..rest.len().min(MAX_LINE_LEN + 1)];
        match window.iter().position(|&b| b == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None if window.len() > MAX_LINE_LEN => Err(StateFileErrorKind::LineTooLong),
            None => Err(StateFileErrorKind::Truncated),
        }
    }
}
