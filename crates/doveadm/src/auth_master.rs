//! User listing over the auth-master protocol (`<base_dir>/auth-userdb`),
//! used by `map` without `-f` to learn every username. The codec is
//! `director_proto::auth_master::UserListSession`; this module does the
//! socket I/O and turns failures into doveadm's texts (the part after
//! `auth-master: userdb list: `).
//!
//! Wire (checked against a real Dovecot 2.3.19 auth service): the client
//! sends `VERSION\t1\t0\nLIST\t1\n` at once; the server answers
//! `VERSION\t1\t1`, `SPID\t<pid>`, one `LIST\t1\t<user>` per user, then
//! `DONE\t1\t` — or `DONE\t1\tfail` when the userdb cannot list (static).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use director_proto::auth_master::{AuthMasterError, ListEvent, UserListSession};

use crate::resolve::strerror;

/// How long we wait for the auth service between reads (Dovecot's
/// auth-master default timeout is 30 s).
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most usernames we keep; protects memory against a runaway server.
pub const MAX_USERS: usize = 10_000_000;
/// The request id doveadm uses.
const LIST_ID: u32 = 1;

/// The error text after `auth-master: userdb list: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListError(pub String);

/// Lists all users of the userdb behind `socket`. Users read before a
/// failure are returned with the error.
pub fn list_users(socket: &Path) -> (Vec<Vec<u8>>, Result<(), ListError>) {
    let mut users = Vec::new();
    let res = list_into(socket, &mut users);
    (users, res)
}

fn list_into(socket: &Path, users: &mut Vec<Vec<u8>>) -> Result<(), ListError> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        ListError(format!(
            "connect({}) failed: {}",
            socket.display(),
            strerror(&e)
        ))
    })?;
    // Without the timeout we would only lose the bound, not correctness.
    let _ = stream.set_read_timeout(Some(AUTH_TIMEOUT));
    let mut session = UserListSession::new(LIST_ID, None, None);
    stream.write_all(session.request_bytes()).map_err(|e| {
        ListError(format!(
            "write({}) failed: {}",
            socket.display(),
            strerror(&e)
        ))
    })?;
    loop {
        match session.next_event() {
            Ok(Some(ListEvent::User(u))) => {
                if users.len() < MAX_USERS {
                    users.push(u);
                }
                continue;
            }
            Ok(Some(ListEvent::Done)) => return Ok(()),
            Ok(None) => {}
            Err(AuthMasterError::ListFailed) => {
                return Err(ListError("User listing returned failure".to_owned()))
            }
            Err(AuthMasterError::Incompatible(_)) => {
                return Err(ListError(
                    "Authentication server not compatible with this client".to_owned(),
                ))
            }
            Err(e) => return Err(ListError(e.to_string())),
        }
        match stream.read(session.spare_mut()) {
            Ok(0) => return Err(ListError("Disconnected unexpectedly".to_owned())),
            Ok(n) => session.commit(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ListError("Request timed out".to_owned()))
            }
            Err(e) => return Err(ListError(format!("read() failed: {}", strerror(&e)))),
        }
    }
}
