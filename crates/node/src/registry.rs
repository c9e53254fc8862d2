//! Process-wide tables: the pools this process opened (by small integer id,
//! shared by every JS environment — main thread and worker threads) and the
//! live views (by id), each owning one core reference.
//!
//! Pools are never dropped once opened: a JS view may outlive `close()`, and
//! dropping would unmap memory under it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use arraypool_core::Pool;

pub struct View {
    pub pool: Arc<Pool>,
    pub pool_id: u32,
    pub offset: u64,
    pub generation: u64,
    pub byte_length: u64,
}

pub struct OpenPool {
    pub pool: Arc<Pool>,
    /// `close()` was called; the process leaves once no view remains.
    pub closing: bool,
}

#[derive(Default)]
pub struct Registry {
    pub pools: Vec<OpenPool>,
    pub views: HashMap<u64, View>,
    pub next_view_id: u64,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// The registry. A poisoned lock (a panic elsewhere) is recovered: every
/// update made under it is a single insert or remove.
pub fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}
