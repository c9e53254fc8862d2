//! The pools this process opened (by small integer id) and the fork epoch.
//!
//! A pool stays mapped while a numpy array may view it: every `Block`
//! holds the pool, and a numpy array over a block holds the `Block` (the
//! buffer's exporter). Once the process has left a closed pool, the
//! registry drops its own hold (`take_if_unused`), so that the mapping and
//! its fd go with the last `Block`, and the pool's memory goes back to the
//! system once no process maps it. Without this, a process that opens and
//! closes pools keeps every one's pages until it exits.
//!
//! `close()` cannot detach numpy arrays (as Node detaches ArrayBuffers), so
//! it only marks the pool `closing` (no new blocks in it; `open_pool` makes
//! a new attachment): the process leaves the pool (the core's `close()`,
//! which drops every reference) once the last live `Block` of it is gone,
//! or at exit. Until then those blocks stay held and are never reused under
//! the arrays that view them. Each entry counts its live `Block`s.
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

pub struct PoolEntry {
    /// None once left (see the module doc).
    pub pool: Option<Arc<Pool>>,
    /// The pool's name, kept once `pool` is dropped.
    pub name: String,
    /// `close()` was called: no new operations, the pool is left when
    /// `blocks` reaches 0.
    pub closing: bool,
    /// Somebody decided to call the core's `close()` (it drops every
    /// reference of this process): a `Block` must no longer be made over a
    /// reference of this pool.
    pub left: bool,
    /// Live `Block`s of this process over this pool (this fork epoch).
    pub blocks: u64,
}

#[derive(Default)]
pub struct Registry {
    pub pools: Vec<PoolEntry>,
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
    r.pools.push(PoolEntry {
        name: pool.name().to_string(),
        pool: Some(Arc::new(pool)),
        closing: false,
        left: false,
        blocks: 0,
    });
    (r.pools.len() - 1) as u32
}

/// Marks the pool closing (see the module doc). Returns the pool if it is
/// to be left now (no live `Block`): the caller then calls its `close()`,
/// outside the registry's lock. None also for an unknown id.
pub fn start_closing(pool_id: u32) -> Option<Arc<Pool>> {
    let mut r = registry();
    let entry = r.pools.get_mut(pool_id as usize)?;
    entry.closing = true;
    take_if_unused(entry)
}

/// Counts a new `Block` over a reference this process took in the pool.
/// False if the pool is being left: the core's `close()` drops (or has
/// dropped) that reference, which must then not be viewed.
pub fn add_block(pool_id: u32) -> bool {
    let mut r = registry();
    match r.pools.get_mut(pool_id as usize) {
        Some(entry) if !entry.left => {
            entry.blocks += 1;
            true
        }
        _ => false,
    }
}

/// Uncounts a dropped `Block` (of this fork epoch). Returns the pool if it
/// is closing and this was its last `Block`: the caller leaves it.
pub fn remove_block(pool_id: u32) -> Option<Arc<Pool>> {
    let mut r = registry();
    let entry = r.pools.get_mut(pool_id as usize)?;
    entry.blocks = entry.blocks.saturating_sub(1);
    take_if_unused(entry)
}

fn take_if_unused(entry: &mut PoolEntry) -> Option<Arc<Pool>> {
    if entry.closing && entry.blocks == 0 && !entry.left {
        entry.left = true;
        // The caller's `close()` and the last `Block` drop what is left.
        entry.pool.take()
    } else {
        None
    }
}

/// Called (through `os.register_at_fork`) in the child right after a fork.
pub fn after_fork_in_child() {
    FORK_EPOCH.fetch_add(1, Relaxed);
    let inherited = std::mem::take(&mut registry().pools);
    let names: Vec<String> = inherited.iter().map(|p| p.name.clone()).collect();
    for PoolEntry { pool, .. } in inherited {
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
