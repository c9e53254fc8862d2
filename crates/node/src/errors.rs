//! Rust errors as JS errors with a stable `code` (the core's `ERR_*`).

use arraypool_core::PoolError;
use napi::bindgen_prelude::*;

/// The `code` of the JS error napi-rs creates from an `Error<Code>`.
#[derive(Debug, Clone, Copy)]
pub struct Code(pub &'static str);

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        self.0
    }
}

pub type JsError = Error<Code>;

pub fn from_pool(e: PoolError) -> JsError {
    Error::new(Code(e.code()), e.to_string())
}

pub fn from_napi(e: Error) -> JsError {
    Error::new(Code("ERR_NAPI"), format!("{}: {}", e.status, e.reason))
}

pub fn coded(code: &'static str, message: impl Into<String>) -> JsError {
    Error::new(Code(code), message.into())
}

/// A JS number that must be a non-negative safe integer.
pub fn to_u64(value: f64, what: &str, code: &'static str) -> std::result::Result<u64, JsError> {
    const MAX_SAFE: f64 = 9_007_199_254_740_991.0;
    if value.is_finite() && value >= 0.0 && value.fract() == 0.0 && value <= MAX_SAFE {
        Ok(value as u64)
    } else {
        Err(coded(
            code,
            format!("{what} must be a non-negative safe integer, got {value}"),
        ))
    }
}
