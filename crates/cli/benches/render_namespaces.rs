//! The render path over many namespaces (issue: core): 10,000 services of
//! the render benchmark's mesh spread over 10, 100, 1,000 and 10,000
//! namespaces, each under deny-all. Every service has an AccessPolicy, so
//! every workload may reach every namespace, and its Sidecar names each
//! of them: the output grows with services × namespaces. Reports, per
//! spread, the time of the whole `render -o yaml` path (into a counting
//! sink), the objects and bytes written, and the process's peak resident
//! memory during the render (its high-water mark reset before each,
//! through `/proc/self/clear_refs`; it includes the input text).
//!
//! Run: `cargo bench -p packlight --bench render_namespaces [-- --bench
//! --services 10000]`. Bounded: one render per spread.

use std::io::Write;
use std::time::Instant;

mod mesh;
use mesh::{mesh_in, render_to};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Counts what is written into it.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The process's peak resident memory in MB, if the kernel says.
fn peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench targets without `--bench`: a small
    // mesh then proves the bench runs.
    let quick = !args.iter().any(|a| a == "--bench");
    let services: usize = args
        .iter()
        .position(|a| a == "--services")
        .and_then(|at| args.get(at + 1)?.parse().ok())
        .unwrap_or(if quick { 1_000 } else { 10_000 })
        .clamp(10, 20_000);
    let spreads: &[usize] = if quick {
        &[10, 100]
    } else {
        &[10, 100, 1_000, 10_000]
    };
    for &namespaces in spreads.iter().filter(|n| **n <= services) {
        let files = mesh_in(services, namespaces);
        // Resets the high-water mark to the current resident size.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let t = Instant::now();
        let mut out = std::io::BufWriter::with_capacity(1 << 16, Counter(0));
        let objects = render_to(&files, &mut out);
        let bytes = out.into_inner().map(|c| c.0).unwrap_or_default();
        let elapsed = t.elapsed();
        let peak = match (reset, peak_mb()) {
            (true, Some(mb)) => format!("{mb:.0} MB"),
            _ => "n/a".to_string(),
        };
        println!(
            "render_namespaces: {services} services in {namespaces:>5} namespaces: {:8.1} ms, {objects} objects, {:.1} MB of YAML, peak resident {peak}",
            elapsed.as_secs_f64() * 1e3,
            bytes as f64 / 1e6,
        );
    }
}
