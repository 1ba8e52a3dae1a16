//! Session tokens: `base64url({"u":USER,"e":EXPIRY,"p":STAMP})` `.`
//! `base64url(HMAC-SHA256(key, "packlight-session-v1." + payload))`.
//! `STAMP` is the user's password stamp ([`crate::UserStore::password_stamp`])
//! when the token was issued. The same token is the cookie value and the
//! bearer token. The key is
//! generated once into `DATA_DIR/auth-key` (32 random bytes, mode 0600);
//! deleting it (and restarting) ends every session.

use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::AuthError;
use crate::store::{temp_name, valid_user};

const KEY_FILE: &str = "auth-key";
const KEY_LEN: usize = 32;
const CONTEXT: &[u8] = b"packlight-session-v1.";
/// Longest token looked at (a valid one is far shorter).
const MAX_TOKEN: usize = 1024;

/// The session signing key.
pub struct SessionKey {
    key: hmac::Key,
}

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

/// A verified session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user it was issued to.
    pub user: String,
    /// When it stops being valid.
    pub expires: SystemTime,
    /// The user's password stamp when it was issued; a session is only
    /// good while it equals the current one.
    pub stamp: String,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    u: String,
    e: u64,
    p: String,
}

impl SessionKey {
    /// The key of `data_dir`, generated on first use. Two processes
    /// starting together end up with the same key (the file is linked
    /// into place only if absent).
    pub fn open(data_dir: &Path) -> Result<Self, AuthError> {
        let path = data_dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => return Self::from_file(&path, &bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(AuthError::io(&path, e)),
        }
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AuthError::Hash("no system randomness for the session key".into()))?;
        let tmp = temp_name(data_dir, &path);
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        let created = written.map_err(|e| AuthError::io(&path, e))?;
        if created {
            tracing::info!(path = %path.display(), "generated the session signing key");
            return Ok(Self::from_bytes(&bytes));
        }
        // Someone else created it first: use theirs.
        let bytes = std::fs::read(&path).map_err(|e| AuthError::io(&path, e))?;
        Self::from_file(&path, &bytes)
    }

    fn from_file(path: &Path, bytes: &[u8]) -> Result<Self, AuthError> {
        if bytes.len() < KEY_LEN {
            return Err(AuthError::Corrupt {
                path: path.display().to_string(),
                message: format!(
                    "session key has {} bytes, needs {KEY_LEN}; remove it to generate a new one (ends all sessions)",
                    bytes.len()
                ),
            });
        }
        Ok(Self::from_bytes(bytes))
    }

    /// A key from raw bytes (tests, or a key kept elsewhere).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        SessionKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes),
        }
    }

    /// A token for `user` (whose password stamp is `stamp`) valid for
    /// `ttl` from now.
    pub fn issue(&self, user: &str, stamp: &str, ttl: Duration) -> String {
        self.issue_until(user, stamp, SystemTime::now() + ttl)
    }

    /// A token for `user` valid until `expires` (a past time gives an
    /// already expired token).
    pub fn issue_until(&self, user: &str, stamp: &str, expires: SystemTime) -> String {
        let e = expires
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            u: user.to_string(),
            e,
            p: stamp.to_string(),
        };
        // Serialising a struct of strings and a number cannot fail.
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let payload = B64.encode(json);
        let sig = hmac::sign(&self.key, &signed_bytes(&payload));
        format!("{payload}.{}", B64.encode(sig.as_ref()))
    }

    /// The session a token stands for, if it is genuine, unexpired and
    /// names a valid user. The signature is compared in constant time.
    pub fn verify(&self, token: &str) -> Option<Session> {
        self.verify_at(token, SystemTime::now())
    }

    fn verify_at(&self, token: &str, now: SystemTime) -> Option<Session> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let (payload, sig) = token.split_once('.')?;
        let sig = B64.decode(sig).ok()?;
        hmac::verify(&self.key, &signed_bytes(payload), &sig).ok()?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        let expires = UNIX_EPOCH.checked_add(Duration::from_secs(claims.e))?;
        if expires <= now || !valid_user(&claims.u) {
            return None;
        }
        Some(Session {
            user: claims.u,
            expires,
            stamp: claims.p,
        })
    }
}

fn signed_bytes(payload: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + payload.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(payload.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires() {
        let k = SessionKey::from_bytes(&[7; 32]);
        let t = k.issue("alice", "st", Duration::from_secs(60));
        let s = k.verify(&t).expect("valid");
        assert_eq!(s.user, "alice");
        assert_eq!(s.stamp, "st");
        let later = SystemTime::now() + Duration::from_secs(61);
        assert_eq!(k.verify_at(&t, later), None);
        let expired = k.issue_until("alice", "st", UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(k.verify(&expired), None);
        // Only URL-safe characters: usable as a cookie value and a header.
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        );
    }

    #[test]
    fn forged_tokens_are_refused() {
        let k = SessionKey::from_bytes(&[7; 32]);
        let other = SessionKey::from_bytes(&[8; 32]);
        let t = k.issue("alice", "st", Duration::from_secs(60));
        assert_eq!(other.verify(&t), None);
        // Another user's name with alice's signature.
        let (_, sig) = t.split_once('.').expect("dot");
        let mallory = B64.encode(br#"{"u":"mallory","e":99999999999,"p":"st"}"#);
        assert_eq!(k.verify(&format!("{mallory}.{sig}")), None);
        // A flipped signature byte.
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.verify(&String::from_utf8(bad).expect("utf8")), None);
        for junk in ["", ".", "abc", "a.b.c", "garbage", &"x".repeat(5000)] {
            assert_eq!(k.verify(junk), None, "{junk}");
        }
        // A correctly signed token naming an invalid user is refused too.
        let bad_user = k.issue("bad\r\nname", "st", Duration::from_secs(60));
        assert_eq!(k.verify(&bad_user), None);
    }

    #[test]
    fn the_key_is_generated_once_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = SessionKey::open(dir.path()).expect("open");
        let b = SessionKey::open(dir.path()).expect("open");
        let t = a.issue("alice", "st", Duration::from_secs(60));
        assert!(b.verify(&t).is_some());
        let path = dir.path().join(KEY_FILE);
        let meta = std::fs::metadata(&path).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        // A new key (file removed) ends old sessions.
        std::fs::remove_file(&path).expect("rm");
        let c = SessionKey::open(dir.path()).expect("open");
        assert!(c.verify(&t).is_none());
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            SessionKey::open(dir.path()),
            Err(AuthError::Corrupt { .. })
        ));
    }
}
