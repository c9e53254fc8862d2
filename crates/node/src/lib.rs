//! Node-API binding for arraypool-core (napi-rs 3).
#![deny(clippy::all)]

use napi_derive::napi;

/// Shared-memory layout version compiled into this addon
/// (`arraypool_core::LAYOUT_VERSION`).
#[napi]
pub fn layout_version() -> u32 {
    arraypool_core::LAYOUT_VERSION
}

// ---------------------------------------------------------------- EXPERIMENT
mod experiment {
    use std::ptr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use napi::bindgen_prelude::*;
    use napi::sys;
    use napi_derive::napi;

    static FINALIZED: AtomicUsize = AtomicUsize::new(0);
    static FINALIZED_BYTES: AtomicUsize = AtomicUsize::new(0);

    /// A page-aligned anonymous mmap standing in for a block of the shm segment.
    fn map(len: usize) -> Result<*mut u8> {
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(Error::new(Status::GenericFailure, "mmap failed"));
        }
        Ok(p.cast())
    }

    /// Owned by the finalizer: everything needed to release the block.
    struct Block {
        ptr: *mut u8,
        len: usize,
    }

    impl Drop for Block {
        fn drop(&mut self) {
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }

    /// 1 + 2: external ArrayBuffer over foreign memory, finalizer closure,
    /// external-memory accounting reported to V8.
    #[napi]
    pub fn exp_external_array_buffer(env: &Env, len: u32) -> Result<ArrayBuffer<'_>> {
        let len = len as usize;
        let p = map(len)?;
        unsafe { *p = 42 };
        let block = Block { ptr: p, len };
        let ab = unsafe {
            ArrayBuffer::from_external(env, p, len, block, |env: Env, block: Block| {
                // runs on the JS thread of the env that created the buffer
                let _ = env.adjust_external_memory(-(block.len as i64));
                FINALIZED.fetch_add(1, Ordering::SeqCst);
                FINALIZED_BYTES.fetch_add(block.len, Ordering::SeqCst);
                if std::env::var_os("EXP_TRACE").is_some() {
                    eprintln!("finalize {} bytes on {:?}", block.len, std::thread::current().id());
                }
                drop(block); // munmap
            })?
        };
        // `ab.as_ptr() != p` <=> napi-rs fell back to a copy (external buffers
        // not allowed); the finalizer has then already run.
        if ab.as_ptr() == p.cast_const() {
            env.adjust_external_memory(len as i64)?;
        }
        Ok(ab)
    }

    /// 1: same but as a Float64Array view (Float64ArraySlice<'env>).
    #[napi]
    pub fn exp_external_f64(env: &Env, n: u32) -> Result<Float64ArraySlice<'_>> {
        let n = n as usize;
        let len = n * std::mem::size_of::<f64>();
        let p = map(len)?;
        let block = Block { ptr: p, len };
        unsafe {
            Float64ArraySlice::from_external(env, p.cast::<f64>(), n, block, |_env, block| {
                FINALIZED.fetch_add(1, Ordering::SeqCst);
                FINALIZED_BYTES.fetch_add(block.len, Ordering::SeqCst);
            })
        }
    }

    /// 1 (owned variant, 'static, no Env needed): Float64Array::with_external_data.
    #[napi]
    pub fn exp_external_f64_owned(n: u32) -> Result<Float64Array> {
        let n = n as usize;
        let len = n * std::mem::size_of::<f64>();
        let p = map(len)?;
        Ok(unsafe {
            Float64Array::with_external_data(p.cast::<f64>(), n, move |data, n| {
                libc::munmap(data.cast(), n * std::mem::size_of::<f64>());
                FINALIZED.fetch_add(1, Ordering::SeqCst);
                FINALIZED_BYTES.fetch_add(len, Ordering::SeqCst);
            })
        })
    }

    /// 3: detach an ArrayBuffer passed from JS.
    #[napi]
    pub fn exp_detach(ab: ArrayBuffer) -> Result<bool> {
        ab.detach()?;
        Ok(true)
    }

    #[napi]
    pub fn exp_is_detached(ab: ArrayBuffer) -> Result<bool> {
        ab.is_detached()
    }

    /// 3b: detach the buffer behind any typed array.
    #[napi]
    pub fn exp_detach_view(view: TypedArray) -> Result<()> {
        // NOT `view.arraybuffer.detach()`: in napi 3.16.1 `TypedArray::arraybuffer`
        // wraps the *view's* napi_value, so detach fails with ArrayBufferExpected.
        let ab: ArrayBuffer = view.get_named_property_unchecked("buffer")?;
        ab.detach()
    }

    /// 3c: same, via the raw typedarray info (no property lookup).
    #[napi]
    pub fn exp_detach_view_raw(env: &Env, view: TypedArray) -> Result<()> {
        let mut ab_value = ptr::null_mut();
        let status = unsafe {
            sys::napi_get_typedarray_info(
                env.raw(),
                view.raw(),
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
                &mut ab_value,
                ptr::null_mut(),
            )
        };
        if status != sys::Status::napi_ok {
            return Err(Error::new(Status::from(status), "napi_get_typedarray_info"));
        }
        let ab = unsafe { ArrayBuffer::from_napi_value(env.raw(), ab_value) }?;
        ab.detach()
    }

    #[napi]
    pub fn exp_finalized() -> Vec<u32> {
        vec![
            FINALIZED.load(Ordering::SeqCst) as u32,
            FINALIZED_BYTES.load(Ordering::SeqCst) as u32,
        ]
    }

    /// 4: stable error codes.
    pub enum Code {
        StaleHandle,
    }
    impl AsRef<str> for Code {
        fn as_ref(&self) -> &str {
            match self {
                Code::StaleHandle => "ERR_STALE_HANDLE",
            }
        }
    }
    #[napi]
    pub fn exp_error_enum() -> Result<u32, Code> {
        Err(Error::new(Code::StaleHandle, "handle refers to a freed block"))
    }
    #[napi]
    pub fn exp_error_str() -> Result<u32, &'static str> {
        Err(Error::new("ERR_STALE_HANDLE", "handle refers to a freed block"))
    }
    #[napi]
    pub fn exp_error_default() -> Result<u32> {
        Err(Error::new(Status::InvalidArg, "plain napi::Error"))
    }

    /// 4: recommended pattern — one error-code enum for the whole addon.
    #[derive(Debug, Clone, Copy)]
    pub enum ErrCode {
        StaleHandle,
        ExternalBuffersUnsupported,
        Napi,
    }
    impl AsRef<str> for ErrCode {
        fn as_ref(&self) -> &str {
            match self {
                ErrCode::StaleHandle => "ERR_STALE_HANDLE",
                ErrCode::ExternalBuffersUnsupported => "ERR_EXTERNAL_BUFFERS_UNSUPPORTED",
                ErrCode::Napi => "ERR_NAPI",
            }
        }
    }
    pub type JsResult<T> = std::result::Result<T, Error<ErrCode>>;
    /// `?` cannot convert napi::Error<Status> -> napi::Error<ErrCode> (orphan
    /// rule forbids that From impl), so map at the call site.
    fn napi_err(e: Error) -> Error<ErrCode> {
        Error::new(ErrCode::Napi, format!("{}: {}", e.status, e.reason))
    }

    /// 6 (+1, +2): raw sys call — surfaces napi_no_external_buffers_allowed
    /// instead of napi-rs's silent copy; reports memory to V8 only on success.
    #[napi]
    pub fn exp_raw_external<'env>(env: &'env Env, len: u32) -> Result<ArrayBuffer<'env>, ErrCode> {
        let len = len as usize;
        let p = map(len).map_err(napi_err)?;
        let hint = Box::into_raw(Box::new(Block { ptr: p, len }));
        unsafe extern "C" fn finalize(
            env: sys::napi_env,
            _data: *mut std::ffi::c_void,
            hint: *mut std::ffi::c_void,
        ) {
            let block = unsafe { Box::from_raw(hint.cast::<Block>()) };
            let _ = Env::from_raw(env).adjust_external_memory(-(block.len as i64));
            FINALIZED.fetch_add(1, Ordering::SeqCst);
            FINALIZED_BYTES.fetch_add(block.len, Ordering::SeqCst);
            drop(block); // munmap
        }
        let mut value = ptr::null_mut();
        let status = unsafe {
            sys::napi_create_external_arraybuffer(
                env.raw(),
                p.cast(),
                len,
                Some(finalize),
                hint.cast(),
                &mut value,
            )
        };
        if status != sys::Status::napi_ok {
            drop(unsafe { Box::from_raw(hint) }); // munmap; the finalizer will never run
            return Err(if status == sys::Status::napi_no_external_buffers_allowed {
                Error::new(
                    ErrCode::ExternalBuffersUnsupported,
                    "this runtime forbids external ArrayBuffers (V8 sandbox, e.g. Electron)",
                )
            } else {
                Error::new(
                    ErrCode::Napi,
                    format!("napi_create_external_arraybuffer: {}", Status::from(status)),
                )
            });
        }
        env.adjust_external_memory(len as i64).map_err(napi_err)?;
        unsafe { ArrayBuffer::from_napi_value(env.raw(), value) }.map_err(napi_err)
    }

    #[napi]
    pub fn exp_stale(handle: u32) -> Result<u32, ErrCode> {
        if handle == 0 {
            return Err(Error::new(ErrCode::StaleHandle, format!("handle {handle} is stale")));
        }
        Ok(handle)
    }

    /// 5: which thread / env are we on (Worker check).
    #[napi]
    pub fn exp_thread_id() -> String {
        format!("{:?}", std::thread::current().id())
    }
}
