//! Compares our parser and settings with the real `doveconf` 2.3.19.1 on the
//! same files (doveconf is the oracle: `apt-get install -y dovecot-core`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use director_config::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// Runs the real doveconf with `-x` (expand `$vars` and `<file`, which is what
/// Dovecot's services see).
fn doveconf(conf: &Path, args: &[&str]) -> String {
    let out = Command::new("doveconf")
        .arg("-x")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .expect("real doveconf is required: apt-get install -y dovecot-core");
    assert!(
        out.status.success(),
        "doveconf {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// What doveconf -h prints for a director setting, in our terms.
fn our_value(config: &Config, key: &str) -> String {
    let raw = config
        .get(key)
        .map(str::to_owned)
        .unwrap_or_else(|| director_default(key).unwrap().to_owned());
    match key {
        "director_user_expire"
        | "director_user_kick_delay"
        | "director_ping_idle_timeout"
        | "director_ping_max_timeout" => {
            units::format_time_secs(units::parse_time_secs(&raw).unwrap())
        }
        "director_output_buffer_size" => {
            units::format_size_bytes(units::parse_size_bytes(&raw).unwrap())
        }
        _ => raw,
    }
}

/// The settings the director itself reads (the catalogue's director part).
fn director_part_keys() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.part == Part::Director)
        .map(|s| s.key)
}

fn compare_all_settings(conf: &Path) {
    let config = Config::load(conf).unwrap();
    for key in director_part_keys() {
        if !director_config::is_dovecot_setting(key) {
            continue; // ours (director_consistent_hashing)
        }
        let real = doveconf(conf, &["-h", key]);
        let ours = our_value(&config, key);
        assert_eq!(real, format!("{ours}\n"), "{}: {key}", conf.display());
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct ListenerView {
    kind: &'static str,
    name: String,
    mode: Option<u32>,
    user: String,
    group: String,
    address: String,
    port: u16,
}

fn view(listeners: &[Listener]) -> Vec<ListenerView> {
    let mut v: Vec<ListenerView> = listeners
        .iter()
        .map(|l| match &l.transport {
            ListenerTransport::Unix {
                mode, user, group, ..
            }
            | ListenerTransport::Fifo {
                mode, user, group, ..
            } => ListenerView {
                kind: if matches!(l.transport, ListenerTransport::Unix { .. }) {
                    "unix"
                } else {
                    "fifo"
                },
                name: l.name.clone(),
                mode: Some(*mode),
                user: user.clone(),
                group: group.clone(),
                address: String::new(),
                port: 0,
            },
            ListenerTransport::Inet {
                addresses, port, ..
            } => ListenerView {
                kind: "inet",
                name: l.name.clone(),
                mode: None,
                user: String::new(),
                group: String::new(),
                address: addresses.join(", "),
                port: *port,
            },
        })
        .collect();
    v.sort();
    v
}

/// doveconf prints the merged `service director` block (defaults + config):
/// parse it with our own parser and compare the listeners.
fn compare_listeners(conf: &Path) {
    let settings = DirectorSettings::from_config(&Config::load(conf).unwrap()).unwrap();
    let printed = doveconf(conf, &["service/director"]);
    let mut real_config = Config::parse_str(&printed, "<doveconf output>").unwrap();
    // Listener addresses default to `listen`, which the printed block lacks.
    real_config
        .apply_override(&format!("listen={}", settings.listen))
        .unwrap();
    real_config
        .apply_override(&format!("base_dir={}", settings.base_dir.display()))
        .unwrap();
    let real_listeners = DirectorSettings::from_config(&real_config)
        .unwrap()
        .listeners;
    // doveconf prints `mode = 00` for defaults that have no mode set.
    assert_eq!(
        view(&settings.listeners),
        view(&real_listeners),
        "{}",
        conf.display()
    );
}

#[test]
fn lab_director_conf_matches_doveconf() {
    compare_all_settings(&data("lab-director.conf"));
    compare_listeners(&data("lab-director.conf"));
}

#[test]
fn ring_director_confs_match_doveconf() {
    for name in ["ring-d1.conf", "ring-d2.conf", "ring-d3.conf"] {
        compare_all_settings(&data(name));
        compare_listeners(&data(name));
    }
}

#[test]
fn sample_with_includes_vars_and_files_matches_doveconf() {
    let conf = data("sample/dovecot.conf");
    compare_all_settings(&conf);
    compare_listeners(&conf);
    let config = Config::load(&conf).unwrap();
    for key in [
        "login_greeting",
        "instance_name",
        "listen",
        "auth_master_user_separator",
    ] {
        assert_eq!(
            doveconf(&conf, &["-h", key]),
            format!("{}\n", config.get(key).unwrap()),
            "{key}"
        );
    }
}

#[test]
fn sample_director_settings() {
    let config = Config::load(&data("sample/dovecot.conf")).unwrap();
    let s = DirectorSettings::from_config(&config).unwrap();
    let ips: Vec<String> = s.mail_servers.iter().map(format_mail_server).collect();
    assert_eq!(
        ips,
        ["127.0.1.1", "127.0.1.2", "127.0.1.3", "127.0.2.1@tagA"]
    );
    assert_eq!(s.user_expire_secs, 600);
    assert_eq!(s.user_kick_delay_secs, 3);
    assert_eq!(s.ping_idle_timeout_secs, 45);
    assert_eq!(s.ping_max_timeout_secs, 60);
    assert_eq!(s.output_buffer_size, 2048 * 1024);
    assert_eq!(s.max_parallel_kicks, 7);
    assert_eq!(s.max_parallel_moves, 100);
    assert_eq!(s.username_hash, "%Ln");
    assert_eq!(s.flush_socket, "unix:flush-%i\n");
    assert_eq!(s.auth_master_user_separator, "*");
    assert!(s.consistent_hashing);
    let ip: IpAddr = "127.0.0.12".parse().unwrap();
    assert_eq!(s.director_servers[1].ip, ip);
    assert_eq!(s.director_servers[1].port, 9090);
    assert_eq!(s.admin_listeners.len(), 2);
    assert!(s
        .admin_listeners
        .iter()
        .any(|l| matches!(l.transport, ListenerTransport::Inet { port: 9091, .. })));
    let ring = s.ring_listener.as_ref().unwrap();
    assert!(
        matches!(&ring.transport, ListenerTransport::Inet { port: 9090, addresses, .. } if addresses == &["127.0.0.11"])
    );
    // The mail proxy reads login_greeting; the other services' sections are not ours.
    assert!(!s.ignored.iter().any(|i| i.key == "login_greeting"));
    assert!(s.ignored.iter().any(|i| i.key == "service imap-login"));
}

/// Values doveconf refuses must be refused by us too, with file and line.
#[test]
fn bad_values_name_file_and_line() {
    let dir = std::env::temp_dir().join(format!("director-config-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (line, ours) in [
        ("director_user_kick_delay = 5", "missing units"),
        (
            "director_user_kick_delay = 1500ms",
            "Milliseconds not supported",
        ),
        ("director_output_buffer_size = 1P", "Invalid size"),
        ("director_foo = 1", "Unknown setting: director_foo"),
    ] {
        let path = dir.join("bad.conf");
        std::fs::write(&path, format!("ssl = no\nprotocols =\n{line}\n")).unwrap();
        let real = Command::new("doveconf")
            .arg("-c")
            .arg(&path)
            .arg("-n")
            .output()
            .expect("real doveconf is required: apt-get install -y dovecot-core");
        assert!(!real.status.success(), "doveconf accepted {line:?}");
        let err = DirectorSettings::from_config(&Config::load(&path).unwrap()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}:3: ", path.display())),
            "{text}"
        );
        assert!(text.contains(ours), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Our `doveconf -n`-like printer agrees with the real one on every
/// top-level director setting line.
#[test]
fn printer_matches_doveconf_n() {
    for name in ["sample/dovecot.conf", "lab-director.conf", "ring-d1.conf"] {
        let conf = data(name);
        let real = doveconf(&conf, &["-n"]);
        let ours = print_non_default(&Config::load(&conf).unwrap(), name);
        let is_ours = |line: &str| {
            director_part_keys()
                .any(|k| line.starts_with(&format!("{k} = ")) && k != "director_consistent_hashing")
        };
        let real_lines: Vec<&str> = real.lines().filter(|l| is_ours(l)).collect();
        let our_lines: Vec<&str> = ours.lines().filter(|l| is_ours(l)).collect();
        assert_eq!(our_lines, real_lines, "{name}");
    }
}

/// Debian's stock /etc/dovecot/dovecot.conf (with conf.d includes, `<file`
/// SSL keys and `$protocols` expansions) parses, and agrees with doveconf.
#[test]
fn debian_stock_config_matches_doveconf() {
    let conf = Path::new("/etc/dovecot/dovecot.conf");
    assert!(
        conf.exists(),
        "Debian's stock Dovecot config is required: apt-get install -y dovecot-core"
    );
    compare_all_settings(conf);
    let config = Config::load(conf).unwrap();
    for key in ["protocols", "mail_location", "auth_mechanisms", "ssl"] {
        let ours = config
            .get(key)
            .map(str::to_owned)
            .or_else(|| dovecot_default(key).map(str::to_owned));
        assert_eq!(
            doveconf(conf, &["-h", key]),
            format!("{}\n", ours.unwrap_or_default()),
            "{key}"
        );
    }
}
