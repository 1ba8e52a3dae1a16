//! Ports for the servers a test starts on 127.0.0.1.
//!
//! Binding port 0 and closing it hands out a port from the kernel's
//! ephemeral range, the same range the kernel takes source ports of
//! outgoing connections from: with 20 Envoys connecting, such a port can
//! be taken before the server binds it (seen in CI: an ingress listener
//! NACKed with "Address already in use"). These ports come from below
//! that range and below the ports `packlight up` takes for its own
//! proxies the same way (10000 up to the ephemeral range,
//! `packlight_standalone::proxies::free_port`): 3000–9999, which the
//! kernel never hands out by itself, each process starting at its own
//! place and never giving a port twice.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

const LOW: u32 = 3_000;
const HIGH: u32 = 10_000;

/// A port on 127.0.0.1 that was free a moment ago, outside the kernel's
/// ephemeral range (see the module doc).
pub fn free_port() -> u16 {
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new(std::process::id().wrapping_mul(7_919).wrapping_add(nanos))
    });
    for _ in 0..(HIGH - LOW) {
        let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % (HIGH - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Every port of the range busy: let the kernel pick one.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!((3_000..10_000).contains(&p), "{p}");
            TcpListener::bind(("127.0.0.1", p)).expect("free");
        }
    }
}
