//! Helpers shared by the integration tests.
#![allow(dead_code)]

use arraypool_core::{Backing, BlockRef, Handle, Pool, PoolOptions};

/// A pool of `capacity` bytes with a fresh random name; its creator unlinks
/// it when dropped.
pub fn new_pool(capacity: u64) -> Pool {
    Pool::create(PoolOptions {
        capacity: Some(capacity),
        ..Default::default()
    })
    .expect("create pool")
}

/// A named /dev/shm pool of `capacity` bytes with a fresh random name.
pub fn new_shm_pool(capacity: u64) -> Pool {
    Pool::create(PoolOptions {
        capacity: Some(capacity),
        backing: Backing::Shm,
        ..Default::default()
    })
    .expect("create shm pool")
}

pub fn open(pool: &Pool) -> Pool {
    Pool::open(pool.name(), PoolOptions::default()).expect("open pool")
}

pub fn handle(pool: &Pool, block: &BlockRef) -> Handle {
    Handle {
        segment: pool.name().to_string(),
        offset: block.offset,
        generation: block.generation,
        byte_offset: 0,
        byte_length: block.data_len,
    }
}

pub fn assert_consistent(pool: &Pool) {
    let report = pool.check().expect("check runs");
    assert_eq!(report.violation, None, "heap invariant broken");
}

pub fn fill(pool: &Pool, block: &BlockRef, byte: u8) {
    // SAFETY: the caller holds `block`; its data is `data_len` bytes.
    unsafe { std::ptr::write_bytes(pool.data_ptr(block), byte, block.data_len as usize) };
}

pub fn data(pool: &Pool, block: &BlockRef) -> Vec<u8> {
    // SAFETY: the caller holds `block`; its data is `data_len` bytes.
    unsafe { std::slice::from_raw_parts(pool.data_ptr(block), block.data_len as usize).to_vec() }
}

pub fn segment_exists(name: &str) -> bool {
    std::path::Path::new(&format!("/dev/shm/{name}")).exists()
}

/// Bytes of shmem the pool's file holds now (through /dev/shm for a named
/// pool, through this process's fd for an anonymous one).
pub fn resident_bytes(pool: &Pool) -> u64 {
    let path = match pool.backing() {
        Backing::Shm => format!("/dev/shm/{}", pool.name()),
        Backing::Memfd => {
            let locator = pool.locator(None);
            let fd = locator.rsplit(':').next().unwrap_or_default().to_string();
            format!("/proc/self/fd/{fd}")
        }
    };
    let meta = std::fs::metadata(path).expect("stat the pool file");
    std::os::unix::fs::MetadataExt::blocks(&meta) * 512
}
