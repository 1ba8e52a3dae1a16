//! The built-in user store: `DATA_DIR/users.json`, user name -> argon2id
//! PHC hash. Writes are atomic (temporary file + rename, mode 0600) and
//! serialised across processes by an exclusive lock on
//! `users.json.lock`, so `packlight user add` can run while the service
//! reads. Readers re-read the file whenever it changed on disk.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use crate::AuthError;

const USERS_FILE: &str = "users.json";
const LOCK_FILE: &str = "users.json.lock";
/// Longest password accepted (argon2 takes any length; this bounds work).
pub(crate) const MAX_PASSWORD: usize = 1024;

/// The file's shape: `{"users": {"alice": "$argon2id$v=19$..."}}`.
#[derive(Serialize, Deserialize, Default)]
struct UsersFile {
    users: BTreeMap<String, String>,
}

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

type Users = Arc<BTreeMap<String, String>>;

/// The user store of one data directory.
#[derive(Debug)]
pub struct UserStore {
    file: PathBuf,
    lock: PathBuf,
    dir: PathBuf,
    cache: Mutex<Option<(Stamp, Users)>>,
}

/// A user name the store accepts: `[A-Za-z0-9][A-Za-z0-9._@-]{0,63}`
/// (safe in a header value, a cookie and a log line).
pub(crate) fn valid_user(user: &str) -> bool {
    let b = user.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'@' | b'-'))
}

/// base64url of the first 12 bytes of SHA-256 of a PHC string (the hash
/// has its own random salt, so the stamp changes with every new password).
fn stamp_of(hash: &str) -> String {
    use base64::Engine;
    let d = ring::digest::digest(&ring::digest::SHA256, hash.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d.as_ref()[..12])
}

fn dummy_hash() -> &'static str {
    // Verified against for unknown users, so that answering "no such
    // user" costs as much as a wrong password.
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"packlight-no-such-user")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl UserStore {
    /// The store in `data_dir` (created with mode 0700 if missing). A
    /// missing `users.json` is an empty store; an unreadable one is an
    /// error naming the file.
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        if !data_dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|e| AuthError::io(data_dir, e))?;
        }
        let store = UserStore {
            file: data_dir.join(USERS_FILE),
            lock: data_dir.join(LOCK_FILE),
            dir: data_dir.to_path_buf(),
            cache: Mutex::new(None),
        };
        store.users()?;
        Ok(store)
    }

    /// Adds `user`, or replaces its password if it exists.
    pub fn add(&self, user: &str, password: &str) -> Result<(), AuthError> {
        if !valid_user(user) {
            return Err(AuthError::InvalidUser(user.to_string()));
        }
        if password.is_empty() {
            return Err(AuthError::InvalidPassword("it is empty"));
        }
        if password.len() > MAX_PASSWORD {
            return Err(AuthError::InvalidPassword("longer than 1024 bytes"));
        }
        let hash = Argon2::default()
            .hash_password(password.as_bytes())
            .map_err(|e| AuthError::Hash(e.to_string()))?
            .to_string();
        self.update(|users| {
            users.insert(user.to_string(), hash);
            true
        })?;
        tracing::info!(user, "user added or password changed");
        Ok(())
    }

    /// Removes `user`; `false` if there was none. Its sessions stop
    /// working at their next check.
    pub fn remove(&self, user: &str) -> Result<bool, AuthError> {
        let removed = self.update(|users| users.remove(user).is_some())?;
        if removed {
            tracing::info!(user, "user removed");
        }
        Ok(removed)
    }

    /// The user names, sorted.
    pub fn list(&self) -> Result<Vec<String>, AuthError> {
        Ok(self.users()?.keys().cloned().collect())
    }

    /// Whether `user` exists (cheap: a `stat` unless the file changed).
    pub fn contains(&self, user: &str) -> Result<bool, AuthError> {
        Ok(self.users()?.contains_key(user))
    }

    /// Whether `password` is `user`'s. Slow by design (argon2id): call it
    /// off the async runtime. Unknown users cost the same as wrong
    /// passwords.
    pub fn verify(&self, user: &str, password: &str) -> Result<bool, AuthError> {
        Ok(self.verify_stamped(user, password)?.is_some())
    }

    /// [`UserStore::verify`], giving the user's password stamp on success.
    pub(crate) fn verify_stamped(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Option<String>, AuthError> {
        if password.len() > MAX_PASSWORD {
            return Ok(None);
        }
        let users = self.users()?;
        let (hash, known) = match users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (dummy_hash(), false),
        };
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), hash)
            .is_ok();
        Ok((known && ok).then(|| stamp_of(hash)))
    }

    /// A short digest of `user`'s current password hash, or `None` if
    /// there is no such user. Sessions carry it, so setting a new password
    /// ends the sessions issued before.
    pub fn password_stamp(&self, user: &str) -> Result<Option<String>, AuthError> {
        Ok(self.users()?.get(user).map(|h| stamp_of(h)))
    }

    /// The current users, re-read when the file changed.
    fn users(&self) -> Result<Users, AuthError> {
        let stamp = match std::fs::metadata(&self.file) {
            Ok(m) => Some(Stamp {
                ino: m.ino(),
                len: m.len(),
                mtime: m.mtime(),
                mtime_nsec: m.mtime_nsec(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AuthError::io(&self.file, e)),
        };
        let Some(stamp) = stamp else {
            return Ok(Users::default());
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((s, users)) = cache.as_ref()
                && *s == stamp
            {
                return Ok(users.clone());
            }
        }
        let users = Arc::new(self.read()?.users);
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        *cache = Some((stamp, users.clone()));
        Ok(users)
    }

    fn read(&self) -> Result<UsersFile, AuthError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersFile::default()),
            Err(e) => return Err(AuthError::io(&self.file, e)),
        };
        let parsed: UsersFile = serde_json::from_str(&text).map_err(|e| AuthError::Corrupt {
            path: self.file.display().to_string(),
            message: format!("not a packlight user store ({e}); fix or remove it"),
        })?;
        Ok(parsed)
    }

    /// Read-modify-write under the cross-process lock; `change` returns
    /// whether it changed anything (else nothing is written).
    fn update(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> bool,
    ) -> Result<bool, AuthError> {
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock)
            .map_err(|e| AuthError::io(&self.lock, e))?;
        lock.lock().map_err(|e| AuthError::io(&self.lock, e))?;
        let mut current = self.read()?;
        let changed = change(&mut current.users);
        if changed {
            self.write(&current)?;
        }
        // Dropping the file releases the lock.
        drop(lock);
        Ok(changed)
    }

    fn write(&self, users: &UsersFile) -> Result<(), AuthError> {
        let mut text = serde_json::to_vec_pretty(users).map_err(|e| AuthError::Corrupt {
            path: self.file.display().to_string(),
            message: e.to_string(),
        })?;
        text.push(b'\n');
        write_atomic(&self.dir, &self.file, &text)
    }
}

/// Writes `bytes` to `path` through a temporary file in `dir` (mode 0600)
/// and a rename, then syncs the directory.
pub(crate) fn write_atomic(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let tmp = temp_name(dir, path);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(|e| AuthError::io(path, e))
}

/// A temporary file name beside `path`, unique per process and call.
pub(crate) fn temp_name(dir: &Path, path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{base}.tmp-{}-{n}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_replace_remove_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = UserStore::open(dir.path()).expect("open");
        assert!(store.list().expect("list").is_empty());
        store.add("bob", "pw-1").expect("add");
        store.add("alice", "pw-a").expect("add");
        assert_eq!(store.list().expect("list"), ["alice", "bob"]);
        assert!(store.verify("bob", "pw-1").expect("verify"));
        assert!(!store.verify("bob", "pw-a").expect("verify"));
        assert!(!store.verify("carol", "pw-1").expect("verify"));
        // Replace the password: a new stamp.
        let stamp = store.password_stamp("bob").expect("stamp").expect("bob");
        store.add("bob", "pw-2").expect("replace");
        let new_stamp = store.password_stamp("bob").expect("stamp").expect("bob");
        assert_ne!(stamp, new_stamp);
        assert_eq!(
            store.verify_stamped("bob", "pw-2").expect("verify"),
            Some(new_stamp)
        );
        assert_eq!(store.password_stamp("carol").expect("stamp"), None);
        assert!(!store.verify("bob", "pw-1").expect("verify"));
        assert!(store.verify("bob", "pw-2").expect("verify"));
        assert!(store.remove("bob").expect("remove"));
        assert!(!store.remove("bob").expect("remove again"));
        assert_eq!(store.list().expect("list"), ["alice"]);
        assert!(!store.contains("bob").expect("contains"));
    }

    #[test]
    fn file_is_private_argon2id_and_shared_between_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = UserStore::open(dir.path()).expect("open");
        let b = UserStore::open(dir.path()).expect("open");
        a.add("alice", "secret").expect("add");
        let path = dir.path().join(USERS_FILE);
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("$argon2id$"), "{text}");
        assert!(!text.contains("secret"));
        // Another handle (another process) sees the change.
        assert!(b.contains("alice").expect("contains"));
        b.remove("alice").expect("remove");
        assert!(!a.contains("alice").expect("contains"));
        // No temporary files left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn bad_names_passwords_and_files_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = UserStore::open(dir.path()).expect("open");
        for bad in ["", "-x", "a b", "a\r\nb", "é", &"x".repeat(65)] {
            assert!(
                matches!(store.add(bad, "pw"), Err(AuthError::InvalidUser(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            store.add("ok", ""),
            Err(AuthError::InvalidPassword(_))
        ));
        assert!(matches!(
            store.add("ok", &"p".repeat(MAX_PASSWORD + 1)),
            Err(AuthError::InvalidPassword(_))
        ));
        std::fs::write(dir.path().join(USERS_FILE), "not json").expect("write");
        assert!(matches!(
            UserStore::open(dir.path()),
            Err(AuthError::Corrupt { .. })
        ));
        assert!(store.list().is_err());
    }

    #[test]
    fn concurrent_adds_from_many_handles_lose_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = UserStore::open(&path).expect("open");
                    s.add(&format!("user{i}"), "pw").expect("add");
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let s = UserStore::open(&path).expect("open");
        assert_eq!(s.list().expect("list").len(), 4);
    }
}
