//! Plain Node-API callbacks for the exports on the JS hot paths: making
//! and releasing arrays and views (`allocate`, `allocateCopy`, `attach`,
//! `attachUnviewed`, `attachCompact`, `share`, `viewOf`, `release`), and what a send or a
//! `TransferableArray.from` asks per array (`markEscaped`, `locateView`).
//!
//! Why: napi-rs 3 wraps every generated callback that takes arguments in
//! its native-borrow machinery (an `Arc<Mutex<..>>` allocated per call, a
//! thread-local stack pushed and popped, a barrier that moves a `Vec`),
//! measured at a fifth of an `attachUnviewed` + `release` pair in a tight
//! loop and more right after the process wakes. These exports borrow
//! nothing from JS beyond the call (numbers, and typed arrays read in
//! place), so they need none of it.
//!
//! The `#[napi]` functions in lib.rs stay: they give `binding.d.ts` and
//! `binding.cjs` their entries, and module init (`install`) replaces
//! those exports with the callbacks here. Both run the same bodies, under
//! the same `guard`, and throw the same errors (napi-rs's `JsError`
//! conversion); an argument of the wrong type throws napi-rs's codes
//! (`NumberExpected`, `BooleanExpected`) as before, and a pool id that is a
//! number but not an integer from 0 to `u32::MAX` throws `ERR_INVALID_ARG`
//! (napi-rs's `u32` would convert it as `ToUint32` does: NaN as pool 0).

use std::ffi::CStr;
use std::ptr;

use napi::bindgen_prelude::*;
use napi::sys;

use crate::errors::{coded, guard, JsError};
use crate::TakeRange;

type Callback = unsafe extern "C" fn(sys::napi_env, sys::napi_callback_info) -> sys::napi_value;

/// Replaces the hot exports on `exports` with the plain callbacks.
pub fn install(env: sys::napi_env, exports: sys::napi_value) -> Result<()> {
    let exports_list: [(&CStr, Callback); 10] = [
        (c"allocate", allocate),
        (c"allocateCopy", allocate_copy),
        (c"attach", attach),
        (c"attachUnviewed", attach_unviewed),
        (c"attachCompact", attach_compact),
        (c"share", share),
        (c"viewOf", view_of),
        (c"release", release),
        (c"markEscaped", mark_escaped),
        (c"locateView", locate_view),
    ];
    for (name, callback) in exports_list {
        let mut function = ptr::null_mut();
        // SAFETY: `env` and `exports` are the module's, live during init;
        // `name` is NUL-terminated; the callback takes no data.
        check(unsafe {
            sys::napi_create_function(
                env,
                name.as_ptr(),
                name.count_bytes() as isize,
                Some(callback),
                ptr::null_mut(),
                &mut function,
            )
        })?;
        // SAFETY: as above; `function` was just created in this env.
        check(unsafe { sys::napi_set_named_property(env, exports, name.as_ptr(), function) })?;
    }
    Ok(())
}

fn check(status: sys::napi_status) -> Result<()> {
    if status == sys::Status::napi_ok {
        Ok(())
    } else {
        Err(Error::new(
            Status::from(status),
            "installing the plain exports",
        ))
    }
}

/// Runs `body` with the call's first `N` arguments (missing ones are
/// `undefined`) under `guard`; an error is thrown into JS, and the
/// callback returns null (`undefined`) then.
///
/// # Safety
/// `env` and `info` are the current callback's.
unsafe fn call<const N: usize>(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    body: impl FnOnce(&[sys::napi_value; N]) -> std::result::Result<sys::napi_value, JsError>,
) -> sys::napi_value {
    let mut argc = N;
    let mut argv = [ptr::null_mut(); N];
    // SAFETY: `argv` has room for `argc` values; napi fills the ones not
    // passed with `undefined`.
    let status = unsafe {
        sys::napi_get_cb_info(
            env,
            info,
            &mut argc,
            argv.as_mut_ptr(),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    let result = if status == sys::Status::napi_ok {
        guard(|| body(&argv))
    } else {
        Err(coded("ERR_NAPI", "napi_get_cb_info failed"))
    };
    match result {
        Ok(value) => value,
        Err(error) => {
            // SAFETY: `env` is the current callback's.
            unsafe { napi::JsError::from(error).throw_into(env) };
            ptr::null_mut()
        }
    }
}

fn number(env: sys::napi_env, value: sys::napi_value) -> std::result::Result<f64, JsError> {
    let mut n = 0.0;
    // SAFETY: `value` is an argument of the current call.
    match unsafe { sys::napi_get_value_double(env, value, &mut n) } {
        sys::Status::napi_ok => Ok(n),
        _ => Err(coded("NumberExpected", "expected a number")),
    }
}

/// A pool id, read as a double and checked (`errors::pool_id_arg`), not
/// through `napi_get_value_uint32`, which reads NaN as pool 0.
fn pool_id(env: sys::napi_env, value: sys::napi_value) -> std::result::Result<u32, JsError> {
    crate::errors::pool_id_arg(number(env, value)?)
}

fn boolean(env: sys::napi_env, value: sys::napi_value) -> std::result::Result<bool, JsError> {
    let mut b = false;
    // SAFETY: `value` is an argument of the current call.
    match unsafe { sys::napi_get_value_bool(env, value, &mut b) } {
        sys::Status::napi_ok => Ok(b),
        _ => Err(coded("BooleanExpected", "expected a boolean")),
    }
}

fn undefined() -> sys::napi_value {
    // napi takes a null return as `undefined`.
    ptr::null_mut()
}

/// `attachUnviewed(poolId, offset, generation, byteOffset, byteLength, out)`.
unsafe extern "C" fn attach_unviewed(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<6>(env, info, |a| {
            let pool_id = pool_id(env, a[0])?;
            let fields = handle_fields(env, a)?;
            crate::attach_unviewed_inner(env, pool_id, fields, a[5])?;
            Ok(undefined())
        })
    }
}

/// `attachCompact(text, out)`.
unsafe extern "C" fn attach_compact(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<2>(env, info, |a| {
            js_boolean(env, crate::compact::attach_compact_inner(env, a[0], a[1])?)
        })
    }
}

/// `allocateCopy(poolId, source, byteLength, transferRequired, out)`.
unsafe extern "C" fn allocate_copy(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<5>(env, info, |a| {
            let pool_id = pool_id(env, a[0])?;
            let byte_length = number(env, a[2])?;
            let transfer_required = boolean(env, a[3])?;
            crate::allocate_copy_inner(env, pool_id, a[1], byte_length, transfer_required, a[4])?;
            Ok(undefined())
        })
    }
}

/// `viewOf(viewId)`.
unsafe extern "C" fn view_of(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe { call::<1>(env, info, |a| crate::view_of_inner(env, number(env, a[0])?)) }
}

fn js_boolean(env: sys::napi_env, b: bool) -> std::result::Result<sys::napi_value, JsError> {
    let mut value = ptr::null_mut();
    // SAFETY: `env` is the current callback's.
    match unsafe { sys::napi_get_boolean(env, b, &mut value) } {
        sys::Status::napi_ok => Ok(value),
        _ => Err(coded("ERR_NAPI", "napi_get_boolean failed")),
    }
}

/// The four handle numbers at `a[1..5]`.
fn handle_fields(
    env: sys::napi_env,
    a: &[sys::napi_value],
) -> std::result::Result<[f64; 4], JsError> {
    Ok([
        number(env, a[1])?,
        number(env, a[2])?,
        number(env, a[3])?,
        number(env, a[4])?,
    ])
}

/// `release(viewId, buffer)`.
unsafe extern "C" fn release(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<2>(env, info, |a| {
            js_boolean(env, crate::release_inner(env, number(env, a[0])?, a[1])?)
        })
    }
}

/// `allocate(poolId, byteLength, transferRequired, out)`.
unsafe extern "C" fn allocate(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<4>(env, info, |a| {
            let pool_id = pool_id(env, a[0])?;
            let byte_length = number(env, a[1])?;
            let transfer_required = boolean(env, a[2])?;
            crate::allocate_inner(env, pool_id, byte_length, transfer_required, a[3])
        })
    }
}

/// `attach(poolId, offset, generation, byteOffset, byteLength, out)`.
unsafe extern "C" fn attach(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: napi's callback arguments, passed on as they came.
    unsafe { view_by_handle(env, info, arraypool_core::Pool::attach_range) }
}

/// `share(poolId, offset, generation, byteOffset, byteLength, out)`.
unsafe extern "C" fn share(env: sys::napi_env, info: sys::napi_callback_info) -> sys::napi_value {
    // SAFETY: napi's callback arguments, passed on as they came.
    unsafe { view_by_handle(env, info, arraypool_core::Pool::share_range) }
}

/// The body `attach` and `share` have in common: a view of the range a
/// handle names, the reference taken through `take`.
///
/// # Safety
/// `env` and `info` are the arguments napi gave the callback.
unsafe fn view_by_handle(
    env: sys::napi_env,
    info: sys::napi_callback_info,
    take: TakeRange,
) -> sys::napi_value {
    // SAFETY: the caller's contract (napi's callback arguments).
    unsafe {
        call::<6>(env, info, |a| {
            let pool_id = pool_id(env, a[0])?;
            let fields = handle_fields(env, a)?;
            crate::view_of_handle(env, pool_id, fields, a[5], take)
        })
    }
}

/// `markEscaped(poolId, offset, generation)`.
unsafe extern "C" fn mark_escaped(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<3>(env, info, |a| {
            let pool_id = pool_id(env, a[0])?;
            let escaped =
                crate::unsent::mark_escaped_inner(pool_id, number(env, a[1])?, number(env, a[2])?)?;
            js_boolean(env, escaped)
        })
    }
}

/// `locateView(view, out)`.
unsafe extern "C" fn locate_view(
    env: sys::napi_env,
    info: sys::napi_callback_info,
) -> sys::napi_value {
    // SAFETY: napi's callback arguments.
    unsafe {
        call::<2>(env, info, |a| {
            js_boolean(env, crate::locate_view_inner(env, a[0], a[1])?)
        })
    }
}
