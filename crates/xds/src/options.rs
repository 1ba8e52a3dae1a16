//! What the runtime decides and the translator cannot know: addresses of
//! sidecars and apps, the ingress port, the login service, SDS names.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use packlight_model::Version;
use packlight_model::ir::{Mesh, ServiceKey, TRUST_DOMAIN};

/// One running instance of a version: its sidecar's two listeners and the
/// app behind them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instance {
    /// Where the app sends its outbound HTTP(S) (`HTTP_PROXY`).
    pub outbound: SocketAddr,
    /// Where peers reach this instance (mTLS).
    pub inbound: SocketAddr,
    /// Where the app listens (`PORT`).
    pub app: SocketAddr,
}

/// Translation options.
#[derive(Clone, Debug, PartialEq)]
pub struct XdsOptions {
    /// Instances per service and version; outbound clusters send to their
    /// `inbound` addresses. A version absent here falls back to the IR's
    /// fixed `endpoints`, reached without a sidecar (plain HTTP).
    pub instances: BTreeMap<ServiceKey, BTreeMap<Version, Vec<Instance>>>,
    /// The ingress gateway's listener.
    pub ingress: SocketAddr,
    /// The login (ext_authz) service.
    pub login: Option<SocketAddr>,
    /// SDS name of the proxy's own certificate.
    pub sds_certificate: String,
    /// SDS name of the trust bundle (CA certificates).
    pub sds_trust_bundle: String,
    /// Trust domain of SPIFFE IDs.
    pub trust_domain: String,
}

impl Default for XdsOptions {
    fn default() -> Self {
        XdsOptions {
            instances: BTreeMap::new(),
            ingress: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            login: None,
            sds_certificate: "default".to_string(),
            sds_trust_bundle: "ROOTCA".to_string(),
            trust_domain: TRUST_DOMAIN.to_string(),
        }
    }
}

impl XdsOptions {
    /// Assigns loopback ports to every version of every workload from
    /// `base` upwards (three per instance: outbound, inbound, app), one
    /// instance per version; what a runtime or a test does.
    pub fn with_local_instances(mut self, mesh: &Mesh, base: u16) -> Self {
        let mut port = base;
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for svc in mesh.services.values() {
            let Some(w) = &svc.workload else { continue };
            for v in w.versions.keys() {
                let mut next = || {
                    port = port.wrapping_add(1);
                    SocketAddr::new(lo, port)
                };
                let inst = Instance {
                    outbound: next(),
                    inbound: next(),
                    app: next(),
                };
                self.instances
                    .entry(svc.key.clone())
                    .or_default()
                    .insert(v.clone(), vec![inst]);
            }
        }
        self
    }

    /// The instances of one version.
    pub fn instances_of(&self, svc: &ServiceKey, v: &Version) -> &[Instance] {
        self.instances
            .get(svc)
            .and_then(|m| m.get(v))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}
