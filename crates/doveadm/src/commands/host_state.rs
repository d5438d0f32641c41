//! What `up`, `down` and `remove` share: resolve the host, send one
//! `HOST-UP|HOST-DOWN|HOST-REMOVE\t<ip>` per address (all first, then read
//! the replies), and report each like doveadm: `NOTFOUND` →
//! `Error: <ip>: doesn't exist` (exit 68 unless an error came first),
//! other replies → `Error: <ip>: <reply>` (75), `OK` with `-v` →
//! `Info: <ip>: <verb>`.

use super::per_ip::{self, Level, NotFound, Report};
use super::Ctx;
use crate::ui::Ui;

/// Runs one of the host state commands.
pub fn run(ctx: &mut Ctx, ui: &mut Ui, command: &str, verb: &str) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(host) = ctx.arg("host").map(<[u8]>::to_vec) else {
        return ctx.usage(ui);
    };
    let report = Report {
        ok: verb,
        level: Level::Error,
        not_found: NotFound::NoHost,
    };
    per_ip::send_per_ip(
        &mut conn,
        ui,
        &host,
        |ip| format!("{command}\t{ip}").into_bytes(),
        &report,
    )
}
