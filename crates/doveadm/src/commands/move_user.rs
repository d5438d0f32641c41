//! `director move <user> <host>`: hash the user here (with
//! `director_username_hash` from doveadm's config) and send
//! `USER-MOVE\t<hash>\t<first ip of host>`.

use super::{resolve_host, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::exit;
use crate::resolve::ip_text;
use crate::ui::Ui;

/// `move`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "move",
    usage: "[-a <director socket path>] <user> <host>",
    params: &[SOCKET_PARAM, Param::pos("user"), Param::pos("host")],
    run,
};

/// Hashes `user` with the configured format. A format Dovecot cannot
/// expand (unknown variable) prints doveadm's error for this user and gives
/// `None`; doveadm then skips the user without failing the command.
pub fn hash_user(ctx: &Ctx, ui: &mut Ui, user: &[u8]) -> Option<u32> {
    let text = &ctx.settings.username_hash;
    let failed = |ui: &mut Ui, why: String| {
        ui.error(format!(
            "Failed to expand director_username_hash={text}: {why}"
        ));
        None
    };
    let fmt = match director_core::HashFormat::parse_lenient(text) {
        Ok(f) => f,
        Err(e) => return failed(ui, e.to_string()),
    };
    match director_core::user_hash(user, &fmt) {
        Ok(h) => Some(h),
        Err(director_core::HashError::UnknownVariable(name)) => {
            failed(ui, format!("Unknown variable '%{name}'"))
        }
    }
}

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (Some(user), Some(host)) = (
        ctx.arg("user").map(<[u8]>::to_vec),
        ctx.arg("host").map(<[u8]>::to_vec),
    ) else {
        return ctx.usage(ui);
    };
    let Some(hash) = hash_user(ctx, ui, &user) else {
        return exit::OK;
    };
    let Some(ips) = resolve_host(&host, ui) else {
        return exit::TEMPFAIL;
    };
    let ip = ip_text(&ips[0]);
    if let Err(code) = conn.send_line(format!("USER-MOVE\t{hash}\t{ip}").as_bytes(), ui) {
        return code;
    }
    let reply = match conn.reply(ui) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match reply.as_slice() {
        b"OK" => ui.info(format!("User hash {hash} moved to {ip}")),
        b"NOTFOUND" => {
            ui.error(format!("Host '{ip}' doesn't exist"));
            ui.set_exit(exit::NOHOST);
        }
        b"TRYAGAIN" => {
            ui.error("User is already being moved, wait a while for it to be finished");
            ui.set_exit(exit::TEMPFAIL);
        }
        other => {
            ui.error([&b"failed: "[..], other].concat());
            ui.set_exit(exit::TEMPFAIL);
        }
    }
    exit::OK
}
