//! `directord`: the director daemon.
//!
//! Usage: `directord [-F] [-c FILE] [-n] [-o KEY=VALUE]... [--version]`. With no `-c` it runs
//! on the embedded default configuration (a standalone director for mail servers
//! 127.0.1.1-127.0.1.3). At start it prints `directord: admin socket <path>` on stdout. It
//! never daemonizes (`-F` is accepted and is the only mode); SIGHUP reloads
//! `director_mail_servers`, SIGTERM/SIGINT stop it cleanly (exit 0).
//!
//! When the config has `inet_listener`s in `service imap-login` / `pop3-login` /
//! `submission-login` / `managesieve-login` / `lmtp`, it is also the mail proxy
//! (`director-proxy`): logins are routed by the core, kicks close proxied sessions, and
//! SIGTERM first stops accepting and lets sessions drain (`director_proxy_drain_time`).
//! With `inet_listener director-auth-http` in `service director` it also answers nginx's
//! mail `auth_http` requests with the backend the director picks (`auth_http.rs`), and with
//! `inet_listener director-metrics` it serves Prometheus metrics (`metrics.rs`).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod admin;
mod auth_http;
mod cli;
mod config_load;
mod health;
mod http;
mod limits;
mod logging;
mod metrics;
mod proxy_notify;
mod ring_listener;
mod server;
mod service_notify;
mod settings;

use std::process::ExitCode;

/// jemalloc with background purging: the user directory grows in steps and a flush of a
/// large host creates and frees many short-lived move states; glibc malloc kept that freed
/// memory (64 B of RSS per user at 1 M users), jemalloc's background threads give it back
/// (29 B; `docs/BENCHMARKS.md` §3).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use anyhow::Context;

use crate::cli::{Cli, USAGE};

/// Exit status for usage errors (sysexits EX_USAGE, as Dovecot uses).
const EXIT_USAGE: u8 = 64;
/// Exit status for configuration errors (EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = match Cli::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("directord: {e}\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if cli.help {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if let Some(part) = cli.settings_table {
        print!("{}", director_config::markdown_table(part));
        return ExitCode::SUCCESS;
    }
    if cli.version {
        println!("directord {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let loaded = match config_load::load(&cli) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("directord: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.print_settings {
        print!("{}", loaded.printed);
        return ExitCode::SUCCESS;
    }
    match run(cli, loaded) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "fatal");
            eprintln!("directord: fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, loaded: config_load::Loaded) -> anyhow::Result<()> {
    logging::init(&loaded.settings.log)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    for ignored in &loaded.ignored {
        tracing::debug!(setting = %ignored, "ignoring setting of another Dovecot service");
    }
    match limits::raise_nofile_limit() {
        Ok(n) => tracing::debug!(nofile = n, "raised RLIMIT_NOFILE"),
        Err(e) => tracing::warn!(error = %e, "could not raise RLIMIT_NOFILE"),
    }
    // Signals, SIGHUP reloads and the shutdown run here; the director state and the admin
    // sockets have a thread of their own, and the mail proxy its worker threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the tokio runtime")?;
    let reloader: server::Reloader = Box::new(move || Ok(config_load::load(&cli)?.settings));
    runtime.block_on(server::run(loaded.settings, reloader))?;
    // Idle connection tasks are dropped with the runtime.
    runtime.shutdown_background();
    Ok(())
}
