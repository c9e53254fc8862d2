//! Node-API binding for arraypool-core (napi-rs 3).
#![deny(clippy::all)]

use napi_derive::napi;

/// Shared-memory layout version compiled into this addon
/// (`arraypool_core::LAYOUT_VERSION`).
#[napi]
pub fn layout_version() -> u32 {
    arraypool_core::LAYOUT_VERSION
}
