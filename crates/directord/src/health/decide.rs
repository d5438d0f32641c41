//! What the health checker does with a round of probe results: which hosts to mark down or
//! up. Pure (no I/O; time is an argument), so every rule is tested without sockets.
//!
//! Rules:
//! - a host is marked down after `fails` failed rounds in a row, and a host the checker
//!   marked down is marked up after `successes` good rounds in a row;
//! - a host that is down but was not marked down by the checker was marked down by an
//!   operator, and is never brought up; an operator bringing up a host the checker marked
//!   down makes it the checker's to watch again, as any up host;
//! - the checker changes a host's state at most once per `hold_down` (no flapping);
//! - the last up host of a tag is never marked down: when every host of a tag fails, they
//!   stay as they are and the round reports the tag, for an error in the log;
//! - a director that does not decide (another one of the ring does) probes all the same and
//!   [`Decider::observe`]s: a host it saw up and now finds down while its own probe fails
//!   was marked down by the deciding director's checker, and is the checker's to bring up
//!   once this director decides; a host that went down while its probes passed, or that
//!   was down when it first saw it, is an operator's. The ring's messages do not say who
//!   marked a host down (Dovecot's `HOST` line has no such field), so this is what a
//!   successor can know.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

/// The thresholds (`director_health_check_fails`, `_successes`, `_hold_down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failed rounds in a row before down (at least 1).
    pub fails: u32,
    /// Good rounds in a row before up (at least 1).
    pub successes: u32,
    /// Least time between two state changes of one host made by the checker.
    pub hold_down: Duration,
}

/// A host as the core lists it (`HOST-LIST`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// The host.
    pub ip: IpAddr,
    /// Its tag, empty when none.
    pub tag: String,
    /// Whether it is down now.
    pub down: bool,
}

/// A change for the core to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `HOST-DOWN`.
    Down(IpAddr),
    /// `HOST-UP`.
    Up(IpAddr),
}

/// What one round decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The changes to make, in host order.
    pub changes: Vec<Change>,
    /// Tags whose every up host failed: kept up, to be logged as an error.
    pub all_failing_tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Track {
    fails: u32,
    successes: u32,
    /// The checker marked this host down (and nobody has brought it up since).
    marked_down: bool,
    /// When the checker last changed its state (or, not deciding, saw it changed).
    changed_at: Option<Duration>,
    /// It was listed up in the previous round: a down seen now happened since.
    was_up: bool,
}

impl Track {
    fn count(&mut self, passed: Option<bool>) {
        match passed {
            Some(true) => {
                self.successes = self.successes.saturating_add(1);
                self.fails = 0;
            }
            Some(false) => {
                self.fails = self.fails.saturating_add(1);
                self.successes = 0;
            }
            None => {}
        }
    }
}

/// The checker's memory of each host between rounds.
#[derive(Debug, Clone)]
pub struct Decider {
    policy: Policy,
    tracks: HashMap<IpAddr, Track>,
}

impl Decider {
    /// A decider that has seen no round yet.
    pub fn new(policy: Policy) -> Self {
        Decider {
            policy: Policy {
                fails: policy.fails.max(1),
                successes: policy.successes.max(1),
                hold_down: policy.hold_down,
            },
            tracks: HashMap::new(),
        }
    }

    /// Takes one round: the hosts as the core lists them now and whether each passed its
    /// probes (a host missing from `passed` was not probed and keeps its counts). Returns
    /// the changes to make; call [`Decider::applied`] for each one the core accepted.
    pub fn round(
        &mut self,
        now: Duration,
        hosts: &[HostState],
        passed: &HashMap<IpAddr, bool>,
    ) -> Round {
        self.tracks
            .retain(|ip, _| hosts.iter().any(|h| h.ip == *ip));
        let policy = self.policy;
        let mut downs = Vec::new();
        let mut ups = Vec::new();
        for host in hosts {
            let track = self.tracks.entry(host.ip).or_default();
            track.was_up = !host.down;
            if !host.down {
                // Up, whoever brought it up: ours to watch.
                track.marked_down = false;
            }
            let result = passed.get(&host.ip).copied();
            track.count(result);
            if result.is_none() {
                continue;
            }
            let held = track
                .changed_at
                .is_some_and(|at| now.saturating_sub(at) < policy.hold_down);
            if held {
                continue;
            }
            if !host.down && track.fails >= policy.fails {
                downs.push(host);
            } else if host.down && track.marked_down && track.successes >= policy.successes {
                ups.push(host.ip);
            }
        }
        let mut round = Round::default();
        let tags: BTreeSet<&str> = downs.iter().map(|h| h.tag.as_str()).collect();
        for tag in tags {
            let up_after = hosts
                .iter()
                .filter(|h| h.tag == tag)
                .filter(|h| (!h.down && !downs.iter().any(|d| d.ip == h.ip)) || ups.contains(&h.ip))
                .count();
            if up_after == 0 {
                downs.retain(|d| d.tag != tag);
                round.all_failing_tags.push(tag.to_owned());
            }
        }
        round.changes = hosts
            .iter()
            .filter_map(|h| {
                if downs.iter().any(|d| d.ip == h.ip) {
                    Some(Change::Down(h.ip))
                } else if ups.contains(&h.ip) {
                    Some(Change::Up(h.ip))
                } else {
                    None
                }
            })
            .collect();
        round
    }

    /// Takes one round of a director that does not decide: counts as [`Decider::round`]
    /// does and changes nothing, but remembers which downs were the checker's (a host seen
    /// up in the previous round, down now, whose probe failed in this round), so that this
    /// director, once it decides, brings them up when they recover and leaves the others
    /// (the operators') down.
    pub fn observe(&mut self, now: Duration, hosts: &[HostState], passed: &HashMap<IpAddr, bool>) {
        self.tracks
            .retain(|ip, _| hosts.iter().any(|h| h.ip == *ip));
        for host in hosts {
            let track = self.tracks.entry(host.ip).or_default();
            let result = passed.get(&host.ip).copied();
            track.count(result);
            if host.down && track.was_up {
                // It went down since the previous round: the checker's if our own probe
                // sees it failing too, else an operator's.
                track.marked_down = result == Some(false);
                track.changed_at = Some(now);
            } else if !host.down {
                if !track.was_up && track.marked_down {
                    track.changed_at = Some(now);
                }
                track.marked_down = false;
            }
            track.was_up = !host.down;
        }
    }

    /// Records that the core made `change` at `now`.
    pub fn applied(&mut self, change: Change, now: Duration) {
        let (ip, down) = match change {
            Change::Down(ip) => (ip, true),
            Change::Up(ip) => (ip, false),
        };
        let track = self.tracks.entry(ip).or_default();
        track.marked_down = down;
        track.changed_at = Some(now);
        track.was_up = !down;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOLD: Duration = Duration::from_secs(60);

    fn policy() -> Policy {
        Policy {
            fails: 2,
            successes: 2,
            hold_down: HOLD,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    fn host(n: u8, tag: &str, down: bool) -> HostState {
        HostState {
            ip: ip(n),
            tag: tag.to_owned(),
            down,
        }
    }

    fn results(r: &[(u8, bool)]) -> HashMap<IpAddr, bool> {
        r.iter().map(|&(n, ok)| (ip(n), ok)).collect()
    }

    /// Runs a round and applies its changes to `hosts`, as the core would.
    fn step(d: &mut Decider, now: Duration, hosts: &mut [HostState], r: &[(u8, bool)]) -> Round {
        let round = d.round(now, hosts, &results(r));
        for c in &round.changes {
            let (target, down) = match *c {
                Change::Down(ip) => (ip, true),
                Change::Up(ip) => (ip, false),
            };
            hosts
                .iter_mut()
                .find(|h| h.ip == target)
                .expect("listed")
                .down = down;
            d.applied(*c, now);
        }
        round
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_host_goes_down_after_the_configured_failures_in_a_row() {
        let mut d = Decider::new(policy());
        let mut hosts = vec![host(1, "", false), host(2, "", false)];
        assert!(step(&mut d, secs(0), &mut hosts, &[(1, false), (2, true)])
            .changes
            .is_empty());
        // A success in between starts the count again.
        assert!(step(&mut d, secs(1), &mut hosts, &[(1, true), (2, true)])
            .changes
            .is_empty());
        assert!(step(&mut d, secs(2), &mut hosts, &[(1, false), (2, true)])
            .changes
            .is_empty());
        let r = step(&mut d, secs(3), &mut hosts, &[(1, false), (2, true)]);
        assert_eq!(r.changes, vec![Change::Down(ip(1))]);
    }

    #[test]
    fn a_host_the_checker_marked_down_comes_back_after_the_successes_and_the_hold_down() {
        let mut d = Decider::new(policy());
        let mut hosts = vec![host(1, "", false), host(2, "", false)];
        step(&mut d, secs(0), &mut hosts, &[(1, false), (2, true)]);
        step(&mut d, secs(1), &mut hosts, &[(1, false), (2, true)]);
        assert!(hosts[0].down);
        step(&mut d, secs(2), &mut hosts, &[(1, true), (2, true)]);
        // Two successes, but inside the hold-down.
        assert!(step(&mut d, secs(3), &mut hosts, &[(1, true), (2, true)])
            .changes
            .is_empty());
        let r = step(&mut d, secs(61), &mut hosts, &[(1, true), (2, true)]);
        assert_eq!(r.changes, vec![Change::Up(ip(1))]);
    }

    #[test]
    fn a_host_an_operator_marked_down_is_never_brought_up() {
        let mut d = Decider::new(policy());
        let mut hosts = vec![host(1, "", true), host(2, "", false)];
        for t in 0..10 {
            assert!(
                step(&mut d, secs(t * 100), &mut hosts, &[(1, true), (2, true)])
                    .changes
                    .is_empty()
            );
        }
    }

    #[test]
    fn an_operator_bringing_a_host_up_makes_it_watched_again() {
        let mut d = Decider::new(Policy {
            hold_down: Duration::ZERO,
            ..policy()
        });
        let mut hosts = vec![host(1, "", false), host(2, "", false)];
        step(&mut d, secs(0), &mut hosts, &[(1, false)]);
        step(&mut d, secs(1), &mut hosts, &[(1, false)]);
        assert!(hosts[0].down);
        hosts[0].down = false; // doveadm director up
        step(&mut d, secs(2), &mut hosts, &[(1, true)]);
        hosts[0].down = true; // then doveadm director down: now manual
        for t in 3..10 {
            assert!(step(&mut d, secs(t), &mut hosts, &[(1, true)])
                .changes
                .is_empty());
        }
    }

    #[test]
    fn the_last_up_host_of_a_tag_is_never_marked_down() {
        let mut d = Decider::new(policy());
        let mut hosts = vec![
            host(1, "a", false),
            host(2, "a", false),
            host(3, "b", false),
        ];
        step(
            &mut d,
            secs(0),
            &mut hosts,
            &[(1, false), (2, false), (3, true)],
        );
        let r = step(
            &mut d,
            secs(1),
            &mut hosts,
            &[(1, false), (2, false), (3, true)],
        );
        assert!(r.changes.is_empty());
        assert_eq!(r.all_failing_tags, vec!["a".to_owned()]);
        // One of them down already: the other stays up.
        let mut d = Decider::new(policy());
        let mut hosts = vec![host(1, "", true), host(2, "", false)];
        step(&mut d, secs(0), &mut hosts, &[(1, false), (2, false)]);
        let r = step(&mut d, secs(1), &mut hosts, &[(1, false), (2, false)]);
        assert!(r.changes.is_empty());
        assert_eq!(r.all_failing_tags, vec![String::new()]);
    }

    #[test]
    fn a_host_that_is_no_longer_listed_is_forgotten() {
        let mut d = Decider::new(policy());
        let mut hosts = vec![host(1, "", false), host(2, "", false)];
        step(&mut d, secs(0), &mut hosts, &[(1, false)]);
        let mut fewer = vec![host(2, "", false)];
        step(&mut d, secs(1), &mut fewer, &[(2, true)]);
        // Back, with its count started over.
        assert!(step(&mut d, secs(2), &mut hosts, &[(1, false)])
            .changes
            .is_empty());
    }

    /// Marks every listed host down or up, as the ring reports another director's change.
    fn set(hosts: &mut [HostState], n: u8, down: bool) {
        hosts
            .iter_mut()
            .find(|h| h.ip == ip(n))
            .expect("listed")
            .down = down;
    }

    #[test]
    fn a_successor_brings_up_what_the_deciders_checker_marked_down_and_not_an_operators_downs() {
        let mut d = Decider::new(Policy {
            hold_down: secs(10),
            ..policy()
        });
        let mut hosts = vec![
            host(1, "", false),
            host(2, "", false),
            host(3, "", true), // down when first seen: an operator's
            host(4, "", false),
        ];
        let all_ok = [(1, true), (2, true), (3, true), (4, true)];
        d.observe(secs(0), &hosts, &results(&all_ok));
        // Host 1 fails and the deciding director marks it down; an operator marks host 2,
        // which is healthy, down.
        d.observe(
            secs(1),
            &hosts,
            &results(&[(1, false), (2, true), (3, true), (4, true)]),
        );
        set(&mut hosts, 1, true);
        set(&mut hosts, 2, true);
        d.observe(
            secs(2),
            &hosts,
            &results(&[(1, false), (2, true), (3, true), (4, true)]),
        );
        // The deciding director dies; this one decides from now on. Host 1 recovers: it is
        // brought up once the successes and the hold-down (from the down it saw) allow.
        let r = step(&mut d, secs(3), &mut hosts, &all_ok);
        assert!(r.changes.is_empty(), "{r:?}");
        assert!(step(&mut d, secs(4), &mut hosts, &all_ok)
            .changes
            .is_empty());
        let r = step(&mut d, secs(12), &mut hosts, &all_ok);
        assert_eq!(r.changes, vec![Change::Up(ip(1))]);
        // The operator's downs stay, however healthy.
        for t in 13..30 {
            assert!(step(&mut d, secs(t * 10), &mut hosts, &all_ok)
                .changes
                .is_empty());
        }
        assert!(hosts[1].down && hosts[2].down);
    }

    #[test]
    fn not_deciding_a_host_brought_back_up_is_watched_again() {
        let mut d = Decider::new(Policy {
            hold_down: Duration::ZERO,
            ..policy()
        });
        let mut hosts = vec![host(1, "", false), host(2, "", false)];
        d.observe(secs(0), &hosts, &results(&[(1, true), (2, true)]));
        set(&mut hosts, 1, true);
        d.observe(secs(1), &hosts, &results(&[(1, false), (2, true)]));
        // Brought up by the decider (or an operator), then down by an operator while it
        // passes: the operator's.
        set(&mut hosts, 1, false);
        d.observe(secs(2), &hosts, &results(&[(1, true), (2, true)]));
        set(&mut hosts, 1, true);
        d.observe(secs(3), &hosts, &results(&[(1, true), (2, true)]));
        for t in 4..10 {
            assert!(step(&mut d, secs(t), &mut hosts, &[(1, true), (2, true)])
                .changes
                .is_empty());
        }
    }

    proptest! {
        /// Whatever the probes say: at most one change per host per hold-down, never a host
        /// the checker did not mark down brought up, and never a tag left with no up host
        /// by the checker.
        #[test]
        fn the_safety_rules_hold_for_any_results(
            rounds in proptest::collection::vec(
                (1u64..30, proptest::collection::vec(any::<bool>(), 4)), 1..80),
            manual in proptest::collection::vec(any::<bool>(), 4),
        ) {
            let mut d = Decider::new(Policy { fails: 1, successes: 1, hold_down: secs(20) });
            let tags = ["a", "a", "b", "b"];
            let mut hosts: Vec<HostState> = (0..4)
                .map(|i| host(i as u8 + 1, tags[i], manual[i]))
                .collect();
            let mut last: HashMap<IpAddr, Duration> = HashMap::new();
            let mut now = Duration::ZERO;
            for (gap, oks) in rounds {
                now += secs(gap);
                let r: Vec<(u8, bool)> = oks.iter().enumerate().map(|(i, ok)| (i as u8 + 1, *ok)).collect();
                let tag_up = |hosts: &[HostState], t: &str| hosts.iter().any(|h| h.tag == t && !h.down);
                let up_before: Vec<bool> = tags.iter().map(|t| tag_up(&hosts, t)).collect();
                let round = step(&mut d, now, &mut hosts, &r);
                for c in round.changes {
                    let target = match c { Change::Down(ip) | Change::Up(ip) => ip };
                    if let Some(at) = last.insert(target, now) {
                        prop_assert!(now - at >= secs(20));
                    }
                    if let Change::Up(ip) = c {
                        let i = (1..=4).position(|n| self::ip(n) == ip).expect("one of ours");
                        prop_assert!(!manual[i]);
                    }
                }
                for (i, t) in tags.iter().enumerate() {
                    prop_assert!(!up_before[i] || tag_up(&hosts, t), "tag {} left with no up host", t);
                }
            }
        }
    }
}
