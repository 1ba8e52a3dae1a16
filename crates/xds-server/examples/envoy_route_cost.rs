//! Envoy CPU per outbound route update, for variants of the route table
//! (an experiment, not a benchmark of record): one real Envoy holds a
//! sidecar of the mesh in `mesh.yaml` (e.g. the convergence bench's, kept
//! with `CONVERGENCE_KEEP=1`), and its CPU per update of Route `svc-0`'s
//! weights is read from `/proc`. Args: `mesh.yaml [updates]`.
#![forbid(unsafe_code)]

#[path = "../tests/support/mod.rs"]
mod support;

use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, route, route_action};
use packlight_model::ir::ServiceKey;
use packlight_xds::XdsOptions;
use packlight_xds_server::{Mode, Snapshot, XdsServer};

fn cpu_ns_of_envoys() -> u64 {
    let me = std::process::id().to_string();
    let mut total = 0;
    for p in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, tail)) = st.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(envoy") || tail.split_whitespace().nth(1) != Some(me.as_str()) {
            continue;
        }
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task")
            .flatten()
        {
            if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
                total += s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

fn set_weight(rc: &mut RouteConfiguration, w: u32) {
    let vh = rc
        .virtual_hosts
        .iter_mut()
        .find(|v| v.name.starts_with("svc-0."))
        .expect("svc-0");
    for r in &mut vh.routes {
        if let Some(route::Action::Route(a)) = &mut r.action
            && let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
                &mut a.cluster_specifier
            && wc.clusters.len() == 2
        {
            wc.clusters[0].weight =
                Some(envoy_types::pb::google::protobuf::UInt32Value { value: w });
            wc.clusters[1].weight =
                Some(envoy_types::pb::google::protobuf::UInt32Value { value: 100 - w });
        }
    }
}

fn main() {
    let path = std::env::args().nth(1).expect("mesh.yaml");
    let n: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let text = std::fs::read_to_string(&path).expect("read");
    let (_, inputs) = packlight_model::load(&[(Some(&path), &text)], "default");
    let model = packlight_model::build(&inputs);
    let mesh = &model.mesh;
    let opts = XdsOptions::default().with_local_instances(mesh, 20000);
    let key = ServiceKey::new("shop", "sleep-1");
    let inst = opts.instances[&key].values().next().expect("inst")[0].clone();
    let cfg = packlight_xds::sidecar(mesh, &key, &inst, &opts).expect("sidecar");
    let ca = support::TestCa::new();
    let secrets = ca.secrets("spiffe://cluster.local/ns/shop/sa/sleep-1", 1);
    let server = XdsServer::new();
    let cp = support::ControlPlane::start(server.clone());
    let node = "sidecar~shop~sleep-1~v1-0~0";
    let g = server.set(node, Snapshot::new(cfg.clone(), secrets.clone()));
    let _envoy = support::Envoy::start(node, cp.addr, Mode::Delta);
    support::wait_acked(&server, node, g);
    std::thread::sleep(std::time::Duration::from_millis(500));
    type Variant = fn(&mut RouteConfiguration);
    let variants: Vec<(&str, Variant)> = vec![
        ("as rendered", |_| {}),
        ("no major regex routes", |rc| {
            for vh in &mut rc.virtual_hosts {
                vh.routes.retain(|r| !r.name.starts_with("major-"));
            }
        }),
        ("no retry policies", |rc| {
            for vh in &mut rc.virtual_hosts {
                for r in &mut vh.routes {
                    if let Some(route::Action::Route(a)) = &mut r.action {
                        a.retry_policy = None;
                    }
                }
            }
        }),
        ("no response headers", |rc| {
            for vh in &mut rc.virtual_hosts {
                for r in &mut vh.routes {
                    if let Some(route::Action::Route(a)) = &mut r.action
                        && let Some(route_action::ClusterSpecifier::WeightedClusters(wc)) =
                            &mut a.cluster_specifier
                    {
                        for c in &mut wc.clusters {
                            c.response_headers_to_add.clear();
                        }
                    }
                }
            }
        }),
        ("svc-0 and catch-all vhosts only", |rc| {
            rc.virtual_hosts
                .retain(|v| v.name.starts_with("svc-0.") || v.name == "catch-all");
        }),
        ("as rendered (again)", |_| {}),
    ];
    for (name, f) in variants {
        let mut base = cfg.clone();
        let rc = base
            .routes
            .iter_mut()
            .find(|r| r.name == "outbound")
            .expect("outbound");
        f(rc);
        let mut total = 0u64;
        let mut wall = std::time::Duration::ZERO;
        for i in 0..=n {
            let mut c = base.clone();
            let rc = c
                .routes
                .iter_mut()
                .find(|r| r.name == "outbound")
                .expect("outbound");
            set_weight(rc, 50 + (i % 7) as u32);
            let c0 = cpu_ns_of_envoys();
            let t0 = std::time::Instant::now();
            let g = server.set(node, Snapshot::new(c, secrets.clone()));
            support::wait_acked(&server, node, g);
            std::thread::sleep(std::time::Duration::from_millis(20));
            if i > 0 {
                // the first update of a variant changes more than svc-0
                total += cpu_ns_of_envoys() - c0;
                wall += t0.elapsed();
            }
        }
        println!(
            "{name}: envoy CPU per update {:.2} ms (incl. 20 ms idle), {} updates",
            total as f64 / n as f64 / 1e6,
            n
        );
    }
    // idle cost of 20 ms
    let c0 = cpu_ns_of_envoys();
    for _ in 0..n {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    println!(
        "idle: {:.2} ms per 20 ms",
        (cpu_ns_of_envoys() - c0) as f64 / n as f64 / 1e6
    );
    cp.stop();
}
