//! Runs a real Dovecot auth service (passwd-file userdb) in a private
//! base_dir and lists its users through our auth-master codec over the real
//! `auth-userdb` UNIX socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use director_proto::auth_master::{AuthMasterError, ListEvent, UserListSession};

/// A Dovecot instance stopped (by the PID in its master.pid) on drop.
struct Dovecot {
    dir: PathBuf,
}

impl Dovecot {
    fn start(name: &str, userdb: &str) -> Dovecot {
        let version = Command::new("dovecot").arg("--version").output();
        assert!(
            matches!(version, Ok(ref o) if o.status.success()),
            "real Dovecot is required: apt-get install -y dovecot-core"
        );
        let dir =
            std::env::temp_dir().join(format!("director-proto-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("state")).unwrap();
        let passwd = dir.join("users.passwd");
        std::fs::write(
            &passwd,
            "user1:{PLAIN}p:1000:1000::/home/user1::\nuser2@example.com:{PLAIN}p:1000:1000::/home/u2::\ntab\tuser:{PLAIN}x:1000:1000::/home/u4::\n",
        )
        .unwrap();
        let userdb = userdb.replace("PASSWD", &passwd.display().to_string());
        let conf = format!(
            "instance_name = dp-{name}-{pid}\nbase_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
             protocols =\nlisten = 127.0.0.1\nssl = no\n\
             passdb {{\n  driver = passwd-file\n  args = {p}\n}}\n{userdb}\n\
             service auth {{\n  unix_listener auth-userdb {{\n    mode = 0666\n  }}\n}}\n",
            pid = std::process::id(),
            d = dir.display(),
            p = passwd.display(),
        );
        // The config lives outside base_dir (Dovecot symlinks base_dir/dovecot.conf).
        let conf_path = dir.join("dovecot.conf.in");
        std::fs::write(&conf_path, conf).unwrap();
        // dovecot daemonizes and its child keeps inherited pipes open, so
        // don't capture output (Command::output would wait forever): send
        // stderr to a file instead.
        let err_path = dir.join("dovecot.stderr");
        let status = Command::new("dovecot")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_path).unwrap())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "dovecot failed: {}",
            std::fs::read_to_string(&err_path).unwrap_or_default()
        );
        let d = Dovecot { dir };
        d.wait_for(&d.dir.join("run/master.pid"));
        d.wait_for(&d.socket());
        d
    }

    fn wait_for(&self, path: &Path) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(
                Instant::now() < deadline,
                "{} did not appear",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/auth-userdb")
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let pid_file = self.dir.join("run/master.pid");
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            let pid = pid.trim().to_owned();
            let _ = Command::new("kill").arg(&pid).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn list(socket: &Path) -> Result<Vec<Vec<u8>>, AuthMasterError> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut session = UserListSession::new(1, None, None);
    stream.write_all(session.request_bytes()).unwrap();
    let mut users = Vec::new();
    for _ in 0..10_000 {
        while let Some(ev) = session.next_event()? {
            match ev {
                ListEvent::User(u) => users.push(u),
                ListEvent::Done => return Ok(users),
            }
        }
        let n = stream.read(session.spare_mut()).unwrap();
        assert!(n > 0, "auth server closed before DONE");
        session.commit(n);
    }
    panic!("no DONE");
}

#[test]
fn lists_users_of_a_real_passwd_file_userdb() {
    let dovecot = Dovecot::start(
        "list",
        "userdb {\n  driver = passwd-file\n  args = PASSWD\n}",
    );
    let users = list(&dovecot.socket()).unwrap();
    assert_eq!(
        users,
        vec![
            b"user1".to_vec(),
            b"user2@example.com".to_vec(),
            b"tab\tuser".to_vec()
        ]
    );
}

#[test]
fn a_userdb_that_cannot_iterate_reports_failure() {
    let dovecot = Dovecot::start(
        "static",
        "userdb {\n  driver = static\n  args = uid=nobody gid=nogroup\n}",
    );
    assert_eq!(list(&dovecot.socket()), Err(AuthMasterError::ListFailed));
}
