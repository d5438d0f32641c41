//! `director flush [-F] [--max-parallel <n>] <host>|all`: `-F` forgets
//! assignments right away (`HOST-FLUSH`), otherwise users are moved back
//! gracefully (`HOST-RESET-USERS`, optionally with a parallelism limit).

use super::per_ip::{self, Level, NotFound, Report};
use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::exit;
use crate::ui::Ui;

/// `flush`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "flush",
    usage: "[-a <director socket path>] [-F] [--max-parallel <n>] <host>|all",
    params: &[
        SOCKET_PARAM,
        Param::flag(b'F', "force-flush"),
        Param::long_int("max-parallel"),
        Param::pos("host"),
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
    let force = ctx.params.flag("force-flush");
    // doveadm sends the limit only when it parsed as a number above 0.
    let max = ctx.params.int("max-parallel").filter(|&n| n > 0);
    if host.as_slice() == b"all" {
        let req = match (force, max) {
            (true, _) => "HOST-FLUSH".to_owned(),
            (false, Some(n)) => format!("HOST-RESET-USERS\t\t{n}"),
            (false, None) => "HOST-RESET-USERS".to_owned(),
        };
        if let Err(code) = conn.send_line(req.as_bytes(), ui) {
            return code;
        }
        let reply = match conn.reply(ui) {
            Ok(l) => l,
            Err(code) => return code,
        };
        if reply.as_slice() == b"OK" {
            ui.info("flushed");
        } else {
            ui.error([&b"failed: "[..], &reply].concat());
            ui.set_exit(exit::TEMPFAIL);
        }
        return exit::OK;
    }
    let request = |ip: &str| {
        match (force, max) {
            (true, _) => format!("HOST-FLUSH\t{ip}"),
            (false, Some(n)) => format!("HOST-RESET-USERS\t{ip}\t{n}"),
            (false, None) => format!("HOST-RESET-USERS\t{ip}"),
        }
        .into_bytes()
    };
    let report = Report {
        ok: "flushed",
        level: Level::Warning,
        not_found: NotFound::NoHost,
    };
    per_ip::send_per_ip(&mut conn, ui, &host, request, &report)
}
