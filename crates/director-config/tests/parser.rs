//! Parser behaviour: real lab configs, Dovecot's error messages with file and
//! line, includes, limits, overrides, and never panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use director_config::*;
use proptest::prelude::*;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("director-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn every_lab_config_parses() {
    for name in [
        "lab-director.conf",
        "ring-b1.conf",
        "ring-b2.conf",
        "ring-b3.conf",
        "ring-d1.conf",
        "ring-d2.conf",
        "ring-d3.conf",
    ] {
        let config = Config::load(&data(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let settings =
            DirectorSettings::from_config(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            settings.mail_servers.len(),
            if name.starts_with("ring-b") { 0 } else { 3 },
            "{name}"
        );
    }
}

#[test]
fn lab_director_conf_settings() {
    let config = Config::load(&data("lab-director.conf")).unwrap();
    let s = DirectorSettings::from_config(&config).unwrap();
    assert_eq!(s.base_dir, PathBuf::from("/tmp/lab-admin/d1/run"));
    assert_eq!(s.instance_name, "lab-admin-d1");
    assert_eq!(s.director_servers.len(), 1);
    assert_eq!(s.director_servers[0].port, 19090);
    assert_eq!(s.user_expire_secs, 900);
    let admin: Vec<&str> = s.admin_listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(admin, ["director-admin", "director-doveadm"]);
    // The raw tree stays accessible (passdb etc. for other consumers).
    assert_eq!(config.root().sections_named("passdb", None).count(), 1);
    assert!(s.ignored.iter().any(|i| i.key == "passdb"));
    // `protocols` is read by the mail proxy (which protocols it serves).
    assert!(!s.ignored.iter().any(|i| i.key == "protocols"));
}

/// Dovecot's director runs in `base_dir`, so a relative `unix:` flush socket lives there.
#[test]
fn relative_flush_socket_is_in_base_dir() {
    let settings = |flush: &str| {
        let text = format!(
            "base_dir = /tmp/d1\ndirector_mail_servers = 127.0.1.1\ndirector_flush_socket = {flush}\n"
        );
        let config = Config::parse_str(&text, "t.conf").unwrap();
        DirectorSettings::from_config(&config)
            .unwrap()
            .flush_socket_uri()
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(settings("unix:flush-%i"), some("unix:/tmp/d1/flush-%i"));
    assert_eq!(settings("unix:/run/flush"), some("unix:/run/flush"));
    assert_eq!(settings("tcp:127.0.0.1:9"), some("tcp:127.0.0.1:9"));
    assert_eq!(settings("exec:flush.sh"), some("exec:flush.sh"));
    assert_eq!(settings(""), None);
}

#[test]
fn ring_d1_reads_other_services() {
    let config = Config::load(&data("ring-d1.conf")).unwrap();
    // Two `service imap-login` blocks, as written; callers merge.
    let blocks: Vec<&Section> = config
        .root()
        .sections_named("service", Some("imap-login"))
        .collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[1].get("executable"), Some("imap-login director"));
    let imap = blocks[0]
        .sections_named("inet_listener", Some("imap"))
        .next()
        .unwrap();
    assert_eq!(imap.get("port"), Some("143"));
    assert_eq!(
        config.get("log_timestamp"),
        Some("%Y-%m-%d %H:%M:%S.%{usecs} ")
    );
}

fn err_of(text: &str) -> String {
    Config::parse_str(text, "t.conf").unwrap_err().to_string()
}

#[test]
fn dovecot_syntax_errors_with_line_numbers() {
    assert_eq!(err_of("a = 1\nfoo\n"), "t.conf:2: Expecting '{'");
    assert_eq!(err_of("foo bar\n"), "t.conf:1: Expecting '{'");
    assert_eq!(
        err_of("service director { x\n"),
        "t.conf:1: Garbage after '{'"
    );
    assert_eq!(err_of("}\n"), "t.conf:1: Unexpected '}'");
    assert_eq!(
        err_of("a = 1\nservice director {\n"),
        "t.conf: Missing '}' (section started at t.conf:2)"
    );
}

#[test]
fn values_like_doveconf() {
    let c = Config::parse_str(
        "a = \"x # y\" # comment\nb = 'it\\'s'\nc = x\\\n   y\nd = \"unbalanced\ne=f\ng = $a tail\nh = \"$a\"\ni = p  $e   q\nj = a  b\n",
        "t.conf",
    )
    .unwrap();
    assert_eq!(c.get("a"), Some("x # y"));
    assert_eq!(c.get("b"), Some("it's"));
    assert_eq!(c.get("c"), Some("x y"));
    assert_eq!(c.get("d"), Some("\"unbalanced"));
    assert_eq!(c.get("e"), Some("f"));
    assert_eq!(c.get("g"), Some("x # y tail"));
    assert_eq!(c.get("h"), Some("$a"));
    assert_eq!(c.get("i"), Some("p f q"));
    assert_eq!(c.get("j"), Some("a  b"));
    let c = Config::parse_str("x = $default_login_user\ny = $nosuch\n", "t.conf").unwrap();
    assert_eq!(c.get("x"), Some("dovenull"));
    assert_eq!(c.unresolved_variables()[0].word, "$nosuch");
    let c = Config::parse_str("a = b#c\n", "t.conf").unwrap();
    assert_eq!(c.get("a"), Some("b"));
    assert!(c.warnings()[0].contains("Ambiguous '#'"));
}

#[test]
fn unresolved_variable_in_a_director_setting_is_an_error() {
    let c = Config::parse_str("director_username_hash = $nosuch\n", "t.conf").unwrap();
    let e = DirectorSettings::from_config(&c).unwrap_err();
    assert_eq!(e.to_string(), "t.conf:1: Unknown variable: $nosuch");
}

#[test]
fn includes_globs_and_files() {
    let t = TempDir::new("inc");
    t.write("conf.d/20-b.conf", "director_max_parallel_kicks = 7\n");
    t.write(
        "conf.d/10-a.conf",
        "director_max_parallel_kicks = 5\ndirector_user_kick_delay = 4s\n",
    );
    t.write("sub/inner.conf", "director_flush_socket = <v.txt\n");
    t.write("sub/v.txt", "unix:x\n");
    let main = t.write(
        "main.conf",
        "!include conf.d/*.conf\n!include_try nothing/*.conf\n!include sub/inner.conf\n",
    );
    let c = Config::load(&main).unwrap();
    assert_eq!(c.get("director_max_parallel_kicks"), Some("7"));
    assert_eq!(c.get("director_user_kick_delay"), Some("4s"));
    // `<file` is relative to the including file and kept verbatim.
    assert_eq!(c.get("director_flush_socket"), Some("unix:x\n"));
    let loc = c
        .get_setting("director_flush_socket")
        .unwrap()
        .location
        .to_string();
    assert!(loc.ends_with("sub/inner.conf:1"), "{loc}");

    let missing = t.write("missing.conf", "a = 1\n!include nothing.conf\n");
    let e = Config::load(&missing).unwrap_err().to_string();
    assert!(e.ends_with("missing.conf:2: No matches"), "{e}");

    let nofile = t.write("nofile.conf", "a = <nothing.txt\n");
    let e = Config::load(&nofile).unwrap_err().to_string();
    assert!(
        e.contains("nofile.conf:1: a: Can't open file nothing.txt"),
        "{e}"
    );

    let looped = t.write("loop.conf", "!include loop.conf\n");
    let e = Config::load(&looped).unwrap_err().to_string();
    assert!(e.contains("Recursive include"), "{e}");
}

#[test]
fn errors_in_included_files_name_that_file() {
    let t = TempDir::new("incerr");
    t.write("conf.d/10-bad.conf", "\n\ndirector_user_expire = 5\n");
    let main = t.write("main.conf", "!include conf.d/*.conf\n");
    let e = DirectorSettings::from_config(&Config::load(&main).unwrap()).unwrap_err();
    assert!(
        e.to_string()
            .contains("conf.d/10-bad.conf:3: director_user_expire: "),
        "{e}"
    );
}

#[test]
fn limits() {
    let long = format!("a = {}\n", "x".repeat(MAX_LINE_LEN + 1));
    assert!(err_of(&long).contains("Line longer than"));
    let deep = "s {\n".repeat(MAX_SECTION_DEPTH + 2);
    assert!(err_of(&deep).contains("deeper than"));
}

#[test]
fn user_expire_minimum() {
    let c = Config::parse_str("director_user_expire = 9s\n", "t.conf").unwrap();
    assert!(DirectorSettings::from_config(&c).is_err());
    let c = Config::parse_str("director_user_expire = 10s\n", "t.conf").unwrap();
    assert_eq!(
        DirectorSettings::from_config(&c).unwrap().user_expire_secs,
        10
    );
}

#[test]
fn overrides_apply_after_parsing_and_are_validated() {
    let mut c = Config::parse_str("director_max_parallel_moves = 5\n", "t.conf").unwrap();
    c.apply_override("director_max_parallel_moves=9").unwrap();
    c.apply_override("service/director/unix_listener/director-admin/mode=0666")
        .unwrap();
    let s = DirectorSettings::from_config(&c).unwrap();
    assert_eq!(s.max_parallel_moves, 9);
    let admin = s
        .admin_listeners
        .iter()
        .find(|l| l.name == "director-admin")
        .unwrap();
    assert!(matches!(
        admin.transport,
        ListenerTransport::Unix { mode: 0o666, .. }
    ));
    c.apply_override("director_user_expire=abc").unwrap();
    let e = DirectorSettings::from_config(&c).unwrap_err().to_string();
    assert!(e.starts_with("<override>: director_user_expire"), "{e}");
}

#[test]
fn consistent_hashing_extension() {
    let c = Config::parse_str("director_consistent_hashing = no\n", "t.conf").unwrap();
    assert!(
        !DirectorSettings::from_config(&c)
            .unwrap()
            .consistent_hashing
    );
    let c = Config::parse_str("", "t.conf").unwrap();
    assert!(
        DirectorSettings::from_config(&c)
            .unwrap()
            .consistent_hashing
    );
    let c = Config::parse_str("director_consistent_hashing = maybe\n", "t.conf").unwrap();
    assert!(DirectorSettings::from_config(&c).is_err());
}

#[test]
fn master_user_separator_fallback() {
    let c = Config::parse_str("master_user_separator = *\n", "t.conf").unwrap();
    assert_eq!(
        DirectorSettings::from_config(&c)
            .unwrap()
            .auth_master_user_separator,
        "*"
    );
    let c = Config::parse_str(
        "master_user_separator = *\nauth_master_user_separator = +\n",
        "t.conf",
    )
    .unwrap();
    assert_eq!(
        DirectorSettings::from_config(&c)
            .unwrap()
            .auth_master_user_separator,
        "+"
    );
}

#[test]
fn ring_needs_a_listener() {
    let c = Config::parse_str("director_servers = 127.0.0.1:9090\n", "t.conf").unwrap();
    assert!(DirectorSettings::from_config(&c).is_err());
}

#[test]
fn default_config_is_standalone() {
    let c = Config::default_standalone().unwrap();
    let s = DirectorSettings::from_config(&c).unwrap();
    assert!(s.is_standalone());
    assert_eq!(s.mail_servers.len(), 3);
    assert_eq!(s.base_dir, default_standalone_base_dir());
    assert_eq!(s.admin_listeners.len(), 1);
    assert!(s.ring_listener.is_none());
}

#[test]
fn printer_shows_non_default_director_settings_like_doveconf_n() {
    let c = Config::load(&data("sample/dovecot.conf")).unwrap();
    let text = print_non_default(&c, "sample/dovecot.conf");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("# director "));
    assert!(lines.contains(&"director_output_buffer_size = 2 M"));
    assert!(lines.contains(&"director_user_expire = 10 mins"));
    assert!(lines.contains(&"instance_name = \"sample # director\""));
    assert!(!lines
        .iter()
        .any(|l| l.starts_with("director_ping_max_timeout")));
}

proptest! {
    #[test]
    fn parser_never_panics(text in "\\PC{0,200}") {
        if let Ok(c) = Config::parse_str(&text, "fuzz.conf") {
            let _ = DirectorSettings::from_config_with_resolver(&c, &NoResolver);
            let _ = print_non_default(&c, "fuzz.conf");
        }
    }

    #[test]
    fn parser_never_panics_on_config_shaped_text(lines in proptest::collection::vec(
        prop_oneof![
            "[a-z_]{1,10} = [ -~]{0,20}",
            "[a-z_]{1,8} [a-z-]{0,8} \\{",
            Just("}".to_owned()),
            "director_[a-z_]{1,20} = [ -~]{0,12}",
            "#[ -~]{0,10}",
            "[ -~]{0,10}\\\\",
        ], 0..30)) {
        let text = lines.join("\n");
        if let Ok(c) = Config::parse_str(&text, "fuzz.conf") {
            let _ = DirectorSettings::from_config_with_resolver(&c, &NoResolver);
        }
    }
}

/// Resolves nothing: property tests must not reach DNS.
struct NoResolver;
impl Resolver for NoResolver {
    fn resolve(&self, _host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no DNS in tests",
        ))
    }
}

/// Recorded with `doveconf -h verbose_proctitle` (2.3.19.1).
#[test]
fn booleans_like_doveconf() {
    for (v, want) in [
        ("yes", Some(true)),
        ("YES", Some(true)),
        ("y", Some(true)),
        ("Y", Some(true)),
        ("1", Some(true)),
        ("no", Some(false)),
        ("NO", Some(false)),
        ("n", None),
        ("0", None),
        ("true", None),
        ("false", None),
        ("on", None),
        ("off", None),
        ("", None),
    ] {
        assert_eq!(parse_bool(v).ok(), want, "{v:?}");
    }
}

/// Recorded with `doveconf -h director_max_parallel_moves` (2.3.19.1).
#[test]
fn numbers_like_doveconf() {
    for (v, want) in [
        ("5", Ok(5)),
        ("05", Ok(5)),
        ("4294967295", Ok(u32::MAX)),
        ("0", Ok(0)),
        ("+5", Err("Invalid number +5: Not a valid number")),
        ("", Err("Invalid number : Not a valid number")),
        (
            "4294967296",
            Err("Invalid number 4294967296: Number too large"),
        ),
        ("-1", Err("Invalid number -1: Number too small")),
        ("0x10", Err("Invalid number 0x10: Not a valid number")),
    ] {
        assert_eq!(parse_u32_setting(v), want.map_err(str::to_owned), "{v:?}");
    }
}

/// A setting that nothing applies is not accepted: the pre-login line limits are Dovecot's
/// fixed per-protocol values, so `director_proxy_max_line_length` is refused by name.
#[test]
fn settings_that_nothing_applies_are_refused_with_their_line() {
    let c = Config::parse_str(
        "director_mail_servers = 127.0.1.1\ndirector_proxy_max_line_length = 8k\n",
        "t.conf",
    )
    .unwrap();
    let e = DirectorSettings::from_config(&c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "t.conf:2: Unknown setting: director_proxy_max_line_length"
    );
}

/// The README's settings tables are the catalogue's: what an operator reads is what the
/// code does.
#[test]
fn the_readme_shows_the_catalogues_settings_tables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    for part in Part::ALL {
        let open = format!("<!-- settings-table: {} -->\n", part.name());
        let start = readme
            .find(&open)
            .unwrap_or_else(|| panic!("README has no {open:?} block"))
            + open.len();
        let end = start
            + readme[start..]
                .find("<!-- /settings-table -->")
                .expect("the block is closed");
        assert_eq!(
            &readme[start..end],
            markdown_table(part),
            "README's {} settings table differs from the catalogue: paste the output of \
             `cargo run -p directord -- --settings-table {}`",
            part.name(),
            part.name()
        );
    }
}

/// Every setting that the director, the proxy and the admin listeners read is in the
/// catalogue, with its default: a config that sets each one to its default means what an
/// empty config means.
#[test]
fn the_catalogue_defaults_are_what_an_empty_config_means() {
    let empty = Config::parse_str("", "empty.conf").unwrap();
    let text: String = SETTINGS
        .iter()
        .map(|s| format!("{} = {}\n", s.key, s.default))
        .collect();
    let explicit = Config::parse_str(&text, "defaults.conf").unwrap();
    assert_eq!(
        DirectorSettings::from_config(&empty).unwrap(),
        DirectorSettings::from_config(&explicit).unwrap()
    );
}
