//! Errors of the pool, one enum, each variant with a stable code string that
//! the Node binding passes through unchanged (`ERR_*`).

use std::fmt;

/// Everything that can go wrong in a pool operation. No variant is a panic:
/// bad input, a full pool or a broken segment all come back as one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolError {
    /// No free block is large enough for the request.
    PoolFull {
        requested: u64,
        free: u64,
        /// The largest request that would succeed now (data bytes).
        largest_free: u64,
        /// A named /dev/shm pool, whose size /dev/shm bounds (the message says what to do).
        named: bool,
    },
    /// The pool had room, but `/dev/shm` could not back the pages
    /// (tmpfs full). Reported instead of the SIGBUS a first touch would raise.
    NoSpace { requested: u64 },
    /// The handle named a block that was freed or reused since.
    StaleHandle { offset: u64, generation: u64 },
    /// The handle cannot name a block of this pool at all.
    InvalidHandle { reason: String },
    /// No segment of that name exists.
    SegmentNotFound { name: String },
    /// The segment name is not an arraypool name.
    InvalidName { name: String },
    /// The segment exists but its header does not validate.
    InvalidSegment { reason: String },
    /// A value read from the segment breaks the layout's rules (another
    /// process wrote garbage, or the file was altered): the operation was
    /// refused and undone. `field` names what was wrong.
    CorruptSegment { field: &'static str, detail: String },
    /// All process slots are taken by live processes.
    TooManyProcesses { max: usize },
    /// The requested capacity is unusable (too small, or more than `/dev/shm` holds).
    InvalidCapacity { requested: u64, reason: String },
    /// The lock could not be taken within the configured timeout while its
    /// owner stayed alive (a stopped or hung process).
    LockTimeout { owner_slot: u32, waited_ms: u64 },
    /// This reference was already released (or never taken by this process).
    NotHeld { offset: u64 },
    /// This process closed its attachment to the pool.
    Closed { name: String },
    /// An operating-system call failed.
    Os { op: &'static str, errno: i32 },
}

impl PoolError {
    /// The stable code, identical to the `code` of the JS `ArrayPoolError`.
    pub fn code(&self) -> &'static str {
        match self {
            PoolError::PoolFull { .. } => "ERR_POOL_FULL",
            PoolError::NoSpace { .. } => "ERR_NO_SPACE",
            PoolError::StaleHandle { .. } => "ERR_STALE_HANDLE",
            PoolError::InvalidHandle { .. } => "ERR_INVALID_HANDLE",
            PoolError::SegmentNotFound { .. } => "ERR_SEGMENT_NOT_FOUND",
            PoolError::InvalidName { .. } => "ERR_INVALID_NAME",
            PoolError::InvalidSegment { .. } => "ERR_INVALID_SEGMENT",
            PoolError::CorruptSegment { .. } => "ERR_CORRUPT_SEGMENT",
            PoolError::TooManyProcesses { .. } => "ERR_TOO_MANY_PROCESSES",
            PoolError::InvalidCapacity { .. } => "ERR_INVALID_CAPACITY",
            PoolError::LockTimeout { .. } => "ERR_LOCK_TIMEOUT",
            PoolError::NotHeld { .. } => "ERR_NOT_HELD",
            PoolError::Closed { .. } => "ERR_POOL_CLOSED",
            PoolError::Os { .. } => "ERR_OS",
        }
    }

    pub(crate) fn os(op: &'static str, errno: nix::errno::Errno) -> Self {
        PoolError::Os {
            op,
            errno: errno as i32,
        }
    }

    pub(crate) fn corrupt(field: &'static str, detail: impl Into<String>) -> Self {
        PoolError::CorruptSegment {
            field,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid_handle(reason: impl Into<String>) -> Self {
        PoolError::InvalidHandle {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::PoolFull {
                requested,
                free,
                largest_free,
                named,
            } => {
                write!(
                    f,
                    "pool full: requested {requested} bytes, {free} bytes free, largest free block {largest_free} bytes"
                )?;
                if *named {
                    write!(
                        f,
                        "; a named ('shm') pool is sized within /dev/shm (half of it by default): use the default \
                         anonymous (memfd) backing, which /dev/shm does not bound, or give /dev/shm more room \
                         (docker run --shm-size=1g) and a larger size"
                    )?;
                }
                Ok(())
            }
            PoolError::NoSpace { requested } => write!(
                f,
                "no memory left to back {requested} bytes (a named pool: /dev/shm is full; an anonymous one: the memory or cgroup limit)"
            ),
            PoolError::StaleHandle { offset, generation } => write!(
                f,
                "stale handle: the block at offset {offset} (generation {generation}) was freed or reused"
            ),
            PoolError::InvalidHandle { reason } => write!(f, "invalid handle: {reason}"),
            PoolError::SegmentNotFound { name } => {
                write!(f, "shared-memory segment {name:?} does not exist")
            }
            PoolError::InvalidName { name } => write!(
                f,
                "invalid segment name {name:?}: expected 'arraypool-' followed by 1-48 of [A-Za-z0-9_-]"
            ),
            PoolError::InvalidSegment { reason } => {
                write!(f, "segment is not a valid arraypool segment: {reason}")
            }
            PoolError::CorruptSegment { field, detail } => {
                write!(f, "corrupt pool segment: {field}: {detail}")
            }
            PoolError::TooManyProcesses { max } => {
                write!(f, "all {max} process slots of the pool are taken by live processes")
            }
            PoolError::InvalidCapacity { requested, reason } => {
                write!(f, "invalid pool capacity {requested} bytes: {reason}")
            }
            PoolError::LockTimeout {
                owner_slot,
                waited_ms,
            } => write!(
                f,
                "pool lock not acquired after {waited_ms} ms: process slot {owner_slot} holds it and is alive (stopped or hung?)"
            ),
            PoolError::NotHeld { offset } => {
                write!(f, "this process holds no reference to the block at offset {offset}")
            }
            PoolError::Closed { name } => write!(f, "pool {name:?} was closed in this process"),
            PoolError::Os { op, errno } => write!(
                f,
                "{op} failed: {}",
                nix::errno::Errno::from_raw(*errno).desc()
            ),
        }
    }
}

impl std::error::Error for PoolError {}

pub type Result<T> = std::result::Result<T, PoolError>;

/// A caught panic's message (`panic!` makes a `&str` or a `String`), for the
/// bindings' boundaries (`ERR_INTERNAL`).
pub fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(text) => text.to_string(),
            Err(payload) => {
                // Any other payload type could panic again from its Drop,
                // where nothing catches it: leak it instead (as napi-rs does).
                std::mem::forget(payload);
                "a panic with a non-string payload".to_string()
            }
        },
    }
}
