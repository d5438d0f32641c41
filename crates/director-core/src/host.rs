//! Mail hosts (backends) and the host list (§2.1).
//!
//! A host is identified by its IP alone. The list is kept in Dovecot's IP order (address
//! family first, then the raw bytes, §0) because every "sorted by IP" output and the
//! `hosts_hash` depend on it. Hosts get a small stable [`HostId`] so that user records and
//! rings can refer to them with two bytes instead of a pointer or an address.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Vhost count of a host added without one (Dovecot's `VHOST_DEFAULT`? — the admin and
/// config default).
pub const VHOST_DEFAULT: u32 = 100;
/// Largest vhost count the admin may set (`vhost count too large` above).
pub const VHOST_MAX: u32 = 1000;
/// Most hosts kept at once; host ids are `u16`. Dovecot has no limit; 65 000 backends is
/// far beyond any real deployment.
pub const MAX_HOSTS: usize = 65_000;
/// Most distinct tags (ids share a `u16` with record flags in the user directory).
pub const MAX_TAGS: usize = 0x3FFF;
/// Longest tag accepted (bounded by the 1024-byte admin/ring line anyway).
pub const MAX_TAG_LEN: usize = 1000;

/// Stable index of a host in a [`HostList`]; reused only after the host was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostId(pub u16);

/// Interned tag; `TagId(0)` is the empty (default) tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(pub u16);

impl TagId {
    /// The empty tag.
    pub const UNTAGGED: TagId = TagId(0);
}

/// Dovecot's `net_ip_cmp`: family (IPv4 before IPv6), then address bytes.
///
/// Rust's `IpAddr` ordering is exactly this (V4 < V6, then octets), which a test pins.
#[inline]
pub fn ip_cmp(a: &IpAddr, b: &IpAddr) -> Ordering {
    a.cmp(b)
}

/// Text form of an address exactly as glibc's `inet_ntop` writes it.
///
/// Rust's `Display` differs for IPv4-*compatible* addresses: glibc prints `::1.2.3.4` and
/// `::0.1.0.0` (first 96 bits zero, word 6 non-zero), Rust prints `::102:304`. Since the text
/// is hashed into vhost positions, we follow glibc. Everything else (IPv4-mapped
/// `::ffff:a.b.c.d`, zero-run compression choosing the first longest run, no compression of
/// a single zero word) is identical; tests pin the corner cases against values printed by
/// Python's `socket.inet_ntop` (glibc).
pub fn inet_ntop(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => inet_ntop6(v6),
    }
}

fn inet_ntop6(ip: &Ipv6Addr) -> String {
    let words = ip.segments();
    // Longest run of zero words (first one wins ties), only if at least 2 long.
    let (mut best_base, mut best_len) = (None::<usize>, 0usize);
    let mut i = 0;
    while i < 8 {
        if words[i] == 0 {
            let start = i;
            while i < 8 && words[i] == 0 {
                i += 1;
            }
            let len = i - start;
            if len > best_len {
                best_base = Some(start);
                best_len = len;
            }
        } else {
            i += 1;
        }
    }
    if best_len < 2 {
        best_base = None;
    }
    let mut out = String::with_capacity(40);
    let mut i = 0;
    while i < 8 {
        if let Some(b) = best_base {
            if i >= b && i < b + best_len {
                if i == b {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        // Encapsulated IPv4 (compatible or mapped).
        if i == 6
            && best_base == Some(0)
            && (best_len == 6 || (best_len == 5 && words[5] == 0xffff))
        {
            let o = ip.octets();
            let _ = write!(out, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
            return out;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if best_base.is_some_and(|b| b + best_len == 8) {
        out.push(':');
    }
    out
}

/// Parses an IP the way Dovecot's `net_addr2ip` does: IPv6 (optionally in `[...]`) if the
/// text contains `:`, else anything glibc `inet_aton` accepts (`1.2.3.4`, `0x7f.1`,
/// `12345`, octal `010.0.0.1`, and `1.2.3.4 junk`). Returns `None` when it is not an address.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    parse_ip_bytes(s.as_bytes())
}

/// [`parse_ip`] on raw bytes (wire fields need not be UTF-8).
pub fn parse_ip_bytes(s: &[u8]) -> Option<IpAddr> {
    if s.contains(&b':') {
        let inner = match (s.first(), s.last()) {
            (Some(b'['), Some(b']')) if s.len() >= 2 => &s[1..s.len() - 1],
            _ => s,
        };
        let text = std::str::from_utf8(inner).ok()?;
        text.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        inet_aton(s).map(IpAddr::V4)
    }
}

/// glibc `inet_aton`: 1–4 dot-separated parts, each decimal, octal (`0` prefix) or hex
/// (`0x`/`0X` prefix); the last part fills the remaining bytes (`a`, `a.b` (b: 24 bits),
/// `a.b.c` (c: 16 bits), `a.b.c.d`). Parsing stops at the first ASCII whitespace, after
/// which anything is accepted (checked against glibc through Python's `socket.inet_aton`).
pub fn inet_aton(s: &[u8]) -> Option<Ipv4Addr> {
    let end = s
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .unwrap_or(s.len());
    let s = &s[..end];
    if s.is_empty() {
        return None;
    }
    let mut parts = [0u32; 4];
    let mut n = 0;
    for part in s.split(|&b| b == b'.') {
        if n == 4 {
            return None;
        }
        parts[n] = aton_part(part)?;
        n += 1;
    }
    let (head, last) = (&parts[..n - 1], parts[n - 1]);
    if head.iter().any(|&p| p > 0xff) {
        return None;
    }
    let last_max: u32 = match head.len() {
        0 => u32::MAX,
        1 => 0x00ff_ffff,
        2 => 0xffff,
        _ => 0xff,
    };
    if last > last_max {
        return None;
    }
    let mut value: u32 = last;
    for (i, &p) in head.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(value))
}

/// One `inet_aton` part: `0x` hex (at least one digit), `0` octal, or decimal.
fn aton_part(p: &[u8]) -> Option<u32> {
    let (digits, radix) = if p.len() >= 2 && p[0] == b'0' && (p[1] == b'x' || p[1] == b'X') {
        (&p[2..], 16)
    } else if p.len() >= 2 && p[0] == b'0' {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() && radix != 8 {
        return None;
    }
    let mut v: u32 = 0;
    for &d in digits {
        let digit = char::from(d).to_digit(radix)?;
        v = v.checked_mul(radix)?.checked_add(digit)?;
    }
    Some(v)
}

/// One backend (§2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailHost {
    /// The address; the host's identity.
    pub ip: IpAddr,
    /// `inet_ntop` text of `ip`, as hashed into vhost positions and shown to admins.
    pub ip_text: String,
    /// Interned tag (see [`HostList::tag_name`]).
    pub tag: TagId,
    /// Number of ring points, 0..=[`VHOST_MAX`] (0 = takes no new users).
    pub vhost_count: u32,
    /// Down hosts get no new users; existing assignments stay.
    pub down: bool,
    /// Unix time of the last up/down change (0 = never).
    pub last_updown_change: u64,
    /// Host name from the config (used for TLS verification / `hostip=`), if any.
    pub hostname: Option<String>,
    /// Changed locally since the last completed ring SYNC (admin gets "already being updated").
    pub desynced: bool,
}

/// What a host looks like to admins (HOST-LIST row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// Address.
    pub ip: IpAddr,
    /// Vhost count.
    pub vhost_count: u32,
    /// Users currently assigned.
    pub user_count: u32,
    /// Tag text (`""` = untagged).
    pub tag: String,
    /// Down?
    pub down: bool,
    /// Unix time of the last up/down change.
    pub last_updown_change: u64,
    /// Configured host name, if any.
    pub hostname: Option<String>,
}

/// Errors from host list changes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostListError {
    /// [`MAX_HOSTS`] reached.
    #[error("too many hosts (limit {MAX_HOSTS})")]
    TooManyHosts,
    /// [`MAX_TAGS`] reached.
    #[error("too many distinct tags (limit {MAX_TAGS})")]
    TooManyTags,
    /// Tag longer than [`MAX_TAG_LEN`].
    #[error("tag too long (limit {MAX_TAG_LEN} bytes)")]
    TagTooLong,
}

/// The set of hosts, sorted by IP, with stable ids and interned tags.
#[derive(Debug, Clone, Default)]
pub struct HostList {
    slots: Vec<Option<MailHost>>,
    free: Vec<u16>,
    /// Ids in IP order.
    sorted: Vec<HostId>,
    by_ip: HashMap<IpAddr, HostId>,
    tags: Vec<String>,
    tag_ids: HashMap<String, TagId>,
    /// Bumped on every change that can affect rings or `hosts_hash`.
    generation: u64,
}

impl HostList {
    /// An empty list.
    pub fn new() -> Self {
        let mut l = Self::default();
        l.tags.push(String::new());
        l.tag_ids.insert(String::new(), TagId::UNTAGGED);
        l
    }

    /// Changes whenever hosts, vhosts, down state or tags change (rings cache on it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// No hosts?
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Interns a tag, creating an id if new.
    pub fn intern_tag(&mut self, tag: &str) -> Result<TagId, HostListError> {
        if let Some(t) = self.tag_ids.get(tag) {
            return Ok(*t);
        }
        if tag.len() > MAX_TAG_LEN {
            return Err(HostListError::TagTooLong);
        }
        if self.tags.len() >= MAX_TAGS {
            return Err(HostListError::TooManyTags);
        }
        let id = TagId(self.tags.len() as u16);
        self.tags.push(tag.to_string());
        self.tag_ids.insert(tag.to_string(), id);
        Ok(id)
    }

    /// The id of an existing tag (no interning: unknown tags have no hosts).
    pub fn tag_id(&self, tag: &str) -> Option<TagId> {
        // Almost every cluster has one or a few tags: a scan beats hashing the name, and
        // this runs twice per lookup on the hot path. Tag 0 is always the untagged "".
        if tag.is_empty() {
            return Some(TagId(0));
        }
        if self.tags.len() <= 8 {
            return self
                .tags
                .iter()
                .position(|t| t.as_str() == tag)
                .map(|i| TagId(i as u16));
        }
        self.tag_ids.get(tag).copied()
    }

    /// Text of a tag id.
    pub fn tag_name(&self, tag: TagId) -> &str {
        self.tags.get(tag.0 as usize).map_or("", String::as_str)
    }

    /// All interned tags (some may have no hosts any more).
    pub fn tag_ids(&self) -> impl Iterator<Item = TagId> + '_ {
        (0..self.tags.len()).map(|i| TagId(i as u16))
    }

    /// Host by id.
    pub fn get(&self, id: HostId) -> Option<&MailHost> {
        self.slots.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// Mutable host by id. Callers changing ring-relevant fields must call [`Self::touch`].
    pub fn get_mut(&mut self, id: HostId) -> Option<&mut MailHost> {
        self.slots.get_mut(id.0 as usize).and_then(Option::as_mut)
    }

    /// Marks the list changed (invalidates rings).
    pub fn touch(&mut self) {
        self.generation += 1;
    }

    /// Id of the host with this IP.
    pub fn lookup(&self, ip: &IpAddr) -> Option<HostId> {
        self.by_ip.get(ip).copied()
    }

    /// Hosts in IP order.
    pub fn iter(&self) -> impl Iterator<Item = (HostId, &MailHost)> + '_ {
        self.sorted
            .iter()
            .filter_map(move |&id| self.get(id).map(|h| (id, h)))
    }

    /// Adds a host (up, `vhost_count` given) or returns the existing one's id unchanged.
    pub fn add(
        &mut self,
        ip: IpAddr,
        tag: &str,
        vhost_count: u32,
        hostname: Option<String>,
    ) -> Result<HostId, HostListError> {
        if let Some(id) = self.lookup(&ip) {
            return Ok(id);
        }
        if self.sorted.len() >= MAX_HOSTS {
            return Err(HostListError::TooManyHosts);
        }
        let tag = self.intern_tag(tag)?;
        let host = MailHost {
            ip,
            ip_text: inet_ntop(&ip),
            tag,
            vhost_count: vhost_count.min(VHOST_MAX),
            down: false,
            last_updown_change: 0,
            hostname,
            desynced: false,
        };
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(host);
                HostId(i)
            }
            None => {
                self.slots.push(Some(host));
                HostId((self.slots.len() - 1) as u16)
            }
        };
        let pos = self
            .sorted
            .partition_point(|&other| self.get(other).is_some_and(|h| h.ip < ip));
        self.sorted.insert(pos, id);
        self.by_ip.insert(ip, id);
        self.touch();
        Ok(id)
    }

    /// Removes a host. The caller drops its users first.
    pub fn remove(&mut self, id: HostId) -> Option<MailHost> {
        let host = self.slots.get_mut(id.0 as usize)?.take()?;
        self.by_ip.remove(&host.ip);
        self.sorted.retain(|&x| x != id);
        self.free.push(id.0);
        self.touch();
        Some(host)
    }

    /// Admin/ring view of a host.
    pub fn info(&self, id: HostId, user_count: u32) -> Option<HostInfo> {
        let h = self.get(id)?;
        Some(HostInfo {
            ip: h.ip,
            vhost_count: h.vhost_count,
            user_count,
            tag: self.tag_name(h.tag).to_string(),
            down: h.down,
            last_updown_change: h.last_updown_change,
            hostname: h.hostname.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().expect("v6"))
    }

    #[test]
    fn ntop_matches_glibc() {
        // Left: address bytes, right: Python socket.inet_ntop (glibc) output.
        let cases = [
            ("00000000000000000000000000000002", "::2"),
            ("00000000000000000000000001020304", "::1.2.3.4"),
            ("00000000000000000000ffff01020304", "::ffff:1.2.3.4"),
            ("00000000000000000000ffff00000000", "::ffff:0.0.0.0"),
            ("00000000000000000000000000000000", "::"),
            ("00000000000000000000000000000001", "::1"),
            ("0000000000000000ffff000000000000", "::ffff:0:0:0"),
            ("00000000000000000000000000010000", "::0.1.0.0"),
            ("20010db8000000000001000000000001", "2001:db8::1:0:0:1"),
            ("00000000000000000000000101020304", "::1:102:304"),
            ("00000000000000000000fffe01020304", "::fffe:102:304"),
        ];
        for (hex, want) in cases {
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).expect("hex");
            }
            let ip = IpAddr::V6(Ipv6Addr::from(b));
            assert_eq!(inet_ntop(&ip), want, "{hex}");
        }
        // The one documented difference from Rust's Display.
        assert_eq!(v6("::1.2.3.4").to_string(), "::102:304");
        assert_eq!(inet_ntop(&v6("2001:DB8::1")), "2001:db8::1");
        assert_eq!(inet_ntop(&v6("1:0:1:0:1:0:1:0")), "1:0:1:0:1:0:1:0");
        assert_eq!(inet_ntop(&v6("1:0:0:1:0:0:1:1")), "1::1:0:0:1:1");
        assert_eq!(inet_ntop(&v6("1:2:3:4:5:6:7:0")), "1:2:3:4:5:6:7:0");
        assert_eq!(inet_ntop(&v6("1:2:3:4:5:6:0:0")), "1:2:3:4:5:6::");
    }

    #[test]
    fn ntop_agrees_with_display_except_compat() {
        // Walk a spread of addresses: where the first 96 bits are not all zero, glibc and
        // Rust agree.
        for seed in 0u32..2000 {
            let mut b = [0u8; 16];
            for (i, byte) in b.iter_mut().enumerate() {
                let x = seed.wrapping_mul(2654435761).rotate_left(i as u32);
                *byte = if x % 3 == 0 { 0 } else { (x >> 8) as u8 };
            }
            let a = Ipv6Addr::from(b);
            if b[..12].iter().all(|&x| x == 0) {
                continue;
            }
            assert_eq!(inet_ntop(&IpAddr::V6(a)), a.to_string(), "{b:?}");
        }
    }

    #[test]
    fn ordering_is_family_then_bytes() {
        let mut v = [
            v6("::1"),
            "127.0.1.1".parse::<IpAddr>().expect("ip"),
            "10.0.0.1".parse().expect("ip"),
            v6("::"),
            "255.255.255.255".parse().expect("ip"),
        ];
        v.sort_by(ip_cmp);
        let t: Vec<String> = v.iter().map(inet_ntop).collect();
        assert_eq!(t, ["10.0.0.1", "127.0.1.1", "255.255.255.255", "::", "::1"]);
    }

    #[test]
    fn parse_ip_like_dovecot() {
        assert_eq!(parse_ip("12345"), Some("0.0.48.57".parse().expect("ip")));
        assert_eq!(parse_ip("127.1"), Some("127.0.0.1".parse().expect("ip")));
        assert_eq!(
            parse_ip("0x7f.0.0.1"),
            Some("127.0.0.1".parse().expect("ip"))
        );
        assert_eq!(parse_ip("010.0.0.1"), Some("8.0.0.1".parse().expect("ip")));
        assert_eq!(parse_ip("[::1]"), Some(v6("::1")));
        assert_eq!(parse_ip("::1"), Some(v6("::1")));
        assert_eq!(parse_ip("1.2.3.256"), None);
        assert_eq!(parse_ip("bad"), None);
        assert_eq!(parse_ip(""), None);
        assert_eq!(parse_ip("1..2"), None);
        assert_eq!(parse_ip("09.1.1.1"), None);
    }

    #[test]
    fn list_keeps_ip_order_and_ids() {
        let mut l = HostList::new();
        let c = l
            .add("10.0.0.3".parse().expect("ip"), "", 100, None)
            .expect("add");
        let a = l
            .add("10.0.0.1".parse().expect("ip"), "t", 100, None)
            .expect("add");
        let b = l.add(v6("::1"), "", 5, None).expect("add");
        let order: Vec<HostId> = l.iter().map(|(id, _)| id).collect();
        assert_eq!(order, vec![a, c, b]);
        assert_eq!(l.tag_name(l.get(a).expect("host").tag), "t");
        l.remove(c);
        let d = l
            .add("10.0.0.2".parse().expect("ip"), "", 100, None)
            .expect("add");
        assert_eq!(d, c, "slot reused");
        let order: Vec<HostId> = l.iter().map(|(id, _)| id).collect();
        assert_eq!(order, vec![a, d, b]);
    }
}
