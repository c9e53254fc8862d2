//! `cargo bench -p arraypool-core`: allocation (shared and local), lock, attach, and two
//! processes allocating at once. Figures go in the closing note / README.

use std::process::Command;
use std::time::{Duration, Instant};

use arraypool_core::{BlockRef, Handle, Pool, PoolOptions};
use criterion::{criterion_group, BenchmarkId, Criterion};

const CHILD_ENV: &str = "ARRAYPOOL_BENCH_CHILD";

fn pool(capacity: u64) -> Pool {
    Pool::create(PoolOptions {
        capacity: Some(capacity),
        ..Default::default()
    })
    .expect("create pool")
}

/// Allocate+release pairs of 64 B, 1 KiB and 1 MiB through `allocate`.
fn alloc_release_group(
    c: &mut Criterion,
    name: &str,
    allocate: impl Fn(&Pool, u64) -> arraypool_core::Result<BlockRef>,
) -> Pool {
    let p = pool(256 << 20);
    let mut group = c.benchmark_group(name);
    for (label, len) in [("64B", 64u64), ("1KiB", 1024), ("1MiB", 1 << 20)] {
        // Warm the region once so the loop measures the steady state.
        let warm = allocate(&p, len).unwrap();
        p.release(warm.offset, warm.generation).unwrap();
        group.bench_with_input(BenchmarkId::from_parameter(label), &len, |b, &len| {
            b.iter(|| {
                let r = allocate(&p, len).unwrap();
                p.release(r.offset, r.generation).unwrap();
            })
        });
    }
    group.finish();
    p
}

fn alloc_free(c: &mut Criterion) {
    alloc_release_group(c, "allocate+release", |p, len| p.allocate(len, false));
}

/// The path the bindings take for `makeTransferable` + `release` of an
/// array that never left the process: `allocate_local` (transfer required,
/// as JS's default is), released unsent.
fn alloc_local_free(c: &mut Criterion) {
    let p = alloc_release_group(
        c,
        "allocate_local+release (unsent, transferRequired)",
        |p, len| p.allocate_local(len, true),
    );
    // Nothing may stay in flight: the unsent release freed every block.
    assert_eq!(p.stats().map(|s| s.in_flight_blocks).unwrap_or(u64::MAX), 0);
}

fn lock(c: &mut Criterion) {
    let p = pool(16 << 20);
    c.bench_function("lock acquire+release (uncontended)", |b| {
        b.iter(|| p.empty_critical_section().unwrap())
    });
}

fn attach(c: &mut Criterion) {
    let owner = pool(16 << 20);
    let other = Pool::open(owner.name(), PoolOptions::default()).unwrap();
    let block = owner.allocate(1024, false).unwrap();
    let handle = Handle {
        segment: owner.name().into(),
        offset: block.offset,
        generation: block.generation,
        byte_offset: 0,
        byte_length: 1024,
    };
    c.bench_function("attach+release by handle (other process slot)", |b| {
        b.iter(|| {
            let r = other.attach(&handle).unwrap();
            other.release(r.offset, r.generation).unwrap();
        })
    });
}

fn churn(p: &Pool, n: u64) {
    for i in 0..n {
        let r = p.allocate(64 + (i % 16) * 64, false).unwrap();
        p.release(r.offset, r.generation).unwrap();
    }
}

/// Operations per second of `processes` processes each doing `n`
/// allocate+release pairs on one pool (the others are real child processes).
fn throughput(processes: usize, n: u64) -> f64 {
    let p = pool(64 << 20);
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let children: Vec<_> = (1..processes)
        .map(|_| {
            Command::new(&exe)
                .env(CHILD_ENV, format!("{}:{n}", p.name()))
                .spawn()
                .unwrap()
        })
        .collect();
    churn(&p, n);
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    (processes as u64 * n) as f64 / start.elapsed().as_secs_f64()
}

fn contention(c: &mut Criterion) {
    let n = 400_000;
    let one = throughput(1, n);
    let two = throughput(2, n);
    println!(
        "two processes allocating at once: {:.2} M ops/s together vs {:.2} M ops/s alone = {:.2}x",
        two / 1e6,
        one / 1e6,
        two / one
    );
    let _ = c;
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = alloc_free, alloc_local_free, lock, attach, contention
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (name, n) = spec.split_once(':').unwrap();
        let p = Pool::open(name, PoolOptions::default()).unwrap();
        churn(&p, n.parse().unwrap());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
