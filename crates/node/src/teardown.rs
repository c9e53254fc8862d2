//! A worker thread leaves the pools it opened when its environment is torn
//! down (the thread ends or is terminated). Each JS environment that opens
//! a pool counts as one opener of the process's attachment
//! (`OpenPool::opens`); the main thread leaves through its exit hooks and
//! `shutdown`, but a worker thread has none, so without this its count
//! stayed: the main thread's `close()` then never left the pool, and a
//! creator never unlinked the name before the process exited.
//!
//! JS asks for this (`closeAtTeardown`) on every pool a worker thread
//! opens; `closePool` takes it back, so that a pool closed by hand is not
//! closed again at teardown.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{LazyLock, Mutex, MutexGuard};

use napi::bindgen_prelude::*;
use napi::sys;
use napi_derive::napi;

use crate::errors::{coded, guard, guard_callback, pool_id_arg, Code, JsError};

/// A hook's argument: the environment and the pool id, boxed; freed by the
/// hook when it runs, or by `forget` when it removes the hook.
struct Teardown {
    env: usize,
    pool_id: u32,
}

/// The registered hooks by (environment, pool id), with their argument's
/// address: Node aborts on a hook registered twice with one argument, and
/// finds a hook to remove by its function and argument.
static HOOKS: LazyLock<Mutex<HashMap<(usize, u32), usize>>> = LazyLock::new(Default::default);

fn hooks() -> MutexGuard<'static, HashMap<(usize, u32), usize>> {
    HOOKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

unsafe extern "C" fn close_at_env_teardown(arg: *mut c_void) {
    // SAFETY: `arg` is the `Box<Teardown>` leaked by `close_at_teardown`;
    // Node runs a hook once, and a removed hook never runs, so it is
    // taken back exactly once.
    let teardown = unsafe { Box::from_raw(arg.cast::<Teardown>()) };
    guard_callback("closing a worker thread's pool at its teardown", || {
        hooks().remove(&(teardown.env, teardown.pool_id));
        let _ = crate::close_pool_inner(teardown.pool_id);
    });
}

/// `closeAtTeardown(poolId)`: closes this environment's open of the pool
/// when the environment is torn down, unless `closePool` came first.
#[napi(catch_unwind)]
pub fn close_at_teardown(env: &Env, pool_id: f64) -> Result<(), Code> {
    guard(|| {
        let pool_id = pool_id_arg(pool_id)?;
        let raw = env.raw();
        let key = (raw as usize, pool_id);
        let mut hooks = hooks();
        if hooks.contains_key(&key) {
            return Ok(());
        }
        let arg = Box::into_raw(Box::new(Teardown {
            env: key.0,
            pool_id,
        }));
        // SAFETY: `raw` is the current call's env; the hook takes `arg`
        // back (see `close_at_env_teardown`).
        let status =
            unsafe { sys::napi_add_env_cleanup_hook(raw, Some(close_at_env_teardown), arg.cast()) };
        if status != sys::Status::napi_ok {
            // SAFETY: not registered: nobody else has `arg`.
            drop(unsafe { Box::from_raw(arg) });
            return Err(coded("ERR_NAPI", "napi_add_env_cleanup_hook failed"));
        }
        hooks.insert(key, arg as usize);
        Ok(())
    })
}

/// Takes back `close_at_teardown` for this environment's open of the pool,
/// if it was asked for (a closed pool is not closed again at teardown).
pub(crate) fn forget(env: sys::napi_env, pool_id: u32) -> std::result::Result<(), JsError> {
    let key = (env as usize, pool_id);
    let Some(arg) = hooks().remove(&key) else {
        return Ok(());
    };
    // SAFETY: the hook registered with this function and argument in this
    // environment has not run (it would have removed its entry first).
    let status = unsafe {
        sys::napi_remove_env_cleanup_hook(env, Some(close_at_env_teardown), arg as *mut c_void)
    };
    if status != sys::Status::napi_ok {
        // Still registered: keep its entry (the hook removes it), and do
        // not close now, or teardown would count this open off twice.
        hooks().insert(key, arg);
        return Err(coded("ERR_NAPI", "napi_remove_env_cleanup_hook failed"));
    }
    // SAFETY: removed: the hook will never run, so nothing else frees it.
    drop(unsafe { Box::from_raw(arg as *mut Teardown) });
    Ok(())
}
