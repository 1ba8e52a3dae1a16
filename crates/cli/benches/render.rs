//! Render benchmark (issue: core). A mesh of N services, each with a
//! Microservice, a Route of 3 versions and a match rule, an AccessPolicy
//! and an EgressPolicy, spread over 10 namespaces under deny-all
//! MeshPolicies (so every workload gets its merged Sidecar). Measures the
//! whole `packlight render` path from YAML text: parse, validate, build the
//! IR, translate to Istio objects, and write them as `render -o yaml`
//! does (streamed through the YAML writer, into a sink). Uses the binary's
//! allocator (mimalloc).
//!
//! Run: `cargo bench -p packlight --bench render`. Peak memory is measured
//! separately on the binary (`/usr/bin/time -v packlight render ...`, see
//! docs/benchmarks.md); the 10k/1k ratio, with the sizes alternated, by
//! `render_ratio.rs`; the mesh spread over many namespaces by
//! `render_namespaces.rs`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod mesh;
use mesh::{mesh_yaml, render};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let text = mesh_yaml(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, t| {
            b.iter(|| render(t))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
