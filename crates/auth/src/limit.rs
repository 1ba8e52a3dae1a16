//! Password guessing limits: at most [`MAX_FAILURES`] failed logins per
//! user name in a [`WINDOW`] (then `429` until the window ends, without
//! running argon2), and at most as many argon2 verifications at once as
//! the machine has cores (they run on the blocking pool, never on the
//! async runtime).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed logins allowed per user name and window.
pub const MAX_FAILURES: u32 = 10;
/// The failure-counting window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Names tracked at most (a flood of made-up names cannot grow memory
/// without bound: the oldest windows are dropped first).
const MAX_TRACKED: usize = 10_000;

/// Failed login attempts per user name.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (Instant, u32)>>,
}

impl LoginLimiter {
    /// `Some(wait)` when `user` may not try now.
    pub fn blocked(&self, user: &str, now: Instant) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = map.get(user)?;
        let end = *start + WINDOW;
        (*n >= MAX_FAILURES && now < end).then(|| end - now)
    }

    /// Records a login result.
    pub fn record(&self, user: &str, ok: bool, now: Instant) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            map.remove(user);
            return;
        }
        if map.len() >= MAX_TRACKED && !map.contains_key(user) {
            map.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if map.len() >= MAX_TRACKED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(user.to_string()).or_insert((now, 0));
        if now.duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_failures_until_the_window_ends() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.blocked("alice", t0).is_none());
            l.record("alice", false, t0);
        }
        assert!(l.blocked("alice", t0).is_some());
        assert!(l.blocked("bob", t0).is_none());
        assert!(l.blocked("alice", t0 + WINDOW).is_none());
        // A success clears the count.
        l.record("alice", true, t0);
        assert!(l.blocked("alice", t0).is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED + 50) {
            l.record(&format!("u{i}"), false, t0);
        }
        let n = l.failures.lock().expect("lock").len();
        assert!(n <= MAX_TRACKED, "{n}");
    }
}
