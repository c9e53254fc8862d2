//! The last resort at process exit: unlink the segments this process
//! created. The JS exit hooks do more (release references, then unlink),
//! but they live on the main thread and only when it used arraypool; a pool
//! created by a worker thread alone would otherwise stay in /dev/shm.
//! References need no release here: the kernel drops the process's liveness
//! locks when it dies, and the other processes reap it.

use std::sync::{Once, TryLockError};

use crate::errors::guard_callback;
use crate::registry::REGISTRY;

static REGISTERED: Once = Once::new();

extern "C" fn unlink_created_segments() {
    // A panic must not unwind out of an `extern "C"` function (abort, so the
    // exit status would be lost): swallowed.
    guard_callback("the exit hook that unlinks created segments", || {
        // Another thread may hold the registry at exit; never wait for it.
        // A poisoned lock is taken as it is: unlinking only reads it.
        let r = match REGISTRY.try_lock() {
            Ok(r) => r,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        // A dropped attachment's name went at its close.
        for pool in r.pools.iter().filter_map(|p| p.pool.as_ref()) {
            if pool.is_creator() {
                let _ = pool.unlink_name();
            }
        }
    });
}

pub fn unlink_created_segments_at_exit() {
    REGISTERED.call_once(|| {
        // SAFETY: registers a plain `extern "C" fn()` that touches only Rust
        // state guarded by a try-lock; atexit has no other requirement.
        unsafe { libc::atexit(unlink_created_segments) };
    });
}
