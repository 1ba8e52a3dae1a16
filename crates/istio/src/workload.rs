//! Microservice -> Deployment per version (`NAME-v1-0`), Service `NAME`
//! with a protocol-named port, ServiceAccount `NAME` (the workload's
//! identity, `cluster.local/ns/NS/sa/NAME`).
//!
//! A version without an `image` (a standalone-only version: command or
//! fixed endpoints) gets no Deployment; its DestinationRule subset then
//! has no endpoints until an image is given.

use std::borrow::Cow;

use packlight_model::ir::{Protocol, Service, Workload};

use crate::Scope;
use crate::meta::Labels;
use crate::object::{
    Container, ContainerPort, DeploymentSpec, Kind, MatchLabels, Object, Pairs, PodMetadata,
    PodSpec, PodTemplate, ServicePort, ServiceSpec, Spec,
};

/// The workload objects of `kind` (Deployment, Service, ServiceAccount)
/// in one namespace.
pub(crate) fn emit<'a>(
    scope: &Scope<'_, 'a>,
    kind: Kind,
    skip: &dyn Fn(&Service) -> bool,
    out: &mut Vec<Object<'a>>,
) {
    if !matches!(
        kind,
        Kind::Deployment | Kind::Service | Kind::ServiceAccount
    ) {
        return;
    }
    for &svc in scope.services {
        if let Some(w) = &svc.workload
            && !skip(svc)
        {
            workload(svc, w, kind, out);
        }
    }
}

/// The port name Istio reads the protocol from: `http-8000`.
pub fn port_name(protocol: Protocol, port: u16) -> String {
    format!("{}-{port}", protocol.as_str())
}

fn workload<'a>(svc: &'a Service, w: &'a Workload, kind: Kind, out: &mut Vec<Object<'a>>) {
    let (ns, name) = (svc.key.namespace.as_str(), svc.key.name.as_str());
    let labels = Labels::managed().service(name).source(&w.source);
    match kind {
        Kind::Service => out.push(Object::typed(
            Kind::Service,
            ns,
            name,
            labels.with("app", name),
            Spec::Service(ServiceSpec {
                ports: [ServicePort {
                    app_protocol: w.protocol.as_str(),
                    name: port_name(w.protocol, w.port),
                    port: w.port,
                    protocol: "TCP",
                    target_port: w.port,
                }],
                selector: Pairs([("app", Cow::Borrowed(name))]),
            }),
        )),
        Kind::ServiceAccount => {
            out.push(Object::typed(
                Kind::ServiceAccount,
                ns,
                name,
                labels,
                Spec::None,
            ));
        }
        Kind::Deployment => {
            for (version, dep) in &w.versions {
                let Some(image) = &dep.image else { continue };
                let v = version.to_string();
                out.push(Object::typed(
                    Kind::Deployment,
                    ns,
                    format!("{name}-{}", version.subset()),
                    labels.clone().with("app", name).with("version", v.clone()),
                    Spec::Deployment(DeploymentSpec {
                        replicas: dep.replicas,
                        selector: MatchLabels {
                            match_labels: Pairs([
                                ("app", Cow::Borrowed(name)),
                                ("version", Cow::Owned(v.clone())),
                            ]),
                        },
                        template: PodTemplate {
                            metadata: PodMetadata {
                                labels: Pairs([
                                    ("app", Cow::Borrowed(name)),
                                    ("sidecar.istio.io/inject", Cow::Borrowed("true")),
                                    ("version", Cow::Owned(v)),
                                ]),
                            },
                            spec: PodSpec {
                                containers: [Container {
                                    env: [Pairs([
                                        ("name", Cow::Borrowed("PORT")),
                                        ("value", Cow::Owned(w.port.to_string())),
                                    ])],
                                    image,
                                    name,
                                    ports: [ContainerPort {
                                        container_port: w.port,
                                        name: port_name(w.protocol, w.port),
                                        protocol: "TCP",
                                    }],
                                }],
                                service_account_name: name,
                            },
                        },
                    }),
                ));
            }
        }
        _ => {}
    }
}
