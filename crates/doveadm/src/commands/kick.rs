//! `director kick [-f <passdb field>] <user>`: `USER-KICK\t<user>` or
//! `USER-KICK-ALT\t<field>\t<user>`, both tab-escaped (unlike `status`).

use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::exit;
use crate::ui::Ui;
use director_proto::tabescape;

/// `kick`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "kick",
    usage: "[-a <director socket path>] [-f <passdb field>] <user>",
    params: &[
        SOCKET_PARAM,
        Param::opt(b'f', "passdb-field"),
        Param::pos("user"),
    ],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(user) = ctx.arg("user").map(<[u8]>::to_vec) else {
        return ctx.usage(ui);
    };
    let mut req = Vec::new();
    match ctx.arg("passdb-field") {
        Some(field) => {
            req.extend_from_slice(b"USER-KICK-ALT\t");
            req.extend_from_slice(&tabescape::escape(field));
        }
        None => req.extend_from_slice(b"USER-KICK"),
    }
    req.push(b'\t');
    req.extend_from_slice(&tabescape::escape(&user));
    if let Err(code) = conn.send_line(&req, ui) {
        return code;
    }
    let reply = match conn.reply(ui) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if reply.as_slice() == b"OK" {
        ui.info([&b"User "[..], &user, b" kicked"].concat());
    } else {
        ui.error([&b"failed: "[..], &reply].concat());
        ui.set_exit(exit::TEMPFAIL);
    }
    exit::OK
}
