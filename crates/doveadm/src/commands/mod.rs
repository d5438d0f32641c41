//! Dispatch of `doveadm [global options] director <command> …` and what
//! every subcommand shares: its parameter table, usage line, the admin
//! connection and output rendering.

pub mod add;
pub mod down;
pub mod dump;
pub mod flush;
pub mod host_state;
pub mod kick;
pub mod map;
pub mod move_user;
pub mod per_ip;
pub mod remove;
pub mod ring;
pub mod status;
pub mod up;
pub mod update;

use std::net::IpAddr;

use crate::args::{self, Global, Param, Parsed};
use crate::client::Connection;
use crate::config::Settings;
use crate::exit;
use crate::format::{self, Formatter, Output};
use crate::ui::Ui;

/// `-a` as every subcommand declares it.
pub const SOCKET_PARAM: Param = Param::opt(b'a', "socket-path");

/// A subcommand: its name after `director`, usage text, parameters and code.
#[derive(Debug)]
pub struct CommandSpec {
    /// Name after `doveadm director` (`add`, `ring status`).
    pub name: &'static str,
    /// Usage text after the name.
    pub usage: &'static str,
    /// Parameters, in doveadm's declaration order (it matters for
    /// positionals and for ambiguous-prefix messages).
    pub params: &'static [Param],
    /// Runs the command; returns the exit code.
    pub run: fn(&mut Ctx, &mut Ui) -> i32,
}

/// All `director` subcommands, in doveadm's usage order.
pub const COMMANDS: &[&CommandSpec] = &[
    &add::SPEC,
    &down::SPEC,
    &dump::SPEC,
    &flush::SPEC,
    &kick::SPEC,
    &map::SPEC,
    &move_user::SPEC,
    &remove::SPEC,
    &ring::ADD_SPEC,
    &ring::REMOVE_SPEC,
    &ring::STATUS_SPEC,
    &status::SPEC,
    &up::SPEC,
    &update::SPEC,
];

/// The `director` usage text (printed for a missing or unknown subcommand).
pub fn director_usage() -> String {
    let mut s = String::from("usage: doveadm [-Dv] [-f <formatter>] director <command> [<args>]\n");
    let mut ring_done = false;
    for c in COMMANDS {
        if c.name.starts_with("ring ") {
            if !ring_done {
                s.push_str(&format!("  {:<12} {}\n", "ring", "add|remove|status"));
                ring_done = true;
            }
            continue;
        }
        s.push_str(&format!("  {:<12} {}\n", c.name, c.usage));
    }
    s
}

/// The top-level usage, limited to the command this binary implements.
pub const TOP_USAGE: &str = "usage: doveadm [-Dv] [-f <formatter>] <command> [<args>]\n               \n  director     add|down|dump|flush|kick|map|move|remove|ring|status|up|update\n";

/// Everything a running subcommand needs.
#[derive(Debug)]
pub struct Ctx {
    /// Global options.
    pub global: Global,
    /// Settings from the config.
    pub settings: Settings,
    /// The formatter (`table` unless `-f`).
    pub formatter: Formatter,
    /// Whether `-f` was given (some commands print specially otherwise).
    pub formatter_explicit: bool,
    /// Table width.
    pub width: usize,
    /// Parsed parameters.
    pub params: Parsed,
    /// The running command.
    pub spec: &'static CommandSpec,
}

impl Ctx {
    /// The `-a` value, if given.
    pub fn explicit_socket(&self) -> Option<String> {
        self.params
            .str("socket-path")
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    /// The admin socket: `-a`, else `<base_dir>/director-admin`.
    pub fn socket(&self) -> String {
        self.explicit_socket()
            .unwrap_or_else(|| self.settings.admin_socket())
    }

    /// Connects and handshakes (errors printed; exit code returned).
    pub fn connect(&self, ui: &mut Ui) -> Result<Connection, i32> {
        Connection::open(&self.socket(), ui)
    }

    /// Prints this command's usage line; returns 64.
    pub fn usage(&self, ui: &mut Ui) -> i32 {
        ui.raw_line(format!(
            "doveadm director {} {}",
            self.spec.name, self.spec.usage
        ));
        ui.set_exit(exit::USAGE);
        ui.aborted = true;
        exit::USAGE
    }

    /// A string parameter.
    pub fn arg(&self, name: &str) -> Option<&[u8]> {
        self.params.str(name)
    }

    /// Renders `out` with the chosen formatter into stdout. `-f formatted`
    /// needs a template only some commands have: without one, printing the
    /// first value is doveadm's fatal error (exit 75); an empty result
    /// prints nothing and succeeds.
    pub fn print(&self, out: &Output, ui: &mut Ui) -> i32 {
        self.print_with(&self.formatter, out, ui)
    }

    /// Like [`Ctx::print`] with a given formatter.
    pub fn print_with(&self, formatter: &Formatter, out: &Output, ui: &mut Ui) -> i32 {
        if matches!(formatter, Formatter::Formatted(t) if t.is_empty()) && !out.rows.is_empty() {
            return ui.fatal(
                "formatted formatter cannot be used without a format.",
                exit::TEMPFAIL,
            );
        }
        let bytes = format::render(formatter, out, self.width);
        ui.out.extend_from_slice(&bytes);
        ui.rendered = true;
        exit::OK
    }

    /// The formatter for a command whose default output is `template`:
    /// used without `-f` and with `-f formatted`.
    pub fn formatter_or_template(&self, template: &str) -> Formatter {
        match &self.formatter {
            _ if !self.formatter_explicit => Formatter::Formatted(template.to_owned()),
            Formatter::Formatted(_) => Formatter::Formatted(template.to_owned()),
            f => f.clone(),
        }
    }
}

/// Resolves `host` for a host command; on failure prints
/// `Error: gethostname(HOST) failed: …`, sets exit 75 and returns `None`.
pub fn resolve_host(host: &[u8], ui: &mut Ui) -> Option<Vec<IpAddr>> {
    match crate::resolve::lookup(host) {
        Ok(ips) => Some(ips),
        Err(e) => {
            ui.error(format!(
                "gethostname({}) failed: {e}",
                String::from_utf8_lossy(host)
            ));
            ui.set_exit(exit::TEMPFAIL);
            None
        }
    }
}

/// Runs doveadm with `argv` (program name excluded); output goes to `ui`.
pub fn main(argv: &[Vec<u8>], ui: &mut Ui) -> i32 {
    let (global, mut i) = match args::parse_global(argv) {
        Ok(g) => g,
        Err(e) => {
            ui.raw_line(e.0);
            return exit::FATAL_DEFAULT;
        }
    };
    ui.verbose = global.verbose;
    let formatter = match &global.formatter {
        None => Formatter::Table,
        Some(name) => match Formatter::from_name(name) {
            Some(f) => f,
            None => {
                ui.raw_line(format!(
                    "doveadm: Fatal: Unknown print formatter: {}",
                    String::from_utf8_lossy(name)
                ));
                return exit::TEMPFAIL;
            }
        },
    };
    if argv.get(i).map(Vec::as_slice) != Some(b"director") {
        ui.stderr(TOP_USAGE.as_bytes());
        return exit::USAGE;
    }
    i += 1;
    let settings = match crate::config::load(global.config.as_deref(), &global.overrides) {
        Ok(s) => s,
        Err(e @ crate::config::LoadError::Read(_)) => {
            return ui.fatal(e.to_string(), exit::TEMPFAIL)
        }
        Err(crate::config::LoadError::Syntax(line)) => {
            ui.raw_line(line);
            return exit::FATAL_DEFAULT;
        }
    };
    let Some((spec, words)) = find_command(&argv[i..]) else {
        ui.stderr(director_usage().as_bytes());
        return exit::USAGE;
    };
    i += words;
    let prog = spec.name.rsplit(' ').next().unwrap_or(spec.name);
    let params = match args::parse_command(prog, spec.params, &argv[i..]) {
        Ok(p) => p,
        Err(e) => {
            ui.raw_line(e.0);
            // doveadm has already set up its formatter here and finishes it.
            finish_formatter(&formatter, ui);
            return exit::USAGE;
        }
    };
    let mut ctx = Ctx {
        formatter_explicit: global.formatter.is_some(),
        global,
        settings,
        formatter,
        width: format::table::terminal_width(),
        params,
        spec,
    };
    let code = (spec.run)(&mut ctx, ui);
    if !ui.aborted && !ui.rendered {
        finish_formatter(&ctx.formatter, ui);
    }
    if code != 0 {
        code
    } else {
        ui.exit_code()
    }
}

/// What doveadm's formatter prints when a command printed nothing: `tab`
/// still writes its (empty) title line, `json` an empty array.
fn finish_formatter(formatter: &Formatter, ui: &mut Ui) {
    let empty = Output::default();
    ui.out
        .extend_from_slice(&format::render(formatter, &empty, 80));
    ui.rendered = true;
}

/// Finds the subcommand named by the first one or two words of `argv`.
fn find_command(argv: &[Vec<u8>]) -> Option<(&'static CommandSpec, usize)> {
    let first = argv.first()?;
    if first.as_slice() == b"ring" {
        let second = argv.get(1)?;
        let name = format!("ring {}", String::from_utf8_lossy(second));
        return COMMANDS
            .iter()
            .copied()
            .find(|c| c.name == name)
            .map(|c| (c, 2));
    }
    COMMANDS
        .iter()
        .copied()
        .find(|c| !c.name.contains(' ') && c.name.as_bytes() == first.as_slice())
        .map(|c| (c, 1))
}
