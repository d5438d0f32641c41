//! Route decision cost: user hash (`%Lu`) + vhost ring lookup, for 3/100/1000 hosts
//! (100 vhosts each). Also the full login path (`Director::request`) for a known user.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use director_core::hash::{user_hash, HashFormat};
use director_core::host::{HostList, TagId};
use director_core::vhost_ring::{HashingMode, RingSet, VhashCache};
use director_core::{ConfigHost, CoreSettings, Director, RequestOutcome};

fn host_ip(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0A00_0000 + i + 1))
}

fn usernames() -> Vec<String> {
    (0..1024).map(|i| format!("User{i}@Example.com")).collect()
}

fn route(c: &mut Criterion) {
    let fmt = HashFormat::default();
    let names = usernames();
    let mut g = c.benchmark_group("route_hash_plus_lookup");
    for n in [3u32, 100, 1000] {
        let mut hosts = HostList::new();
        for i in 0..n {
            hosts.add(host_ip(i), "", 100, None).expect("add host");
        }
        let rings = RingSet::build(&hosts, HashingMode::Consistent, &mut VhashCache::default());
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                let h = user_hash(black_box(names[i].as_bytes()), &fmt).expect("hash");
                black_box(rings.lookup(TagId::UNTAGGED, h))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ring_lookup_only");
    for n in [3u32, 100, 1000] {
        let mut hosts = HostList::new();
        for i in 0..n {
            hosts.add(host_ip(i), "", 100, None).expect("add host");
        }
        let rings = RingSet::build(&hosts, HashingMode::Consistent, &mut VhashCache::default());
        let mut h = 0u32;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                h = h.wrapping_add(0x9E37_79B9);
                black_box(rings.lookup(TagId::UNTAGGED, black_box(h)))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("director_request_known_user");
    for n in [3u32, 100, 1000] {
        let mut d = Director::new(CoreSettings {
            config_hosts: (0..n).map(|i| ConfigHost::new(host_ip(i))).collect(),
            ..CoreSettings::default()
        })
        .expect("director");
        for name in &names {
            d.request(name.as_bytes(), "", 1_000);
        }
        let mut i = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                i = (i + 1) & 1023;
                match d.request(black_box(names[i].as_bytes()), "", 1_001) {
                    RequestOutcome::Ready(r) => black_box(r.ip),
                    other => panic!("unexpected {other:?}"),
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
