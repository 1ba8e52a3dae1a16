//! The render benchmark's 10k/1k ratio, measured interleaved (issue: core;
//! goal: 10,000 services under 1 s and at most 11 times 1,000).
//!
//! Criterion times 1,000 services for some seconds and then 10,000 for
//! some more; on a machine whose speed drifts within minutes (a shared VM)
//! the ratio of the two then says as much about the drift as about the
//! code. This bench alternates the sizes instead: each round times `inner`
//! renders of 1,000 services and one of 10,000 (which goes first
//! alternates from round to round), so every ratio compares renders made
//! within about a second of each other. Same mesh, same path and same
//! allocator as `render.rs` (`mesh/mod.rs`).
//!
//! It also reports the page faults of each timed render (read outside
//! the timing): memory mimalloc handed back to the kernel (it purges
//! freed memory on a 1 s cycle) and the render took again. A 10,000-
//! service render lasts about half of that cycle and pays some thousands
//! of faults, a 1,000-service render tens to hundreds (docs/benchmarks.md,
//! Run 12).
//!
//! Run: `cargo bench -p packlight --bench render_ratio [-- --rounds 15
//! --inner 10]`. Bounded: at most 100 rounds of at most 50 inner
//! renders.

use std::time::{Duration, Instant};

mod mesh;
use mesh::{mesh_yaml, render};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The value after `flag` in the arguments, if given.
fn arg(args: &[String], flag: &str) -> Option<usize> {
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.parse().ok()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// A page-fault count, or `?` when none was read.
fn show_faults(f: Option<f64>) -> String {
    f.map_or("?".into(), |f| format!("{f:.0}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Minor page faults of this process so far (`/proc/self/stat`, field
/// 10), if the kernel says.
fn faults() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start with
    // field 3.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(7)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs bench targets with no `--bench`: one
    // short round then proves the bench runs.
    let quick = !args.iter().any(|a| a == "--bench");
    let rounds = arg(&args, "--rounds")
        .unwrap_or(if quick { 1 } else { 15 })
        .clamp(1, 100);
    let inner = arg(&args, "--inner")
        .unwrap_or(if quick { 1 } else { 10 })
        .clamp(1, 50);
    let small = mesh_yaml(1_000);
    let large = mesh_yaml(10_000);
    // Each size rendered once unmeasured (allocator and caches warm); its
    // object count is checked on every timed render.
    let objects = (render(&small), render(&large));
    // Each returns the time in ms and the page faults, per render.
    let time_small = || {
        let mut total = Duration::ZERO;
        let before = faults();
        for _ in 0..inner {
            let t = Instant::now();
            assert_eq!(render(&small), objects.0);
            total += t.elapsed();
        }
        let taken = faults().zip(before).map(|(a, b)| (a - b) as f64);
        (ms(total) / inner as f64, taken.map(|f| f / inner as f64))
    };
    let time_large = || {
        let before = faults();
        let t = Instant::now();
        assert_eq!(render(&large), objects.1);
        let elapsed = ms(t.elapsed());
        (elapsed, faults().zip(before).map(|(a, b)| (a - b) as f64))
    };
    let (mut s, mut l, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fs, mut fl) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let ((a, fa), (b, fb)) = if round % 2 == 0 {
            let a = time_small();
            (a, time_large())
        } else {
            let b = time_large();
            (time_small(), b)
        };
        println!(
            "round {:>3}: 1k {a:7.1} ms (mean of {inner}), 10k {b:7.1} ms, ratio {:5.2}; page faults per render 1k {}, 10k {}",
            round + 1,
            b / a,
            show_faults(fa),
            show_faults(fb),
        );
        s.push(a);
        l.push(b);
        ratios.push(b / a);
        fs.extend(fa);
        fl.extend(fb);
    }
    // The fastest round of each size: the least disturbed by the machine.
    let fastest = |xs: &[f64]| xs.iter().copied().fold(f64::MAX, f64::min);
    let (fast_s, fast_l) = (fastest(&s), fastest(&l));
    let met = ratios.iter().filter(|r| **r <= 11.0).count();
    let under = l.iter().filter(|t| **t < 1000.0).count();
    let worst = ratios.iter().copied().fold(f64::MIN, f64::max);
    let best = ratios.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "render_ratio: {rounds} rounds; 1k median {:.1} ms ({} objects); 10k median {:.1} ms ({} objects, {under}/{rounds} under 1 s); \
         ratio median {:.2} (best {best:.2}, worst {worst:.2}; {met}/{rounds} rounds at most 11); \
         fastest 1k {fast_s:.1} ms, fastest 10k {fast_l:.1} ms, their ratio {:.2}; \
         median page faults per render 1k {}, 10k {}",
        median(s.clone()),
        objects.0,
        median(l.clone()),
        objects.1,
        median(ratios),
        fast_l / fast_s,
        show_faults((!fs.is_empty()).then(|| median(fs))),
        show_faults((!fl.is_empty()).then(|| median(fl))),
    );
}
