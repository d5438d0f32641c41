//! Golden vectors recorded from real Dovecot 2.3.19 (`doveadm director status USER`):
//! every user's hash, "Hashed" host and "Initial config" host must match bit for bit.
//!
//! Sources, both in the repository: the lab recordings copied to `tests/data/lab-vectors/`
//! (see the README there for their origin) and the project's own recordings in
//! `tests/vectors/` at the workspace root (every `*.json` there).
//! Each file gives `director_mail_servers`, the raw `HOST-LIST` reply after the runtime ops
//! (`host_list_after_ops`, from which the live host list is rebuilt), `lookup_tags`, and
//! `users: {name: {hash, hashed_host, initial_host}}` (keys `hashed_host[tag=X]` /
//! `initial_host[tag=X]` when tags are looked up).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use director_core::host::{inet_ntop, parse_ip};
use director_core::{
    parse_user_key, user_hash, ConfigHost, CoreSettings, Director, HashFormat, UserKey,
};
use serde_json::Value;

fn lab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lab-vectors")
}

fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors")
}

fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

/// `director_mail_servers` through the real config parser (ranges and `@tag`s; the vectors
/// use IP literals only, so the resolver is never asked — it fails if it is).
fn parse_mail_servers(s: &str) -> Vec<ConfigHost> {
    struct NoDns;
    impl director_config::Resolver for NoDns {
        fn resolve(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
            panic!("vector names host {host:?}: no DNS in tests")
        }
    }
    director_config::parse_mail_servers(s, &NoDns)
        .unwrap_or_else(|e| panic!("bad director_mail_servers {s:?}: {e}"))
}

struct HostRow {
    ip: IpAddr,
    vhosts: u32,
    tag: String,
    down: bool,
}

fn parse_host_list(lines: &[Value]) -> Vec<HostRow> {
    let mut rows = Vec::new();
    for l in lines {
        let l = l.as_str().expect("host list line is a string");
        let l = l.strip_suffix('\n').unwrap_or(l);
        if l.is_empty() {
            break;
        }
        let f: Vec<&str> = l.split('\t').collect();
        assert!(f.len() >= 6, "bad HOST-LIST line {l:?}");
        rows.push(HostRow {
            ip: parse_ip(f[0]).expect("host ip"),
            vhosts: f[1].parse().expect("vhosts"),
            tag: f[3].to_string(),
            down: f[4] == "D",
        });
    }
    rows
}

fn hash_format(v: &Value) -> HashFormat {
    // Recorded in `director_username_hash`; older files may only have it in
    // `extra_settings` ("director_username_hash = %Ln").
    let from_extra = v["extra_settings"].as_str().and_then(|e| {
        e.lines().find_map(|l| {
            let (k, val) = l.split_once('=')?;
            (k.trim() == "director_username_hash").then(|| val.trim())
        })
    });
    let raw = v["director_username_hash"]
        .as_str()
        .or(from_extra)
        .unwrap_or("%Lu");
    // Recorded as e.g. "%Lu (default)" or "%Ln".
    let fmt = raw.split_whitespace().next().unwrap_or("%Lu");
    HashFormat::parse(fmt).unwrap_or_else(|e| panic!("bad recorded hash format {raw:?}: {e}"))
}

/// Builds a director whose live hosts equal the recorded HOST-LIST.
fn build(v: &Value) -> Director {
    let config = parse_mail_servers(v["director_mail_servers"].as_str().expect("servers"));
    let mut d = Director::new(CoreSettings {
        username_hash: hash_format(v),
        config_hosts: config,
        ..CoreSettings::default()
    })
    .expect("director");
    let rows = parse_host_list(v["host_list_after_ops"].as_array().expect("host list"));
    let live: Vec<IpAddr> = d.host_list().iter().map(|h| h.ip).collect();
    for ip in live {
        if !rows.iter().any(|r| r.ip == ip) {
            d.host_remove(ip, 1).expect("remove");
        }
    }
    for r in &rows {
        d.host_set(r.ip, Some(&r.tag), Some(r.vhosts), 1)
            .expect("host set");
        if r.down {
            d.host_down(r.ip, 1).expect("down");
        }
    }
    let got: Vec<(String, u32, String, bool)> = d
        .host_list()
        .iter()
        .map(|h| (inet_ntop(&h.ip), h.vhost_count, h.tag.clone(), h.down))
        .collect();
    let want: Vec<(String, u32, String, bool)> = rows
        .iter()
        .map(|r| (inet_ntop(&r.ip), r.vhosts, r.tag.clone(), r.down))
        .collect();
    assert_eq!(got, want, "rebuilt host list differs from HOST-LIST");
    d
}

fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map(|i| inet_ntop(&i)).unwrap_or_default()
}

/// Checks one vector file; returns the number of values compared.
fn check_file(path: &Path) -> usize {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let name = path.display().to_string();
    let fmt = hash_format(&v);
    let mut d = build(&v);
    let tags: Vec<String> = v["lookup_tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_else(|| vec![String::new()]);
    let users = v["users"].as_object().expect("users object");
    assert!(!users.is_empty(), "{name}: no users");
    let mut checked = 0;
    let mut failures = Vec::new();
    for (user, exp) in users {
        let want_hash = exp["hash"].as_u64().expect("hash");
        let got = user_hash(user.as_bytes(), &fmt).expect("hash");
        if u64::from(got) != want_hash {
            failures.push(format!("{user:?}: hash {got} != {want_hash}"));
        }
        checked += 1;
        let key: UserKey = parse_user_key(user.as_bytes());
        for tag in &tags {
            let (hk, ik) = if exp.get("hashed_host").is_some() && tag.is_empty() {
                ("hashed_host".to_string(), "initial_host".to_string())
            } else {
                (
                    format!("hashed_host[tag={tag}]"),
                    format!("initial_host[tag={tag}]"),
                )
            };
            let lookup = d.user_lookup(&key, tag, 1).expect("lookup");
            for (k, got) in [(hk, lookup.hashed), (ik, lookup.initial)] {
                let want = exp[&k]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: {user:?} lacks {k}"));
                if ip_text(got) != want {
                    failures.push(format!("{user:?} tag {tag:?}: {k} {got:?} != {want}"));
                }
                checked += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    checked
}

/// The lab's scenario files (`users.json` beside them only lists the names).
const LAB_SCENARIOS: [&str; 10] = [
    "s1_3hosts_100",
    "s2_vhosts_50_100_150",
    "s3_host_removed",
    "s4_host_added",
    "s5_host_down",
    "s6_range_5hosts",
    "s7_vhost_zero",
    "s8_mixed_addresses",
    "s9_tags",
    "s10_hash_Ln",
];

#[test]
fn lab_vectors_match_dovecot() {
    let dir = lab_dir();
    let mut total = 0;
    for name in LAB_SCENARIOS {
        let f = dir.join(format!("{name}.json"));
        assert!(
            f.is_file(),
            "lab vector {} is missing: the lab vectors are part of the repository \
             (recorded from Dovecot 2.3.19.1, see tests/data/lab-vectors/README.md)",
            f.display()
        );
        total += check_file(&f);
    }
    println!("lab: {} files, {total} values checked", LAB_SCENARIOS.len());
    assert!(total > 10_000);
}

/// The scenarios `scripts/record-vectors` records (`tests/vectors/README.md`).
const PROJECT_SCENARIOS: [&str; 12] = [
    "v01_base_3hosts",
    "v02_weights",
    "v03_tags",
    "v04_down_zero_removed",
    "v05_ipv6",
    "v06_hash_Ln",
    "v07_hash_u_case_sensitive",
    "v08_hash_Ld_domain",
    "v09_hash_offset_width",
    "v10_hash_domain_then_local",
    "v11_no_usable_host",
    "v12_many_hosts",
];

#[test]
fn project_vectors_match_dovecot() {
    let dir = project_dir();
    assert!(
        dir.is_dir(),
        "{} is missing: the golden vectors recorded from real Dovecot are part of the repo \
         (regenerate them with scripts/record-vectors)",
        dir.display()
    );
    let files = json_files(&dir);
    for name in PROJECT_SCENARIOS {
        let f = dir.join(format!("{name}.json"));
        assert!(
            files.contains(&f),
            "{} is missing (regenerate it with scripts/record-vectors --only {name})",
            f.display()
        );
    }
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        // Only scenario files (a users list file has no host list).
        if !text.contains("host_list_after_ops") {
            continue;
        }
        total += check_file(f);
    }
    println!("project: {} files, {total} values checked", files.len());
    // ≥ 1000 users × ≥ 6 host sets.
    assert!(total >= 6_000, "only {total} project vector values checked");
}
