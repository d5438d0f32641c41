//! `director map [-f <users file>] [-h | -u] [<host>]`: which users sit
//! where. Usernames come from the users file (one per line, split on LF
//! only; a missing file is silently empty) or from the userdb (auth-master
//! user listing); they are hashed here and matched against `USER-LIST`.
//! `-u <user>` prints a user's hash without connecting; `-h <hash>` prints
//! the known names with that hash.

use std::collections::HashMap;
use std::net::IpAddr;

use super::{move_user::hash_user, resolve_host, CommandSpec, Ctx, SOCKET_PARAM};
use crate::args::Param;
use crate::auth_master;
use crate::exit;
use crate::format::{Header, Output};
use crate::resolve::ip_text;
use crate::timefmt;
use crate::ui::Ui;
use director_proto::admin::{parse_user_list_line, UserListEntry};
use director_proto::value::parse_uint;

/// `map`.
pub const SPEC: CommandSpec = CommandSpec {
    name: "map",
    usage: "[-a <director socket path>] [-f <users file>] [-h | -u] [<host>]",
    params: &[
        SOCKET_PARAM,
        Param::opt(b'f', "users-file"),
        Param::flag(b'h', "hash-map"),
        Param::flag(b'u', "user-map"),
        Param::pos("host"),
    ],
    run,
};

/// Columns of the full map.
pub const HEADERS: &[Header] = &[
    Header::new("user").expand(),
    Header::new("hash"),
    Header::new("mail server ip"),
    Header::new("expire time"),
];
/// The single column of `map -u`.
pub const HASH_HEADER: &[Header] = &[Header::new("hash").hidden().expand()];
/// The single column of `map -h`.
pub const USER_HEADER: &[Header] = &[Header::new("user").hidden().expand()];

/// Most usernames read from a users file; bounds memory.
pub const MAX_USERS_FILE_BYTES: u64 = 1 << 30;

/// Usernames by hash; later names come first (doveadm's order).
#[derive(Debug, Default)]
struct UserTable {
    by_hash: HashMap<u32, Vec<Vec<u8>>>,
}

impl UserTable {
    fn add(&mut self, hash: u32, user: Vec<u8>) {
        self.by_hash.entry(hash).or_default().push(user);
    }
    fn names(&self, hash: u32) -> impl Iterator<Item = &Vec<u8>> {
        self.by_hash
            .get(&hash)
            .into_iter()
            .flat_map(|v| v.iter().rev())
    }
}

fn run(ctx: &mut Ctx, ui: &mut Ui) -> i32 {
    if ctx.params.flag("user-map") {
        let Some(user) = ctx.arg("host").map(<[u8]>::to_vec) else {
            return ctx.usage(ui);
        };
        let Some(hash) = hash_user(ctx, ui, &user) else {
            return exit::OK;
        };
        let mut out = Output::new(HASH_HEADER);
        out.row(vec![hash.to_string().into_bytes()]);
        return ctx.print(&out, ui);
    }
    let mut conn = match ctx.connect(ui) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let host = ctx.arg("host").map(<[u8]>::to_vec);
    let wanted_hash = if ctx.params.flag("hash-map") {
        let Some(h) = &host else {
            return ctx.usage(ui);
        };
        match parse_uint(h) {
            Some(n) => Some(n),
            None => {
                return ui.fatal(
                    format!("Invalid username hash: {}", String::from_utf8_lossy(h)),
                    exit::TEMPFAIL,
                )
            }
        }
    } else {
        None
    };
    let users = load_users(ctx, ui);
    if let Some(hash) = wanted_hash {
        let mut out = Output::new(USER_HEADER);
        for name in users.names(hash) {
            out.row(vec![name.clone()]);
        }
        return ctx.print(&out, ui);
    }
    let mut filter: Option<Vec<IpAddr>> = None;
    let request = match &host {
        None => "USER-LIST".to_owned(),
        Some(h) => {
            let Some(ips) = resolve_host(h, ui) else {
                return exit::TEMPFAIL;
            };
            if ips.len() == 1 {
                format!("USER-LIST\t{}", ip_text(&ips[0]))
            } else {
                filter = Some(ips);
                "USER-LIST".to_owned()
            }
        }
    };
    if let Err(code) = conn.send_line(request.as_bytes(), ui) {
        return code;
    }
    let (lines, res) = conn.read_list(ui);
    let mut out = Output::new(HEADERS);
    for line in &lines {
        let Ok(UserListEntry { hash, expire, ip }) = parse_user_list_line(line) else {
            ui.error([&b"Invalid USER-LIST reply: "[..], line].concat());
            ui.set_exit(exit::PROTOCOL);
            continue;
        };
        if let Some(ips) = &filter {
            if !ips.contains(&ip) {
                continue;
            }
        }
        let hash_text = hash.to_string().into_bytes();
        let ip_t = ip_text(&ip).into_bytes();
        let expire_t = timefmt::local(expire).into_bytes();
        let mut any = false;
        for name in users.names(hash) {
            any = true;
            out.row(vec![
                name.clone(),
                hash_text.clone(),
                ip_t.clone(),
                expire_t.clone(),
            ]);
        }
        if !any {
            out.row(vec![b"<unknown>".to_vec(), hash_text, ip_t, expire_t]);
        }
    }
    let code = ctx.print(&out, ui);
    res.err().unwrap_or(code)
}

/// Builds the username table from `-f` or from the userdb; users whose
/// hash cannot be computed are skipped (after an error line each).
fn load_users(ctx: &Ctx, ui: &mut Ui) -> UserTable {
    let mut table = UserTable::default();
    let names: Vec<Vec<u8>> = match ctx.arg("users-file") {
        Some(path) => read_users_file(&String::from_utf8_lossy(path)),
        None => {
            let socket = ctx.settings.auth_userdb_socket();
            let (names, res) = auth_master::list_users(std::path::Path::new(&socket));
            if let Err(e) = res {
                ui.error(format!("auth-master: userdb list: {e}"));
                ui.error("user listing failed");
                ui.set_exit(exit::TEMPFAIL);
            }
            names
        }
    };
    for name in names {
        if let Some(hash) = hash_user(ctx, ui, &name) {
            table.add(hash, name);
        }
    }
    table
}

/// One username per LF-terminated line (the last line may lack its LF;
/// CR is kept). A file that cannot be read gives no users.
fn read_users_file(path: &str) -> Vec<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    let Ok(f) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if f.take(MAX_USERS_FILE_BYTES).read_to_end(&mut data).is_err() {
        return Vec::new();
    }
    let mut users: Vec<Vec<u8>> = data.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    if data.last() == Some(&b'\n') || data.is_empty() {
        users.pop();
    }
    users
}
