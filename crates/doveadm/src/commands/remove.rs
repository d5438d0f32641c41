//! `director remove <host>`: `HOST-REMOVE` for every address of the host
//! (see [`super::host_state`]).

use super::{host_state, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::ui::Ui;

/// `remove`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "remove",
    usage: "[-a <director socket path>] <host>",
    params: &[SOCKET_PARAM, Param::pos("host")],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    host_state::run(ctx, ui, "HOST-REMOVE", "removed")
}
