//! What the generated resources mean: scoping, route order, version
//! header, RBAC, egress, ingress filters. Read off the typed resources.

mod support;

use envoy_types::pb::envoy::config::core::v3::data_source;
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use packlight_model::ir::{Mesh, ServiceKey};
use packlight_xds::{
    ProxyConfig, RenderCache, XdsOptions, ingress_gateway, sidecar, sidecar_cached,
};
use prost::Message;

fn load(text: &str) -> Mesh {
    let (model, _) = packlight_model::load(&[(None, text)], "default");
    assert!(model.diagnostics.is_empty(), "{:?}", model.diagnostics);
    model.mesh
}

fn sidecar_of(mesh: &Mesh, ns: &str, name: &str) -> ProxyConfig {
    let opts = XdsOptions::default().with_local_instances(mesh, 30000);
    let key = ServiceKey::new(ns, name);
    let v = mesh.services[&key]
        .versions()
        .into_iter()
        .next()
        .expect("version");
    let inst = opts.instances_of(&key, &v)[0].clone();
    sidecar(mesh, &key, &inst, &opts).expect("sidecar")
}

fn route_config<'a>(cfg: &'a ProxyConfig, name: &str) -> &'a RouteConfiguration {
    cfg.routes
        .iter()
        .find(|r| r.name == name)
        .expect("route config")
}

fn http_filters(cfg: &ProxyConfig, listener: &str) -> Vec<String> {
    let l = cfg
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .expect("listener");
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type
    else {
        panic!("no hcm")
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
    hcm.http_filters.iter().map(|f| f.name.clone()).collect()
}

/// 200 services under deny-all; the caller may call exactly one of them.
#[test]
fn sidecar_holds_only_what_it_may_reach() {
    let mut yaml = String::from(
        "apiVersion: packlight.dev/v1alpha1\nkind: MeshPolicy\nmetadata: {name: default, namespace: big}\nspec: {access: deny, egress: deny}\n",
    );
    for i in 0..200 {
        yaml.push_str(&format!(
            "---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: svc-{i}, namespace: big}}\nspec:\n  port: 8000\n  versions: [{{version: \"1.0\", endpoints: [\"127.0.0.1:{}\"]}}, {{version: \"1.1\", endpoints: [\"127.0.0.1:{}\"]}}]\n",
            10000 + i,
            11000 + i
        ));
    }
    yaml.push_str("---\napiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {name: svc-7, namespace: big}\nspec:\n  service: svc-7\n  rules: [{version: \"1.0\", weight: 90}, {version: \"1.1\", weight: 10}]\n");
    yaml.push_str("---\napiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: svc-7, namespace: big}\nspec:\n  service: svc-7\n  allow: [{from: [svc-0]}]\n");
    // svc-8 is guarded by an AccessPolicy that does not name svc-0: svc-0's
    // sidecar answers 403 `RBAC: access denied` itself, as svc-8's RBAC
    // would (DESIGN.md), and holds none of svc-8's clusters; the other 190
    // are denied by the namespace default alone: no route (502).
    yaml.push_str("---\napiVersion: packlight.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: svc-8, namespace: big}\nspec:\n  service: svc-8\n  allow: [{from: [svc-1]}]\n");
    let mesh = load(&yaml);
    assert_eq!(mesh.services.len(), 200);
    let cfg = sidecar_of(&mesh, "big", "svc-0");
    let outbound: Vec<&str> = cfg
        .clusters
        .iter()
        .map(|c| c.name.as_str())
        .filter(|n| n.starts_with("outbound|"))
        .collect();
    assert_eq!(
        outbound,
        [
            "outbound|8000|v1-0|svc-7.big.svc.cluster.local",
            "outbound|8000|v1-1|svc-7.big.svc.cluster.local",
        ]
    );
    assert_eq!(cfg.endpoints.len(), 2);
    // The inbound app cluster, the mesh clusters, nothing else (egress deny
    // without whitelist: no forward proxy).
    assert_eq!(cfg.clusters.len(), 3);
    let hosts = &route_config(&cfg, "outbound").virtual_hosts;
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["svc-7.big.svc.cluster.local", "access-denied", "catch-all"]
    );
    let denied = &hosts[1];
    assert_eq!(
        denied.domains,
        [
            "svc-8.big.svc.cluster.local",
            "svc-8.big.svc.cluster.local:*",
            "svc-8.big.svc",
            "svc-8.big.svc:*",
            "svc-8.big",
            "svc-8.big:*",
            "svc-8",
            "svc-8:*",
        ]
    );
    for r in &denied.routes {
        let Some(route::Action::DirectResponse(d)) = &r.action else {
            panic!("{}: not a direct response", r.name)
        };
        let body = d.body.as_ref().and_then(|b| b.specifier.as_ref());
        assert_eq!(d.status, 403, "{}", r.name);
        assert_eq!(
            body,
            Some(&data_source::Specifier::InlineString(
                "RBAC: access denied".to_string()
            ))
        );
    }
    // svc-1, which svc-8 allows and svc-7 does not, the other way round.
    let cfg = sidecar_of(&mesh, "big", "svc-1");
    let hosts = &route_config(&cfg, "outbound").virtual_hosts;
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        ["svc-8.big.svc.cluster.local", "access-denied", "catch-all"]
    );
    assert_eq!(hosts[1].domains[0], "svc-7.big.svc.cluster.local");
    support::validate("scoping", &cfg).expect("real Envoy accepts it");
}

#[test]
fn routes_follow_the_normative_order_and_add_the_version_header() {
    let text = std::fs::read_to_string(support::root().join("examples/route-rules.yaml"))
        .expect("example");
    let caller_doc = "\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: sleep, namespace: demo}\nspec:\n  port: 8080\n  versions: [{version: \"1.0\", image: \"example/sleep:1.0\"}]\n";
    let mesh = load(&format!("{text}{caller_doc}"));
    let caller = ServiceKey::new("demo", "sleep");
    let cfg = sidecar_of(&mesh, &caller.namespace, &caller.name);
    let rc = route_config(&cfg, "outbound");
    let vh = rc
        .virtual_hosts
        .iter()
        .find(|v| {
            mesh.services
                .values()
                .any(|s| s.route.is_some() && v.name == s.key.fqdn())
        })
        .expect("a routed service");
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    let first_major = names
        .iter()
        .position(|n| n.starts_with("major-"))
        .expect("major");
    assert!(names[..first_major].iter().all(|n| n.starts_with("match-")));
    assert_eq!(names.last(), Some(&"default"));
    for r in &vh.routes {
        let Some(route::Action::Route(a)) = &r.action else {
            panic!()
        };
        let Some(route_action::ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier else {
            panic!()
        };
        for c in &w.clusters {
            let h = &c.response_headers_to_add[0]
                .header
                .as_ref()
                .expect("header");
            assert_eq!(h.key, "x-packlight-version");
            assert!(c.name.ends_with(".svc.cluster.local"));
        }
        assert!(a.retry_policy.is_some());
        if r.name.starts_with("major-") {
            let m = r.r#match.as_ref().expect("match");
            let Some(route_match::PathSpecifier::SafeRegex(re)) = &m.path_specifier else {
                panic!()
            };
            assert!(re.regex.ends_with("(/.*)?"), "{}", re.regex);
        }
    }
}

/// The routes of `svc`'s virtual host in `caller`'s outbound config.
fn route_names(mesh: &Mesh, caller: &str, svc: &str) -> Vec<String> {
    let cfg = sidecar_of(mesh, "demo", caller);
    let fqdn = ServiceKey::new("demo", svc).fqdn();
    route_config(&cfg, "outbound")
        .virtual_hosts
        .iter()
        .find(|v| v.name == fqdn)
        .expect("virtual host")
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn the_default_majors_path_route_is_left_out_when_the_default_route_does_the_same() {
    let service = |name: &str, versions: &[&str]| {
        let vs: Vec<String> = versions
            .iter()
            .map(|v| format!("{{version: \"{v}\", image: \"example/{name}:{v}\"}}"))
            .collect();
        format!(
            "---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  port: 8000\n  versions: [{}]\n",
            vs.join(", ")
        )
    };
    let route = |name: &str, spec: &str| {
        format!(
            "---\napiVersion: packlight.dev/v1alpha1\nkind: Route\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  service: {name}\n{spec}"
        )
    };
    let text = [
        service("sleep", &["1.0"]),
        service("one", &["1.0", "1.1"]),
        route("one", "  rules:\n  - {version: \"1.0\", weight: 80}\n  - {version: \"1.1\", weight: 20}\n  - version: \"1.1\"\n    matches: [{headers: {gray: {exact: \"1\"}}}]\n"),
        service("two", &["1.0", "2.0"]),
        route("two", "  rules:\n  - {version: \"1.0\", weight: 100}\n  - {version: \"2.0\", weight: 100}\n"),
        service("late", &["1.0", "2.0"]),
        route("late", "  defaultMajor: \"2\"\n  rules:\n  - {version: \"1.0\", weight: 100}\n  - {version: \"2.0\", weight: 100}\n"),
    ]
    .concat();
    let mesh = load(&text);
    // One major: the default route alone carries the split.
    assert_eq!(route_names(&mesh, "sleep", "one"), ["match-0-0", "default"]);
    // Major 1 (the default) is disjoint from /v2: left out.
    assert_eq!(route_names(&mesh, "sleep", "two"), ["major-2", "default"]);
    // Major 2 is the default and the last path major.
    assert_eq!(route_names(&mesh, "sleep", "late"), ["major-1", "default"]);
    let cfg = sidecar_of(&mesh, "demo", "sleep");
    support::validate("default major", &cfg).expect("real Envoy accepts it");
}

#[test]
fn egress_deny_answers_502_and_whitelists_hosts() {
    let mesh = support::example("egress-sleep.yaml");
    let sleep = sidecar_of(&mesh, "demo", "sleep");
    let rc = route_config(&sleep, "outbound");
    let catch_all = rc.virtual_hosts.last().expect("catch-all");
    assert_eq!(catch_all.domains, ["*"]);
    for r in &catch_all.routes {
        let Some(route::Action::DirectResponse(d)) = &r.action else {
            panic!()
        };
        assert_eq!(d.status, 502);
    }
    let domains: Vec<&str> = rc
        .virtual_hosts
        .iter()
        .flat_map(|v| v.domains.iter().map(String::as_str))
        .collect();
    for d in [
        "www.aliyun.com",
        "www.aliyun.com:443",
        "*.oss-cn-hangzhou.aliyuncs.com:443",
        "api.example.com:8443",
        "10.0.0.1:5432",
    ] {
        assert!(domains.contains(&d), "{d} missing from {domains:?}");
    }
    assert!(
        http_filters(&sleep, "outbound")
            .contains(&"envoy.filters.http.dynamic_forward_proxy".to_string())
    );
    // The neighbour without an entry stays denied: no egress host at all.
    let curl = sidecar_of(&mesh, "demo", "curl");
    let rc = route_config(&curl, "outbound");
    assert!(
        !rc.virtual_hosts
            .iter()
            .any(|v| v.name.starts_with("egress-"))
    );
    assert!(!curl.clusters.iter().any(|c| c.name == "egress|dfp"));
}

#[test]
fn deny_all_puts_rbac_on_the_inbound_listener() {
    let mesh = support::example("access-sleep-httpbin.yaml");
    let httpbin = sidecar_of(&mesh, "demo", "httpbin");
    assert_eq!(
        http_filters(&httpbin, "inbound"),
        ["envoy.filters.http.rbac", "envoy.filters.http.router"]
    );
    let inbound = httpbin
        .listeners
        .iter()
        .find(|l| l.name == "inbound")
        .expect("inbound");
    assert_eq!(inbound.filter_chains.len(), 1, "STRICT: mTLS only");
    assert!(inbound.filter_chains[0].transport_socket.is_some());
    // sleep has no AccessPolicy and the namespace denies: RBAC denies all.
    let sleep = sidecar_of(&mesh, "demo", "sleep");
    assert!(http_filters(&sleep, "inbound").contains(&"envoy.filters.http.rbac".to_string()));
    // sleep may call httpbin; httpbin may call nobody.
    assert!(
        sleep
            .clusters
            .iter()
            .any(|c| c.name.contains("httpbin.demo"))
    );
    assert!(
        !httpbin
            .clusters
            .iter()
            .any(|c| c.name.starts_with("outbound|"))
    );
}

#[test]
fn ingress_has_its_filters_and_needs_a_login_service() {
    let mesh = support::example("ingress.yaml");
    let err = ingress_gateway(&mesh, &XdsOptions::default()).expect_err("no login service");
    assert!(err.to_string().contains("login"));
    let opts = XdsOptions {
        login: Some("127.0.0.1:7401".parse().expect("addr")),
        ..XdsOptions::default()
    };
    let cfg = ingress_gateway(&mesh, &opts).expect("ingress");
    assert_eq!(
        http_filters(&cfg, "ingress"),
        [
            "envoy.filters.http.local_ratelimit",
            "envoy.filters.http.cors",
            "envoy.filters.http.csrf",
            "envoy.filters.http.ext_authz",
            "envoy.filters.http.router"
        ]
    );
    let vh = &route_config(&cfg, "ingress").virtual_hosts[0];
    assert!(vh.domains.contains(&"data.example.com:*".to_string()));
    let names: Vec<&str> = vh.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names[0], "login");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("/httpbin/webhooks|exclude|"))
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("/httpbin/status|exclude|"))
    );
    assert_eq!(names.last(), Some(&"/httpbin|default"));
}

#[test]
fn translation_is_deterministic() {
    let mesh = support::example("ingress.yaml");
    let a = sidecar_of(&mesh, "demo", "httpbin");
    let b = sidecar_of(&mesh, "demo", "httpbin");
    assert_eq!(a, b);
}

#[test]
fn a_render_cache_changes_nothing_but_the_work() {
    let text = std::fs::read_to_string(support::root().join("examples/route-rules.yaml"))
        .expect("example");
    let caller_doc = "\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: sleep, namespace: demo}\nspec:\n  port: 8080\n  versions: [{version: \"1.0\", image: \"example/sleep:1.0\"}]\n";
    let before = load(&format!("{text}{caller_doc}"));
    // The same mesh with other weights: the cache holds stale callees.
    let after = load(&format!(
        "{}{caller_doc}",
        text.replacen("weight: 80", "weight: 60", 1)
            .replacen("weight: 20", "weight: 40", 1)
    ));
    assert_ne!(before, after, "the example's weights changed");
    let cache = RenderCache::new();
    let caller = ServiceKey::new("demo", "sleep");
    for (mesh, base) in [
        (&before, 30000),
        (&after, 30000),
        (&after, 31000),
        (&before, 30000),
    ] {
        let opts = XdsOptions::default().with_local_instances(mesh, base);
        let v = mesh.services[&caller]
            .versions()
            .into_iter()
            .next()
            .expect("v");
        let inst = opts.instances_of(&caller, &v)[0].clone();
        let plain = sidecar(mesh, &caller, &inst, &opts).expect("sidecar");
        let cached = sidecar_cached(mesh, &caller, &inst, &opts, &cache).expect("cached");
        assert_eq!(plain, cached);
        assert!(!cache.is_empty());
    }
    cache.prune(&Mesh::default());
    assert!(cache.is_empty());
}

/// Fixed endpoints given by name cannot go over EDS (IPs only): such a
/// cluster resolves them itself, and real Envoy accepts it.
#[test]
fn fixed_endpoints_by_name_use_strict_dns() {
    let mesh = load(
        "apiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: db, namespace: demo}\nspec:\n  port: 8000\n  versions: [{version: \"1.0\", endpoints: [\"localhost:9001\"]}]\n---\napiVersion: packlight.dev/v1alpha1\nkind: Microservice\nmetadata: {name: sleep, namespace: demo}\nspec:\n  port: 8080\n  versions: [{version: \"1.0\", image: x}]\n",
    );
    let key = ServiceKey::new("demo", "sleep");
    let inst = packlight_xds::Instance {
        outbound: "127.0.0.1:1".parse().expect("addr"),
        inbound: "127.0.0.1:2".parse().expect("addr"),
        app: "127.0.0.1:3".parse().expect("addr"),
    };
    let cfg = sidecar(&mesh, &key, &inst, &XdsOptions::default()).expect("sidecar");
    let db = cfg
        .clusters
        .iter()
        .find(|c| c.name == "outbound|8000||db.demo.svc.cluster.local")
        .expect("db cluster");
    assert!(db.eds_cluster_config.is_none() && db.load_assignment.is_some());
    assert!(cfg.endpoints.is_empty());
    support::validate("strict dns", &cfg).expect("real Envoy accepts it");
}
