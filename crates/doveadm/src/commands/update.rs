//! `director update <host> <vhost count>`: `HOST-UPDATE` for every address
//! of the host (a `NOTFOUND` exits 75 here, unlike `up`/`down`).

use super::{add, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::ui::Ui;
use director_proto::value::parse_uint;

/// `update`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "update",
    usage: "[-a <director socket path>] <host> <vhost count>",
    params: &[SOCKET_PARAM, Param::pos("host"), Param::pos("vhost-count")],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (Some(host), Some(count)) = (ctx.arg("host"), ctx.arg("vhost-count")) else {
        return ctx.usage(ui);
    };
    let Some(n) = parse_uint(count) else {
        return ctx.usage(ui);
    };
    let (host, tag) = add::split_tag(host);
    add::send_host_set(&mut conn, ui, "HOST-UPDATE", &host, &tag, Some(n))
}
