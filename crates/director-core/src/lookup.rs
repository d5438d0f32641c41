//! The three answers of `USER-LOOKUP` / `doveadm director status USER` (§3.5):
//! *Current* (the live assignment), *Hashed* (the ring over the live hosts) and *Initial
//! config* (the ring over `director_mail_servers` as configured: every host 100 vhosts, up,
//! with its configured tag — runtime changes never affect it).

use std::net::IpAddr;

use crate::host::{HostList, HostListError, VHOST_DEFAULT};
use crate::vhost_ring::{HashingMode, RingSet, VhashCache};

/// One `director_mail_servers` entry after the config layer expanded ranges and resolved
/// names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigHost {
    /// Address.
    pub ip: IpAddr,
    /// Tag (`""` = untagged).
    pub tag: String,
    /// Host name it was resolved from, if it was a name.
    pub hostname: Option<String>,
}

impl ConfigHost {
    /// An untagged host given by address.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            tag: String::new(),
            hostname: None,
        }
    }
}

/// Answer to a user lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserLookup {
    /// Live assignment in the asked tag: host and expiry time (`timestamp + E`).
    pub current: Option<(IpAddr, u64)>,
    /// Ring over the current hosts of the tag.
    pub hashed: Option<IpAddr>,
    /// Ring over the original config hosts of the tag.
    pub initial: Option<IpAddr>,
}

/// The original config host list and its rings, fixed until a config reload.
#[derive(Debug, Clone)]
pub struct InitialConfig {
    hosts: HostList,
    rings: RingSet,
    config: Vec<ConfigHost>,
}

impl InitialConfig {
    /// Builds it from the config hosts (duplicates collapse: the same IP twice selects the
    /// same answers).
    pub fn new(config: &[ConfigHost], mode: HashingMode) -> Result<Self, HostListError> {
        let mut hosts = HostList::new();
        for c in config {
            hosts.add(c.ip, &c.tag, VHOST_DEFAULT, c.hostname.clone())?;
        }
        let rings = RingSet::build(&hosts, mode, &mut VhashCache::default());
        Ok(Self {
            hosts,
            rings,
            config: config.to_vec(),
        })
    }

    /// "Initial config" host for (tag, hash).
    pub fn lookup(&self, tag: &str, hash: u32) -> Option<IpAddr> {
        let t = self.hosts.tag_id(tag)?;
        let id = self.rings.lookup(t, hash)?;
        self.hosts.get(id).map(|h| h.ip)
    }

    /// The config hosts in IP order (HOST-LIST-REMOVED baseline).
    pub fn hosts(&self) -> &HostList {
        &self.hosts
    }

    /// The config entries as given.
    pub fn entries(&self) -> &[ConfigHost] {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_ignores_nothing_but_config() {
        let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.3"];
        let cfg: Vec<ConfigHost> = ips
            .iter()
            .map(|s| ConfigHost::new(s.parse().expect("ip")))
            .collect();
        let ic = InitialConfig::new(&cfg, HashingMode::Consistent).expect("config");
        assert_eq!(
            ic.lookup("", 2677887420),
            Some("10.0.0.2".parse().expect("ip"))
        );
        assert_eq!(ic.lookup("nope", 2677887420), None);
    }
}
