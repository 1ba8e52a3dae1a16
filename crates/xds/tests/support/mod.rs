//! Test support: load examples, turn a ProxyConfig into a static Envoy
//! bootstrap (binary proto), find and run real Envoy.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source, transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::filter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, Secret, TlsCertificate,
    UpstreamTlsContext, common_tls_context, secret,
};
use envoy_types::pb::google::protobuf::Any;
use packlight_model::ir::Mesh;
use packlight_xds::ProxyConfig;
use prost::{Message, Name};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The mesh of one example file.
pub fn example(name: &str) -> Mesh {
    let path = root().join("examples").join(name);
    let text = std::fs::read_to_string(&path).expect("example");
    let (model, _) = packlight_model::load(&[(Some(name), &text)], "default");
    model.mesh
}

fn pack<T: Message + Name>(m: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: m.encode_to_vec(),
    }
}

fn strip_sds(c: &mut CommonTlsContext) {
    for s in &mut c.tls_certificate_sds_secret_configs {
        s.sds_config = None;
    }
    if let Some(common_tls_context::ValidationContextType::CombinedValidationContext(v)) =
        &mut c.validation_context_type
        && let Some(s) = &mut v.validation_context_sds_secret_config
    {
        s.sds_config = None;
    }
}

/// SDS over ADS becomes static secrets looked up by name.
fn static_tls(ts: &mut TransportSocket) {
    let Some(transport_socket::ConfigType::TypedConfig(any)) = &mut ts.config_type else {
        return;
    };
    if any.type_url == UpstreamTlsContext::type_url() {
        let mut ctx = UpstreamTlsContext::decode(any.value.as_slice()).expect("decode");
        strip_sds(ctx.common_tls_context.as_mut().expect("common"));
        *any = pack(&ctx);
    } else if any.type_url == DownstreamTlsContext::type_url() {
        let mut ctx = DownstreamTlsContext::decode(any.value.as_slice()).expect("decode");
        strip_sds(ctx.common_tls_context.as_mut().expect("common"));
        *any = pack(&ctx);
    }
}

fn inline(s: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(s.to_string())),
        ..Default::default()
    })
}

/// A static bootstrap holding everything `cfg` has: EDS clusters get
/// their load assignment inline, RDS becomes inline route configs, SDS
/// becomes static secrets with a test certificate.
pub fn bootstrap(cfg: &ProxyConfig) -> Bootstrap {
    let ca = TestCa::new();
    let id = ca.identity("spiffe://cluster.local/ns/test/sa/test");
    bootstrap_with(cfg, &id)
}

/// A test CA issuing SPIFFE certificates.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A proxy's certificate, key and trust bundle, PEM.
pub struct Identity {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "packlight test CA");
        let key = rcgen::KeyPair::generate().expect("key");
        TestCa {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).expect("ca"),
        }
    }

    /// A leaf certificate with `spiffe_id` as its URI SAN.
    pub fn identity(&self, spiffe_id: &str) -> Identity {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(spiffe_id).expect("uri"),
        )];
        // A subject distinct from the CA's, else OpenSSL sees a self-signed leaf.
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, spiffe_id);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
            ca: self.issuer.pem(),
        }
    }
}

/// [`bootstrap`] with a given identity.
pub fn bootstrap_with(cfg: &ProxyConfig, id: &Identity) -> Bootstrap {
    let clusters: Vec<Cluster> = cfg
        .clusters
        .iter()
        .cloned()
        .map(|mut c| {
            if c.eds_cluster_config.is_some() {
                c.eds_cluster_config = None;
                c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Static as i32,
                ));
                c.load_assignment = cfg
                    .endpoints
                    .iter()
                    .find(|e| e.cluster_name == c.name)
                    .cloned();
            }
            if let Some(ts) = &mut c.transport_socket {
                static_tls(ts);
            }
            c
        })
        .collect();
    let listeners = cfg
        .listeners
        .iter()
        .cloned()
        .map(|mut l| {
            for ch in &mut l.filter_chains {
                if let Some(ts) = &mut ch.transport_socket {
                    static_tls(ts);
                }
                for f in &mut ch.filters {
                    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
                        continue;
                    };
                    let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
                    if let Some(http_connection_manager::RouteSpecifier::Rds(rds)) =
                        &hcm.route_specifier
                    {
                        let rc = cfg
                            .routes
                            .iter()
                            .find(|r| r.name == rds.route_config_name)
                            .cloned()
                            .expect("route config named by RDS");
                        hcm.route_specifier =
                            Some(http_connection_manager::RouteSpecifier::RouteConfig(rc));
                    }
                    *any = pack(&hcm);
                }
            }
            l
        })
        .collect();
    let mut secrets = Vec::new();
    for name in &cfg.secrets {
        let ty = if name == "ROOTCA" {
            secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: inline(&id.ca),
                ..Default::default()
            })
        } else {
            secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: inline(&id.cert),
                private_key: inline(&id.key),
                ..Default::default()
            })
        };
        secrets.push(Secret {
            name: name.clone(),
            r#type: Some(ty),
        });
    }
    Bootstrap {
        static_resources: Some(StaticResources {
            listeners,
            clusters,
            secrets,
        }),
        ..Default::default()
    }
}

/// Real Envoy (installed on demand; never skips).
pub fn envoy() -> PathBuf {
    packlight_testenv::envoy().expect("real Envoy")
}

/// Runs `envoy --mode validate` on `cfg` as a binary bootstrap; returns
/// Envoy's verdict as an error text when it rejects the config.
pub fn validate(label: &str, cfg: &ProxyConfig) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap(cfg).encode_to_vec()).expect("write bootstrap");
    let out = Command::new(envoy())
        .args([
            "--mode",
            "validate",
            "--concurrency",
            "1",
            "--log-level",
            "warn",
            "-c",
        ])
        .arg(&path)
        .output()
        .expect("run envoy");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{label}: envoy rejected the config:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A running Envoy, killed on drop.
pub struct RunningEnvoy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Drop for RunningEnvoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs real Envoy on `cfg` with identity `id`; returns once `wait_for`
/// accepts connections.
pub fn run_envoy(cfg: &ProxyConfig, id: &Identity, wait_for: std::net::SocketAddr) -> RunningEnvoy {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bootstrap.pb");
    std::fs::write(&path, bootstrap_with(cfg, id).encode_to_vec()).expect("write");
    let child = Command::new(envoy())
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "error",
            "-c",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn envoy");
    let running = RunningEnvoy { child, _dir: dir };
    let t0 = std::time::Instant::now();
    while std::net::TcpStream::connect(wait_for).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "envoy did not listen on {wait_for}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    running
}
