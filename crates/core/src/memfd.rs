//! Anonymous pools: the segment is a `memfd_create` file with no name in any
//! filesystem. The kernel frees it when the last process holding an fd or a
//! mapping of it goes, however every one of them dies, so nothing can be
//! left behind and no signal handler is needed. Its pages are shmem charged
//! to the memory cgroup, not to `/dev/shm`'s size.
//!
//! Other processes of the same user open it as `/proc/<pid>/fd/<fd>` of any
//! live member (a reopen: a new open file description of the same file,
//! which carries its own liveness locks). A locator string names the pool
//! and lists members to try: `arraypool-memfd-<32 hex>@<pid>:<fd>,<pid>:<fd>`.
//! Without a usable hint, `/proc` is scanned for a process of ours holding
//! the pool. Whatever is opened is checked before it is trusted: the link
//! says `/memfd:<name>`, the file is ours, sealed against shrinking and
//! growing, and the header's random id matches the name (`Pool::open`).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::error::{PoolError, Result};
use crate::layout::{SegmentHeader, MAGIC};

/// Names of anonymous pools: this, then the pool's 128-bit id in hex.
pub const MEMFD_PREFIX: &str = "arraypool-memfd-";

/// Seals every pool file carries once sized: nobody can truncate it under a
/// reader (SIGBUS) or grow it; `fallocate` inside it and hole punching still work.
const SIZE_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// Most member hints a locator carries (the newest first).
pub const MAX_HINTS: usize = 4;

pub fn is_memfd_name(name: &str) -> bool {
    name.strip_prefix('/')
        .unwrap_or(name)
        .starts_with(MEMFD_PREFIX)
}

/// The 128-bit id an anonymous pool's name carries, if it is well formed.
pub fn id_of(name: &str) -> Option<u128> {
    let hex = name
        .strip_prefix('/')
        .unwrap_or(name)
        .strip_prefix(MEMFD_PREFIX)?;
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(hex, 16).ok()
}

pub fn name_of(id: u128) -> String {
    format!("{MEMFD_PREFIX}{id:032x}")
}

/// A pool name and the members through which to open it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    pub name: String,
    pub hints: Vec<(u32, i32)>,
}

impl Locator {
    /// `name` or `name@pid:fd,pid:fd,...`. Malformed hints are dropped (a
    /// scan of /proc still finds the pool); a malformed name is an error.
    pub fn parse(text: &str) -> Result<Locator> {
        let (name, hints) = text.split_once('@').unwrap_or((text, ""));
        let bare = name.strip_prefix('/').unwrap_or(name);
        if id_of(bare).is_none() {
            return Err(PoolError::InvalidName {
                name: text.chars().take(200).collect(),
            });
        }
        let hints = hints
            .split(',')
            .filter_map(|h| {
                let (pid, fd) = h.split_once(':')?;
                Some((pid.parse().ok()?, fd.parse().ok()?))
            })
            .filter(|&(pid, fd): &(u32, i32)| pid > 0 && fd >= 0)
            .take(MAX_HINTS)
            .collect();
        Ok(Locator {
            name: bare.to_string(),
            hints,
        })
    }

    /// `name@pid:fd,...`, with `first` (this process) ahead of the others.
    pub fn format(name: &str, first: (u32, i32), others: &[(u32, i32)]) -> String {
        let mut hints = vec![first];
        hints.extend(others.iter().filter(|&&h| h != first).copied());
        hints.truncate(MAX_HINTS);
        let list: Vec<String> = hints.iter().map(|(p, f)| format!("{p}:{f}")).collect();
        format!("{name}@{}", list.join(","))
    }
}

/// Creates the pool file, sized and sealed. Close-on-exec: children attach
/// through /proc, never by inheriting the fd.
pub fn create(name: &str, capacity: u64) -> Result<OwnedFd> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .map_err(|e| PoolError::os("memfd_create", e))?;
    let size = libc::off_t::try_from(capacity).map_err(|_| PoolError::InvalidCapacity {
        requested: capacity,
        reason: "larger than a file offset".into(),
    })?;
    nix::unistd::ftruncate(&fd, size).map_err(|e| PoolError::os("ftruncate", e))?;
    fcntl(
        fd.as_fd(),
        FcntlArg::F_ADD_SEALS(SIZE_SEALS | SealFlag::F_SEAL_SEAL),
    )
    .map_err(|e| PoolError::os("fcntl(F_ADD_SEALS)", e))?;
    Ok(fd)
}

/// What `/proc/<pid>/fd/<fd>` reads as when it is this pool's file.
fn link_target(name: &str) -> String {
    format!("/memfd:{name} (deleted)")
}

/// Why one member could not give us the pool.
enum Refused {
    /// Not this pool's file (gone, fd reused, another pool, foreign).
    NotIt,
    /// The process is there but /proc refuses us (another user, or not
    /// ptrace-readable, e.g. a setcap binary).
    Denied(Errno),
}

fn denied_or_not_it(e: Errno) -> Refused {
    match e {
        Errno::EACCES | Errno::EPERM => Refused::Denied(e),
        _ => Refused::NotIt,
    }
}

/// Opens the pool through one member's fd, if that fd is this pool's file:
/// the link names it, it is a regular file of ours with both size seals,
/// and its header carries the pool's magic and id. The fd is first opened
/// with `O_PATH` (no side effect whatever it turned out to be), checked,
/// and only then reopened for reading and writing through our own /proc.
fn open_member(name: &str, id: u128, pid: u32, fd: i32) -> std::result::Result<OwnedFd, Refused> {
    let path = format!("/proc/{pid}/fd/{fd}");
    let target = link_target(name);
    let link = std::fs::read_link(&path)
        .map_err(|e| denied_or_not_it(Errno::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT))))?;
    if link.as_os_str() != target.as_str() {
        return Err(Refused::NotIt);
    }
    let handle = open(
        path.as_str(),
        OFlag::O_PATH | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(denied_or_not_it)?;
    // What we hold now is what we check: the link may have changed since.
    let own_path = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let held = std::fs::read_link(&own_path).map_err(|_| Refused::NotIt)?;
    let st = fstat(&handle).map_err(|_| Refused::NotIt)?;
    let regular = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFREG;
    let ours = st.st_uid == nix::unistd::geteuid().as_raw();
    if held.as_os_str() != target.as_str() || !regular || !ours {
        return Err(Refused::NotIt);
    }
    let file = open(
        own_path.as_str(),
        OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(|_| Refused::NotIt)?;
    let seals = fcntl(file.as_fd(), FcntlArg::F_GET_SEALS).map_err(|_| Refused::NotIt)?;
    if !SealFlag::from_bits_truncate(seals).contains(SIZE_SEALS) || header_id(&file) != Some(id) {
        return Err(Refused::NotIt);
    }
    Ok(file)
}

/// The pool id in a pool file's header (read with `pread`: nothing is
/// mapped, so a short file cannot SIGBUS us), if the magic is there.
fn header_id(file: &OwnedFd) -> Option<u128> {
    let mut magic = [0u8; 8];
    let mut id = [0u8; 16];
    let id_offset = std::mem::offset_of!(SegmentHeader, pool_id) as libc::off_t;
    let magic_read = nix::sys::uio::pread(file, &mut magic, 0).ok()?;
    let id_read = nix::sys::uio::pread(file, &mut id, id_offset).ok()?;
    (magic_read == 8 && id_read == 16 && u64::from_le_bytes(magic) == MAGIC)
        .then(|| u128::from_le_bytes(id))
}

/// Members of our uid holding the pool `name`, found by scanning /proc.
fn scan_members(name: &str) -> Vec<(u32, i32)> {
    let target = link_target(name);
    let mut found = Vec::new();
    for_each_memfd(|pid, fd, link| {
        if link == target {
            found.push((pid, fd));
        }
    });
    found
}

/// A /proc entry's name as a number (a pid, an fd), if it is one.
fn numeric_name<T: std::str::FromStr>(entry: &std::fs::DirEntry) -> Option<T> {
    entry.file_name().to_str()?.parse().ok()
}

/// Calls `f(pid, fd, link)` for every fd of our uid's processes whose link
/// names an arraypool memfd. Processes we may not look into are skipped.
fn for_each_memfd(mut f: impl FnMut(u32, i32, &str)) {
    let uid = nix::unistd::geteuid().as_raw();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    let prefix = format!("/memfd:{MEMFD_PREFIX}");
    for entry in procs.flatten() {
        let Some(pid) = numeric_name::<u32>(&entry) else {
            continue;
        };
        if entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd_entry in fds.flatten() {
            let Some(fd) = numeric_name::<i32>(&fd_entry) else {
                continue;
            };
            if let Ok(link) = std::fs::read_link(fd_entry.path()) {
                if let Some(link) = link.to_str().filter(|l| l.starts_with(&prefix)) {
                    f(pid, fd, link);
                }
            }
        }
    }
}

/// Opens the pool a locator names: its hints first, then any member /proc
/// shows; a candidate that is not this pool is skipped. `SegmentNotFound`
/// when no live member of ours holds it; an `Os` error (EACCES) when some
/// process might but /proc would not let us in.
pub fn open_pool(locator: &Locator) -> Result<OwnedFd> {
    let id = id_of(&locator.name).ok_or_else(|| PoolError::InvalidName {
        name: locator.name.chars().take(200).collect(),
    })?;
    let mut denied = None;
    let mut try_members = |members: &[(u32, i32)]| {
        for &(pid, fd) in members {
            match open_member(&locator.name, id, pid, fd) {
                Ok(file) => return Some(file),
                Err(Refused::Denied(e)) => denied = Some(e),
                Err(Refused::NotIt) => {}
            }
        }
        None
    };
    let found = try_members(&locator.hints).or_else(|| try_members(&scan_members(&locator.name)));
    if let Some(file) = found {
        return Ok(file);
    }
    match denied {
        Some(errno) => Err(PoolError::os(
            "open /proc/<pid>/fd of a pool member (same user and ptrace read access needed)",
            errno,
        )),
        None => Err(PoolError::SegmentNotFound {
            name: locator.name.clone(),
        }),
    }
}

/// Every anonymous pool of our uid that some process holds, with its
/// holders (pid, fd), sorted by name. A pool listed here is alive by
/// definition: the kernel frees it with its last holder.
pub fn list_pools() -> Vec<(String, Vec<(u32, i32)>)> {
    let mut pools: std::collections::BTreeMap<String, Vec<(u32, i32)>> = Default::default();
    for_each_memfd(|pid, fd, link| {
        let name = link
            .strip_prefix("/memfd:")
            .and_then(|l| l.strip_suffix(" (deleted)"))
            .filter(|n| id_of(n).is_some());
        if let Some(name) = name {
            pools.entry(name.to_string()).or_default().push((pid, fd));
        }
    });
    pools.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_round_trip_and_reject_bad_names() {
        let name = name_of(0xabc);
        let text = Locator::format(
            &name,
            (10, 3),
            &[(11, 4), (10, 3), (12, 5), (13, 6), (14, 7)],
        );
        let parsed = Locator::parse(&text).expect("parse");
        assert_eq!(parsed.name, name);
        assert_eq!(parsed.hints, vec![(10, 3), (11, 4), (12, 5), (13, 6)]);
        assert_eq!(Locator::parse(&name).map(|l| l.hints.len()).ok(), Some(0));
        let bad_hints = Locator::parse(&format!("{name}@x:1,2:-1,3,4:5")).expect("parse");
        assert_eq!(bad_hints.hints, vec![(4, 5)]);
        for bad in [
            "arraypool-memfd-xyz",
            "arraypool-abc@1:2",
            "",
            "arraypool-memfd-",
        ] {
            assert!(Locator::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pool_file_is_sealed_and_found_in_proc() {
        let name = name_of(0x1234_5678_9abc_def0_1122_3344_5566_7788);
        let fd = create(&name, 1 << 20).expect("create");
        assert!(
            nix::unistd::ftruncate(&fd, 1 << 10).is_err(),
            "shrink is sealed"
        );
        assert!(
            nix::unistd::ftruncate(&fd, 1 << 21).is_err(),
            "grow is sealed"
        );
        let listed = list_pools();
        assert!(listed
            .iter()
            .any(|(n, holders)| *n == name && !holders.is_empty()));
        // Not a pool yet (no magic, no id): refused even through the right link.
        let me = std::process::id();
        let id = id_of(&name).expect("id");
        assert!(open_member(&name, id, me, fd.as_raw_fd()).is_err());
        let magic_and_id = |id: u128| {
            nix::sys::uio::pwrite(&fd, &MAGIC.to_le_bytes(), 0).expect("magic");
            let at = std::mem::offset_of!(SegmentHeader, pool_id) as libc::off_t;
            nix::sys::uio::pwrite(&fd, &id.to_le_bytes(), at).expect("id");
        };
        magic_and_id(id + 1);
        assert!(
            open_member(&name, id, me, fd.as_raw_fd()).is_err(),
            "another pool's id"
        );
        magic_and_id(id);
        assert!(
            open_member(&name, id, me, fd.as_raw_fd()).is_ok(),
            "this pool, as another process would"
        );
        assert!(
            open_member(&name_of(1), 1, me, fd.as_raw_fd()).is_err(),
            "another name's link"
        );
    }
}
