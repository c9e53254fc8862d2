//! A tight allocate+release loop for profiling (`perf record`).
use arraypool_core::{Pool, PoolOptions};

fn main() {
    let pool = Pool::create(PoolOptions {
        capacity: Some(64 << 20),
        ..Default::default()
    })
    .expect("pool");
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let t = std::time::Instant::now();
    for _ in 0..n {
        let b = pool.allocate(1024, false).expect("allocate");
        pool.release(b.offset, b.generation).expect("release");
    }
    println!(
        "{:.1} ns per allocate+release",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
