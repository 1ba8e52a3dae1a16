//! Microservice -> Deployment per version (`NAME-v1-0`), Service `NAME`
//! with a protocol-named port, ServiceAccount `NAME` (the workload's
//! identity, `cluster.local/ns/NS/sa/NAME`).
//!
//! A version without an `image` (a standalone-only version: command or
//! fixed endpoints) gets no Deployment; its DestinationRule subset then
//! has no endpoints until an image is given.

use packlight_model::ir::{Mesh, Protocol, Service, Workload};
use serde_json::{Value, json};

use crate::meta::{Labels, object};

/// Every workload's objects.
pub fn render(mesh: &Mesh) -> Vec<Value> {
    mesh.services
        .values()
        .filter_map(|svc| svc.workload.as_ref().map(|w| (svc, w)))
        .flat_map(|(svc, w)| workload(svc, w))
        .collect()
}

/// The port name Istio reads the protocol from: `http-8000`.
pub fn port_name(protocol: Protocol, port: u16) -> String {
    format!("{}-{port}", protocol.as_str())
}

fn workload(svc: &Service, w: &Workload) -> Vec<Value> {
    let (ns, name) = (svc.key.namespace.as_str(), svc.key.name.as_str());
    let labels = Labels::managed().service(name).source(&w.source);
    let mut out = vec![
        object(
            "v1",
            "Service",
            ns,
            name,
            &labels.clone().with("app", name),
            json!({
                "selector": {"app": name},
                "ports": [{
                    "name": port_name(w.protocol, w.port),
                    "port": w.port,
                    "targetPort": w.port,
                    "protocol": "TCP",
                    "appProtocol": w.protocol.as_str(),
                }],
            }),
        ),
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": name, "namespace": ns, "labels": labels.value()},
        }),
    ];
    for (version, dep) in &w.versions {
        let Some(image) = &dep.image else { continue };
        let v = version.to_string();
        let pod_labels = json!({"app": name, "version": v, "sidecar.istio.io/inject": "true"});
        out.push(object(
            "apps/v1",
            "Deployment",
            ns,
            &format!("{name}-{}", version.subset()),
            &labels.clone().with("app", name).with("version", &v),
            json!({
                "replicas": dep.replicas,
                "selector": {"matchLabels": {"app": name, "version": v}},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "serviceAccountName": name,
                        "containers": [{
                            "name": name,
                            "image": image,
                            "ports": [{"name": port_name(w.protocol, w.port), "containerPort": w.port, "protocol": "TCP"}],
                            "env": [{"name": "PORT", "value": w.port.to_string()}],
                        }],
                    },
                },
            }),
        ));
    }
    out
}
