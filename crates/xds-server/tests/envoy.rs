//! The ADS server driving real Envoy 1.40 (delta and state of the world):
//! traffic through sidecars rendered by `packlight_xds::sidecar`, live
//! changes, no push for an unchanged snapshot, per-node pushes, NACK,
//! SDS (mTLS, rotation), control plane restart.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use packlight_model::ir::{Mesh, ServiceKey};
use packlight_xds::{Instance, XdsOptions, sidecar};
use packlight_xds_server::{Mode, ResourceType, Snapshot, XdsEvent, XdsServer};
use support::{ControlPlane, Envoy, TestCa, count, free_addr, get, wait_acked, wait_for};

const URL: &str = "http://httpbin.demo:8000/get";

/// httpbin 1.0 / 1.1 / 2.0 on fixed endpoints, `route` as its Route rules,
/// and sleep (the caller).
fn mesh(apps: &[(&str, std::net::SocketAddr)], rules: &str) -> Mesh {
    let versions: String = apps
        .iter()
        .map(|(v, a)| format!("  - {{version: \"{v}\", endpoints: [\"{a}\"]}}\n"))
        .collect();
    let yaml = format!(
        "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: httpbin, namespace: demo}}\nspec:\n  port: 8000\n  versions:\n{versions}---\napiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: httpbin, namespace: demo}}\nspec:\n  service: httpbin\n  rules: {rules}\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: sleep, namespace: demo}}\nspec:\n  port: 8080\n  versions: [{{version: \"1.0\", image: x}}]\n"
    );
    let (model, _) = packlight_model::load(&[(None, &yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    model.mesh
}

fn instance() -> Instance {
    Instance {
        outbound: free_addr(),
        inbound: free_addr(),
        app: free_addr(),
    }
}

/// Sleep's sidecar for `mesh`, with SDS secrets `secrets`.
fn sleep_snapshot(mesh: &Mesh, inst: &Instance, secrets: &[Secret]) -> Snapshot {
    let cfg = sidecar(
        mesh,
        &ServiceKey::new("demo", "sleep"),
        inst,
        &XdsOptions::default(),
    )
    .expect("sidecar");
    Snapshot::new(cfg, secrets.to_vec())
}

/// Sleep's SDS secrets from a new test CA.
fn sleep_secrets() -> Vec<Secret> {
    TestCa::new().secrets("spiffe://cluster.local/ns/demo/sa/sleep", 1)
}

fn drain(rx: &mut tokio::sync::broadcast::Receiver<XdsEvent>) -> Vec<XdsEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn pushes_to<'a>(events: &'a [XdsEvent], node: &str) -> Vec<&'a str> {
    events
        .iter()
        .filter_map(|e| match e {
            XdsEvent::Push {
                node: n, type_url, ..
            } if n == node => Some(type_url.as_str()),
            _ => None,
        })
        .collect()
}

/// Waits until every answer is `expected`, then counts `n` more.
fn settle(proxy: std::net::SocketAddr, expected: &str, n: usize) -> BTreeMap<String, usize> {
    wait_for(
        &format!("traffic to reach {expected}"),
        Duration::from_secs(10),
        || {
            let (status, _, body) = get(proxy, URL);
            (format!("{status} {body}") == expected).then_some(())
        },
    );
    count(proxy, URL, n)
}

fn serve_traffic_and_follow_changes(mode: Mode) {
    let (a, b, c) = (
        support::app("1.0"),
        support::app("1.1"),
        support::app("2.0"),
    );
    let apps = [("1.0", a), ("1.1", b), ("2.0", c)];
    let ca = sleep_secrets();
    let inst = instance();
    let to_1_0 = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 100}, {version: \"1.1\", weight: 0}]",
        ),
        &inst,
        &ca,
    );
    let server = XdsServer::new();
    let cp = ControlPlane::start(server.clone());
    let g1 = server.set("sleep", to_1_0.clone());
    assert_eq!(g1, 1);
    let envoy = Envoy::start("sleep", cp.addr, mode);
    wait_acked(&server, "sleep", g1);
    // ACKed means applied: Envoy already holds the routes (RDS comes
    // after LDS), the secrets and the warm listeners.
    let dump = |resource: &str| envoy.admin_get(&format!("/config_dump?resource={resource}"));
    let routes = dump("dynamic_route_configs");
    let secrets = dump("dynamic_active_secrets");
    for (name, part) in [
        ("outbound", &routes),
        ("inbound", &routes),
        ("default", &secrets),
        ("ROOTCA", &secrets),
    ] {
        assert!(
            part.contains(&format!("\"name\": \"{name}\"")),
            "{name}: {part}"
        );
    }
    let listeners = dump("dynamic_listeners");
    assert!(listeners.contains("active_state"), "{listeners}");
    assert!(!listeners.contains("warming_state"), "{listeners}");
    let counts = settle(inst.outbound, "200 1.0", 50);
    assert_eq!(counts, BTreeMap::from([("200 1.0".to_string(), 50)]));
    let status = server.status("sleep").expect("status");
    assert!(status.connected, "{status:?}");
    assert_eq!((status.generation, status.acked), (1, 1));
    assert_eq!(status.last_nack, None);

    // The same snapshot again: same generation, nothing pushed. Then a
    // weight flip (RDS only): only RDS is pushed, traffic follows.
    let mut events = server.events();
    let before = envoy.update_stats();
    assert_eq!(server.set("sleep", to_1_0), g1);
    let to_1_1 = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 0}, {version: \"1.1\", weight: 100}]",
        ),
        &inst,
        &ca,
    );
    let g2 = server.set("sleep", to_1_1);
    assert_eq!(g2, 2);
    wait_acked(&server, "sleep", g2);
    let counts = settle(inst.outbound, "200 1.1", 50);
    assert_eq!(counts, BTreeMap::from([("200 1.1".to_string(), 50)]));
    let pushed = drain(&mut events);
    assert_eq!(
        pushes_to(&pushed, "sleep"),
        vec![ResourceType::Route.type_url()],
        "{pushed:?}"
    );
    let changes = support::stat_changes(&before, &envoy.update_stats());
    assert!(
        !changes.is_empty()
            && changes
                .keys()
                .all(|k| k.contains(".rds.") && !k.contains("rejected")),
        "{changes:?}"
    );
    if mode == Mode::Delta {
        // Only the changed route configuration reached Envoy.
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(
            changes.keys().all(|k| k.contains(".rds.outbound.")),
            "{changes:?}"
        );
    }

    // A route to another backend: clusters change (2.0 added, 1.x removed).
    let to_2_0 = sleep_snapshot(
        &mesh(&apps, "[{version: \"2.0\", weight: 100}]"),
        &inst,
        &ca,
    );
    let g3 = server.set("sleep", to_2_0);
    assert_eq!(g3, 3);
    wait_acked(&server, "sleep", g3);
    let counts = settle(inst.outbound, "200 2.0", 50);
    assert_eq!(counts, BTreeMap::from([("200 2.0".to_string(), 50)]));
    let clusters = envoy.admin_get("/clusters");
    assert!(clusters.contains("|v2-0|httpbin.demo"), "{clusters}");
    assert!(!clusters.contains("|v1-0|httpbin.demo"), "{clusters}");
    assert_eq!(server.status("sleep").expect("status").acked, 3);
    cp.stop();
}

#[test]
fn delta_serves_traffic_and_follows_changes() {
    serve_traffic_and_follow_changes(Mode::Delta);
}

#[test]
fn sotw_serves_traffic_and_follows_changes() {
    serve_traffic_and_follow_changes(Mode::Sotw);
}

#[test]
fn two_nodes_a_change_reaches_only_its_node() {
    let (a, b) = (support::app("1.0"), support::app("1.1"));
    let apps = [("1.0", a), ("1.1", b)];
    let ca = sleep_secrets();
    let (ia, ib) = (instance(), instance());
    let first = mesh(
        &apps,
        "[{version: \"1.0\", weight: 100}, {version: \"1.1\", weight: 0}]",
    );
    let server = XdsServer::new();
    let cp = ControlPlane::start(server.clone());
    let ga = server.set("node-a", sleep_snapshot(&first, &ia, &ca));
    let gb = server.set("node-b", sleep_snapshot(&first, &ib, &ca));
    let ea = Envoy::start("node-a", cp.addr, Mode::Delta);
    let eb = Envoy::start("node-b", cp.addr, Mode::Delta);
    wait_acked(&server, "node-a", ga);
    wait_acked(&server, "node-b", gb);
    settle(ia.outbound, "200 1.0", 10);
    settle(ib.outbound, "200 1.0", 10);

    let mut events = server.events();
    let (before_a, before_b) = (ea.update_stats(), eb.update_stats());
    let second = mesh(
        &apps,
        "[{version: \"1.0\", weight: 0}, {version: \"1.1\", weight: 100}]",
    );
    let ga2 = server.set("node-a", sleep_snapshot(&second, &ia, &ca));
    wait_acked(&server, "node-a", ga2);
    assert_eq!(
        settle(ia.outbound, "200 1.1", 20),
        BTreeMap::from([("200 1.1".to_string(), 20)])
    );
    assert_eq!(
        count(ib.outbound, URL, 20),
        BTreeMap::from([("200 1.0".to_string(), 20)])
    );
    let pushed = drain(&mut events);
    assert_eq!(pushes_to(&pushed, "node-a").len(), 1, "{pushed:?}");
    assert!(pushes_to(&pushed, "node-b").is_empty(), "{pushed:?}");
    assert!(!support::stat_changes(&before_a, &ea.update_stats()).is_empty());
    assert_eq!(
        support::stat_changes(&before_b, &eb.update_stats()),
        BTreeMap::new()
    );
    assert_eq!(server.status("node-b").expect("b").generation, gb);
    cp.stop();
}

/// A listener Envoy refuses: two filter chains with the same match.
fn bad_listener() -> envoy_types::pb::envoy::config::listener::v3::Listener {
    use envoy_types::pb::envoy::config::core::v3::{
        Address, SocketAddress, address, socket_address,
    };
    use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};
    let port = free_addr().port();
    Listener {
        name: "bad".to_string(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".to_string(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain::default(), FilterChain::default()],
        ..Default::default()
    }
}

fn nack_keeps_old_config(mode: Mode) {
    let (a, b) = (support::app("1.0"), support::app("1.1"));
    let apps = [("1.0", a), ("1.1", b)];
    let ca = sleep_secrets();
    let inst = instance();
    let good = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 100}, {version: \"1.1\", weight: 0}]",
        ),
        &inst,
        &ca,
    );
    let server = XdsServer::new();
    let mut events = server.events();
    let cp = ControlPlane::start(server.clone());
    let g1 = server.set("sleep", good.clone());
    let envoy = Envoy::start("sleep", cp.addr, mode);
    wait_acked(&server, "sleep", g1);
    settle(inst.outbound, "200 1.0", 5);

    let mut bad = good.clone();
    bad.listeners.push(bad_listener());
    let g2 = server.set("sleep", bad);
    let (version, message) = wait_for("a NACK", Duration::from_secs(20), || {
        drain(&mut events).into_iter().find_map(|e| match e {
            XdsEvent::Nack {
                node,
                type_url,
                version,
                message,
            } if node == "sleep" => {
                assert_eq!(type_url, ResourceType::Listener.type_url());
                Some((version, message))
            }
            _ => None,
        })
    });
    // Envoy's own words, e.g. "Error adding/updating listener(s) bad: ...".
    assert!(message.contains("bad"), "{message}");
    let status = server.status("sleep").expect("status");
    let nack = status.last_nack.expect("status shows the NACK");
    assert_eq!((nack.version, nack.message), (version, message.clone()));
    assert_eq!(nack.type_url, ResourceType::Listener.type_url());
    assert_eq!((status.generation, status.acked), (g2, g1));
    // The old config keeps serving.
    assert_eq!(
        count(inst.outbound, URL, 20),
        BTreeMap::from([("200 1.0".to_string(), 20)])
    );

    // A good snapshot (bad listener gone, weights flipped) is ACKed; the
    // rejected version was sent exactly once (no resend loop).
    let fixed = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 0}, {version: \"1.1\", weight: 100}]",
        ),
        &inst,
        &ca,
    );
    let g3 = server.set("sleep", fixed);
    wait_acked(&server, "sleep", g3);
    settle(inst.outbound, "200 1.1", 5);
    let stats = envoy.update_stats();
    assert_eq!(
        stats.get("listener_manager.lds.update_rejected"),
        Some(&1),
        "{stats:?}"
    );
    let nacks = drain(&mut events)
        .iter()
        .filter(|e| matches!(e, XdsEvent::Nack { .. }))
        .count();
    assert_eq!(nacks, 0, "only the one NACK");
    cp.stop();
}

#[test]
fn delta_nack_is_reported_and_old_config_keeps_serving() {
    nack_keeps_old_config(Mode::Delta);
}

#[test]
fn sotw_nack_is_reported_and_old_config_keeps_serving() {
    nack_keeps_old_config(Mode::Sotw);
}

/// Serial numbers of certificates Envoy holds (admin `/certs`).
fn serials(envoy: &Envoy) -> String {
    envoy.admin_get("/certs")
}

fn sds_mtls_and_rotation(mode: Mode) {
    let httpbin_app = support::app("httpbin says hi");
    let ca = TestCa::new();
    let yaml = "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: httpbin, namespace: demo}\nspec:\n  port: 8000\n  versions: [{version: \"1.0\", image: x}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: sleep, namespace: demo}\nspec:\n  port: 8080\n  versions: [{version: \"1.0\", image: x}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: demo}\nspec: {mtls: strict}\n";
    let (model, _) = packlight_model::load(&[(None, yaml)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    let mesh = model.mesh;
    let sleep_inst = instance();
    let httpbin_inst = Instance {
        app: httpbin_app,
        ..instance()
    };
    let mut opts = XdsOptions::default();
    let httpbin = ServiceKey::new("demo", "httpbin");
    let sleep = ServiceKey::new("demo", "sleep");
    opts.instances.entry(httpbin.clone()).or_default().insert(
        mesh.services[&httpbin]
            .workload
            .as_ref()
            .expect("workload")
            .versions
            .keys()
            .next()
            .expect("version")
            .clone(),
        vec![httpbin_inst.clone()],
    );
    let sleep_cfg = sidecar(&mesh, &sleep, &sleep_inst, &opts).expect("sleep");
    let httpbin_cfg = sidecar(&mesh, &httpbin, &httpbin_inst, &opts).expect("httpbin");
    let httpbin_id = "spiffe://cluster.local/ns/demo/sa/httpbin";
    let server = XdsServer::new();
    let cp = ControlPlane::start(server.clone());
    let gs = server.set(
        "sleep",
        Snapshot::new(
            sleep_cfg,
            ca.secrets("spiffe://cluster.local/ns/demo/sa/sleep", 0x51),
        ),
    );
    let gh = server.set(
        "httpbin",
        Snapshot::new(httpbin_cfg.clone(), ca.secrets(httpbin_id, 0xa1)),
    );
    let _es = Envoy::start("sleep", cp.addr, mode);
    let eh = Envoy::start("httpbin", cp.addr, mode);
    wait_acked(&server, "sleep", gs);
    wait_acked(&server, "httpbin", gh);
    let counts = settle(sleep_inst.outbound, "200 httpbin says hi", 20);
    assert_eq!(counts.len(), 1, "{counts:?}");
    // STRICT: plain text to the inbound gets no HTTP answer.
    let (status, _, _) = support::send(
        httpbin_inst.inbound,
        "GET / HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 0);
    assert!(serials(&eh).contains("\"a1\""), "{}", serials(&eh));

    // Rotation: a new certificate (serial b2) reaches httpbin by SDS only.
    let mut events = server.events();
    let gh2 = server.set(
        "httpbin",
        Snapshot::new(httpbin_cfg, ca.secrets(httpbin_id, 0xb2)),
    );
    assert_eq!(gh2, gh + 1);
    wait_acked(&server, "httpbin", gh2);
    let certs = wait_for("the rotated certificate", Duration::from_secs(10), || {
        let c = serials(&eh);
        c.contains("\"b2\"").then_some(c)
    });
    assert!(!certs.contains("\"a1\""), "{certs}");
    assert_eq!(
        pushes_to(&drain(&mut events), "httpbin"),
        vec![ResourceType::Secret.type_url()]
    );
    let counts = count(sleep_inst.outbound, URL, 20);
    assert_eq!(counts.get("200 httpbin says hi"), Some(&20), "{counts:?}");
    cp.stop();
}

#[test]
fn delta_sds_serves_mtls_and_rotates() {
    sds_mtls_and_rotation(Mode::Delta);
}

#[test]
fn sotw_sds_serves_mtls_and_rotates() {
    sds_mtls_and_rotation(Mode::Sotw);
}

fn restart(mode: Mode) {
    let (a, b) = (support::app("1.0"), support::app("1.1"));
    let apps = [("1.0", a), ("1.1", b)];
    let ca = sleep_secrets();
    let inst = instance();
    let snapshot = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 100}, {version: \"1.1\", weight: 0}]",
        ),
        &inst,
        &ca,
    );
    let server = XdsServer::new();
    let cp = ControlPlane::start(server.clone());
    let addr = cp.addr;
    let g = server.set("sleep", snapshot.clone());
    let _envoy = Envoy::start("sleep", addr, mode);
    wait_acked(&server, "sleep", g);
    settle(inst.outbound, "200 1.0", 5);

    // The control plane goes away: its streams end, Envoy keeps serving.
    cp.stop();
    wait_for("the stream to close", Duration::from_secs(10), || {
        (!server.status("sleep").expect("status").connected).then_some(())
    });
    assert_eq!(
        count(inst.outbound, URL, 20),
        BTreeMap::from([("200 1.0".to_string(), 20)])
    );

    // A new server on the same port with the same snapshot: Envoy
    // reconnects and ACKs; a change then reaches it.
    let server2 = XdsServer::new();
    let g = server2.set("sleep", snapshot);
    let cp2 = ControlPlane::start_on(server2.clone(), addr);
    wait_acked(&server2, "sleep", g);
    assert!(server2.status("sleep").expect("status").connected);
    let flipped = sleep_snapshot(
        &mesh(
            &apps,
            "[{version: \"1.0\", weight: 0}, {version: \"1.1\", weight: 100}]",
        ),
        &inst,
        &ca,
    );
    let g2 = server2.set("sleep", flipped);
    wait_acked(&server2, "sleep", g2);
    assert_eq!(
        settle(inst.outbound, "200 1.1", 20),
        BTreeMap::from([("200 1.1".to_string(), 20)])
    );
    cp2.stop();
}

#[test]
fn delta_control_plane_restart() {
    restart(Mode::Delta);
}

#[test]
fn sotw_control_plane_restart() {
    restart(Mode::Sotw);
}
