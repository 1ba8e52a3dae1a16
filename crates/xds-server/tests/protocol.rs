//! The ADS protocol at the wire, with a real gRPC client (tonic over TCP):
//! subscriptions, versions, removals, reconnects, ACK/NACK, stale nonces,
//! garbage input, waiting for a snapshot, remove and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use packlight_xds_server::{ResourceType, Snapshot, XdsEvent, XdsServer};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(10);
const CDS: ResourceType = ResourceType::Cluster;
const EDS: ResourceType = ResourceType::Endpoint;
const SDS: ResourceType = ResourceType::Secret;

struct Running {
    client: AggregatedDiscoveryServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

async fn start(server: &XdsServer) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(server.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let served = tokio::spawn(async move {
        served.await.expect("join").expect("serve");
    });
    let client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Running {
        client,
        stop: Some(stop),
        served,
    }
}

fn cluster(name: &str, seconds: i64) -> Cluster {
    Cluster {
        name: name.to_string(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds, nanos: 0 }),
        ..Default::default()
    }
}

fn cla(name: &str, weight: u32) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: name.to_string(),
        endpoints: vec![
            envoy_types::pb::envoy::config::endpoint::v3::LocalityLbEndpoints {
                load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                    value: weight,
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

fn secret(name: &str) -> Secret {
    Secret {
        name: name.to_string(),
        r#type: None,
    }
}

fn node(id: &str) -> Option<Node> {
    Some(Node {
        id: id.to_string(),
        ..Default::default()
    })
}

struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl DeltaClient {
    async fn open(r: &mut Running) -> Self {
        let (tx, requests) = mpsc::channel(16);
        let rx = r
            .client
            .delta_aggregated_resources(ReceiverStream::new(requests))
            .await
            .expect("delta stream")
            .into_inner();
        DeltaClient { tx, rx }
    }

    async fn send(&self, req: DeltaDiscoveryRequest) {
        self.tx.send(req).await.expect("send");
    }

    async fn subscribe(&self, id: &str, ty: ResourceType, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            node: node(id),
            type_url: ty.type_url().to_string(),
            resource_names_subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn next(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }

    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn nack(&self, r: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_string(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }
}

/// Name -> version of a delta response.
fn versions(r: &DeltaDiscoveryResponse) -> BTreeMap<String, String> {
    r.resources
        .iter()
        .map(|x| (x.name.clone(), x.version.clone()))
        .collect()
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
    r.resources.iter().map(|x| x.name.as_str()).collect()
}

async fn acked(server: &XdsServer, id: &str, generation: u64) {
    let mut rx = server.acked(id);
    tokio::time::timeout(WAIT, rx.wait_for(|g| *g >= generation))
        .await
        .expect("ACKed in time")
        .expect("node kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_subscriptions_versions_removals_and_nack() {
    let server = XdsServer::new();
    let mut events = server.events();
    let g1 = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c1", 1), cluster("c2", 1)],
            endpoints: vec![cla("c1", 1), cla("c2", 1)],
            secrets: vec![secret("default")],
            ..Default::default()
        },
    );
    let mut r = start(&server).await;
    let mut s = DeltaClient::open(&mut r).await;

    // CDS is a wildcard: everything; EDS only what is named.
    s.subscribe("n", CDS, &[]).await;
    let cds = s.next().await;
    assert_eq!(cds.type_url, CDS.type_url());
    assert_eq!(names(&cds), ["c1", "c2"]);
    // Nothing is ACKed before the proxy ACKs.
    assert_eq!(*server.acked("n").borrow(), 0);
    s.ack(&cds).await;
    s.subscribe("n", EDS, &["c1"]).await;
    let eds = s.next().await;
    assert_eq!(names(&eds), ["c1"]);
    assert_ne!(eds.nonce, cds.nonce);
    s.ack(&eds).await;
    s.subscribe("n", EDS, &["c2"]).await;
    let eds2 = s.next().await;
    assert_eq!(names(&eds2), ["c2"]);
    s.ack(&eds2).await;
    acked(&server, "n", g1).await;

    // Unsubscribe c1; change both endpoints and drop cluster c1: only c2's
    // endpoints are sent, then c1's removal (clusters removed last).
    s.send(DeltaDiscoveryRequest {
        type_url: EDS.type_url().to_string(),
        resource_names_unsubscribe: vec!["c1".to_string()],
        ..Default::default()
    })
    .await;
    // (An SDS subscription answered: the unsubscribe was processed.)
    s.subscribe("n", SDS, &["default"]).await;
    let sds = s.next().await;
    assert_eq!(
        (sds.type_url.as_str(), names(&sds)),
        (SDS.type_url(), vec!["default"])
    );
    s.ack(&sds).await;
    let g2 = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c2", 1)],
            endpoints: vec![cla("c1", 2), cla("c2", 2)],
            secrets: vec![secret("default")],
            ..Default::default()
        },
    );
    assert_eq!(g2, g1 + 1);
    let eds3 = s.next().await;
    assert_eq!(
        (eds3.type_url.as_str(), names(&eds3)),
        (EDS.type_url(), vec!["c2"])
    );
    assert_ne!(versions(&eds3)["c2"], versions(&eds2)["c2"]);
    let cds2 = s.next().await;
    assert_eq!(cds2.type_url, CDS.type_url());
    assert!(cds2.resources.is_empty());
    assert_eq!(cds2.removed_resources, ["c1"]);
    s.ack(&eds3).await;
    s.ack(&cds2).await;
    acked(&server, "n", g2).await;

    // A NACK is reported, the generation is not ACKed, and the rejected
    // version is not sent again; the next change is.
    let g3 = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c2", 1)],
            endpoints: vec![cla("c2", 3)],
            secrets: vec![secret("default")],
            ..Default::default()
        },
    );
    let eds4 = s.next().await;
    s.nack(&eds4, "no thanks").await;
    let nack = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(XdsEvent::Nack {
                message, type_url, ..
            }) = events.recv().await
            {
                break (type_url, message);
            }
        }
    })
    .await
    .expect("NACK event");
    assert_eq!(nack, (EDS.type_url().to_string(), "no thanks".to_string()));
    let status = server.status("n").expect("status");
    assert_eq!((status.generation, status.acked), (g3, g2));
    assert_eq!(status.last_nack.expect("nack").message, "no thanks");
    // A change of another resource (SDS, not subscribed) sends nothing;
    // the next EDS change is sent.
    server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c2", 1)],
            endpoints: vec![cla("c2", 3)],
            secrets: vec![secret("default"), secret("other")],
            ..Default::default()
        },
    );
    let g5 = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c2", 1)],
            endpoints: vec![cla("c2", 4)],
            secrets: vec![secret("default"), secret("other")],
            ..Default::default()
        },
    );
    let eds5 = s.next().await;
    assert_eq!(eds5.type_url, EDS.type_url());
    assert_ne!(versions(&eds5)["c2"], versions(&eds4)["c2"]);
    s.ack(&eds5).await;
    acked(&server, "n", g5).await;

    // SDS: an unknown name is sent once it exists.
    s.subscribe("n", SDS, &["later"]).await;
    let g6 = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("c2", 1)],
            endpoints: vec![cla("c2", 4)],
            secrets: vec![secret("default"), secret("later")],
            ..Default::default()
        },
    );
    let later = s.next().await;
    assert_eq!(
        (later.type_url.as_str(), names(&later)),
        (SDS.type_url(), vec!["later"])
    );
    s.ack(&later).await;
    acked(&server, "n", g6).await;
    let _ = r.stop.take().map(|s| s.send(()));
    tokio::time::timeout(WAIT, r.served)
        .await
        .expect("serve returned")
        .expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_reconnect_sends_only_what_differs() {
    let server = XdsServer::new();
    let g = server.set(
        "n",
        Snapshot {
            clusters: vec![cluster("a", 1), cluster("b", 1)],
            ..Default::default()
        },
    );
    let mut r = start(&server).await;
    let mut s = DeltaClient::open(&mut r).await;
    s.subscribe("n", CDS, &[]).await;
    let cds = s.next().await;
    s.ack(&cds).await;
    acked(&server, "n", g).await;
    let have = versions(&cds);
    drop(s);

    // The proxy reconnects holding a, and b at an old version: only b.
    let mut s = DeltaClient::open(&mut r).await;
    let mut initial: HashMap<String, String> = have.clone().into_iter().collect();
    initial.insert("b".to_string(), "old".to_string());
    s.send(DeltaDiscoveryRequest {
        node: node("n"),
        type_url: CDS.type_url().to_string(),
        initial_resource_versions: initial,
        ..Default::default()
    })
    .await;
    let again = s.next().await;
    assert_eq!(names(&again), ["b"]);
    assert_eq!(versions(&again)["b"], have["b"]);
    drop(s);

    // Holding exactly the current versions: an empty first answer.
    let mut s = DeltaClient::open(&mut r).await;
    s.send(DeltaDiscoveryRequest {
        node: node("n"),
        type_url: CDS.type_url().to_string(),
        initial_resource_versions: have.into_iter().collect(),
        ..Default::default()
    })
    .await;
    let empty = s.next().await;
    assert!(empty.resources.is_empty() && empty.removed_resources.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_never_breaks_the_server() {
    let server = XdsServer::new();
    let mut r = start(&server).await;

    // No node id: the stream is refused.
    let mut s = DeltaClient::open(&mut r).await;
    s.send(DeltaDiscoveryRequest {
        type_url: CDS.type_url().to_string(),
        ..Default::default()
    })
    .await;
    let refused = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .expect("in time");
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::InvalidArgument
    );

    // Unknown types, garbage nonces, NACKs of nothing, unsubscribing the
    // unknown: ignored; the stream still works.
    let mut s = DeltaClient::open(&mut r).await;
    for req in [
        DeltaDiscoveryRequest {
            node: node("g"),
            type_url: "type.googleapis.com/no.Such".to_string(),
            response_nonce: "garbage".to_string(),
            ..Default::default()
        },
        DeltaDiscoveryRequest {
            type_url: EDS.type_url().to_string(),
            response_nonce: "\u{0}\u{ffff}".to_string(),
            error_detail: Some(RpcStatus::default()),
            resource_names_unsubscribe: vec!["x".to_string(), "*".to_string()],
            ..Default::default()
        },
        DeltaDiscoveryRequest::default(),
    ] {
        s.send(req).await;
    }
    s.subscribe("g", CDS, &[]).await;
    server.set(
        "g",
        Snapshot {
            clusters: vec![cluster("a", 1)],
            ..Default::default()
        },
    );
    let cds = s.next().await;
    assert_eq!(names(&cds), ["a"]);

    // State of the world: the same garbage, then a real request.
    let (tx, requests) = mpsc::channel(16);
    let mut rx = r
        .client
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
        .expect("sotw")
        .into_inner();
    for req in [
        DiscoveryRequest {
            node: node("g2"),
            type_url: "nonsense".to_string(),
            response_nonce: "garbage".to_string(),
            ..Default::default()
        },
        DiscoveryRequest {
            type_url: CDS.type_url().to_string(),
            response_nonce: "stale-from-another-stream".to_string(),
            ..Default::default()
        },
    ] {
        tx.send(req).await.expect("send");
    }
    server.set(
        "g2",
        Snapshot {
            clusters: vec![cluster("z", 1)],
            ..Default::default()
        },
    );
    let resp = tokio::time::timeout(WAIT, rx.message())
        .await
        .expect("in time")
        .expect("ok")
        .expect("open");
    assert_eq!(resp.type_url, CDS.type_url());
    assert_eq!(resp.resources.len(), 1);
    assert!(server.status("g2").expect("g2").connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_versions_stale_nonces_and_nack() {
    let server = XdsServer::new();
    let mut events = server.events();
    server.set(
        "s",
        Snapshot {
            clusters: vec![cluster("a", 1)],
            endpoints: vec![cla("a", 1), cla("b", 1)],
            ..Default::default()
        },
    );
    let mut r = start(&server).await;
    let (tx, requests) = mpsc::channel(16);
    let mut rx = r
        .client
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
        .expect("sotw")
        .into_inner();
    let mut next = async || -> DiscoveryResponse {
        tokio::time::timeout(WAIT, rx.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open")
    };
    let req = |ty: ResourceType, names: &[&str], version: &str, nonce: &str| DiscoveryRequest {
        node: node("s"),
        type_url: ty.type_url().to_string(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        version_info: version.to_string(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    };
    tx.send(req(CDS, &[], "", "")).await.expect("send");
    let cds = next().await;
    assert_eq!(cds.resources.len(), 1);
    tx.send(req(CDS, &[], &cds.version_info, &cds.nonce))
        .await
        .expect("ack");
    tx.send(req(EDS, &["a"], "", "")).await.expect("send");
    let eds = next().await;
    assert_eq!(eds.resources.len(), 1);
    // A stale nonce asking for more is ignored; the ACK with the names
    // gets both.
    tx.send(req(EDS, &["a", "b"], "", "stale"))
        .await
        .expect("send");
    tx.send(req(EDS, &["a", "b"], &eds.version_info, &eds.nonce))
        .await
        .expect("send");
    let eds2 = next().await;
    assert_eq!(eds2.resources.len(), 2);
    assert_ne!(eds2.nonce, eds.nonce);
    // NACK: reported, not resent; the next change is sent.
    let mut nack = req(EDS, &["a", "b"], &eds.version_info, &eds2.nonce);
    nack.error_detail = Some(RpcStatus {
        code: 3,
        message: "bad endpoints".to_string(),
        details: vec![],
    });
    tx.send(nack).await.expect("nack");
    let message = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(XdsEvent::Nack { message, .. }) = events.recv().await {
                break message;
            }
        }
    })
    .await
    .expect("NACK event");
    assert_eq!(message, "bad endpoints");
    let g = server.set(
        "s",
        Snapshot {
            clusters: vec![cluster("a", 1)],
            endpoints: vec![cla("a", 1), cla("b", 2)],
            ..Default::default()
        },
    );
    let eds3 = next().await;
    assert_eq!(eds3.type_url, EDS.type_url());
    assert_eq!(eds3.resources.len(), 2);
    tx.send(req(EDS, &["a", "b"], &eds3.version_info, &eds3.nonce))
        .await
        .expect("ack");
    acked(&server, "s", g).await;
    assert_eq!(
        server
            .status("s")
            .expect("s")
            .last_nack
            .expect("nack")
            .type_url,
        EDS.type_url()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_snapshot_and_ends_on_remove_and_shutdown() {
    let server = XdsServer::new();
    let mut r = start(&server).await;
    let mut s = DeltaClient::open(&mut r).await;
    s.subscribe("w", CDS, &[]).await;
    let mut acked_rx = server.acked("w");
    // Connected, nothing pushed while there is no snapshot.
    tokio::time::timeout(WAIT, async {
        while !server.status("w").is_some_and(|s| s.connected) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connected");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.status("w").expect("w").pushes, 0);
    // An empty first snapshot still answers the wildcard request.
    let g = server.set("w", Snapshot::default());
    assert_eq!(g, 1);
    let cds = s.next().await;
    assert!(cds.resources.is_empty());
    s.ack(&cds).await;
    tokio::time::timeout(WAIT, acked_rx.wait_for(|a| *a >= g))
        .await
        .expect("in time")
        .expect("acked");

    // remove(): the node's stream ends, its status is gone.
    server.remove("w");
    let end = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .expect("ended in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    assert_eq!(server.status("w"), None);

    // Shutdown ends open streams and serve returns.
    server.set("x", Snapshot::default());
    let mut s = DeltaClient::open(&mut r).await;
    s.subscribe("x", CDS, &[]).await;
    let _ = s.next().await;
    let _ = r.stop.take().map(|stop| stop.send(()));
    let end = tokio::time::timeout(WAIT, s.rx.message())
        .await
        .expect("ended in time");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    tokio::time::timeout(WAIT, r.served)
        .await
        .expect("serve returned")
        .expect("join");
    assert!(!server.status("x").expect("x").connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sotw_removes_clusters_after_routes() {
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    let route = |header: &str| RouteConfiguration {
        name: "r".to_string(),
        response_headers_to_remove: vec![header.to_string()],
        ..Default::default()
    };
    let snapshot = |clusters: &[&str], header: &str| Snapshot {
        clusters: clusters.iter().map(|c| cluster(c, 1)).collect(),
        routes: vec![route(header)],
        ..Default::default()
    };
    let server = XdsServer::new();
    server.set("m", snapshot(&["a", "b"], "x1"));
    let mut r = start(&server).await;
    let (tx, requests) = mpsc::channel(16);
    let mut rx = r
        .client
        .stream_aggregated_resources(ReceiverStream::new(requests))
        .await
        .expect("sotw")
        .into_inner();
    let mut next = async || -> (String, Vec<String>, String) {
        let resp = tokio::time::timeout(WAIT, rx.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("open");
        let names = resp
            .resources
            .iter()
            .map(|any| match ResourceType::from_type_url(&any.type_url) {
                Some(ResourceType::Cluster) => {
                    <Cluster as prost::Message>::decode(any.value.as_slice())
                        .expect("cluster")
                        .name
                }
                _ => {
                    <RouteConfiguration as prost::Message>::decode(any.value.as_slice())
                        .expect("route")
                        .name
                }
            })
            .collect();
        (resp.type_url, names, resp.nonce)
    };
    let req = |ty: ResourceType, names: &[&str], nonce: &str| DiscoveryRequest {
        node: node("m"),
        type_url: ty.type_url().to_string(),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.to_string(),
        ..Default::default()
    };
    let rds = ResourceType::Route;
    tx.send(req(CDS, &[], "")).await.expect("send");
    let (_, clusters, cds_nonce) = next().await;
    assert_eq!(clusters, ["a", "b"]);
    tx.send(req(rds, &["r"], "")).await.expect("send");
    let (rds_type, _, _) = next().await;
    assert_eq!(rds_type, rds.type_url());

    // a leaves, c arrives: CDS {a, b, c}, then RDS, then CDS {b, c}.
    server.set("m", snapshot(&["b", "c"], "x2"));
    let (t1, n1, _) = next().await;
    let (t2, n2, _) = next().await;
    let (t3, n3, last_cds) = next().await;
    assert_eq!(
        [(t1.as_str(), n1), (t2.as_str(), n2), (t3.as_str(), n3)],
        [
            (CDS.type_url(), vec!["a".into(), "b".into(), "c".into()]),
            (rds.type_url(), vec!["r".to_string()]),
            (CDS.type_url(), vec!["b".into(), "c".into()]),
        ]
    );
    assert_ne!(last_cds, cds_nonce);

    // Only a removal: RDS first, then CDS without b (no interim response).
    server.set("m", snapshot(&["c"], "x3"));
    let (t1, _, _) = next().await;
    let (t2, n2, _) = next().await;
    assert_eq!(
        (t1.as_str(), t2.as_str(), n2),
        (rds.type_url(), CDS.type_url(), vec!["c".to_string()])
    );
}
