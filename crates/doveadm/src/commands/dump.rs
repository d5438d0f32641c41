//! `director dump`: the commands that would recreate the current host
//! list (`HOST-LIST`, then `HOST-LIST-REMOVED`). Without `-f` it prints
//! shell lines (`doveadm director add [-a <socket> ]<ip>[@tag] <vhosts>`,
//! `-a` only when given explicitly); with `-f` a regular table.

use super::{CommandSpec, Ctx, SOCKET_PARAM};
use crate::format::{Formatter, Header, Output};
use crate::ui::Ui;
use director_proto::tabescape;

/// `dump`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "dump",
    usage: "[-a <director socket path>]",
    params: &[SOCKET_PARAM],
    run,
};

/// Columns of `dump`.
pub const HEADERS: &[Header] = &[
    Header::new("command"),
    Header::new("socket-path"),
    Header::new("host"),
    Header::new("vhost_count"),
];

/// The template used without `-f`.
pub const TEMPLATE: &str = "doveadm director %{command} %{socket-path}%{host} %{vhost_count}\n";

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let formatter = ctx.formatter_or_template(TEMPLATE);
    // The template shows `-a <path> ` only for an explicit -a; the other
    // formatters always show the socket path.
    let socket_value = if matches!(formatter, Formatter::Formatted(_)) {
        ctx.explicit_socket()
            .map(|s| format!("-a {s} "))
            .unwrap_or_default()
            .into_bytes()
    } else {
        ctx.socket().into_bytes()
    };
    let mut out = Output::new(HEADERS);
    if let Err(code) = conn.send_line(b"HOST-LIST", ui) {
        return code;
    }
    let (lines, res) = conn.read_list(ui);
    for line in &lines {
        let f = tabescape::split_fields(line);
        if f.len() < 6 {
            continue;
        }
        let mut host = f[0].clone();
        if !f[3].is_empty() {
            host.push(b'@');
            host.extend_from_slice(&f[3]);
        }
        out.row(vec![
            b"add".to_vec(),
            socket_value.clone(),
            host,
            f[1].clone(),
        ]);
    }
    if let Err(code) = res {
        ctx.print_with(&formatter, &out, ui);
        return code;
    }
    if let Err(code) = conn.send_line(b"HOST-LIST-REMOVED", ui) {
        return code;
    }
    let (lines, res) = conn.read_list(ui);
    for line in lines {
        out.row(vec![
            b"remove".to_vec(),
            socket_value.clone(),
            line,
            Vec::new(),
        ]);
    }
    let code = ctx.print_with(&formatter, &out, ui);
    res.err().unwrap_or(code)
}
