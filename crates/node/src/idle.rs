//! `idleAndAlone(poolId)`: whether this process can close a pool it opened
//! only to revive handles (core `Pool::idle_and_alone`); src/pool.ts asks
//! it for such pools on its flush timer and closes them.

use napi::bindgen_prelude::*;
use napi_derive::napi;

use crate::errors::{from_pool, guard, pool_id_arg, Code};

#[napi(catch_unwind)]
pub fn idle_and_alone(pool_id: f64) -> Result<bool, Code> {
    guard(|| {
        crate::pool(pool_id_arg(pool_id)?)?
            .idle_and_alone()
            .map_err(from_pool)
    })
}
