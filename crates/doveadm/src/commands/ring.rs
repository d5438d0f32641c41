//! `director ring add|remove <ip> [<port>]` (`DIRECTOR-ADD`/`-REMOVE`; the
//! IP must be a literal, no DNS) and `director ring status`
//! (`DIRECTOR-LIST` as a 12-column table).

use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::exit;
use crate::format::{Header, Output};
use crate::resolve::ip_text;
use crate::timefmt;
use crate::ui::Ui;
use director_proto::tabescape;
use director_proto::value::{parse_ip, parse_port};

const IP_PORT_PARAMS: &[Param] = &[SOCKET_PARAM, Param::pos("ip"), Param::pos("port")];

/// `ring add`.
pub const ADD_SPEC: CommandSpec = CommandSpec {
    name: "ring add",
    usage: "[-a <director socket path>] <ip> [<port>]",
    params: IP_PORT_PARAMS,
    run: run_add,
};

/// `ring remove`.
pub const REMOVE_SPEC: CommandSpec = CommandSpec {
    name: "ring remove",
    usage: "[-a <director socket path>] <ip> [<port>]",
    params: IP_PORT_PARAMS,
    run: run_remove,
};

/// `ring status`.
pub const STATUS_SPEC: CommandSpec = CommandSpec {
    name: "ring status",
    usage: "[-a <director socket path>]",
    params: &[SOCKET_PARAM],
    run: run_status,
};

/// Columns of `ring status`.
pub const STATUS_HEADERS: &[Header] = &[
    Header::new("director ip"),
    Header::new("port"),
    Header::new("type"),
    Header::new("last failed"),
    Header::new("status"),
    Header::new("ping ms"),
    Header::new("input"),
    Header::new("output"),
    Header::new("buffered"),
    Header::new("buffered peak"),
    Header::new("last read"),
    Header::new("last write"),
];

/// Columns holding Unix times (`0` prints as `never`).
const TIME_COLUMNS: &[usize] = &[3, 10, 11];

fn run_add(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    ip_port_command(ctx, ui, "DIRECTOR-ADD")
}

fn run_remove(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    ip_port_command(ctx, ui, "DIRECTOR-REMOVE")
}

fn ip_port_command(ctx: &mut Ctx, ui: &mut Ui, command: &str) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(ip) = ctx.arg("ip").and_then(parse_ip) else {
        return ctx.usage(ui);
    };
    let mut req = format!("{command}\t{}", ip_text(&ip));
    if let Some(p) = ctx.arg("port") {
        let Some(port) = parse_port(p) else {
            return ctx.usage(ui);
        };
        req.push_str(&format!("\t{port}"));
    }
    if let Err(code) = conn.send_line(req.as_bytes(), ui) {
        return code;
    }
    let reply = match conn.reply(ui) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match reply.as_slice() {
        b"OK" => {}
        b"NOTFOUND" => {
            ui.error("Not found");
            ui.set_exit(exit::NOHOST);
        }
        other => {
            ui.error([&b"Failed: "[..], other].concat());
            ui.set_exit(exit::TEMPFAIL);
        }
    }
    exit::OK
}

/// One `DIRECTOR-LIST` line as a row: missing fields print `-`, time
/// columns print `never` for 0 and local time otherwise (unparsable times
/// print as sent), extra fields are ignored.
pub fn status_row(line: &[u8]) -> Vec<Vec<u8>> {
    let f = tabescape::split_fields(line);
    (0..STATUS_HEADERS.len())
        .map(|i| match f.get(i) {
            None => b"-".to_vec(),
            Some(v) if TIME_COLUMNS.contains(&i) => match timefmt::parse(v) {
                Some(0) => b"never".to_vec(),
                Some(t) => timefmt::local(t).into_bytes(),
                None => v.clone(),
            },
            Some(v) => v.clone(),
        })
        .collect()
}

fn run_status(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = conn.send_line(b"DIRECTOR-LIST", ui) {
        return code;
    }
    let (lines, res) = conn.read_list(ui);
    let mut out = Output::new(STATUS_HEADERS);
    for line in &lines {
        out.row(status_row(line));
    }
    let code = ctx.print(&out, ui);
    res.err().unwrap_or(code)
}
