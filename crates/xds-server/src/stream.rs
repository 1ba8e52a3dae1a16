//! One ADS stream's life, shared by both protocol variants: read the first
//! request (it names the node), then loop — a request arrives, or the
//! node's snapshot changes — and after each, send what the protocol says
//! is owed and publish the ACKed generation when the proxy holds all of it.
//! The stream ends when the proxy goes, the node is removed, or the server
//! shuts down.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::Instrument;

use crate::Mode;
use crate::node::{Current, Nack, Node, Shared, XdsEvent};
use crate::snapshot::{ResourceType, Versioned};

/// Responses a stream may queue before it waits for the proxy to read.
const QUEUE: usize = 64;

/// A protocol variant's per-stream state machine (delta or SotW).
pub(crate) trait Protocol: Default + Send + 'static {
    type Request: Send + 'static;
    type Response: Send + 'static;
    const MODE: Mode;
    /// The node id a request carries (the first one must).
    fn node_id(req: &Self::Request) -> Option<&str>;
    /// Subscriptions, ACK and NACK of one request.
    fn on_request(&mut self, ctx: &Ctx, req: Self::Request);
    /// The responses owed against `res` (generation `generation`), in push order.
    fn sync(&mut self, ctx: &Ctx, generation: u64, res: &Arc<Versioned>) -> Vec<Self::Response>;
    /// The proxy has ACKed everything of `res` it needs.
    fn in_sync(&self, res: &Versioned) -> bool;
}

/// What a protocol needs from the server: the node and the event sink.
pub(crate) struct Ctx {
    pub shared: Arc<Shared>,
    pub node: Arc<Node>,
}

impl Ctx {
    /// The version of a response built from generation `generation`.
    pub fn response_version(&self, generation: u64) -> String {
        format!("{}-g{generation}", self.shared.instance)
    }

    pub fn pushed(&self, ty: ResourceType, version: &str, resources: usize, removed: usize) {
        tracing::debug!(
            type_url = ty.type_url(),
            version,
            resources,
            removed,
            "push"
        );
        self.node.pushed();
        self.shared.emit(XdsEvent::Push {
            node: self.node.id.clone(),
            type_url: ty.type_url().to_string(),
            version: version.to_string(),
            resources,
            removed,
        });
    }

    pub fn acked(&self, ty: ResourceType, version: &str) {
        tracing::debug!(type_url = ty.type_url(), version, "ACK");
        self.shared.emit(XdsEvent::Ack {
            node: self.node.id.clone(),
            type_url: ty.type_url().to_string(),
            version: version.to_string(),
        });
    }

    pub fn nacked(&self, ty: ResourceType, version: &str, message: &str) {
        tracing::warn!(
            node = %self.node.id,
            type_url = ty.type_url(),
            version,
            message,
            "proxy rejected config (NACK); it keeps its last good config"
        );
        self.node.nacked(Nack {
            type_url: ty.type_url().to_string(),
            version: version.to_string(),
            message: message.to_string(),
            at: std::time::SystemTime::now(),
        });
        self.shared.emit(XdsEvent::Nack {
            node: self.node.id.clone(),
            type_url: ty.type_url().to_string(),
            version: version.to_string(),
            message: message.to_string(),
        });
    }
}

/// Starts the stream's task; returns the response stream for tonic.
pub(crate) fn spawn<P: Protocol>(
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    requests: Streaming<P::Request>,
) -> ReceiverStream<Result<P::Response, Status>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run::<P>(shared, stop, requests, tx));
    ReceiverStream::new(rx)
}

/// Counts the stream while it lives; reports its end.
struct Open {
    shared: Arc<Shared>,
    node: Arc<Node>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.node.stream_closed();
        tracing::info!(node = %self.node.id, "ADS stream closed");
        self.shared.emit(XdsEvent::Disconnected {
            node: self.node.id.clone(),
        });
    }
}

async fn run<P: Protocol>(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut requests: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
) {
    if *stop.borrow_and_update() {
        return;
    }
    let first = tokio::select! {
        _ = stop.changed() => return,
        r = requests.next() => r,
    };
    let first = match first {
        Some(Ok(r)) => r,
        Some(Err(status)) => {
            tracing::debug!(%status, "ADS stream failed before its first request");
            return;
        }
        None => return,
    };
    let Some(id) = P::node_id(&first).filter(|id| !id.is_empty()) else {
        tracing::warn!("ADS stream without node id refused");
        let _ = tx
            .send(Err(Status::invalid_argument(
                "the first request of a stream must carry node.id",
            )))
            .await;
        return;
    };
    let node = shared.node(id);
    let span = tracing::info_span!("ads", node = %node.id, mode = ?P::MODE);
    async move {
        node.stream_opened();
        tracing::info!("ADS stream opened");
        shared.emit(XdsEvent::Connected {
            node: node.id.clone(),
            mode: P::MODE,
        });
        let _open = Open {
            shared: Arc::clone(&shared),
            node: Arc::clone(&node),
        };
        let mut current = node.current.subscribe();
        let ctx = Ctx { shared, node };
        let mut proto = P::default();
        proto.on_request(&ctx, first);
        if !flush(&mut proto, &ctx, &mut current, &tx).await {
            return;
        }
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                _ = tx.closed() => break,
                changed = current.changed() => if changed.is_err() { break },
                req = requests.next() => match req {
                    Some(Ok(req)) => proto.on_request(&ctx, req),
                    Some(Err(status)) => {
                        tracing::debug!(%status, "ADS stream ended by the proxy");
                        break;
                    }
                    None => break,
                },
            }
            if !flush(&mut proto, &ctx, &mut current, &tx).await {
                break;
            }
        }
    }
    .instrument(span)
    .await;
}

/// Sends what is owed for the node's current snapshot; `false` when the
/// stream must end (node removed, proxy gone).
async fn flush<P: Protocol>(
    proto: &mut P,
    ctx: &Ctx,
    current: &mut watch::Receiver<Current>,
    tx: &mpsc::Sender<Result<P::Response, Status>>,
) -> bool {
    let cur = current.borrow_and_update().clone();
    if cur.removed {
        return false;
    }
    let Some(res) = cur.resources else {
        // No snapshot yet: the proxy waits.
        return true;
    };
    for response in proto.sync(ctx, cur.generation, &res) {
        if tx.send(Ok(response)).await.is_err() {
            return false;
        }
    }
    if proto.in_sync(&res) {
        ctx.node.acked_up_to(cur.generation);
    }
    true
}
