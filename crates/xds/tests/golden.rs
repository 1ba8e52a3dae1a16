//! Golden files: each example's proxies as proto3 JSON (keys sorted) under
//! `tests/golden/`. Regenerate with `PACKLIGHT_BLESS=1 cargo test -p
//! packlight-xds --test golden` and review the diff like code.

mod support;

use std::path::PathBuf;

use packlight_xds::{ProxyConfig, XdsOptions, ingress_gateway, sidecar};
use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use serde_json::{Value, json};

/// Envoy's .proto files as shipped inside the envoy-types crate.
fn proto_root() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let src = home.join("registry/src");
    for index in std::fs::read_dir(&src).expect("cargo registry").flatten() {
        let p = index.path().join("envoy-types-0.7.7/proto");
        if p.is_dir() {
            return p;
        }
    }
    panic!(
        "envoy-types-0.7.7 sources not found under {}",
        src.display()
    );
}

fn pool() -> DescriptorPool {
    let root = proto_root();
    let includes: Vec<PathBuf> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|p| p.is_dir())
    .collect();
    let files = [
        "envoy/config/cluster/v3/cluster.proto",
        "envoy/config/endpoint/v3/endpoint.proto",
        "envoy/config/listener/v3/listener.proto",
        "envoy/config/route/v3/route.proto",
        "envoy/extensions/transport_sockets/tls/v3/tls.proto",
        "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
        "envoy/extensions/filters/http/router/v3/router.proto",
        "envoy/extensions/filters/http/rbac/v3/rbac.proto",
        "envoy/extensions/filters/http/cors/v3/cors.proto",
        "envoy/extensions/filters/http/csrf/v3/csrf.proto",
        "envoy/extensions/filters/http/ext_authz/v3/ext_authz.proto",
        "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto",
        "envoy/extensions/filters/http/dynamic_forward_proxy/v3/dynamic_forward_proxy.proto",
        "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
        "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto",
        "envoy/extensions/upstreams/http/v3/http_protocol_options.proto",
    ];
    // protox resolves `common.dynamic_forward_proxy.v3.DnsCacheConfig` in
    // the DFP cluster's proto against `envoy.extensions.clusters.common`
    // (protoc's scoping rule, which Envoy's build never trips over):
    // serve that one file with the fully qualified name.
    let mut resolver = ChainFileResolver::new();
    resolver.add(PatchedDfpCluster(includes[0].clone()));
    for inc in &includes {
        resolver.add(IncludeFileResolver::new(inc.clone()));
    }
    resolver.add(GoogleFileResolver::new());
    let mut compiler = protox::Compiler::with_file_resolver(resolver);
    compiler.include_imports(true);
    compiler.open_files(files).expect("compile Envoy protos");
    compiler.descriptor_pool()
}

const DFP_CLUSTER: &str = "envoy/extensions/clusters/dynamic_forward_proxy/v3/cluster.proto";

struct PatchedDfpCluster(PathBuf);

impl FileResolver for PatchedDfpCluster {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        if name != DFP_CLUSTER {
            return Err(protox::Error::file_not_found(name));
        }
        let text = std::fs::read_to_string(self.0.join(name))
            .map_err(|_| protox::Error::file_not_found(name))?
            .replace(
                " common.dynamic_forward_proxy.v3.",
                " .envoy.extensions.common.dynamic_forward_proxy.v3.",
            );
        File::from_source(name, &text)
    }
}

fn to_json<T: Message + Name>(pool: &DescriptorPool, m: &T) -> Value {
    let desc = pool
        .get_message_by_name(&T::full_name())
        .expect("message in pool");
    let dynamic = DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).expect("decode");
    serde_json::to_value(&dynamic).expect("json")
}

fn render(pool: &DescriptorPool, cfg: &ProxyConfig) -> Value {
    json!({
        "clusters": cfg.clusters.iter().map(|c| to_json(pool, c)).collect::<Vec<_>>(),
        "endpoints": cfg.endpoints.iter().map(|c| to_json(pool, c)).collect::<Vec<_>>(),
        "listeners": cfg.listeners.iter().map(|c| to_json(pool, c)).collect::<Vec<_>>(),
        "routes": cfg.routes.iter().map(|c| to_json(pool, c)).collect::<Vec<_>>(),
        "secrets": cfg.secrets,
    })
}

#[test]
fn golden_examples() {
    let pool = pool();
    let dir = support::root().join("crates/xds/tests/golden");
    let bless = std::env::var_os("PACKLIGHT_BLESS").is_some();
    let mut stale = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(support::root().join("examples"))
        .expect("examples")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    for name in names {
        let mesh = support::example(&name);
        let opts = XdsOptions {
            login: Some("127.0.0.1:7401".parse().expect("addr")),
            ..XdsOptions::default()
        }
        .with_local_instances(&mesh, 20000);
        let mut proxies = serde_json::Map::new();
        for (key, svc) in &mesh.services {
            let Some(v) = svc.workload.as_ref().and_then(|w| w.versions.keys().next()) else {
                continue;
            };
            let inst = opts.instances_of(key, v)[0].clone();
            let cfg = sidecar(&mesh, key, &inst, &opts).expect("sidecar");
            // Deterministic as the xDS server sees it (it sends a resource
            // again when the message differs; the bytes packed in an `Any`
            // count): twice the same config.
            let again = sidecar(&mesh, key, &inst, &opts).expect("sidecar");
            assert!(
                again == cfg,
                "{name}: {key}: the sidecar's config differs between two translations"
            );
            proxies.insert(format!("sidecar {key} {v}"), render(&pool, &cfg));
        }
        if !mesh.ingresses.is_empty() {
            let cfg = ingress_gateway(&mesh, &opts).expect("ingress");
            let again = ingress_gateway(&mesh, &opts).expect("ingress");
            assert!(
                again == cfg,
                "{name}: the ingress gateway's config differs between two translations"
            );
            proxies.insert("ingress".to_string(), render(&pool, &cfg));
        }
        let text = serde_json::to_string_pretty(&Value::Object(proxies)).expect("json") + "\n";
        let path = dir.join(name.replace(".yaml", ".json"));
        if bless {
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::fs::write(&path, &text).expect("write golden");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "golden files differ (PACKLIGHT_BLESS=1 to regenerate, then review): {stale:?}"
    );
}
