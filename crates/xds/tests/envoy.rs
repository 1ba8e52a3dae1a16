//! Every generated ProxyConfig (each example's sidecars and ingress
//! gateway) passes real Envoy's `--mode validate`.

mod support;

use packlight_xds::{XdsOptions, ingress_gateway, sidecar};

const EXAMPLES: &[&str] = &[
    "access-sleep-httpbin.yaml",
    "deny-all.yaml",
    "egress-sleep.yaml",
    "ingress.yaml",
    "route-rules.yaml",
    "route-weights.yaml",
];

#[test]
fn real_envoy_accepts_every_example() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in EXAMPLES {
        let mesh = support::example(name);
        let opts = XdsOptions {
            login: Some("127.0.0.1:7401".parse().expect("addr")),
            ..XdsOptions::default()
        }
        .with_local_instances(&mesh, 20000);
        for (key, svc) in &mesh.services {
            let Some(w) = &svc.workload else { continue };
            let Some(v) = w.versions.keys().next() else {
                continue;
            };
            let inst = opts.instances_of(key, v)[0].clone();
            let cfg = sidecar(&mesh, key, &inst, &opts).expect("sidecar");
            checked += 1;
            if let Err(e) = support::validate(&format!("{name} sidecar {key}"), &cfg) {
                failures.push(e);
            }
        }
        if !mesh.ingresses.is_empty() {
            let cfg = ingress_gateway(&mesh, &opts).expect("ingress");
            checked += 1;
            if let Err(e) = support::validate(&format!("{name} ingress"), &cfg) {
                failures.push(e);
            }
        }
    }
    assert!(checked >= 8, "only {checked} proxies checked");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The check has teeth: a route to a cluster that does not exist is
/// rejected by Envoy.
#[test]
fn real_envoy_rejects_a_broken_config() {
    let mesh = support::example("route-weights.yaml");
    let opts = XdsOptions::default().with_local_instances(&mesh, 21000);
    let (key, svc) = mesh
        .services
        .iter()
        .find(|(_, s)| s.workload.is_some())
        .expect("a workload");
    let v = svc.versions().into_iter().next().expect("a version");
    let inst = opts.instances_of(key, &v)[0].clone();
    let mut cfg = sidecar(&mesh, key, &inst, &opts).expect("sidecar");
    cfg.clusters.retain(|c| !c.name.starts_with("inbound|"));
    let err = support::validate("broken", &cfg).expect_err("Envoy must reject");
    assert!(err.contains("inbound|"), "{err}");
}
