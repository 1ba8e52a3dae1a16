//! Per-node state shared between the runtime's handle ([`crate::XdsServer`])
//! and the node's streams: the current versioned snapshot (a `watch`
//! channel the streams wait on), the ACKed generation, counters and the
//! last NACK; and the server-wide event channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};

use crate::Mode;
use crate::snapshot::Versioned;

/// What happened on the server, for the runtime (status, logs) and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XdsEvent {
    /// A proxy opened an ADS stream.
    Connected {
        /// Its node id.
        node: String,
        /// Delta or state of the world.
        mode: Mode,
    },
    /// A proxy's ADS stream ended.
    Disconnected {
        /// Its node id.
        node: String,
    },
    /// A response was sent.
    Push {
        /// Node id.
        node: String,
        /// The response's type URL.
        type_url: String,
        /// The response's version (delta: `system_version_info`).
        version: String,
        /// Resources in the response.
        resources: usize,
        /// Names removed by the response (delta only).
        removed: usize,
    },
    /// The proxy accepted a response.
    Ack {
        /// Node id.
        node: String,
        /// The type URL.
        type_url: String,
        /// The accepted response's version.
        version: String,
    },
    /// The proxy rejected a response; it keeps its last good config.
    Nack {
        /// Node id.
        node: String,
        /// The type URL.
        type_url: String,
        /// The rejected response's version.
        version: String,
        /// Envoy's error message.
        message: String,
    },
}

/// The last response a proxy rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// The type URL.
    pub type_url: String,
    /// The rejected response's version.
    pub version: String,
    /// Envoy's error message.
    pub message: String,
    /// When the NACK arrived.
    pub at: SystemTime,
}

/// A node as the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// At least one ADS stream of this node is open.
    pub connected: bool,
    /// Open ADS streams of this node (normally 0 or 1).
    pub streams: usize,
    /// The config generation (+1 per `set` that changed something).
    pub generation: u64,
    /// The highest generation the proxy has ACKed completely.
    pub acked: u64,
    /// Responses sent to this node, all streams, all types.
    pub pushes: u64,
    /// The last NACK, if any.
    pub last_nack: Option<Nack>,
}

/// What streams of a node watch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Current {
    pub generation: u64,
    /// `None` until the first `set`: connected proxies wait.
    pub resources: Option<Arc<Versioned>>,
    /// The node was removed: its streams end.
    pub removed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    streams: usize,
    pushes: u64,
    last_nack: Option<Nack>,
}

/// One node id.
#[derive(Debug)]
pub(crate) struct Node {
    pub id: String,
    pub current: watch::Sender<Current>,
    pub acked: watch::Sender<u64>,
    counters: Mutex<Counters>,
}

impl Node {
    fn new(id: &str) -> Self {
        Node {
            id: id.to_string(),
            current: watch::Sender::new(Current::default()),
            acked: watch::Sender::new(0),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn counters(&self) -> MutexGuard<'_, Counters> {
        // A poisoned lock only means a panic elsewhere while counting;
        // the counters stay usable.
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stream_opened(&self) {
        self.counters().streams += 1;
    }

    pub fn stream_closed(&self) {
        let mut c = self.counters();
        c.streams = c.streams.saturating_sub(1);
    }

    pub fn pushed(&self) {
        self.counters().pushes += 1;
    }

    pub fn nacked(&self, nack: Nack) {
        self.counters().last_nack = Some(nack);
    }

    /// The proxy holds generation `generation` completely.
    pub fn acked_up_to(&self, generation: u64) {
        self.acked.send_if_modified(|a| {
            if generation > *a {
                *a = generation;
                true
            } else {
                false
            }
        });
    }

    pub fn status(&self) -> NodeStatus {
        let generation = self.current.borrow().generation;
        let acked = *self.acked.borrow();
        let c = self.counters();
        NodeStatus {
            connected: c.streams > 0,
            streams: c.streams,
            generation,
            acked,
            pushes: c.pushes,
            last_nack: c.last_nack.clone(),
        }
    }
}

/// State shared by the handle and every stream.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Prefix of every version this server instance issues, so versions
    /// of two server instances never collide.
    pub instance: String,
    /// Server-wide change counter; a resource's version is its value
    /// when the resource last changed.
    pub changes: std::sync::atomic::AtomicU64,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    pub events: broadcast::Sender<XdsEvent>,
}

impl Shared {
    pub fn new(instance: String) -> Self {
        Shared {
            instance,
            changes: std::sync::atomic::AtomicU64::new(0),
            nodes: Mutex::new(HashMap::new()),
            events: broadcast::Sender::new(4096),
        }
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<String, Arc<Node>>> {
        // See Node::counters: the map stays consistent under a poison.
        self.nodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node, created (without a snapshot) if unknown.
    pub fn node(&self, id: &str) -> Arc<Node> {
        Arc::clone(
            self.nodes()
                .entry(id.to_string())
                .or_insert_with(|| Arc::new(Node::new(id))),
        )
    }

    pub fn existing(&self, id: &str) -> Option<Arc<Node>> {
        self.nodes().get(id).cloned()
    }

    pub fn remove(&self, id: &str) -> Option<Arc<Node>> {
        self.nodes().remove(id)
    }

    pub fn emit(&self, event: XdsEvent) {
        // No receiver is not an error: nobody listens.
        let _ = self.events.send(event);
    }

    /// A fresh version string (the next change number).
    pub fn next_version(&self) -> String {
        let n = self
            .changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        format!("{}-{n}", self.instance)
    }
}
