//! `director add [-t <tag>] <host> [<vhost count>]`: `HOST-SET` for every
//! address of the host. Also holds what `update` shares with it.

use super::per_ip::{self, Level, NotFound, Report};
use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::ui::Ui;
use director_proto::value::parse_uint;

/// `add`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "add",
    usage: "[-a <director socket path>] [-t <tag>] <host> [<vhost count>]",
    params: &[
        SOCKET_PARAM,
        Param::opt(b't', "tag"),
        Param::pos("host"),
        Param::pos("vhost-count"),
    ],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(host) = ctx.arg("host").map(<[u8]>::to_vec) else {
        return ctx.usage(ui);
    };
    let vhosts = match ctx.arg("vhost-count") {
        None => None,
        Some(v) => match parse_uint(v) {
            Some(n) => Some(n),
            None => return ctx.usage(ui),
        },
    };
    if !host.is_empty() && host.iter().all(u8::is_ascii_digit) {
        ui.error(format!("Invalid host '{}'", String::from_utf8_lossy(&host)));
        return ctx.usage(ui);
    }
    let (host, tag) = match ctx.arg("tag") {
        Some(t) => (host, t.to_vec()),
        None => split_tag(&host),
    };
    send_host_set(&mut conn, ui, "HOST-SET", &host, &tag, vhosts)
}

/// Splits `ip@tag` at the first `@`.
pub fn split_tag(host: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match host.iter().position(|&b| b == b'@') {
        Some(p) => (host[..p].to_vec(), host[p + 1..].to_vec()),
        None => (host.to_vec(), Vec::new()),
    }
}

/// Sends `CMD\t<ip>[@tag][\t<n>]` for every address of `host` (unescaped,
/// like doveadm), then reports each reply: `OK` → `Info: <ip>: OK` with
/// `-v`; `NOTFOUND` → `Error: <ip>: doesn't exist`; other →
/// `Error: <ip>: <reply>`; errors exit 75.
pub fn send_host_set(
    conn: &mut crate::client::Connection,
    ui: &mut Ui,
    command: &str,
    host: &[u8],
    tag: &[u8],
    vhosts: Option<u32>,
) -> i32 {
    let request = |ip: &str| {
        let mut line = format!("{command}\t{ip}").into_bytes();
        if !tag.is_empty() {
            line.push(b'@');
            line.extend_from_slice(tag);
        }
        if let Some(n) = vhosts {
            line.extend_from_slice(format!("\t{n}").as_bytes());
        }
        line
    };
    let report = Report {
        ok: "OK",
        level: Level::Error,
        not_found: NotFound::Fail,
    };
    per_ip::send_per_ip(conn, ui, host, request, &report)
}
