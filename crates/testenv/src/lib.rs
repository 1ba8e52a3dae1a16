//! packlight-testenv — the Kubernetes test bench, as seen from a Rust test.
//!
//! This room starts (once per test binary) the real control plane built from
//! `testenv/` — embedded etcd, kube-apiserver with TLS, RBAC and the default
//! admission plugins, the garbage-collector and namespace controllers, and
//! the pinned Istio and Gateway API CRDs — and hands each test a
//! [`kube::Client`] and a fresh namespace of its own.
//!
//! In: the bench binary (built by `scripts/testenv build` when missing, so a
//! plain `cargo test` works wherever Go is installed), or an already running
//! bench named by `PACKLIGHT_TEST_KUBECONFIG`. Out: clients and namespaces.
//! [`start_extra`] starts a second, independent bench for tests that need
//! two clusters; [`install_crds`] installs a test's own CRDs (e.g.
//! packlight's) and waits until they are served; [`envoy`] finds (or
//! installs) the real Envoy binary the engine tests run; [`Operator`] runs
//! `packlight operator` as a child process. [`mesh`] adds the Istio
//! traffic bench: istiod and Envoy sidecars in network namespaces (root
//! only; `docs/testing.md`).
//!
//! It never mocks, never skips a test when the bench is missing (it fails
//! loudly), and is a dev-dependency only.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let ns = packlight_testenv::namespace("routes").await?;
//! let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = ns.api();
//! // ... exercise the API server ...
//! ns.delete().await?; // or let it drop
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod bench;
mod crds;
mod envoy;
mod extra;
pub mod mesh;
mod namespace;
mod operator;
mod port;

pub use bench::{KUBECONFIG_ENV, LOG_ENV, TestEnv, env};
pub use crds::install_crds;
pub use envoy::{envoy, log_tails};
pub use extra::{ExtraBench, start_extra};
pub use namespace::{TestNamespace, namespace};
pub use operator::{Operator, operator_kubeconfig};
pub use port::free_port;
