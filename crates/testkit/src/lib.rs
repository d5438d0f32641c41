//! Dev-only helpers that run **real** Dovecot 2.3 on loopback for integration tests.
//!
//! Why: our director must behave like Dovecot's, and the only trustworthy oracle is the real
//! program. Every helper here starts a private Dovecot instance with its own generated config,
//! `base_dir`, `state_dir` and log inside a [`tempfile::TempDir`], listening only on a
//! 127.x.y.z address, and stops it by the PID in its `master.pid` when dropped. Nothing else is
//! ever signalled.
//!
//! * [`require_dovecot`] — fail (not skip) when Dovecot is not installed.
//! * [`LoopbackAllocator`], [`free_port`] — per-test 127.x.y.z address blocks and free ports.
//! * [`DovecotDirector`] — a standalone real director with a TCP admin listener.
//! * [`DovecotAuth`] — a real auth service with a passwd-file passdb + userdb (listable).
//! * [`DovecotBackend`] — an IMAP/POP3/LMTP backend that reveals its IP through IMAP `ID`.
//! * [`AdminClient`] — a minimal raw client for the director admin protocol.
//! * [`run_doveadm_real`] — run the real `doveadm -c CONF ...`.
//! * [`run_mail_clients`] — real IMAP/POP3/Submission/ManageSieve/LMTP clients (Python).
//!
//! ```no_run
//! use testkit::{require_dovecot, DirectorOptions, DovecotDirector};
//!
//! require_dovecot();
//! let director = DovecotDirector::start(
//!     DirectorOptions::new("127.0.1.1 127.0.1.2@tagA").with_username_hash("%Ln"),
//! )
//! .expect("real director starts");
//! let mut admin = director.admin_client().expect("admin connects");
//! let hosts = admin.command("HOST-LIST").expect("HOST-LIST");
//! assert_eq!(hosts[0], "127.0.1.1\t100\t0\t\tU\t0");
//! let out = director.doveadm(&["status"]).expect("doveadm runs");
//! assert!(out.status.success());
//! // Dropping `director` stops its master by PID.
//! ```
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod backend;
mod director;
mod director_proxy;
mod error;
mod instance;
mod loopback;
mod lua_proxy;
mod mail_clients;
mod man_page;
mod tools;

pub use admin::{AdminClient, ADMIN_LINE_MAX, ADMIN_MULTILINE_COMMANDS};
pub use auth::DovecotAuth;
pub use backend::{BackendOptions, DovecotBackend, BACKEND_PASSWORD};
pub use director::{DirectorOptions, DovecotDirector, RING_SYNC_TIMEOUT};
pub use director_proxy::{DirectorProxyOptions, DovecotDirectorProxy, PROXY_READY_TIMEOUT};
pub use error::KitError;
pub use loopback::{free_port, free_ports, LoopbackAllocator};
pub use lua_proxy::{require_auth_lua, DovecotLuaProxy, AUTH_LUA_MODULE};
pub use mail_clients::{mail_clients_script, run_mail_clients};
pub use man_page::{man_page_path, man_section, render_man_page};
pub use tools::{
    python3_with_module, require_backend_services, require_dovecot, require_python3,
    require_submission_and_sieve, run_doveadm_real, INSTALL_HINT,
};
