//! # packlight-api — the resource types
//!
//! The room where packlight's six resources are *declared*: `Microservice`,
//! `Route`, `EgressPolicy`, `AccessPolicy`, `MeshPolicy` and
//! `IngressPolicy` (group `packlight.dev`, version `v1alpha1`, namespaced).
//!
//! In: nothing. Out: serde/schemars types with kube's `CustomResource`
//! derive, and [`crds()`], the CustomResourceDefinitions with the CEL rules
//! that one object alone can be checked by on a bare API server.
//!
//! This crate holds no logic beyond (de)serialisation, defaults and the
//! schema. Validation and meaning live in `packlight-model`; it must never
//! import a crate to its right (model, istio, xds, runtimes).
#![forbid(unsafe_code)]

mod crd;
mod ingress;
mod microservice;
mod policy;
mod route;
mod status;

pub use crd::{GROUP, VERSION, crds};
pub use ingress::*;
pub use microservice::*;
pub use policy::*;
pub use route::*;
pub use status::*;

/// Every kind packlight defines, in the order they are documented.
pub const KINDS: [&str; 6] = [
    "Microservice",
    "Route",
    "EgressPolicy",
    "AccessPolicy",
    "MeshPolicy",
    "IngressPolicy",
];
