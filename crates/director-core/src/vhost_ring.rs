//! Vhost rings (§2.2–2.5): which host a user hash maps to when the user has no assignment.
//!
//! One ring per tag. Each up host with `vhost_count > 0` contributes points
//! `first4BE(MD5("<ip text>-<i>"))`; a hash maps to the owner of the first point `>=` it,
//! wrapping to the first point. The ring is a flat sorted `Vec<u32>` plus a parallel
//! `Vec<HostId>`, so a lookup is one allocation-free binary search over 4-byte keys.
//!
//! [`HashingMode::Modulo`] reproduces the 2.2-era non-consistent selection
//! (`director_consistent_hashing = no`): hosts in IP order, each repeated `vhost_count`
//! times, `list[hash % len]`. Dovecot 2.3 has no such setting (always consistent).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::hash::md5_first_u32;
use crate::host::{HostId, HostList, TagId};

/// How hashes map to hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashingMode {
    /// Consistent hashing over vhost points (2.3, and 2.2 with `director_consistent_hashing = yes`).
    #[default]
    Consistent,
    /// 2.2's `hash % total_vhosts` over hosts in IP order.
    Modulo,
}

/// Dovecot's `bsearch_insert_pos` over a sorted slice, replicated step for step: the first
/// index whose value is `>= key`, except that an exact hit returns whichever equal element
/// the midpoint landed on. May return `v.len()`.
#[inline]
pub fn bsearch_insert_pos(v: &[u32], key: u32) -> usize {
    let (mut idx, mut l, mut r) = (0usize, 0usize, v.len());
    while l < r {
        idx = (l + r) / 2;
        let x = v[idx];
        if key > x {
            l = idx + 1;
        } else if key < x {
            r = idx;
        } else {
            return idx;
        }
    }
    if l > idx {
        idx += 1;
    }
    idx
}

/// One tag's ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Consistent: sorted vhost positions. Modulo: cumulative end index per host.
    keys: Vec<u32>,
    /// Owner of each entry of `keys`.
    owners: Vec<HostId>,
    /// Modulo mode only: total vhosts.
    total: u64,
    mode: HashingMode,
}

impl Ring {
    /// Host for a user hash, `None` if the ring is empty.
    #[inline]
    pub fn lookup(&self, hash: u32) -> Option<HostId> {
        if self.keys.is_empty() {
            return None;
        }
        match self.mode {
            HashingMode::Consistent => {
                let mut idx = bsearch_insert_pos(&self.keys, hash);
                if idx == self.keys.len() {
                    idx = 0;
                }
                self.owners.get(idx).copied()
            }
            HashingMode::Modulo => {
                let pos = u64::from(hash) % self.total.max(1);
                // keys[i] = cumulative count through host i: first with keys[i] > pos.
                let i = self.keys.partition_point(|&end| u64::from(end) <= pos);
                self.owners.get(i).copied()
            }
        }
    }

    /// Number of points (consistent) or hosts (modulo).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No points?
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `(vhash, host)` points in ring order (consistent mode).
    pub fn points(&self) -> impl Iterator<Item = (u32, HostId)> + '_ {
        self.keys.iter().copied().zip(self.owners.iter().copied())
    }
}

/// Cache of each address's vhost positions (`MD5("<ip>-<i>")` prefixes), so rebuilding
/// after an up/down toggle costs a sort, not thousands of MD5s.
#[derive(Debug, Clone, Default)]
pub struct VhashCache {
    by_ip: HashMap<IpAddr, Vec<u32>>,
}

impl VhashCache {
    /// Positions 0..count of a host.
    pub fn get(&mut self, ip: IpAddr, ip_text: &str, count: u32) -> &[u32] {
        let v = self.by_ip.entry(ip).or_default();
        let mut buf = String::with_capacity(ip_text.len() + 6);
        while v.len() < count as usize {
            buf.clear();
            buf.push_str(ip_text);
            buf.push('-');
            buf.push_str(&v.len().to_string());
            v.push(md5_first_u32(buf.as_bytes()));
        }
        &v[..count as usize]
    }

    /// Drops cached positions of addresses not in `keep`.
    pub fn retain(&mut self, keep: impl Fn(&IpAddr) -> bool) {
        self.by_ip.retain(|ip, _| keep(ip));
    }
}

/// The rings of every tag, built from one host list generation.
#[derive(Debug, Clone, Default)]
pub struct RingSet {
    rings: Vec<Ring>,
    generation: u64,
    mode: HashingMode,
}

/// Position of a vhost point as computed without the cache (for tests and tooling).
pub fn vhash(ip_text: &str, i: u32) -> u32 {
    md5_first_u32(format!("{ip_text}-{i}").as_bytes())
}

impl RingSet {
    /// Builds all rings for `hosts`.
    pub fn build(hosts: &HostList, mode: HashingMode, cache: &mut VhashCache) -> Self {
        let ntags = hosts.tag_ids().count();
        let mut rings: Vec<Ring> = (0..ntags)
            .map(|_| Ring {
                mode,
                ..Ring::default()
            })
            .collect();
        match mode {
            HashingMode::Consistent => {
                let mut points: Vec<Vec<(u32, IpAddr, HostId)>> = vec![Vec::new(); ntags];
                for (id, h) in hosts.iter() {
                    if h.down || h.vhost_count == 0 {
                        continue;
                    }
                    let Some(p) = points.get_mut(h.tag.0 as usize) else {
                        continue;
                    };
                    for &v in cache.get(h.ip, &h.ip_text, h.vhost_count) {
                        p.push((v, h.ip, id));
                    }
                }
                for (ring, mut p) in rings.iter_mut().zip(points) {
                    p.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
                    ring.keys = p.iter().map(|x| x.0).collect();
                    ring.owners = p.iter().map(|x| x.2).collect();
                }
            }
            HashingMode::Modulo => {
                for (id, h) in hosts.iter() {
                    if h.down || h.vhost_count == 0 {
                        continue;
                    }
                    let Some(ring) = rings.get_mut(h.tag.0 as usize) else {
                        continue;
                    };
                    ring.total += u64::from(h.vhost_count);
                    // At most MAX_HOSTS * VHOST_MAX = 65 M: fits in u32.
                    ring.keys.push(ring.total as u32);
                    ring.owners.push(id);
                }
            }
        }
        Self {
            rings,
            generation: hosts.generation(),
            mode,
        }
    }

    /// The host list generation this set was built from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Hashing mode used.
    pub fn mode(&self) -> HashingMode {
        self.mode
    }

    /// Ring of a tag (`None` if the tag has never existed).
    pub fn ring(&self, tag: TagId) -> Option<&Ring> {
        self.rings.get(tag.0 as usize)
    }

    /// Host for (tag, hash).
    #[inline]
    pub fn lookup(&self, tag: TagId, hash: u32) -> Option<HostId> {
        self.rings.get(tag.0 as usize)?.lookup(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts3() -> HostList {
        let mut l = HostList::new();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            l.add(ip.parse().expect("ip"), "", 100, None).expect("add");
        }
        l
    }

    fn ip_of(l: &HostList, id: Option<HostId>) -> String {
        id.and_then(|id| l.get(id))
            .map_or(String::new(), |h| h.ip_text.clone())
    }

    #[test]
    fn vhash_examples() {
        assert_eq!(vhash("10.0.0.1", 0), 1014535201);
        assert_eq!(vhash("10.0.0.1", 1), 3096594127);
        assert_eq!(vhash("10.0.0.1", 2), 2719269830);
        assert_eq!(vhash("2001:db8::1", 0), 718735967);
    }

    #[test]
    fn worked_example_2_4() {
        let mut l = hosts3();
        let mut c = VhashCache::default();
        let rs = RingSet::build(&l, HashingMode::Consistent, &mut c);
        let r = rs.ring(TagId::UNTAGGED).expect("ring");
        let start: Vec<(u32, String)> = r
            .points()
            .take(5)
            .map(|(v, id)| (v, ip_of(&l, Some(id))))
            .collect();
        assert_eq!(
            start,
            [
                (4679418, "10.0.0.3".to_string()),
                (9647523, "10.0.0.1".into()),
                (29473875, "10.0.0.2".into()),
                (40677071, "10.0.0.1".into()),
                (43287597, "10.0.0.3".into())
            ]
        );
        assert_eq!(r.points().last().map(|p| p.0), Some(4285388947));
        let t = TagId::UNTAGGED;
        assert_eq!(ip_of(&l, rs.lookup(t, 3813799143)), "10.0.0.3");
        assert_eq!(ip_of(&l, rs.lookup(t, 3244357836)), "10.0.0.1");
        assert_eq!(ip_of(&l, rs.lookup(t, 2677887420)), "10.0.0.2");
        assert_eq!(ip_of(&l, rs.lookup(t, 4294407931)), "10.0.0.3");
        // Exact hits on a point select that point.
        assert_eq!(ip_of(&l, rs.lookup(t, 9647523)), "10.0.0.1");

        let id2 = l.lookup(&"10.0.0.2".parse().expect("ip")).expect("host");
        l.get_mut(id2).expect("host").down = true;
        l.touch();
        let rs = RingSet::build(&l, HashingMode::Consistent, &mut c);
        assert_eq!(ip_of(&l, rs.lookup(t, 2677887420)), "10.0.0.3");
        assert_eq!(ip_of(&l, rs.lookup(t, 3813799143)), "10.0.0.3");
        assert_eq!(ip_of(&l, rs.lookup(t, 3244357836)), "10.0.0.1");
    }

    #[test]
    fn modulo_mode_2_5() {
        let l = hosts3();
        let rs = RingSet::build(&l, HashingMode::Modulo, &mut VhashCache::default());
        // 2677887420 % 300 = 120 → the second host.
        assert_eq!(
            ip_of(&l, rs.lookup(TagId::UNTAGGED, 2677887420)),
            "10.0.0.2"
        );
        assert_eq!(ip_of(&l, rs.lookup(TagId::UNTAGGED, 0)), "10.0.0.1");
        assert_eq!(ip_of(&l, rs.lookup(TagId::UNTAGGED, 299)), "10.0.0.3");
    }

    #[test]
    fn empty_and_unknown() {
        let mut l = HostList::new();
        let t = l.intern_tag("x").expect("tag");
        l.add("10.0.0.1".parse().expect("ip"), "", 0, None)
            .expect("add");
        let rs = RingSet::build(&l, HashingMode::Consistent, &mut VhashCache::default());
        assert_eq!(rs.lookup(TagId::UNTAGGED, 5), None);
        assert_eq!(rs.lookup(t, 5), None);
        assert_eq!(rs.lookup(TagId(99), 5), None);
    }

    #[test]
    fn bsearch_matches_reference_loop() {
        let v = [10, 20, 20, 20, 30];
        assert_eq!(bsearch_insert_pos(&v, 5), 0);
        assert_eq!(bsearch_insert_pos(&v, 10), 0);
        assert_eq!(bsearch_insert_pos(&v, 11), 1);
        assert_eq!(bsearch_insert_pos(&v, 20), 2);
        assert_eq!(bsearch_insert_pos(&v, 31), 5);
        assert_eq!(bsearch_insert_pos(&[], 31), 0);
    }
}
