//! A real Dovecot running only its auth service, with a passwd-file passdb and userdb.
//!
//! Why: `doveadm director map` (without `-f`) lists users through the userdb's iteration on
//! `base_dir/auth-userdb`; the static userdb of a director cannot list, a passwd-file can.
//! Run doveadm with this instance's config (or `-o base_dir=`[`base_dir`](DovecotAuth::base_dir))
//! and `-a DIRECTOR_ADMIN_SOCKET` to combine it with a director.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use crate::instance::Instance;
use crate::{run_doveadm_real, KitError, LoopbackAllocator};

/// How long the auth service may take to answer `doveadm user '*'`.
const AUTH_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Characters a passwd-file cannot hold in a username or password field.
const PASSWD_FILE_FORBIDDEN: [char; 3] = [':', '\n', '\r'];

/// A running auth-only Dovecot, stopped by PID on [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct DovecotAuth {
    instance: Instance,
    users: Vec<(String, String)>,
}

impl DovecotAuth {
    /// Starts an auth-only instance whose passwd-file holds `users` as `(name, password)`
    /// (plain-text scheme; `uid=nobody gid=nogroup` for all). Names and passwords must not
    /// contain `:` or line breaks (passwd-file format).
    pub fn start(users: &[(&str, &str)]) -> Result<Self, KitError> {
        let mut instance = Instance::new("auth")?;
        let mut passwd = String::new();
        for (name, password) in users {
            if name.contains(PASSWD_FILE_FORBIDDEN) || password.contains(PASSWD_FILE_FORBIDDEN) {
                return Err(instance.start_error(format!(
                    "user {name:?}: passwd-file fields cannot contain ':' or line breaks"
                )));
            }
            passwd.push_str(&format!("{name}:{{PLAIN}}{password}::::::\n"));
        }
        let passwd_path = instance.root().join("users.passwd");
        fs::write(&passwd_path, passwd).map_err(|e| KitError::io("writing passwd-file", e))?;
        // The auth process runs as the unprivileged `dovecot` user and must read it.
        fs::set_permissions(&passwd_path, fs::Permissions::from_mode(0o644))
            .map_err(|e| KitError::io("chmod passwd-file", e))?;
        let ip = LoopbackAllocator::new().next_ip();
        let mut config = instance.common_config();
        config.push_str(&format!(
            "listen = {ip}\n\
             protocols =\n\
             disable_plaintext_auth = no\n\
             auth_mechanisms = plain login\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {passwd}\n}}\n\
             userdb {{\n  driver = passwd-file\n  args = {passwd}\n  default_fields = uid=nobody gid=nogroup home={home}/%u\n}}\n",
            passwd = passwd_path.display(),
            home = instance.root().join("home").display(),
        ));
        instance.start(&config)?;
        let auth = DovecotAuth {
            instance,
            users: users
                .iter()
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
        };
        auth.wait_ready()?;
        Ok(auth)
    }

    fn wait_ready(&self) -> Result<(), KitError> {
        let what = "no successful `doveadm user '*'`";
        self.instance
            .wait_until(what, AUTH_READY_TIMEOUT, PROBE_INTERVAL, || {
                let (stdout, stderr, code) =
                    run_doveadm_real(&self.config_path(), &["user", "-f", "uid", "*"]);
                match code {
                    0 => Ok(()),
                    _ => Err(format!("exit {code}: {stdout}{stderr}")),
                }
            })
    }

    /// The users it was started with, in order.
    pub fn users(&self) -> &[(String, String)] {
        &self.users
    }
    /// The userdb listing socket, `base_dir/auth-userdb`.
    pub fn auth_userdb_socket_path(&self) -> PathBuf {
        self.instance.base_dir().join("auth-userdb")
    }
    crate::instance::instance_accessors!();
    /// Runs the real `doveadm -c CONF ARGS...` against this instance; `(stdout, stderr, code)`.
    pub fn doveadm(&self, args: &[&str]) -> (String, String, i32) {
        run_doveadm_real(&self.config_path(), args)
    }
}
