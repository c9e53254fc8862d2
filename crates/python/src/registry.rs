//! The pools this process opened (by small integer id) and the fork epoch.
//!
//! Pools are never dropped once opened: a numpy array may outlive
//! `close()`, and dropping would unmap memory under it.
//!
//! A process forked (without exec) after it opened a pool inherits the
//! parent's `Pool`s, whose slot, references and liveness locks are the
//! parent's, not its own. `after_fork_in_child` forgets them (never closing
//! or releasing anything: that would drop the parent's references), closes
//! the child's copies of the segment fds (so the parent's liveness locks go
//! with the parent), and bumps the epoch: blocks made before the fork then
//! release nothing when the child drops them. The child joins the pool anew
//! through `start_pool()`, as a process of its own.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use arraypool_core::Pool;

#[derive(Default)]
pub struct Registry {
    pub pools: Vec<Arc<Pool>>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// Bumped in every forked child: a block remembers the epoch it was made in.
static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// The registry. A poisoned lock (a panic elsewhere) is recovered: every
/// update made under it is a single push or take.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn epoch() -> u64 {
    FORK_EPOCH.load(Relaxed)
}

/// Adds a pool; returns its id.
pub fn add_pool(pool: Pool) -> u32 {
    let mut r = registry();
    r.pools.push(Arc::new(pool));
    (r.pools.len() - 1) as u32
}

/// Called (through `os.register_at_fork`) in the child right after a fork.
pub fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Relaxed);
    let inherited = std::mem::take(&mut registry().pools);
    let names: Vec<String> = inherited.iter().map(|p| p.name().to_string()).collect();
    for pool in inherited {
        // Never dropped: dropping closes, which would release the parent's
        // references; the mapping stays for arrays inherited from the parent.
        std::mem::forget(pool);
    }
    close_segment_fds(&names);
}

/// Closes this process's fds of the named segments (`/memfd:<name>` or
/// `/dev/shm/<name>`), found through /proc/self/fd.
fn close_segment_fds(names: &[String]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let target = target.to_str()?;
            let segment = target
                .strip_prefix("/memfd:")
                .map(|t| t.strip_suffix(" (deleted)").unwrap_or(t))
                .or_else(|| target.strip_prefix("/dev/shm/"))?;
            names.iter().any(|n| n == segment).then_some(fd)
        })
        .collect();
    for fd in fds {
        // SAFETY: the fd belongs to a forgotten `Pool` (its `OwnedFd` is never
        // dropped, so it is never closed twice); the mapping does not need it.
        unsafe { libc::close(fd) };
    }
}
