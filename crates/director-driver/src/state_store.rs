//! The saved state on disk: `state_dir/director-state`, read once at start and replaced
//! atomically on every save.
//!
//! A save writes a temporary file in the same directory, fsyncs it, renames it over the
//! old file and fsyncs the directory, so that after a crash (or a power cut) the file is
//! either the previous save or this one, never a mix. A file that does not decode is
//! renamed aside (`director-state.corrupt-<unix time>`) for an operator to look at, and the
//! director starts from its config. The format is `director_proto::state_file`'s.
//!
//! Two directors saving to one `state_dir` would overwrite each other's saves and restore a
//! mix at their next start, so a store holds an exclusive `flock` on
//! `state_dir/director-state.lock` for as long as it lives (the kernel releases it when the
//! process ends, however it ends); the lock file holds the owner's PID for the error a
//! second director gets.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use director_core::Snapshot;
use director_proto::state_file::{self, MAX_FILE_LEN};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// The file's name in `state_dir`.
pub const STATE_FILE_NAME: &str = "director-state";

/// The lock file's name in `state_dir`. It is never removed: removing a lock file lets a
/// third process lock a new file while the second still holds the old one.
pub const LOCK_FILE_NAME: &str = "director-state.lock";

/// A failed file operation, with what was done to which path.
#[derive(Debug, thiserror::Error)]
// The cause is part of the message and not a `source`: an error chain printed whole would
// say it twice.
#[error("{op} {path}: {cause}")]
pub struct StateStoreError {
    /// What we tried.
    pub op: &'static str,
    /// On which path.
    pub path: PathBuf,
    /// Why it failed.
    pub cause: std::io::Error,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateStoreError {
    let path = path.to_path_buf();
    move |cause| StateStoreError { op, path, cause }
}

/// What was found at start.
#[derive(Debug)]
pub enum ReadOutcome {
    /// No saved state (a first start): start from the config.
    Missing,
    /// A valid file.
    Read(Snapshot),
    /// A file that is not a valid state file (truncated, altered, another version): why.
    Corrupt(String),
    /// The file could not be read at all (permissions, I/O error).
    Unreadable(StateStoreError),
}

/// The state file of one director.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    path: PathBuf,
    /// Held while the store lives: no other process saves to this `state_dir`.
    _lock: Flock<File>,
    /// The sequence number of the newest snapshot written. Held while writing: saves are
    /// one at a time, and an older snapshot never replaces a newer one.
    written: Mutex<u64>,
}

impl StateStore {
    /// The store in `dir`, created (mode 0750) if missing, locked for this process: while
    /// it lives, opening a store on the same directory fails (in any process, this one
    /// included) with an error that names the lock file and the holder's PID.
    pub fn open(dir: &Path) -> Result<StateStore, StateStoreError> {
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(io_err("create state_dir", dir))?;
        }
        let lock = lock_dir(&dir.join(LOCK_FILE_NAME))?;
        Ok(StateStore {
            dir: dir.to_path_buf(),
            path: dir.join(STATE_FILE_NAME),
            _lock: lock,
            written: Mutex::new(0),
        })
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads and decodes the file.
    pub fn read(&self) -> ReadOutcome {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return ReadOutcome::Missing,
            Err(e) => return ReadOutcome::Unreadable(io_err("open", &self.path)(e)),
        };
        let len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => return ReadOutcome::Unreadable(io_err("stat", &self.path)(e)),
        };
        if len > MAX_FILE_LEN {
            return ReadOutcome::Corrupt(format!(
                "{len} bytes, more than the {MAX_FILE_LEN} a state file may have"
            ));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        if let Err(e) = file.read_to_end(&mut bytes) {
            return ReadOutcome::Unreadable(io_err("read", &self.path)(e));
        }
        match state_file::decode(&bytes) {
            Ok(s) => ReadOutcome::Read(s),
            Err(e) => ReadOutcome::Corrupt(e.to_string()),
        }
    }

    /// Renames the file aside as `director-state.corrupt-<now>` (`-<now>.<n>` when that
    /// name is taken: an earlier copy is never replaced); returns the new path.
    pub fn keep_aside(&self, now: u64) -> Result<PathBuf, StateStoreError> {
        let base = format!("{STATE_FILE_NAME}.corrupt-{now}");
        let aside = (0..1000)
            .map(|n| match n {
                0 => self.dir.join(&base),
                n => self.dir.join(format!("{base}.{n}")),
            })
            .find(|p| !p.exists())
            .unwrap_or_else(|| self.dir.join(&base));
        fs::rename(&self.path, &aside).map_err(io_err("rename aside", &self.path))?;
        Ok(aside)
    }

    /// Writes `bytes` as the state, atomically, unless a snapshot newer than `seq` was
    /// written already (then `Ok(false)`). Blocks: run it off the driver's thread.
    pub fn write(&self, seq: u64, bytes: &[u8]) -> Result<bool, StateStoreError> {
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        if seq <= *written {
            return Ok(false);
        }
        let tmp = self.dir.join(format!(".{STATE_FILE_NAME}.tmp"));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
        }
        fs::rename(&tmp, &self.path).map_err(io_err("rename into place", &tmp))?;
        // The rename is durable only once the directory is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("fsync", &self.dir))?;
        *written = seq;
        Ok(true)
    }
}

/// Takes the exclusive lock on `path` without waiting and writes our PID into it.
fn lock_dir(path: &Path) -> Result<Flock<File>, StateStoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_err("open the lock file", path))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            // The holder writes its PID right after locking; a holder caught in between
            // leaves the file empty, and the error then names no PID.
            let mut text = String::new();
            let holder = match file.read_to_string(&mut text) {
                Ok(_) => text.trim().parse::<u32>().ok(),
                Err(_) => None,
            };
            let who = match holder {
                Some(pid) => format!("another process (PID {pid}) holds it"),
                None => "another process holds it".to_owned(),
            };
            return Err(StateStoreError {
                op: "lock",
                path: path.to_path_buf(),
                cause: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!(
                        "{who}: another director uses this state_dir, and two directors must \
                         not share one (give each its own state_dir)"
                    ),
                ),
            });
        }
        Err((_, errno)) => {
            return Err(io_err("lock", path)(std::io::Error::from(errno)));
        }
    };
    let pid = format!("{}\n", std::process::id());
    lock.set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| lock.write_all(pid.as_bytes()))
        .map_err(io_err("write our PID to", path))?;
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(users: u32) -> Snapshot {
        Snapshot {
            saved_at: 1_700_000_000,
            hosts: vec![director_core::RingHost {
                ip: "10.0.0.1".parse().unwrap(),
                vhost_count: 100,
                tag: String::new(),
                down: false,
                last_updown_change: 0,
                hostname: None,
            }],
            config_hosts: vec![],
            users: (0..users)
                .map(|i| director_core::SavedUser {
                    hash: i + 1,
                    host: 0,
                    timestamp: 1_700_000_000,
                })
                .collect(),
        }
    }

    #[test]
    fn writes_atomically_and_never_goes_back_to_an_older_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(&dir.path().join("state")).unwrap();
        assert!(matches!(store.read(), ReadOutcome::Missing));
        let two = state_file::encode(&snapshot(2));
        assert!(store.write(2, &two).unwrap());
        // An older snapshot that finishes late is dropped.
        assert!(!store.write(1, &state_file::encode(&snapshot(1))).unwrap());
        match store.read() {
            ReadOutcome::Read(s) => assert_eq!(s, snapshot(2)),
            other => panic!("{other:?}"),
        }
        let names: Vec<String> = fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let mut names = names;
        names.sort();
        assert_eq!(
            names,
            vec![STATE_FILE_NAME.to_string(), LOCK_FILE_NAME.to_string()]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateStore::open(dir.path()).unwrap();
        let e = StateStore::open(dir.path()).expect_err("the directory is locked");
        let text = e.to_string();
        let lock = dir.path().join(LOCK_FILE_NAME);
        assert!(text.contains(&lock.display().to_string()), "{text}");
        assert!(
            text.contains(&format!("PID {}", std::process::id())),
            "{text}"
        );
        drop(first);
        StateStore::open(dir.path()).expect("unlocked once the first store is dropped");
    }

    #[test]
    fn a_corrupt_file_is_reported_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path()).unwrap();
        let bytes = state_file::encode(&snapshot(3));
        fs::write(store.path(), &bytes[..bytes.len() - 5]).unwrap();
        match store.read() {
            ReadOutcome::Corrupt(why) => assert!(why.contains("truncated"), "{why}"),
            other => panic!("{other:?}"),
        }
        let aside = store.keep_aside(1_700_000_123).unwrap();
        assert_eq!(aside, dir.path().join("director-state.corrupt-1700000123"));
        assert!(aside.exists());
        assert!(matches!(store.read(), ReadOutcome::Missing));
        // A second bad file in the same second keeps the first copy.
        fs::write(store.path(), b"garbage").unwrap();
        assert!(matches!(store.read(), ReadOutcome::Corrupt(_)));
        let second = store.keep_aside(1_700_000_123).unwrap();
        assert_eq!(
            second,
            dir.path().join("director-state.corrupt-1700000123.1")
        );
        assert_eq!(fs::read(&aside).unwrap(), &bytes[..bytes.len() - 5]);
    }
}
