//! # packlight-standalone — the engine that runs the mesh on one machine
//!
//! The runtime room of the standalone engine: it owns every piece of I/O
//! that `packlight up` needs and builds no Envoy object by hand.
//!
//! * [`up`]: `packlight up` — starts everything in order, stops on a signal.
//! * [`engine`]: the one writer: validates changes against the whole
//!   store, stores them, converges processes, pushes xDS, writes status.
//! * [`store`]: the embedded durable store (one JSON file per resource).
//! * [`ca`]: the built-in certificate authority (SPIFFE identities for
//!   sidecars, served over SDS, rotated at half their lifetime).
//! * [`proxies`]: instances, their ports, sidecar Envoys and apps.
//! * [`supervise`]: process supervision (restart with backoff, stop the
//!   process group).
//! * [`api`]: the REST API (`docs/api.md`).
//! * [`traffic`]: per-version rates and latency from the Envoys' stats.
//!
//! Flow: resources (files, API) -> store -> `packlight-model` (validated
//! IR) -> `packlight-xds` (per-proxy config) -> the ADS server -> Envoy.
#![forbid(unsafe_code)]

pub mod api;
pub mod ca;
pub mod engine;
pub mod proxies;
pub mod store;
pub mod supervise;
pub mod traffic;
pub mod up;
