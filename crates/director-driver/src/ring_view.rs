//! The director list as a standalone director shows it (`DIRECTOR-LIST`, `DIRECTOR-ADD`,
//! `DIRECTOR-REMOVE`), until the ring protocol exists.
//!
//! Observed on a real standalone Dovecot 2.3.19 director (no `director_servers`, no ring
//! listener): it lists itself as `127.0.0.1\t0\tself\t0\tring synced\t0` (with a ring
//! listener: the listener's address and port). `DIRECTOR-ADD ip [port]` answers `OK` at once
//! (port default = our own ring port, so `0` when standalone), logs
//! `Adding director IP:PORT to ring (requested by SELF)` and lists the new director as
//! `ip\tport\t\t0\t` (no type, never failed, no status) for as long as we run — a standalone
//! director never tries to connect to it. `DIRECTOR-REMOVE` of a listed director answers `OK`
//! and the entry shows as `removed` (`ip\tport\tremoved\t0\t`); an unknown one gets
//! `NOTFOUND`. Removing ourselves answers `OK`, logs it, and changes nothing (the lab saw the
//! same on a one-director ring).
//!
//! Simplification on purpose: after a remove, real Dovecot starts connecting to leftover
//! entries and then blocks later ring-gated commands; we don't reproduce that.

use std::cmp::Ordering;
use std::net::IpAddr;

use director_proto::admin::{AdminReply, DirectorListEntry};
use director_proto::value::{format_ip, ip_cmp};

/// Most directors we keep in the list (Dovecot has no limit; a ring has a handful).
pub const MAX_DIRECTORS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Director {
    ip: IpAddr,
    port: u16,
    removed: bool,
}

/// The standalone director list.
#[derive(Debug, Clone)]
pub struct RingView {
    self_ip: IpAddr,
    self_port: u16,
    others: Vec<Director>,
}

fn order(a: (&IpAddr, u16), b: (&IpAddr, u16)) -> Ordering {
    ip_cmp(a.0, b.0).then(a.1.cmp(&b.1))
}

impl RingView {
    /// A ring of one: ourselves at `self_ip:self_port` (`127.0.0.1:0` when standalone).
    pub fn new(self_ip: IpAddr, self_port: u16) -> Self {
        RingView {
            self_ip,
            self_port,
            others: Vec::new(),
        }
    }

    fn self_name(&self) -> String {
        format!("{}:{}", format_ip(&self.self_ip), self.self_port)
    }

    fn is_self(&self, ip: &IpAddr, port: u16) -> bool {
        *ip == self.self_ip && port == self.self_port
    }

    /// `DIRECTOR-LIST`, sorted by (ip, port).
    pub fn list(&self) -> AdminReply {
        let mut rows: Vec<(IpAddr, u16, Vec<String>)> = Vec::with_capacity(self.others.len() + 1);
        rows.push((
            self.self_ip,
            self.self_port,
            vec![
                format_ip(&self.self_ip),
                self.self_port.to_string(),
                "self".into(),
                "0".into(),
                "ring synced".into(),
                "0".into(),
            ],
        ));
        for d in &self.others {
            rows.push((
                d.ip,
                d.port,
                vec![
                    format_ip(&d.ip),
                    d.port.to_string(),
                    if d.removed { "removed" } else { "" }.into(),
                    "0".into(),
                    String::new(),
                ],
            ));
        }
        rows.sort_by(|a, b| order((&a.0, a.1), (&b.0, b.1)));
        AdminReply::DirectorList(
            rows.into_iter()
                .map(|(_, _, fields)| DirectorListEntry { fields })
                .collect(),
        )
    }

    /// `DIRECTOR-ADD`.
    pub fn add(&mut self, ip: IpAddr, port: Option<u16>) -> AdminReply {
        let port = port.unwrap_or(self.self_port);
        if self.is_self(&ip, port) {
            return AdminReply::OK;
        }
        if let Some(d) = self
            .others
            .iter_mut()
            .find(|d| d.ip == ip && d.port == port)
        {
            d.removed = false;
            return AdminReply::OK;
        }
        if self.others.len() >= MAX_DIRECTORS {
            tracing::warn!(ip = %ip, port, limit = MAX_DIRECTORS, "director list full, not adding");
            return AdminReply::OK;
        }
        tracing::info!(
            "Adding director {}:{} to ring (requested by {})",
            format_ip(&ip),
            port,
            self.self_name()
        );
        self.others.push(Director {
            ip,
            port,
            removed: false,
        });
        AdminReply::OK
    }

    /// `DIRECTOR-REMOVE`; without a port, the first director with that IP (in list order).
    pub fn remove(&mut self, ip: IpAddr, port: Option<u16>) -> AdminReply {
        let self_matches = ip == self.self_ip && port.is_none_or(|p| p == self.self_port);
        let requested_by = self.self_name();
        let self_port = self.self_port;
        let mut candidates: Vec<&mut Director> = self
            .others
            .iter_mut()
            .filter(|d| !d.removed && d.ip == ip && port.is_none_or(|p| p == d.port))
            .collect();
        candidates.sort_by_key(|d| d.port);
        let first_other_port = candidates.first().map(|d| d.port);
        let self_first = self_matches && first_other_port.is_none_or(|p| self_port <= p);
        if self_first {
            tracing::info!(
                "Removing director {} from ring (requested by {})",
                requested_by,
                requested_by
            );
            return AdminReply::OK;
        }
        match candidates.into_iter().next() {
            Some(d) => {
                d.removed = true;
                tracing::info!(
                    "Removing director {}:{} from ring (requested by {})",
                    format_ip(&d.ip),
                    d.port,
                    requested_by
                );
                AdminReply::OK
            }
            None => AdminReply::NOT_FOUND,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: &AdminReply) -> String {
        String::from_utf8(r.encode()).unwrap()
    }

    #[test]
    fn standalone_add_and_remove_like_dovecot() {
        let mut rv = RingView::new("127.0.0.1".parse().unwrap(), 0);
        assert_eq!(
            wire(&rv.list()),
            "127.0.0.1\t0\tself\t0\tring synced\t0\n\n"
        );
        assert_eq!(
            wire(&rv.add("127.0.78.12".parse().unwrap(), Some(9090))),
            "OK\n"
        );
        assert_eq!(wire(&rv.add("127.0.78.13".parse().unwrap(), None)), "OK\n");
        assert_eq!(
            wire(&rv.list()),
            "127.0.0.1\t0\tself\t0\tring synced\t0\n127.0.78.12\t9090\t\t0\t\n127.0.78.13\t0\t\t0\t\n\n"
        );
        assert_eq!(
            wire(&rv.remove("127.0.78.12".parse().unwrap(), Some(9090))),
            "OK\n"
        );
        assert_eq!(
            wire(&rv.remove("127.0.78.99".parse().unwrap(), None)),
            "NOTFOUND\n"
        );
        assert_eq!(
            wire(&rv.list()),
            "127.0.0.1\t0\tself\t0\tring synced\t0\n127.0.78.12\t9090\tremoved\t0\t\n127.0.78.13\t0\t\t0\t\n\n"
        );
        assert_eq!(
            wire(&rv.remove("127.0.0.1".parse().unwrap(), Some(0))),
            "OK\n"
        );
    }
}
