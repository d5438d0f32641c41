//! Offline checks of the renderers and of the command-line errors that need
//! no connection: against outputs recorded from the real doveadm 2.3.19
//! (`tests/data/*.json`, see the README there), and, for the command-line
//! errors, against the installed real doveadm run with the same arguments.

use std::process::Command;

use doveadm::format::{self, Formatter, Header, Output};

mod support;
use support::{data, texts};

/// Column titles of the recorded pairs, with the header flags doveadm uses.
fn header_for(title: &str, expand: bool) -> Header {
    let title: &'static str = Box::leak(title.to_owned().into_boxed_str());
    let h = Header::new(title);
    if expand {
        h.expand()
    } else {
        h
    }
}

#[test]
fn table_layout_matches_recorded_pairs() {
    let pairs = data("table_pairs.json");
    let pairs = pairs.as_array().expect("array");
    assert_eq!(pairs.len(), 9);
    for p in pairs {
        let tab = p["tab"].as_str().expect("tab");
        let mut lines = tab.trim_end_matches('\n').split('\n');
        let titles: Vec<&str> = lines.next().expect("titles").split('\t').collect();
        let expand = p["expand_col"].as_u64().map(|c| c as usize);
        let headers: Vec<Header> = titles
            .iter()
            .enumerate()
            .map(|(i, t)| header_for(t, expand == Some(i)))
            .collect();
        let mut out = Output::new(&headers);
        for l in lines {
            out.row(l.split('\t').map(|v| v.as_bytes().to_vec()).collect());
        }
        let got = format::render(&Formatter::Table, &out, 80);
        assert_eq!(
            String::from_utf8_lossy(&got),
            p["table"].as_str().expect("table"),
            "{}",
            p["label"]
        );
    }
}

#[test]
fn tab_formatter_reproduces_recorded_tab_output() {
    for p in data("table_pairs.json").as_array().expect("array") {
        let tab = p["tab"].as_str().expect("tab");
        let mut lines = tab.trim_end_matches('\n').split('\n');
        let titles: Vec<&str> = lines.next().expect("titles").split('\t').collect();
        let headers: Vec<Header> = titles.iter().map(|t| header_for(t, false)).collect();
        let mut out = Output::new(&headers);
        for l in lines {
            out.row(l.split('\t').map(|v| v.as_bytes().to_vec()).collect());
        }
        assert_eq!(
            String::from_utf8_lossy(&format::render(&Formatter::Tab, &out, 80)),
            tab
        );
    }
}

fn status_output() -> Output {
    let mut out = Output::new(doveadm::commands::status::HOST_HEADERS);
    for ip in ["127.0.1.1", "127.0.1.2"] {
        out.row(vec![
            ip.into(),
            b"".to_vec(),
            b"100".to_vec(),
            b"up".to_vec(),
            b"-".to_vec(),
            b"0".to_vec(),
        ]);
    }
    out
}

#[test]
fn json_flow_pager_match_recorded_status() {
    let out = status_output();
    let json = String::from_utf8(format::render(&Formatter::Json, &out, 80)).expect("utf8");
    assert_eq!(
        json,
        r#"[{"mail server ip":"127.0.1.1","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"0"},{"mail server ip":"127.0.1.2","tag":"","vhosts":"100","state":"up","state-changed":"-","users":"0"}]"#
    );
    let flow = String::from_utf8(format::render(&Formatter::Flow, &out, 80)).expect("utf8");
    assert_eq!(
        flow,
        "mail server ip=127.0.1.1 tag= vhosts=100 state=up state changed=- users=0\n\
         mail server ip=127.0.1.2 tag= vhosts=100 state=up state changed=- users=0\n"
    );
    let pager = String::from_utf8(format::render(&Formatter::Pager, &out, 80)).expect("utf8");
    assert_eq!(
        pager,
        "mail server ip: 127.0.1.1\ntag: \nvhosts: 100\nstate: up\nstate changed: -\nusers: 0\n\x0c\n\
         mail server ip: 127.0.1.2\ntag: \nvhosts: 100\nstate: up\nstate changed: -\nusers: 0\n"
    );
}

#[test]
fn hidden_titles_and_empty_tables() {
    let mut out = Output::new(doveadm::commands::map::HASH_HEADER);
    out.row(vec![b"617210206".to_vec()]);
    // Recorded: `map -u user1` pads the single expanding column to 44.
    assert_eq!(
        format::render(&Formatter::Table, &out, 80),
        b"617210206                                   \n"
    );
    assert_eq!(
        format::render(&Formatter::Tab, &out, 80),
        b"hash\n617210206\n"
    );
    assert_eq!(format::render(&Formatter::Flow, &out, 80), b"617210206\n");
    assert_eq!(format::render(&Formatter::Pager, &out, 80), b"617210206\n");
    assert_eq!(
        format::render(&Formatter::Json, &out, 80),
        br#"[{"hash":"617210206"}]"#
    );
    let empty = Output::new(doveadm::commands::map::HEADERS);
    // Recorded: `map -f FILE 127.0.9.9` (no users on that host).
    assert_eq!(
        format::render(&Formatter::Table, &empty, 80),
        b"user                       hash mail server ip expire time\n"
    );
    assert_eq!(format::render(&Formatter::Json, &empty, 80), b"[]");
    assert!(format::render(&Formatter::Flow, &empty, 80).is_empty());
    assert!(format::render(&Formatter::Pager, &empty, 80).is_empty());
}

#[test]
fn json_escaping_matches_dovecot() {
    // As the real doveadm writes them (checked live in protocol_errors.rs,
    // `odd_user_names_in_json_and_table`): control characters as \u00xx
    // (lowercase), DEL raw, invalid UTF-8 as U+FFFD.
    let mut buf = Vec::new();
    format::json::escape_into(
        &mut buf,
        b"a\"b\\c\td\re\x01f\x1bg\x08h\x0ci\x7fj\xffz\xc3\xbc",
    );
    assert_eq!(
        buf,
        "a\\\"b\\\\c\\td\\re\\u0001f\\u001bg\\bh\\fi\x7fj\u{fffd}z\u{fc}".as_bytes()
    );
}

#[test]
fn table_counts_characters_like_utf8_strlen() {
    // `ü` and a lone 0xff byte each count as one character (`ü` recorded in
    // tests/data/extras.json, 0xff checked live in protocol_errors.rs).
    let mut out = Output::new(&[Header::new("user").expand(), Header::new("x")]);
    out.row(vec![b"a b".to_vec(), b"1".to_vec()]);
    out.row(vec!["\u{fc}".as_bytes().to_vec(), b"2".to_vec()]);
    out.row(vec![b"bad\xffz".to_vec(), b"3".to_vec()]);
    let t = format::render(&Formatter::Table, &out, 80);
    let lines: Vec<&[u8]> = t.split(|&b| b == b'\n').collect();
    let w = doveadm::format::table::utf8_strlen;
    assert_eq!(w(lines[1]), w(lines[2]));
    assert_eq!(w(lines[2]), w(lines[3]));
}

fn ours(args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_doveadm"))
        .args(args)
        .output()
        .expect("run our doveadm");
    texts(out)
}

/// The real doveadm 2.3 (the oracle) with the same arguments.
fn real(args: &[&str]) -> (String, String, i32) {
    let out = Command::new("doveadm")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running the real doveadm: {e}; install it with `apt-get install -y dovecot-core`"
            )
        });
    texts(out)
}

/// A config whose base_dir has no sockets (nothing here needs one).
fn conf() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dovecot.conf");
    std::fs::write(&path, format!("base_dir = {}\n", dir.path().display())).expect("write config");
    let p = path.display().to_string();
    (dir, p)
}

#[test]
fn usage_texts_match_recording() {
    let runs = data("basic.json");
    let want = runs[0]["stderr"].as_str().expect("usage").to_owned();
    let (_d, c) = conf();
    for args in [
        vec!["director"],
        vec!["director", "ring"],
        vec!["director", "frobnicate"],
        vec!["director", "ring", "foo"],
    ] {
        let mut a = vec!["-c", c.as_str()];
        a.extend(args);
        // Only the first was recorded; the real doveadm confirms the others.
        assert_eq!(real(&a), (String::new(), want.clone(), 64), "real {a:?}");
        assert_eq!(ours(&a), (String::new(), want.clone(), 64), "{a:?}");
    }
}

#[test]
fn option_errors_need_no_connection() {
    let (_d, c) = conf();
    let c = c.as_str();
    let cases: &[(&[&str], &str, i32)] = &[
        (&["-c", c, "director", "add", "-a", "/nonexist", "127.0.1.6", "-5"], "add: invalid option -- '5'\n", 64),
        (&["-c", c, "director", "add", "-a", "/nonexist", "1", "2", "3"], "Error: Extraneous arguments found: 3\n", 64),
        (&["-c", c, "director", "status", "-a", "/x", "a", "b", "c", "d"], "Error: Extraneous arguments found: c d\n", 64),
        (&["-c", c, "director", "status", "-a"], "status: option requires an argument -- 'a'\n", 64),
        (&["-c", c, "director", "status", "--foo"], "status: unrecognized option '--foo'\n", 64),
        (&["-c", c, "director", "status", "-h"], "status: invalid option -- 'h'\n", 64),
        (&["-c", c, "director", "flush", "--max-parallel"], "flush: option '--max-parallel' requires an argument\n", 64),
        (
            &["-c", c, "director", "map", "--h", "x"],
            "map: option '--h' is ambiguous; possibilities: '--hash-map' '--host'\n",
            64,
        ),
        (&["-c", c, "director", "map", "--user-map=x"], "map: option '--user-map' doesn't allow an argument\n", 64),
        (&["-c", c, "director", "ring", "add", "-x"], "add: invalid option -- 'x'\n", 64),
        (&["-x", "director", "status"], "doveadm: invalid option -- 'x'\n", 89),
        (&["-f"], "doveadm: option requires an argument -- 'f'\n", 89),
        (&["-f", "foo", "director", "status"], "doveadm: Fatal: Unknown print formatter: foo\n", 75),
        (&["-c", "/nonexist", "director", "status"], "Fatal: Error reading configuration: stat(/nonexist) failed: No such file or directory\n", 75),
        (&["-c", c, "-o", "foo", "director", "status"], "Fatal: Error reading configuration: Invalid -o parameter foo: Missing '='\n", 75),
        (&["-c", c, "director", "status", "-a", "/nonexist/x"], "Fatal: net_connect_unix(/nonexist/x) failed: No such file or directory\n", 75),
        (&["-c", c, "director", "status", "-a", "relative/path"], "Fatal: net_connect_unix(relative/path) failed: No such file or directory\n", 75),
        (&["-c", c, "director", "status", "-a", "127.0.0.1:"], "Fatal: Port not known for 127.0.0.1:. Either set proxy_port or use 127.0.0.1::port\n", 75),
    ];
    let both = |args: &[&str], want: (String, String, i32)| {
        assert_eq!(
            real(args),
            want,
            "real doveadm {args:?}: the oracle says otherwise"
        );
        assert_eq!(ours(args), want, "our doveadm {args:?}");
    };
    for (args, want_err, want_rc) in cases {
        both(args, (String::new(), want_err.to_string(), *want_rc));
    }
    // `map -u` hashes locally without connecting (user1 → 617210206).
    both(
        &["-c", c, "director", "map", "-a", "/nonexist", "-u", "user1"],
        (
            "617210206                                   \n".to_owned(),
            String::new(),
            0,
        ),
    );
    both(
        &["-c", c, "-f", "tab", "director", "map", "-u", "user1"],
        ("hash\n617210206\n".to_owned(), String::new(), 0),
    );
}
