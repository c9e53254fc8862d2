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
//!
//! Garbage collection of named pools: byte [`GC_LOCK_BYTE`] (just past the
//! 64 slot bytes) is the *gc lock*. `arraypool gc` takes it exclusively
//! before it looks at a segment and keeps it until it has marked the header
//! [`DEAD_MAGIC`] and unlinked the name; a process joining a named pool
//! holds it shared from `Segment::open` until it holds its slot lock
//! (`Segment::claim_slot`). So gc either sees the joiner's slot lock or the
//! joiner sees the dead magic: a joiner never ends up in a pool whose name
//! gc removed.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};
use nix::errno::Errno;
use nix::fcntl::{fallocate, FallocateFlags, OFlag};
use nix::sys::mman::{shm_open, shm_unlink};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};

use crate::error::{PoolError, Result};
pub(crate) use crate::file_locks::{gc_lock_held, probe_slot, try_lock_gc};
use crate::file_locks::{lock_slot, share_gc_lock, try_lock_byte, unlock_byte};
use crate::layout::MAX_PROCESSES;
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

/// `b"ARRDEAD\0"` as a little-endian integer: the magic `arraypool gc`
/// writes over [`crate::layout::MAGIC`] before it unlinks an abandoned
/// pool, so a process that opened the file just before can no longer join
/// it (and a gc interrupted before the unlink leaves a file the next gc
/// knows it may remove).
pub const DEAD_MAGIC: u64 = u64::from_le_bytes(*b"ARRDEAD\0");

/// The byte of the segment fd whose OFD lock is the gc lock: exclusive for
/// `arraypool gc`, shared for a process joining the pool (see the module
/// comment). Past the slot bytes `0..MAX_PROCESSES`, so it never conflicts
/// with a liveness lock.
pub const GC_LOCK_BYTE: usize = MAX_PROCESSES;

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
    /// pool `name@pid:fd,...`, see `memfd.rs`) and maps all of it, to join
    /// its pool: the caller must then call [`Segment::claim_slot`].
    ///
    /// A named segment is opened under the gc join protocol: this takes the
    /// gc lock *shared* (waiting at most `join_wait` for a gc holding it;
    /// never blocking, a hostile process could hold it forever) and keeps it
    /// until `claim_slot`, so no gc can remove the pool in between. A
    /// segment gc already marked dead or unlinked is `SegmentNotFound`.
    pub fn open(locator: &str, join_wait: Duration) -> Result<Segment> {
        let (bare, fd, backing) = if memfd::is_memfd_name(locator) {
            // Never garbage collected: the kernel frees it with its last holder.
            let locator = Locator::parse(locator)?;
            let fd = memfd::open_pool(&locator)?;
            (locator.name, fd, Backing::Memfd)
        } else {
            let bare = validate_name(locator)?;
            let fd = open_fd(bare)?;
            share_gc_lock(&fd, join_wait)?;
            if removed_by_gc(&fd)? {
                return Err(PoolError::SegmentNotFound {
                    name: bare.to_string(),
                });
            }
            #[cfg(feature = "testing")]
            hooks::pause(&hooks::JOIN_PAUSE_US);
            (bare.to_string(), fd, Backing::Shm)
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

    /// Claims the first free process slot (takes its liveness lock) for a
    /// process joining the pool, then gives up the shared gc lock that
    /// [`Segment::open`] took: from then on gc sees this process alive. The
    /// gc lock is given up also when no slot is free (`TooManyProcesses`).
    pub fn claim_slot(&self) -> Result<u32> {
        let claimed = (0..MAX_PROCESSES).find_map(|k| match self.try_lock_slot(k) {
            Ok(true) => Some(Ok(k as u32)),
            Ok(false) => None,
            Err(e) => Some(Err(e)),
        });
        if self.backing == Backing::Shm {
            unlock_byte(&self.fd, GC_LOCK_BYTE);
        }
        claimed.unwrap_or(Err(PoolError::TooManyProcesses { max: MAX_PROCESSES }))
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

    /// Bytes of the segment that tmpfs backs now (reserved or touched, not
    /// punched): `st_blocks` of the file. What the pool costs in memory.
    pub fn backed_bytes(&self) -> Result<u64> {
        let st = fstat(&self.fd).map_err(|e| PoolError::os("fstat", e))?;
        Ok((st.st_blocks as u64).saturating_mul(512))
    }

    /// Gives up the liveness lock of `slot` (leaving a pool while staying
    /// alive), so another process can claim the slot.
    pub fn unlock_slot(&self, slot: usize) {
        unlock_byte(&self.fd, slot);
    }

    /// Tries to take the liveness lock of `slot`; `false` if another open
    /// file description (a live process) holds it.
    pub fn try_lock_slot(&self, slot: usize) -> Result<bool> {
        try_lock_byte(&self.fd, slot)
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

/// Opens a segment's fd (read-write) without mapping it: by name in
/// /dev/shm, or an anonymous pool through a process holding it. This is
/// the CLI's way in (`inspect`): a named segment goes through [`open_fd`],
/// so a file that is not ours (owner, mode, not a regular file, a symbolic
/// link) is refused before anything in it is read; an anonymous one was
/// checked by `memfd::open_pool` (link, owner, seals, pool id).
pub(crate) fn open_any_fd(name: &str) -> Result<(String, OwnedFd)> {
    if memfd::is_memfd_name(name) {
        let locator = Locator::parse(name)?;
        let fd = memfd::open_pool(&locator)?;
        return Ok((locator.name, fd));
    }
    let bare = validate_name(name)?;
    Ok((bare.to_string(), open_fd(bare)?))
}

/// Opens a /dev/shm segment's fd (read-write) without mapping it, and
/// refuses it unless it is ours ([`ownership`]).
pub(crate) fn open_fd(bare_name: &str) -> Result<OwnedFd> {
    let fd = open_fd_unchecked(bare_name)?;
    refuse_foreign(&fd)?;
    Ok(fd)
}

/// `shm_open(O_RDWR | O_NOFOLLOW)`: nothing is checked yet (gc reports
/// what it finds instead of failing).
pub(crate) fn open_fd_unchecked(bare_name: &str) -> Result<OwnedFd> {
    shm_open(
        shm_path(bare_name).as_str(),
        OFlag::O_RDWR | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ENOENT => PoolError::SegmentNotFound {
            name: bare_name.to_string(),
        },
        other => PoolError::os("shm_open", other),
    })
}

/// Whose a named segment is, from `fstat` of the fd we hold.
pub(crate) enum Ownership {
    /// A regular file owned by the effective uid, no group or other bits.
    Ours,
    /// Another uid's, or open to group or others.
    Foreign(String),
    /// Not a regular file (a device, a FIFO, a socket...).
    NotRegular(String),
}

pub(crate) fn ownership(st: &FileStat) -> Ownership {
    let euid = nix::unistd::geteuid().as_raw();
    let mode = st.st_mode & 0o777;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Ownership::NotRegular(format!("not a regular file (mode {:o})", st.st_mode));
    }
    if st.st_uid != euid || mode & 0o077 != 0 {
        return Ownership::Foreign(format!(
            "owned by uid {} with mode {mode:03o}; a pool must be owned by uid {euid} with no group or other access",
            st.st_uid
        ));
    }
    Ownership::Ours
}

/// A named segment is ours only if our effective uid owns it and nobody
/// else may read or write it: a file planted under a pool's name by
/// another user (or opened up by anyone) is refused before it is read.
fn refuse_foreign(fd: &OwnedFd) -> Result<()> {
    let st = fstat(fd).map_err(|e| PoolError::os("fstat", e))?;
    match ownership(&st) {
        Ownership::Ours => Ok(()),
        Ownership::Foreign(why) | Ownership::NotRegular(why) => Err(PoolError::InvalidSegment {
            reason: format!("refused: {why}"),
        }),
    }
}

/// Whether gc removed the segment behind `fd` (it wrote the dead magic,
/// and maybe unlinked the name), or the name is gone (its creator closed
/// it): a joiner must not join either.
fn removed_by_gc(fd: &OwnedFd) -> Result<bool> {
    let st = fstat(fd).map_err(|e| PoolError::os("fstat", e))?;
    let mut magic = [0u8; 8];
    let read = read_at(fd, &mut magic, 0)?;
    Ok(st.st_nlink == 0 || (read == 8 && u64::from_le_bytes(magic) == DEAD_MAGIC))
}

/// Writes [`DEAD_MAGIC`] over the header's magic: nobody can join the
/// segment any more. The caller holds the gc lock exclusively.
pub(crate) fn mark_dead(fd: &OwnedFd) -> Result<()> {
    let bytes = DEAD_MAGIC.to_le_bytes();
    loop {
        match nix::sys::uio::pwrite(fd, &bytes, 0) {
            Ok(8) => return Ok(()),
            Ok(_) => return Err(PoolError::os("pwrite (dead magic)", Errno::EIO)),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PoolError::os("pwrite (dead magic)", e)),
        }
    }
}

/// Unlinks `/dev/shm/<bare_name>` only if that name still refers to the
/// file behind `fd`: if it was removed and created anew since we opened
/// it, the new file is left alone. `false` when the name was not ours to
/// remove (gone, or another file now).
pub(crate) fn unlink_if_same(bare_name: &str, fd: &OwnedFd) -> Result<bool> {
    let held = fstat(fd).map_err(|e| PoolError::os("fstat", e))?;
    let path = format!("{SHM_DIR}/{bare_name}");
    match nix::sys::stat::lstat(path.as_str()) {
        Ok(st) if st.st_dev == held.st_dev && st.st_ino == held.st_ino => {}
        Ok(_) | Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(PoolError::os("lstat", e)),
    }
    match shm_unlink(shm_path(bare_name).as_str()) {
        Ok(()) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(PoolError::os("shm_unlink", e)),
    }
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
/// Reading never maps the file, so a file truncated under the reader is a
/// short read, never a SIGBUS.
pub(crate) fn read_at(fd: &OwnedFd, buf: &mut [u8], offset: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let at = libc::off_t::try_from(offset + done as u64)
            .map_err(|_| PoolError::os("pread", Errno::EOVERFLOW))?;
        match nix::sys::uio::pread(fd, &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(PoolError::os("pread", e)),
        }
    }
    Ok(done)
}

pub(crate) fn fd_size(fd: &OwnedFd) -> Result<u64> {
    Ok(fstat(fd).map_err(|e| PoolError::os("fstat", e))?.st_size as u64)
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

/// Test-only pauses that widen the windows of the gc join protocol, so a
/// race test meets every interleaving (the `testing` feature only).
#[cfg(feature = "testing")]
pub mod hooks {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

    pub(crate) static JOIN_PAUSE_US: AtomicU64 = AtomicU64::new(0);
    pub(crate) static GC_PAUSE_US: AtomicU64 = AtomicU64::new(0);

    /// A joiner of a named pool sleeps `us` µs while holding the gc lock
    /// shared (between `Segment::open` and `claim_slot`).
    pub fn pause_while_joining(us: u64) {
        JOIN_PAUSE_US.store(us, Relaxed);
    }

    /// gc sleeps `us` µs holding the gc lock exclusively, after it found
    /// the pool abandoned and before it marks it dead and unlinks it.
    pub fn pause_before_removing(us: u64) {
        GC_PAUSE_US.store(us, Relaxed);
    }

    pub(crate) fn pause(us: &AtomicU64) {
        let us = us.load(Relaxed);
        if us > 0 {
            std::thread::sleep(std::time::Duration::from_micros(us));
        }
    }
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
        let e = Segment::open("arraypool-doesnotexist0123", Duration::from_secs(1))
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
        let other = Segment::open(&name, Duration::from_secs(1)).expect("open");
        assert_eq!(other.claim_slot().ok(), Some(1), "slot 0 is the creator's");
        assert!(other.slot_alive(3));
        assert!(!other.try_lock_slot(3).expect("probe"));
        assert!(!other.slot_alive(4));
        Segment::unlink(&name).expect("unlink");
        drop(seg);
        assert!(!other.slot_alive(3), "closing the fd drops the slot lock");
    }
}
