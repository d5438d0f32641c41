//! `director status [<user>] [<tag>]`: the host list (`HOST-LIST`), or
//! where one user goes (`USER-LOOKUP`, user sent unescaped like doveadm).

use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::exit;
use crate::format::{Header, Output};
use crate::timefmt;
use crate::ui::Ui;
use director_proto::tabescape;

/// `status`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "status",
    usage: "[-a <director socket path>] [<user>] [<tag>]",
    params: &[SOCKET_PARAM, Param::pos("user"), Param::pos("tag")],
    run,
};

/// Columns of the host list.
pub const HOST_HEADERS: &[Header] = &[
    Header::new("mail server ip"),
    Header::new("tag"),
    Header::new("vhosts"),
    Header::new("state"),
    Header::keyed("state-changed", "state changed"),
    Header::new("users"),
];

/// Columns of a user lookup (with an explicit `-f`).
pub const USER_HEADERS: &[Header] = &[
    Header::new("status"),
    Header::new("expires"),
    Header::new("hashed"),
    Header::new("initial-config"),
];

/// What `status <user>` prints without `-f` (or with `-f formatted`).
pub const USER_TEMPLATE: &str = "Current: %{status} (expires %{expires})\nHashed: %{hashed}\nInitial config: %{initial-config}\n";

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(user) = ctx.arg("user").map(<[u8]>::to_vec) {
        let tag = ctx.arg("tag").unwrap_or_default().to_vec();
        let mut req = b"USER-LOOKUP\t".to_vec();
        req.extend_from_slice(&user);
        req.push(b'\t');
        req.extend_from_slice(&tag);
        if let Err(code) = conn.send_line(&req, ui) {
            return code;
        }
        let line = match conn.reply(ui) {
            Ok(l) => l,
            Err(code) => return code,
        };
        return print_user(ctx, ui, &line);
    }
    if let Err(code) = conn.send_line(b"HOST-LIST", ui) {
        return code;
    }
    let (lines, res) = conn.read_list(ui);
    let mut out = Output::new(HOST_HEADERS);
    for line in lines {
        if let Some(row) = host_row(&line) {
            out.row(row);
        }
    }
    let code = ctx.print(&out, ui);
    res.err().unwrap_or(code)
}

/// One `HOST-LIST` line as a status row; `None` for lines with fewer than
/// six fields (doveadm skips them silently).
pub fn host_row(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let f = tabescape::split_fields(line);
    if f.len() < 6 {
        return None;
    }
    let state: &[u8] = if f[4].as_slice() == b"D" {
        b"down"
    } else {
        b"up"
    };
    let changed = match timefmt::parse(&f[5]) {
        Some(t) if t > 0 => timefmt::local(t).into_bytes(),
        _ => b"-".to_vec(),
    };
    Some(vec![
        f[0].clone(),
        f[3].clone(),
        f[1].clone(),
        state.to_vec(),
        changed,
        f[2].clone(),
    ])
}

fn print_user(ctx: &Ctx, ui: &mut Ui, line: &[u8]) -> i32 {
    let f = tabescape::split_fields(line);
    let expire = if f.len() == 4 {
        timefmt::parse(&f[1])
    } else {
        None
    };
    let Some(expire) = expire else {
        ui.error("Invalid reply from director");
        ui.set_exit(exit::PROTOCOL);
        return exit::PROTOCOL;
    };
    let (current, expires) = if f[0].is_empty() {
        (b"n/a".to_vec(), b"-1".to_vec())
    } else {
        (f[0].clone(), timefmt::local(expire).into_bytes())
    };
    let mut out = Output::new(USER_HEADERS);
    out.row(vec![current, expires, f[2].clone(), f[3].clone()]);
    ctx.print_with(&ctx.formatter_or_template(USER_TEMPLATE), &out, ui)
}
