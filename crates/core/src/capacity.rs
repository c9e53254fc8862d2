//! The default capacity of a new pool: half of memory (the cgroup's limit
//! when lower) for anonymous pools, half of /dev/shm for named ones.

use crate::error::Result;
use crate::layout::Geometry;
use crate::segment::{self, Backing};

pub(crate) fn default_capacity(backing: Backing) -> Result<u64> {
    let total = match backing {
        Backing::Shm => segment::shm_filesystem_bytes()?.0,
        Backing::Memfd => memory_bytes(),
    };
    Ok((total / 2).max(Geometry::min_capacity()))
}

/// Physical memory, or the cgroup's limit when it is lower (containers).
fn memory_bytes() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    let pages = sysconf(SysconfVar::_PHYS_PAGES)
        .ok()
        .flatten()
        .unwrap_or(0)
        .max(0) as u64;
    let page = sysconf(SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096)
        .max(1) as u64;
    let physical = pages.saturating_mul(page);
    match cgroup_memory_limit() {
        Some(limit) if limit < physical || physical == 0 => limit,
        _ => physical,
    }
}

/// This process's cgroup memory limit: v2 `memory.max` of its own cgroup
/// (from /proc/self/cgroup) or of the namespace root, else v1's
/// `memory.limit_in_bytes`. None when unlimited or unknown.
fn cgroup_memory_limit() -> Option<u64> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut candidates = Vec::new();
    for line in cgroups.lines() {
        // "0::/path" (v2) or "N:memory:/path" (v1).
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let Some(path) = path
            .filter(|p| !p.contains(".."))
            .map(|p| p.trim_end_matches('/'))
        else {
            continue;
        };
        match controllers {
            Some("") => candidates.push(format!("/sys/fs/cgroup{path}/memory.max")),
            Some(c) if c.split(',').any(|c| c == "memory") => {
                candidates.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"))
            }
            _ => {}
        }
    }
    candidates.push("/sys/fs/cgroup/memory.max".into());
    candidates.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    candidates
        .iter()
        .filter_map(|path| {
            std::fs::read_to_string(path)
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .min()
}
