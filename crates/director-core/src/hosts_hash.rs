//! `hosts_hash` (§2.6): a CRC-32 fingerprint of the host list sent in ring `SYNC` lines.
//!
//! Directors compare it to detect diverging host lists, so it must match Dovecot's value bit
//! for bit: per host in IP order, `(down ^ vhost_count)` and `net_ip_hash(ip)` as
//! little-endian (x86 host byte order) u32s, then the tag bytes; 0 becomes 1. Checked
//! against the values real 2.3.19 directors put in their SYNC lines (lab ring recording).

use std::net::IpAddr;

use crate::host::HostList;

/// Dovecot's `net_ip_hash`: IPv4 → the address bytes as they sit in memory (read back as a
/// native u32, so they appear verbatim); IPv6 → the PJW-style fold over the 16 bytes.
pub fn net_ip_hash_bytes(ip: &IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(v6) => {
            let mut h: u32 = 0;
            for &b in &v6.octets() {
                h = (h << 4).wrapping_add(u32::from(b));
                let g = h & 0xF000_0000;
                if g != 0 {
                    h ^= g >> 24;
                    h ^= g;
                }
            }
            h.to_le_bytes()
        }
    }
}

/// `hosts_hash` of a host list.
pub fn hosts_hash(hosts: &HostList) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for (_, h) in hosts.iter() {
        let num = u32::from(h.down) ^ h.vhost_count;
        crc.update(&num.to_le_bytes());
        crc.update(&net_ip_hash_bytes(&h.ip));
        crc.update(hosts.tag_name(h.tag).as_bytes());
    }
    match crc.finalize() {
        0 => 1,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> HostList {
        let mut l = HostList::new();
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            l.add(ip.parse().expect("ip"), "", 100, None).expect("add");
        }
        l
    }

    #[test]
    fn spec_examples() {
        let mut l = three();
        assert_eq!(hosts_hash(&l), 1239033269);
        let id = l.lookup(&"10.0.0.2".parse().expect("ip")).expect("host");
        l.get_mut(id).expect("host").down = true;
        assert_eq!(hosts_hash(&l), 3887248420);
        let h = l.get_mut(id).expect("host");
        h.down = false;
        h.vhost_count = 0;
        assert_eq!(hosts_hash(&l), 2762663093);

        let mut one = HostList::new();
        one.add("10.0.0.1".parse().expect("ip"), "a", 100, None)
            .expect("add");
        assert_eq!(hosts_hash(&one), 2392374312);
    }

    /// Observed on the wire from Dovecot 2.3.19 (SYNC lines in the lab's
    /// `ring-proxy/transcripts/ring-events.log`): settles spec §15 item 1 (little-endian).
    #[test]
    fn matches_dovecot_on_the_wire() {
        let mut l = HostList::new();
        for ip in ["127.0.1.1", "127.0.1.2", "127.0.1.3"] {
            l.add(ip.parse().expect("ip"), "", 100, None).expect("add");
        }
        assert_eq!(hosts_hash(&l), 1410458694);
        // ring-events.log: add 127.0.1.4 50, update 200, down, up, remove.
        let id = l
            .add("127.0.1.4".parse().expect("ip"), "", 50, None)
            .expect("add");
        assert_eq!(hosts_hash(&l), 2464432032);
        l.get_mut(id).expect("host").vhost_count = 200;
        assert_eq!(hosts_hash(&l), 4233049890);
        l.get_mut(id).expect("host").down = true;
        assert_eq!(hosts_hash(&l), 820328380);
        l.get_mut(id).expect("host").down = false;
        assert_eq!(hosts_hash(&l), 4233049890);
        l.remove(id);
        assert_eq!(hosts_hash(&l), 1410458694);
    }

    #[test]
    fn empty_list_is_one() {
        // CRC of nothing is 0 → 1.
        assert_eq!(hosts_hash(&HostList::new()), 1);
    }
}
