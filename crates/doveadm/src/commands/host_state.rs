//! What `up`, `down` and `remove` share: resolve the host, send one
//! `HOST-UP|HOST-DOWN|HOST-REMOVE\t<ip>` per address (all first, then read
//! the replies), and report each like doveadm: `NOTFOUND` →
//! `Error: <ip>: doesn't exist` (exit 68 unless an error came first),
//! other replies → `Error: <ip>: <reply>` (75), `OK` with `-v` →
//! `Info: <ip>: <verb>`.

use super::{resolve_host, Ctx};
use crate::exit;
use crate::resolve::ip_text;
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
    let Some(ips) = resolve_host(&host, ui) else {
        return exit::TEMPFAIL;
    };
    let mut req = Vec::new();
    for ip in &ips {
        req.extend_from_slice(format!("{command}\t{}\n", ip_text(ip)).as_bytes());
    }
    if let Err(code) = conn.send(&req, ui) {
        return code;
    }
    for ip in &ips {
        let Some(reply) = super::read_reply(&mut conn, ui) else {
            return exit::TEMPFAIL;
        };
        let ip = ip_text(ip);
        match reply.as_slice() {
            b"OK" => ui.info(format!("{ip}: {verb}")),
            b"NOTFOUND" => {
                ui.error(format!("{ip}: doesn't exist"));
                ui.set_exit_if_ok(exit::NOHOST);
            }
            other => {
                ui.error([format!("{ip}: ").as_bytes(), other].concat());
                ui.set_exit(exit::TEMPFAIL);
            }
        }
    }
    exit::OK
}
