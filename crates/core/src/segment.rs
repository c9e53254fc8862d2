//! The operating-system side of a pool: naming, creating, opening, mapping
//! and unlinking the segment (an anonymous `memfd`, see `memfd.rs`, or a
//! named POSIX shared-memory file in /dev/shm), reserving and returning its
//! pages, and the per-process liveness locks.
//!
//! Liveness: a process owns process slot `k` by holding an open-file-
//! description (`F_OFD_SETLK`) write lock on byte `k` of the segment's fd.
//! The kernel drops the lock when the process dies, however it dies, so
//! "slot k's lock is free" means "its owner is gone"; unlike `kill(pid, 0)`
//! this cannot be fooled by pid reuse, and it needs no extra files.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, OFlag};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{fstat, Mode};

use crate::error::{PoolError, Result};
use crate::memfd::{self, Locator, MEMFD_PREFIX};

/// What backs a pool's segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// Anonymous memory (`memfd_create`): freed by the kernel with the last
    /// process holding it, bounded by memory, not by /dev/shm; attached
    /// through /proc by processes of the same user.
    #[default]
    Memfd,
    /// A named file in /dev/shm: attachable by name by any process of the
    /// user, also after its creator is gone; removed by the creator's
    /// `close()`, its exit, or `arraypool gc`.
    Shm,
}

/// Every segment name starts with this.
pub const NAME_PREFIX: &str = "arraypool-";
/// Longest accepted suffix after the prefix.
pub const MAX_NAME_SUFFIX: usize = 48;
/// Where POSIX shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// Checks a segment name and returns it without a leading `/`.
/// Accepted: optional `/`, `arraypool-`, then 1..=48 of `[A-Za-z0-9_-]`;
/// nothing that could reach outside `/dev/shm`.
pub fn validate_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let suffix = bare.strip_prefix(NAME_PREFIX);
    let ok = match suffix {
        Some(s) => {
            !s.is_empty()
                && s.len() <= MAX_NAME_SUFFIX
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        }
        None => false,
    };
    if ok {
        Ok(bare)
    } else {
        Err(PoolError::InvalidName {
            name: name.chars().take(200).collect(),
        })
    }
}

/// 128 random bits: a pool's id (in its header, and in an anonymous pool's name).
pub fn random_id() -> Result<u128> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| PoolError::Os {
            op: "read /dev/urandom",
            errno: e.raw_os_error().unwrap_or(0),
        })?;
    Ok(u128::from_le_bytes(bytes))
}

/// `arraypool-` and 128 random bits in hex (the brief asks for >= 64).
pub fn random_name() -> Result<String> {
    Ok(format!("{NAME_PREFIX}{:032x}", random_id()?))
}

/// Size and free space of the `/dev/shm` filesystem, in bytes.
pub fn shm_filesystem_bytes() -> Result<(u64, u64)> {
    let st =
        nix::sys::statvfs::statvfs(SHM_DIR).map_err(|e| PoolError::os("statvfs /dev/shm", e))?;
    let unit = st.fragment_size() as u64;
    Ok((
        st.blocks() as u64 * unit,
        st.blocks_available() as u64 * unit,
    ))
}

fn shm_path(bare_name: &str) -> String {
    format!("/{bare_name}")
}

/// One process's mapping of the segment plus the fd that carries its
/// liveness lock.
pub struct Segment {
    name: String,
    fd: OwnedFd,
    map: MmapRaw,
    backing: Backing,
}

impl Segment {
    /// Creates a new segment (`O_EXCL`, mode 0600) of `capacity` bytes.
    /// The file is sparse: tmpfs allocates pages only when reserved or touched.
    /// The creator takes the liveness lock of slot 0 before anything else,
    /// so `gc` never sees a segment being created as abandoned.
    pub fn create(name: &str, capacity: u64, backing: Backing) -> Result<Segment> {
        let bare = validate_name(name)?;
        if backing == Backing::Memfd {
            let fd = memfd::create(bare, capacity)?;
            lock_slot(&fd, 0)?;
            let map = map(&fd, capacity)?;
            return Ok(Segment {
                name: bare.to_string(),
                fd,
                map,
                backing,
            });
        }
        if bare.starts_with(MEMFD_PREFIX) {
            return Err(PoolError::InvalidName {
                name: format!("{bare} (names starting with {MEMFD_PREFIX} are anonymous pools')"),
            });
        }
        let fd = shm_open(
            shm_path(bare).as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| PoolError::os("shm_open(O_CREAT|O_EXCL)", e))?;
        let sized = lock_slot(&fd, 0)
            .and_then(|()| {
                nix::unistd::ftruncate(&fd, capacity as libc::off_t)
                    .map_err(|e| PoolError::os("ftruncate", e))
            })
            .and_then(|()| map(&fd, capacity));
        match sized {
            Ok(map) => Ok(Segment {
                name: bare.to_string(),
                fd,
                map,
                backing,
            }),
            Err(e) => {
                let _ = shm_unlink(shm_path(bare).as_str());
                Err(e)
            }
        }
    }

    /// Opens an existing segment by locator (a name, or for an anonymous
    /// pool `name@pid:fd,...`, see `memfd.rs`) and maps all of it.
    pub fn open(locator: &str) -> Result<Segment> {
        let (bare, fd, backing) = if memfd::is_memfd_name(locator) {
            let locator = Locator::parse(locator)?;
            let fd = memfd::open_pool(&locator)?;
            (locator.name, fd, Backing::Memfd)
        } else {
            let bare = validate_name(locator)?;
            (bare.to_string(), open_fd(bare)?, Backing::Shm)
        };
        let size = fd_size(&fd)?;
        if size == 0 {
            return Err(PoolError::InvalidSegment {
                reason:
                    "the segment is empty (its creator has not sized it yet, or it is not a pool)"
                        .into(),
            });
        }
        let map = map(&fd, size)?;
        Ok(Segment {
            name: bare,
            fd,
            map,
            backing,
        })
    }

    /// Removes the name from `/dev/shm`; mappings stay valid. An anonymous
    /// pool has no name to remove: nothing to do.
    pub fn unlink(name: &str) -> Result<()> {
        if memfd::is_memfd_name(name) {
            return Ok(());
        }
        let bare = validate_name(name)?;
        shm_unlink(shm_path(bare).as_str()).map_err(|e| match e {
            Errno::ENOENT => PoolError::SegmentNotFound {
                name: bare.to_string(),
            },
            other => PoolError::os("shm_unlink", other),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Makes tmpfs back `[offset, offset + len)` now, so that touching those
    /// pages later can never raise SIGBUS. A full tmpfs is `NoSpace`.
    pub fn reserve(&self, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        match fallocate(
            &self.fd,
            FallocateFlags::empty(),
            offset as libc::off_t,
            len as libc::off_t,
        ) {
            Ok(()) => Ok(()),
            // ENOSPC: tmpfs full (a named pool); ENOMEM: the memory or cgroup limit.
            Err(Errno::ENOSPC) | Err(Errno::ENOMEM) => Err(PoolError::NoSpace { requested: len }),
            Err(e) => Err(PoolError::os("fallocate", e)),
        }
    }

    /// Gives the pages of `[offset, offset + len)` back to the system; they
    /// read as zeros afterwards and must be reserved again before use.
    pub fn punch_hole(&self, offset: u64, len: u64) -> Result<()> {
        let page = crate::layout::PAGE;
        let start = crate::layout::round_up(offset, page);
        let end = (offset + len) / page * page;
        if end <= start {
            return Ok(());
        }
        fallocate(
            &self.fd,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            start as libc::off_t,
            (end - start) as libc::off_t,
        )
        .map_err(|e| PoolError::os("fallocate(PUNCH_HOLE)", e))
    }

    /// Gives up the liveness lock of `slot` (leaving a pool while staying
    /// alive), so another process can claim the slot.
    pub fn unlock_slot(&self, slot: usize) {
        let lock = slot_flock(slot, libc::F_UNLCK);
        let _ = fcntl(self.fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock));
    }

    /// Tries to take the liveness lock of `slot`; `false` if another open
    /// file description (a live process) holds it.
    pub fn try_lock_slot(&self, slot: usize) -> Result<bool> {
        let lock = slot_flock(slot, libc::F_WRLCK);
        match fcntl(self.fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
            Ok(_) => Ok(true),
            Err(Errno::EAGAIN) | Err(Errno::EACCES) => Ok(false),
            Err(e) => Err(PoolError::os("fcntl(F_OFD_SETLK)", e)),
        }
    }

    /// Whether some other open file description holds `slot`'s liveness lock.
    /// Our own lock never conflicts with us, so never ask about our own slot.
    pub fn slot_alive(&self, slot: usize) -> bool {
        probe_slot(&self.fd, slot)
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

fn lock_slot(fd: &OwnedFd, slot: usize) -> Result<()> {
    let lock = slot_flock(slot, libc::F_WRLCK);
    fcntl(fd.as_fd(), FcntlArg::F_OFD_SETLK(&lock))
        .map(drop)
        .map_err(|e| PoolError::os("fcntl(F_OFD_SETLK)", e))
}

/// Opens a segment's fd (read-write) without mapping it: by name in
/// /dev/shm, or an anonymous pool through a process holding it.
pub(crate) fn open_any_fd(name: &str) -> Result<(String, OwnedFd)> {
    if memfd::is_memfd_name(name) {
        let locator = Locator::parse(name)?;
        let fd = memfd::open_pool(&locator)?;
        return Ok((locator.name, fd));
    }
    let bare = validate_name(name)?;
    Ok((bare.to_string(), open_fd(bare)?))
}

/// Opens a /dev/shm segment's fd (read-write) without mapping it.
pub(crate) fn open_fd(bare_name: &str) -> Result<OwnedFd> {
    let fd = shm_open(
        shm_path(bare_name).as_str(),
        OFlag::O_RDWR | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => PoolError::SegmentNotFound {
            name: bare_name.to_string(),
        },
        other => PoolError::os("shm_open", other),
    })?;
    refuse_foreign(&fd)?;
    Ok(fd)
}

/// A named segment is ours only if our effective uid owns it and nobody
/// else may read or write it: a file planted under a pool's name by
/// another user (or opened up by anyone) is refused before it is read.
fn refuse_foreign(fd: &OwnedFd) -> Result<()> {
    let st = fstat(fd).map_err(|e| PoolError::os("fstat", e))?;
    let euid = nix::unistd::geteuid().as_raw();
    let mode = st.st_mode & 0o777;
    if st.st_uid != euid || mode & 0o077 != 0 {
        return Err(PoolError::InvalidSegment {
            reason: format!(
                "refused: owned by uid {} with mode {mode:03o}; a pool must be owned by uid {euid} with no group or other access",
                st.st_uid
            ),
        });
    }
    Ok(())
}

pub(crate) fn fd_size(fd: &OwnedFd) -> Result<u64> {
    Ok(fstat(fd).map_err(|e| PoolError::os("fstat", e))?.st_size as u64)
}

/// Whether another open file description (a live process) holds `slot`'s
/// liveness lock on this segment.
pub(crate) fn probe_slot(fd: &OwnedFd, slot: usize) -> bool {
    let mut probe = slot_flock(slot, libc::F_WRLCK);
    match fcntl(fd.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe)) {
        Ok(_) => probe.l_type != libc::F_UNLCK as libc::c_short,
        // If the kernel cannot tell, assume alive: never reap a live process.
        Err(_) => true,
    }
}

/// The names of the arraypool segments in `/dev/shm`, sorted.
pub fn list_segments() -> Result<Vec<String>> {
    let entries = std::fs::read_dir(SHM_DIR).map_err(|e| PoolError::Os {
        op: "read /dev/shm",
        errno: e.raw_os_error().unwrap_or(0),
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| validate_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names)
}

fn slot_flock(slot: usize, kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = slot as libc::off_t;
    lock.l_len = 1;
    lock
}

pub(crate) fn map(fd: &OwnedFd, len: u64) -> Result<MmapRaw> {
    let len = usize::try_from(len).map_err(|_| PoolError::InvalidCapacity {
        requested: len,
        reason: "larger than the address space".into(),
    })?;
    MmapOptions::new()
        .len(len)
        .map_raw(fd.as_raw_fd())
        .map_err(|e| PoolError::Os {
            op: "mmap",
            errno: e.raw_os_error().unwrap_or(0),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("arraypool-abc").is_ok());
        assert_eq!(validate_name("/arraypool-abc").ok(), Some("arraypool-abc"));
        for bad in [
            "",
            "arraypool-",
            "/arraypool-a/b",
            "../../etc/passwd",
            "arraypool-../../etc/passwd",
            "other-abc",
            "arraypool-abc\0",
            "//arraypool-abc",
        ] {
            assert_eq!(
                validate_name(bad).map_err(|e| e.code()),
                Err("ERR_INVALID_NAME"),
                "{bad:?}"
            );
        }
        let long = format!("arraypool-{}", "a".repeat(MAX_NAME_SUFFIX + 1));
        assert!(validate_name(&long).is_err());
    }

    #[test]
    fn random_names_differ_and_validate() {
        let a = random_name().expect("urandom");
        let b = random_name().expect("urandom");
        assert_ne!(a, b);
        assert!(validate_name(&a).is_ok());
        assert_eq!(a.len(), NAME_PREFIX.len() + 32);
    }

    #[test]
    fn missing_segment_is_not_found() {
        let e = Segment::open("arraypool-doesnotexist0123")
            .err()
            .map(|e| e.code());
        assert_eq!(e, Some("ERR_SEGMENT_NOT_FOUND"));
    }

    #[test]
    fn create_is_exclusive_and_mode_0600() {
        let name = random_name().expect("name");
        let seg = Segment::create(&name, 1 << 20, Backing::Shm).expect("create");
        let meta = std::fs::metadata(format!("{SHM_DIR}/{name}")).expect("stat");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(Segment::create(&name, 1 << 20, Backing::Shm).is_err());
        assert!(seg.try_lock_slot(3).expect("lock"));
        let other = Segment::open(&name).expect("open");
        assert!(other.slot_alive(3));
        assert!(!other.try_lock_slot(3).expect("probe"));
        assert!(!other.slot_alive(4));
        Segment::unlink(&name).expect("unlink");
        drop(seg);
        assert!(!other.slot_alive(3), "closing the fd drops the slot lock");
    }
}
