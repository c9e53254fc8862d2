//! Process-wide tables: the pools this process opened (by small integer id,
//! shared by every JS environment — main thread and worker threads) and the
//! live views (by id), each owning one core reference.
//!
//! A pool stays mapped while any view of it lives, even past `close()`: a
//! JS view may outlive `close()`, and unmapping would pull memory from
//! under it. Once the process has left a closed pool and its last view is
//! gone, the registry drops its attachment (`close_if_unused`), and the
//! segment is unmapped and its fd closed once the last ArrayBuffer over it
//! was freed (`Registry::buffers`), so that the pool's memory goes back to
//! the system when no process maps it any more. Without this, a process
//! that opens and closes pools keeps every one's pages until it exits.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use arraypool_core::Pool;

pub struct View {
    pub pool: Arc<Pool>,
    pub pool_id: u32,
    pub offset: u64,
    pub generation: u64,
    /// Where the view's ArrayBuffer starts (key of `by_address`).
    pub address: usize,
    /// Its length in bytes.
    pub len: usize,
    /// Whether its ArrayBuffer was made (a reference taken for a lazy view
    /// has none until JS asks for its array).
    pub wrapped: bool,
}

/// What a view's address says about it: the block and where in its data
/// the view starts. Shared by all views starting at that address.
pub struct Located {
    pub pool_id: u32,
    pub offset: u64,
    pub generation: u64,
    pub byte_offset: u64,
    /// Live views at this address.
    views: u32,
}

pub struct OpenPool {
    /// The attachment; None once dropped (see the module doc).
    pub pool: Option<Arc<Pool>>,
    /// The pool's name, kept for messages once the attachment is dropped.
    pub name: String,
    /// JS environments (main thread, worker threads) that opened it and have
    /// not closed it.
    pub opens: u32,
    /// `close()` was called; the process leaves once no view remains.
    pub closing: bool,
}

/// Hashes a view id or an address with one widening multiply, folded: both
/// maps sit on every view's make and release, where SipHash is a
/// measurable part of the call. Keys come from this process (ids it counts,
/// addresses of its own mappings), never from another process, so there is
/// nobody to collide them on purpose.
#[derive(Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0 ^ b as u64);
        }
    }
    fn write_u64(&mut self, key: u64) {
        let product = (key as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
    fn write_usize(&mut self, key: usize) {
        self.write_u64(key as u64);
    }
}

pub type KeyMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
pub struct Registry {
    pub pools: Vec<OpenPool>,
    pub views: KeyMap<u64, View>,
    /// Live views by the address of their ArrayBuffer's data: lets a plain
    /// typed array over pool memory be traced back to its block.
    pub by_address: KeyMap<usize, Located>,
    pub next_view_id: u64,
    /// The pool of every view's ArrayBuffer until its finalizer runs, by
    /// view id: what keeps a pool mapped while V8 may still read the
    /// memory. Not the view's reference, which `release()` drops at once:
    /// the backing store can outlive it in another ArrayBuffer
    /// (`ArrayBuffer.prototype.transfer()` moves it, detaching the one
    /// `release()` detaches).
    pub buffers: KeyMap<u64, Arc<Pool>>,
}

impl Registry {
    pub fn add_view(&mut self, view: View, byte_offset: u64) -> u64 {
        self.next_view_id += 1;
        let id = self.next_view_id;
        self.by_address
            .entry(view.address)
            .or_insert(Located {
                pool_id: view.pool_id,
                offset: view.offset,
                generation: view.generation,
                byte_offset,
                views: 0,
            })
            .views += 1;
        self.views.insert(id, view);
        id
    }

    /// The id of the pool open in this process (neither closing nor
    /// closed) whose name is `name`: the attachment every JS environment
    /// that opens the pool shares, and what a compact handle names.
    pub fn open_pool_named(&self, name: &[u8]) -> Option<usize> {
        self.pools.iter().position(|p| {
            !p.closing
                && p.pool
                    .as_ref()
                    .is_some_and(|pool| !pool.is_closed() && pool.name().as_bytes() == name)
        })
    }

    pub fn remove_view(&mut self, id: u64) -> Option<View> {
        let view = self.views.remove(&id)?;
        if let Some(located) = self.by_address.get_mut(&view.address) {
            located.views -= 1;
            if located.views == 0 {
                self.by_address.remove(&view.address);
            }
        }
        Some(view)
    }
}

pub(crate) static REGISTRY: LazyLock<Mutex<Registry>> =
    LazyLock::new(|| Mutex::new(Registry::default()));

/// The registry. A poisoned lock (a panic elsewhere) is recovered: every
/// update made under it is a single insert or remove.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}
