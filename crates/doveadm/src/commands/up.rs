//! `director up <host>`: `HOST-UP` for every address of the host
//! (see [`super::host_state`]).

use super::{host_state, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::ui::Ui;

/// `up`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "up",
    usage: "[-a <director socket path>] <host>",
    params: &[SOCKET_PARAM, Param::pos("host")],
    run,
};

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    host_state::run(ctx, ui, "HOST-UP", "up")
}
