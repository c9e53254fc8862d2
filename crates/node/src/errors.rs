//! Rust errors as JS errors with a stable `code` (the core's `ERR_*`), and
//! the panic guards of the napi boundary.

use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use arraypool_core::error::panic_text;
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
    // In range first, so that the cast is exact for integers; the round trip
    // then finds fractions (and NaN, which fails the range test) without
    // `fract()`, a libm call on every argument of every call.
    if (0.0..=MAX_SAFE).contains(&value) && (value as u64) as f64 == value {
        Ok(value as u64)
    } else {
        Err(coded(
            code,
            format!("{what} must be a non-negative safe integer, got {value}"),
        ))
    }
}

/// A pool id from JS: an integer from 0 to `u32::MAX`. Exports take it as
/// a double and check it here: napi-rs's `u32` converts as JS's `ToUint32`
/// does, so NaN, a fraction or -1 would name another pool (NaN pool 0).
pub fn pool_id_arg(value: f64) -> std::result::Result<u32, JsError> {
    to_u64(value, "poolId", "ERR_INVALID_ARG")
        .ok()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| {
            coded(
                "ERR_INVALID_ARG",
                format!(
                    "poolId must be an integer from 0 to {}, got {value}",
                    u32::MAX
                ),
            )
        })
}

/// The body of every export. A panic must never unwind into Node-API: it
/// cannot cross the `extern "C"` frame napi-rs generates, so the process
/// would abort. Here it becomes an `ERR_INTERNAL` error carrying the panic's
/// text instead, and the JS caller can carry on. The pool stays consistent:
/// unwinding runs the core's lock guard, which rolls back a half-done
/// journaled update and releases the lock, and the registry's mutex is
/// recovered from poisoning (`registry()`).
pub fn guard<T>(body: impl FnOnce() -> Result<T, Code>) -> Result<T, Code> {
    // AssertUnwindSafe: what a panic could leave half-updated is the
    // registry (recovered, see above) or the shared segment (journaled).
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(coded(
            "ERR_INTERNAL",
            format!(
                "arraypool internal error (a Rust panic, caught at the napi boundary): {}",
                panic_text(payload)
            ),
        )),
    }
}

/// Panics swallowed by `guard_callback` in this process.
static SWALLOWED_PANICS: AtomicU64 = AtomicU64::new(0);

/// The body of a callback that no JS caller awaits (a view's finalizer,
/// the `atexit` hook): there is nobody to throw to, and unwinding out of it
/// would abort the process, so a panic is swallowed. The default panic hook
/// has already printed it with its location; the first one also gets a
/// line saying what it means (`what` names the callback and what is left
/// behind).
pub fn guard_callback(what: &str, body: impl FnOnce()) {
    // AssertUnwindSafe: as in `guard`.
    if let Err(payload) = catch_unwind(AssertUnwindSafe(body)) {
        let text = panic_text(payload);
        if SWALLOWED_PANICS.fetch_add(1, Ordering::Relaxed) == 0 {
            // Never `eprintln!`: it panics when stderr is gone.
            let _ = writeln!(
                std::io::stderr(),
                "arraypool: internal error (a Rust panic) in {what}, swallowed so that the \
                 process can go on: {text}. Later ones are not reported here."
            );
        }
    }
}

/// How many panics `guard_callback` swallowed in this process.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub fn swallowed_panics() -> u64 {
    SWALLOWED_PANICS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_a_panic_into_err_internal_with_its_text() {
        let e = guard::<u32>(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(e.status.0, "ERR_INTERNAL");
        assert!(e.reason.ends_with(": boom 42"), "{}", e.reason);
        let e = guard::<u32>(|| panic!("static text")).unwrap_err();
        assert!(e.reason.ends_with(": static text"), "{}", e.reason);
        let e = guard::<u32>(|| std::panic::panic_any(7_u8)).unwrap_err();
        assert!(e.reason.ends_with("a panic with a non-string payload"));
    }

    #[test]
    fn guard_passes_results_through() {
        assert_eq!(guard(|| Ok(5)).ok(), Some(5));
        let e = guard::<()>(|| Err(coded("ERR_POOL_FULL", "full"))).unwrap_err();
        assert_eq!((e.status.0, e.reason.as_str()), ("ERR_POOL_FULL", "full"));
    }

    #[test]
    fn guard_callback_swallows_a_panic_and_counts_it() {
        let before = swallowed_panics();
        guard_callback("a test callback", || panic!("swallowed"));
        let mut ran = false;
        guard_callback("a test callback", || ran = true);
        assert!(ran);
        assert_eq!(swallowed_panics(), before + 1);
    }
}
