//! What doveadm prints when the admin socket misbehaves, or sends what a real
//! director is hard to make send: bad greetings, disconnects, odd replies,
//! odd user names. A scripted server plays the director's side; the real doveadm
//! 2.3 (the oracle, `apt-get install -y dovecot-core`) and our binary each
//! run against their own copy of the script at the same time, and must print
//! the same stdout, stderr and exit code and send the same requests. The
//! texts written below are what the real doveadm 2.3.19.1 printed; they are
//! checked against it on every run.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

const V: &str = "VERSION\tdirector-doveadm\t1\t0\n";

/// The real doveadm, from `$PATH`.
const REAL: &str = "doveadm";
const OURS: &str = env!("CARGO_BIN_EXE_doveadm");

/// Upper bound on one scripted conversation: longer than doveadm's own
/// handshake wait, so `WaitForClose` outlasts it.
const CONVERSATION_TIMEOUT: Duration = Duration::from_secs(15);

/// One server action.
#[derive(Clone, Copy)]
enum Step {
    /// Write these bytes.
    Send(&'static str),
    /// Read one line and check it.
    Expect(&'static str),
    /// Close the connection.
    Close,
    /// Stay silent until the client gives up and closes.
    WaitForClose,
}
use Step::*;

fn serve(listener: UnixListener, steps: Vec<Step>) -> Result<(), String> {
    let (conn, _) = listener.accept().map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(CONVERSATION_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    let mut w = conn;
    for s in steps {
        match s {
            Send(b) => w.write_all(b.as_bytes()).map_err(|e| e.to_string())?,
            Expect(want) => {
                let mut line = Vec::new();
                reader
                    .read_until(b'\n', &mut line)
                    .map_err(|e| e.to_string())?;
                if line != want.as_bytes() {
                    return Err(format!(
                        "client sent {:?}, expected {want:?}",
                        String::from_utf8_lossy(&line)
                    ));
                }
            }
            Close => return Ok(()),
            WaitForClose => {
                let mut rest = Vec::new();
                std::io::Read::read_to_end(&mut reader, &mut rest)
                    .map_err(|e| format!("client did not close: {e}"))?;
                if !rest.is_empty() {
                    return Err(format!(
                        "client sent {:?} instead of closing",
                        String::from_utf8_lossy(&rest)
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Output as text, with every byte that is not UTF-8 written as `\xNN`, so
/// that invalid bytes and U+FFFD stay different.
fn shown(b: &[u8]) -> String {
    let mut s = String::new();
    for chunk in b.utf8_chunks() {
        s.push_str(chunk.valid());
        for x in chunk.invalid() {
            s.push_str(&format!("\\x{x:02x}"));
        }
    }
    s
}

/// Runs `bin` against its own scripted server; returns stdout, stderr and
/// exit code with the socket path written as `{S}` and the config's
/// `base_dir` as `{D}`, and whether the client followed the script.
fn run(
    bin: &str,
    files: &[(&str, &[u8])],
    args: &[&str],
    steps: Vec<Step>,
) -> ((String, String, i32), Result<(), String>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("s");
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(&conf, format!("base_dir = {}\n", dir.path().display())).expect("config");
    for (name, content) in files {
        std::fs::write(dir.path().join(name), content).expect("write input file");
    }
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = thread::spawn(move || serve(listener, steps));
    let s = sock.display().to_string();
    let d = dir.path().display().to_string();
    let out = Command::new(bin)
        .arg("-c")
        .arg(Path::new(&conf))
        .args(args.iter().map(|a| a.replace("{S}", &s).replace("{D}", &d)))
        .env("TZ", "UTC")
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running {bin}: {e}; install the real one with `apt-get install -y dovecot-core`"
            )
        });
    let (stdout, stderr, rc) = (
        shown(&out.stdout),
        shown(&out.stderr),
        out.status.code().unwrap_or(-1),
    );
    let unpath = |t: String| t.replace(&s, "{S}").replace(&d, "{D}");
    let script = server.join().expect("server thread");
    ((unpath(stdout), unpath(stderr), rc), script)
}

/// Runs the real and our doveadm, each against the script `steps`, at the
/// same time; both must follow the script and print `want_out`, `want_err`
/// and exit with `want_rc`.
fn case(args: &[&str], steps: Vec<Step>, want_out: &str, want_err: &str, want_rc: i32) {
    case_with_files(&[], args, steps, want_out, want_err, want_rc);
}

/// [`case`] with input files written into the config's `base_dir` first
/// (`{D}` in `args`).
fn case_with_files(
    files: &[(&str, &[u8])],
    args: &[&str],
    steps: Vec<Step>,
    want_out: &str,
    want_err: &str,
    want_rc: i32,
) {
    let want = (want_out.to_string(), want_err.to_string(), want_rc);
    let (real, ours) = thread::scope(|sc| {
        let real = sc.spawn(|| run(REAL, files, args, steps.clone()));
        let ours = run(OURS, files, args, steps.clone());
        (real.join().expect("real doveadm run"), ours)
    });
    assert_eq!(
        real.0, want,
        "real doveadm {args:?}: the oracle says otherwise"
    );
    real.1
        .unwrap_or_else(|e| panic!("real doveadm {args:?} left the script: {e}"));
    assert_eq!(ours.0, want, "our doveadm {args:?}");
    ours.1
        .unwrap_or_else(|e| panic!("our doveadm {args:?} left the script: {e}"));
}

#[test]
fn handshake_failures() {
    case(
        &["director", "status", "-a", "{S}"],
        vec![Expect(V), Close],
        "",
        "Fatal: {S} disconnected\n",
        75,
    );
    for greeting in [
        "VERSION\tdirector-doveadm\t2\t0\n",
        "VERSION\tfoo\t1\t0\n",
        "HELLO\n",
    ] {
        case(
            &["director", "status", "-a", "{S}"],
            vec![Expect(V), Send(greeting)],
            "",
            "Fatal: {S} not a compatible director-doveadm socket\n",
            76,
        );
    }
    // Any minor version is fine.
    case(
        &["-f", "tab", "director", "status", "-a", "{S}"],
        vec![
            Expect(V),
            Send("VERSION\tdirector-doveadm\t1\t5\n"),
            Expect("HOST-LIST\n"),
            Send("\n"),
        ],
        "mail server ip\ttag\tvhosts\tstate\tstate changed\tusers\n",
        "",
        0,
    );
}

#[test]
fn silent_director_times_out_after_the_handshake_wait() {
    case(
        &["director", "status", "-a", "{S}"],
        vec![Expect(V), WaitForClose],
        "",
        "Fatal: read({S}) failed: read(size=8192) failed: Interrupted system call\n",
        75,
    );
}

#[test]
fn odd_replies() {
    let lookup = |reply: &'static str| {
        vec![
            Expect(V),
            Send(V),
            Expect("USER-LOOKUP\tu\t\n"),
            Send(reply),
        ]
    };
    for bad in ["a\tb\n", "a\tb\tc\td\te\n", "a\tx\tc\td\n"] {
        case(
            &["director", "status", "-a", "{S}", "u"],
            lookup(bad),
            "",
            "Error: Invalid reply from director\n",
            76,
        );
    }
    case(
        &["director", "status", "-a", "{S}", "u"],
        vec![Expect(V), Send(V), Expect("USER-LOOKUP\tu\t\n"), Close],
        "",
        "Error: {S} unexpectedly disconnected\n",
        75,
    );
    case(
        &["director", "status", "-a", "{S}", "u"],
        lookup("1.1.1.1\t0\t2.2.2.2\t3.3.3.3\n"),
        "Current: 1.1.1.1 (expires 1970-01-01 00:00:00)\nHashed: 2.2.2.2\nInitial config: 3.3.3.3\n",
        "",
        0,
    );
    case(
        &["director", "status", "-a", "{S}", "u"],
        lookup("\t5\t2.2.2.2\t3.3.3.3\n"),
        "Current: n/a (expires -1)\nHashed: 2.2.2.2\nInitial config: 3.3.3.3\n",
        "",
        0,
    );
    case(
        &["-f", "tab", "director", "status", "-a", "{S}", "u"],
        lookup("1.1.1.1\t-5\t2.2.2.2\t3.3.3.3\n"),
        "status\texpires\thashed\tinitial-config\n1.1.1.1\t1969-12-31 23:59:55\t2.2.2.2\t3.3.3.3\n",
        "",
        0,
    );
    case(
        &["-f", "tab", "director", "status", "-a", "{S}"],
        vec![
            Expect(V),
            Send(V),
            Expect("HOST-LIST\n"),
            Send("1.1.1.1\t7\t3\n1.1.1.4\tx\ty\tT\tD\t-5\n1.1.1.5\t1\t2\t\tU\t5\textra\n1.1.1.6\t5\t0\tt\x01ta\tX\t0\n\n"),
        ],
        "mail server ip\ttag\tvhosts\tstate\tstate changed\tusers\n1.1.1.4\tT\tx\tdown\t-\ty\n1.1.1.5\t\t1\tup\t1970-01-01 00:00:05\t2\n1.1.1.6\tt\ta\t5\tup\t-\t0\n",
        "",
        0,
    );
    case(
        &["-f", "tab", "director", "map", "-a", "{S}", "-f", "/dev/null"],
        vec![
            Expect(V),
            Send(V),
            Expect("USER-LIST\n"),
            Send("x\t2\t1.1.1.1\n1\t2\tnotip\n2\t3\t1.1.1.1\textra\n-1\t2\t1.1.1.1\n4294967296\t1\t1.1.1.1\n\n"),
        ],
        "user\thash\tmail server ip\texpire time\n<unknown>\t2\t1.1.1.1\t1970-01-01 00:00:03\n",
        "Error: Invalid USER-LIST reply: x\t2\t1.1.1.1\nError: Invalid USER-LIST reply: 1\t2\tnotip\n\
         Error: Invalid USER-LIST reply: -1\t2\t1.1.1.1\nError: Invalid USER-LIST reply: 4294967296\t1\t1.1.1.1\n",
        76,
    );
    case(
        &["-f", "tab", "director", "ring", "status", "-a", "{S}"],
        vec![
            Expect(V),
            Send(V),
            Expect("DIRECTOR-LIST\n"),
            Send("1.1.1.1\t2\tleft\t0\tsynced\t5\t100\t200\t0\t3\t1700000000\t1700000001\tEXTRA\n1.1.1.2\n1.1.1.3\t2\tleft\tx\n\n"),
        ],
        "director ip\tport\ttype\tlast failed\tstatus\tping ms\tinput\toutput\tbuffered\tbuffered peak\tlast read\tlast write\n\
         1.1.1.1\t2\tleft\tnever\tsynced\t5\t100\t200\t0\t3\t2023-11-14 22:13:20\t2023-11-14 22:13:21\n\
         1.1.1.2\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\t-\n\
         1.1.1.3\t2\tleft\tx\t-\t-\t-\t-\t-\t-\t-\t-\n",
        "",
        0,
    );
    case(
        &["director", "dump", "-a", "{S}"],
        vec![
            Expect(V),
            Send(V),
            Expect("HOST-LIST\n"),
            Send("127.0.1.1\t5\t0\tt\x01ta\tU\t0\n\n"),
            Expect("HOST-LIST-REMOVED\n"),
            Close,
        ],
        "doveadm director add -a {S} 127.0.1.1@t\ta 5\n",
        "Error: {S} unexpectedly disconnected\n",
        75,
    );
}

/// doveadm tab-escapes the user name it sends in `USER-KICK` (0x01 → `\x01 1`, TAB →
/// `\x01 t`); both binaries must send exactly these bytes.
#[test]
fn kick_escapes_the_user_name() {
    case(
        &["director", "kick", "-a", "{S}", "k\x01\there"],
        vec![
            Expect(V),
            Send(V),
            Expect("USER-KICK\tk\x011\x01there\n"),
            Send("OK\n"),
        ],
        "",
        "",
        0,
    );
}

#[test]
fn unexpected_single_line_replies() {
    let reply =
        |req: &'static str, reply: &'static str| vec![Expect(V), Send(V), Expect(req), Send(reply)];
    let cases: &[(&[&str], &str, &str, &str, i32)] = &[
        (
            &["director", "add", "-a", "{S}", "1.2.3.4"],
            "HOST-SET\t1.2.3.4\n",
            "WHATEVER\n",
            "Error: 1.2.3.4: WHATEVER\n",
            75,
        ),
        (
            &["director", "add", "-a", "{S}", "1.2.3.4"],
            "HOST-SET\t1.2.3.4\n",
            "NOTFOUND\n",
            "Error: 1.2.3.4: doesn't exist\n",
            75,
        ),
        (
            &["director", "up", "-a", "{S}", "1.2.3.4"],
            "HOST-UP\t1.2.3.4\n",
            "WHATEVER\n",
            "Error: 1.2.3.4: WHATEVER\n",
            75,
        ),
        (
            &["director", "move", "-a", "{S}", "u", "1.2.3.4"],
            "USER-MOVE\t2071416575\t1.2.3.4\n",
            "WHATEVER\n",
            "Error: failed: WHATEVER\n",
            75,
        ),
        (
            &["director", "kick", "-a", "{S}", "u"],
            "USER-KICK\tu\n",
            "WHATEVER\n",
            "Error: failed: WHATEVER\n",
            75,
        ),
        (
            &["director", "kick", "-a", "{S}", "u"],
            "USER-KICK\tu\n",
            "TRYAGAIN\n",
            "Error: failed: TRYAGAIN\n",
            75,
        ),
        (
            &["-v", "director", "kick", "-a", "{S}", "x"],
            "USER-KICK\tx\n",
            "NOTFOUND\n",
            "Error: failed: NOTFOUND\n",
            75,
        ),
        (
            &["director", "flush", "-a", "{S}", "all"],
            "HOST-RESET-USERS\n",
            "WHATEVER\n",
            "Error: failed: WHATEVER\n",
            75,
        ),
        (
            &["-v", "director", "flush", "-a", "{S}", "all"],
            "HOST-RESET-USERS\n",
            "NOTFOUND\n",
            "Error: failed: NOTFOUND\n",
            75,
        ),
        (
            &["director", "ring", "add", "-a", "{S}", "1.2.3.4"],
            "DIRECTOR-ADD\t1.2.3.4\n",
            "WHATEVER\n",
            "Error: Failed: WHATEVER\n",
            75,
        ),
        (
            &["director", "ring", "add", "-a", "{S}", "1.2.3.4"],
            "DIRECTOR-ADD\t1.2.3.4\n",
            "NOTFOUND\n",
            "Error: Not found\n",
            68,
        ),
        (
            &["-v", "director", "ring", "remove", "-a", "{S}", "1.2.3.4"],
            "DIRECTOR-REMOVE\t1.2.3.4\n",
            "BLAH\n",
            "Error: Failed: BLAH\n",
            75,
        ),
    ];
    for (args, req, rep, err, rc) in cases {
        case(args, reply(req, rep), "", err, *rc);
    }
}

/// Deliberate difference: the real doveadm 2.3.19 panics (an assertion in
/// its auth-master client, killed by SIGABRT) when `<base_dir>/auth-userdb`
/// does not exist; checked live here. We report the listing failure like a
/// failed listing and still print the map.
#[test]
fn map_without_auth_socket_reports_instead_of_crashing() {
    let args = ["director", "map", "-a", "{S}"];
    let steps = vec![
        Expect(V),
        Send(V),
        Expect("USER-LIST\n"),
        Send("617210206\t1795897334\t127.0.1.1\n\n"),
    ];
    let ((_, real_err, real_rc), _) = run(REAL, &[], &args, steps.clone());
    assert!(
        real_err.contains("Panic: ") && real_rc != 0 && real_rc != 75,
        "the real doveadm no longer crashes here (exit {real_rc}): {real_err}"
    );
    let (ours, script) = run(OURS, &[], &args, steps);
    assert_eq!(
        ours,
        (
            "user                   hash      mail server ip expire time        \n<unknown>              617210206 127.0.1.1      2026-11-28 20:22:14\n".to_string(),
            "Error: auth-master: userdb list: connect({D}/auth-userdb) failed: No such file or directory\nError: user listing failed\n".to_string(),
            75,
        )
    );
    script.unwrap_or_else(|e| panic!("our doveadm left the script: {e}"));
}

/// User names with quotes, backslashes, control characters, DEL, a byte that
/// is not UTF-8 and a multi-byte letter, as `map -f` shows them: in JSON
/// (control characters as lowercase `\u00xx`, DEL raw, the bad byte as
/// U+FFFD) and in a table (the bad byte and `ü` are one column each).
#[test]
fn odd_user_names_in_json_and_table() {
    let names: [&[u8]; 5] = [
        b"a\"b\\c",
        b"x\x01y\x1bz\x08w\x0cv",
        b"del\x7fx",
        b"bad\xffz",
        "\u{fc}ber".as_bytes(),
    ];
    let users: Vec<u8> = names.iter().flat_map(|n| [*n, b"\n"].concat()).collect();
    let fmt = director_core::HashFormat::parse("%Lu").expect("%Lu");
    let list: String = names
        .iter()
        .map(|n| {
            let h = director_core::user_hash(n, &fmt).expect("hash");
            format!("{h}\t0\t127.0.1.1\n")
        })
        .chain(["\n".to_string()])
        .collect();
    let list: &'static str = Box::leak(list.into_boxed_str());
    let steps = || vec![Expect(V), Send(V), Expect("USER-LIST\n"), Send(list)];
    let files: &[(&str, &[u8])] = &[("users", &users)];
    case_with_files(
        files,
        &["-f", "json", "director", "map", "-a", "{S}", "-f", "{D}/users"],
        steps(),
        "[{\"user\":\"a\\\"b\\\\c\",\"hash\":\"1701280927\",\"mail server ip\":\"127.0.1.1\",\"expire time\":\"1970-01-01 00:00:00\"},{\"user\":\"x\\u0001y\\u001bz\\bw\\fv\",\"hash\":\"3851383405\",\"mail server ip\":\"127.0.1.1\",\"expire time\":\"1970-01-01 00:00:00\"},{\"user\":\"del\u{7f}x\",\"hash\":\"1898835395\",\"mail server ip\":\"127.0.1.1\",\"expire time\":\"1970-01-01 00:00:00\"},{\"user\":\"bad\u{fffd}z\",\"hash\":\"948586509\",\"mail server ip\":\"127.0.1.1\",\"expire time\":\"1970-01-01 00:00:00\"},{\"user\":\"\u{fc}ber\",\"hash\":\"2248681525\",\"mail server ip\":\"127.0.1.1\",\"expire time\":\"1970-01-01 00:00:00\"}]",
        "",
        0,
    );
    case_with_files(
        files,
        &["director", "map", "-a", "{S}", "-f", "{D}/users"],
        steps(),
        "user                  hash       mail server ip expire time        \n\
         a\"b\\c                 1701280927 127.0.1.1      1970-01-01 00:00:00\n\
         x\u{1}y\u{1b}z\u{8}w\u{c}v             3851383405 127.0.1.1      1970-01-01 00:00:00\n\
         del\u{7f}x                 1898835395 127.0.1.1      1970-01-01 00:00:00\n\
         bad\\xffz                 948586509  127.0.1.1      1970-01-01 00:00:00\n\
         \u{fc}ber                  2248681525 127.0.1.1      1970-01-01 00:00:00\n",
        "",
        0,
    );
}
