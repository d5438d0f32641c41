//! What every host command shares (`add`, `update`, `up`, `down`,
//! `remove`, `flush <host>`): resolve the host, send one request line per
//! address (all first, like doveadm), then read one reply per address and
//! report it as `<ip>: …`. The commands differ only in the request line,
//! the `OK` text, the log level of failures and the exit code of
//! `NOTFOUND`, which [`Report`] names.

use super::resolve_host;
use crate::client::Connection;
use crate::exit;
use crate::resolve::ip_text;
use crate::ui::Ui;

/// How failures are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `Error: <ip>: …` (`add`, `update`, `up`, `down`, `remove`).
    Error,
    /// `Warning: <ip>: …` (`flush`).
    Warning,
}

/// What `NOTFOUND` does to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// Exit 75, like any other failure (`add`, `update`).
    Fail,
    /// Exit 68 unless an error came first (`up`, `down`, `remove`, `flush`).
    NoHost,
}

/// How a command reports the reply for one address.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    /// Text after `<ip>: ` for `OK` (an info line, shown with `-v`).
    pub ok: &'a str,
    /// Level of `doesn't exist` and other-reply lines.
    pub level: Level,
    /// What `NOTFOUND` does to the exit code.
    pub not_found: NotFound,
}

/// Resolves `host`, sends `request(<ip text>)` plus LF for every address,
/// then reports each reply per `report`. Returns the exit code of a
/// failure that ends the command (its messages already printed); exit
/// codes of per-address failures are left in `ui`.
pub fn send_per_ip(
    conn: &mut Connection,
    ui: &mut Ui,
    host: &[u8],
    request: impl Fn(&str) -> Vec<u8>,
    report: &Report<'_>,
) -> i32 {
    let Some(ips) = resolve_host(host, ui) else {
        return exit::TEMPFAIL;
    };
    let ips: Vec<String> = ips.iter().map(ip_text).collect();
    let mut req = Vec::new();
    for ip in &ips {
        req.extend_from_slice(&request(ip));
        req.push(b'\n');
    }
    if let Err(code) = conn.send(&req, ui) {
        return code;
    }
    for ip in &ips {
        let reply = match conn.reply(ui) {
            Ok(l) => l,
            Err(code) => return code,
        };
        let (failure, on_exit) = match reply.as_slice() {
            b"OK" => {
                ui.info(format!("{ip}: {}", report.ok));
                continue;
            }
            b"NOTFOUND" => (
                format!("{ip}: doesn't exist").into_bytes(),
                report.not_found,
            ),
            other => (
                [format!("{ip}: ").as_bytes(), other].concat(),
                NotFound::Fail,
            ),
        };
        match report.level {
            Level::Error => ui.error(failure),
            Level::Warning => ui.warning(failure),
        }
        match on_exit {
            NotFound::Fail => ui.set_exit(exit::TEMPFAIL),
            NotFound::NoHost => ui.set_exit_if_ok(exit::NOHOST),
        }
    }
    exit::OK
}
