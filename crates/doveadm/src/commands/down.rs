//! `director down <host>`: `HOST-DOWN` for every address of the host
//! (see [`super::host_state`]).

use super::{host_state, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::ui::Ui;

/// `down`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "down",
    usage: "[-a <director socket path>] <host>",
    params: &[SOCKET_PARAM, Param::pos("host")],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    host_state::run(ctx, ui, "HOST-DOWN", "down")
}
