//! `arraypool gc` and inspection, one process: what gc removes and what it
//! refuses, the dead magic, the gc lock a joiner waits for (boundedly), and
//! inspection of a file truncated under the reader (read with pread, so a
//! short file is a reported problem, never a SIGBUS that would kill this
//! test binary). Each test targets only the files it creates.

mod common;

use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use arraypool_core::inspect::{gc_segment, GcVerdict};
use arraypool_core::segment::{DEAD_MAGIC, GC_LOCK_BYTE};
use arraypool_core::{inspect, random_name, Backing, Pool, PoolError, PoolOptions};
use nix::fcntl::{fcntl, FcntlArg};

const MIB: u64 = 1 << 20;

/// A /dev/shm file this test made; removed when dropped, whatever happened.
struct Owned(String);

impl Owned {
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/shm/{}", self.0))
    }
    fn exists(&self) -> bool {
        std::fs::symlink_metadata(self.path()).is_ok()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// A named pool whose creator is gone (as if SIGKILLed): the name stays, no
/// process holds it.
fn abandoned_pool(capacity: u64) -> Owned {
    let name = random_name().expect("name");
    let pool = Pool::create(PoolOptions {
        capacity: Some(capacity),
        name: Some(name.clone()),
        backing: Backing::Shm,
        ..Default::default()
    })
    .expect("create");
    pool.abandon();
    Owned(name)
}

fn plain_file(bytes: &[u8]) -> Owned {
    let file = Owned(random_name().expect("name"));
    std::fs::write(file.path(), bytes).expect("write");
    std::fs::set_permissions(file.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    file
}

fn verdict(name: &str, dry_run: bool) -> GcVerdict {
    gc_segment(name, dry_run).expect("gc runs").verdict
}

#[test]
fn gc_removes_an_abandoned_pool_marking_it_dead_first() {
    let pool = abandoned_pool(2 * MIB);
    assert_eq!(
        verdict(&pool.0, true),
        GcVerdict::Abandoned { processes: 1 },
        "dry run"
    );
    assert!(pool.exists(), "a dry run changes nothing");
    // Hold the file open to see what gc leaves in it.
    let held = std::fs::File::open(pool.path()).expect("open");
    let o = gc_segment(&pool.0, false).expect("gc");
    assert!(o.removed);
    assert_eq!(o.verdict, GcVerdict::Abandoned { processes: 1 });
    assert_eq!(o.size_bytes, 2 * MIB);
    assert!(!pool.exists());
    let mut magic = [0u8; 8];
    nix::sys::uio::pread(held.as_fd(), &mut magic, 0).expect("pread");
    assert_eq!(u64::from_le_bytes(magic), DEAD_MAGIC);
    assert_eq!(verdict(&pool.0, false), GcVerdict::Gone);
}

#[test]
fn gc_keeps_a_pool_with_a_live_process_and_says_how_many() {
    let pool = abandoned_pool(2 * MIB);
    let a = Pool::open(&pool.0, PoolOptions::default()).expect("join");
    let b = Pool::open(&pool.0, PoolOptions::default()).expect("join again");
    assert_eq!(verdict(&pool.0, true), GcVerdict::InUse { live: 2 });
    assert_eq!(verdict(&pool.0, false), GcVerdict::InUse { live: 2 });
    assert!(pool.exists());
    drop(a);
    drop(b);
    assert!(gc_segment(&pool.0, false).expect("gc").removed);
}

#[test]
fn gc_refuses_a_file_that_is_not_a_pool() {
    let junk = plain_file(&vec![0x5a; MIB as usize]);
    for dry_run in [true, false] {
        match verdict(&junk.0, dry_run) {
            GcVerdict::NotAPool { reason } => assert!(reason.contains("bad magic"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
    assert!(junk.exists(), "never removed");
    assert_eq!(
        std::fs::read(junk.path()).expect("read"),
        vec![0x5a; MIB as usize],
        "nor written"
    );
    // Too short to hold a header: a problem, not a removal.
    let short = plain_file(b"ARRPOOL\0 but nothing else");
    assert!(matches!(
        verdict(&short.0, false),
        GcVerdict::NotAPool { .. }
    ));
    assert!(short.exists());
}

#[test]
fn gc_refuses_a_pool_open_to_others_or_owned_by_another_uid() {
    let pool = abandoned_pool(2 * MIB);
    std::fs::set_permissions(pool.path(), std::fs::Permissions::from_mode(0o666)).expect("chmod");
    match verdict(&pool.0, false) {
        GcVerdict::Foreign { reason } => assert!(reason.contains("mode 666"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(pool.exists());
    assert!(
        matches!(inspect(&pool.0), Err(PoolError::InvalidSegment { .. })),
        "inspection refuses it unread"
    );
    std::fs::set_permissions(pool.path(), std::fs::Permissions::from_mode(0o600)).expect("chmod");
    if nix::unistd::geteuid().is_root() {
        // Root opens anything: only the owner check stands between it and
        // another user's file.
        let nobody = nix::unistd::Uid::from_raw(65534);
        nix::unistd::chown(&pool.path(), Some(nobody), None).expect("chown");
        match verdict(&pool.0, false) {
            GcVerdict::Foreign { reason } => assert!(reason.contains("uid 65534"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(pool.exists());
        assert!(matches!(
            Pool::open(&pool.0, PoolOptions::default()),
            Err(PoolError::InvalidSegment { .. })
        ));
    }
}

#[test]
fn gc_refuses_a_symbolic_link_named_like_a_pool() {
    let target = abandoned_pool(2 * MIB);
    let link = Owned(random_name().expect("name"));
    std::os::unix::fs::symlink(target.path(), link.path()).expect("symlink");
    assert!(matches!(
        verdict(&link.0, false),
        GcVerdict::NotAPool { .. }
    ));
    assert!(link.exists() && target.exists());
}

#[test]
fn an_empty_file_is_spared_while_young_and_removed_when_old() {
    let empty = plain_file(b"");
    assert!(matches!(
        verdict(&empty.0, false),
        GcVerdict::BeingCreated { .. }
    ));
    assert!(empty.exists());
    let old = SystemTime::now() - Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(empty.path())
        .and_then(|f| f.set_modified(old))
        .expect("age it");
    assert!(matches!(
        verdict(&empty.0, true),
        GcVerdict::NeverSized { age_secs } if age_secs >= 599
    ));
    assert!(empty.exists(), "a dry run changes nothing");
    assert!(gc_segment(&empty.0, false).expect("gc").removed);
    assert!(!empty.exists());
}

#[test]
fn an_absurd_modification_time_is_no_crash() {
    let empty = plain_file(b"");
    let far = libc::timespec {
        tv_sec: libc::time_t::MAX,
        tv_nsec: 0,
    };
    let path = std::ffi::CString::new(empty.path().to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path and two valid timespecs.
    let set = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), [far, far].as_ptr(), 0) };
    if set == 0 {
        assert!(matches!(
            verdict(&empty.0, false),
            GcVerdict::BeingCreated { age_secs: 0 }
        ));
    }
    assert!(empty.exists());
}

#[test]
fn a_pool_marked_dead_cannot_be_joined_and_is_removed() {
    // What a gc interrupted between marking and unlinking leaves.
    let pool = abandoned_pool(2 * MIB);
    let file = std::fs::File::options()
        .write(true)
        .open(pool.path())
        .expect("open");
    nix::sys::uio::pwrite(file.as_fd(), &DEAD_MAGIC.to_le_bytes(), 0).expect("pwrite");
    assert!(matches!(
        Pool::open(&pool.0, PoolOptions::default()),
        Err(PoolError::SegmentNotFound { .. })
    ));
    let info = inspect(&pool.0).expect("inspect");
    assert!(
        info.problem.as_deref().is_some_and(|p| p.contains("dead")),
        "{info:?}"
    );
    assert_eq!(verdict(&pool.0, true), GcVerdict::MarkedDead);
    assert!(gc_segment(&pool.0, false).expect("gc").removed);
}

#[test]
fn a_joiner_waits_for_the_gc_lock_but_not_forever() {
    let pool = abandoned_pool(2 * MIB);
    // Someone (a gc, or a hostile process) holds the gc lock exclusively.
    let holder = std::fs::File::options()
        .read(true)
        .write(true)
        .open(pool.path())
        .expect("open");
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_WRLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = GC_LOCK_BYTE as libc::off_t;
    lock.l_len = 1;
    fcntl(holder.as_fd(), FcntlArg::F_OFD_SETLK(&lock)).expect("take the gc lock");

    assert_eq!(verdict(&pool.0, true), GcVerdict::Joining);
    assert_eq!(verdict(&pool.0, false), GcVerdict::Joining);
    let started = Instant::now();
    let got = Pool::open(
        &pool.0,
        PoolOptions {
            lock_timeout: Duration::from_millis(150),
            ..Default::default()
        },
    );
    assert!(
        matches!(got, Err(PoolError::LockTimeout { .. })),
        "{:?}",
        got.err()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "waited for the lock first"
    );
    let inspected = inspect(&pool.0).expect("inspect");
    assert!(inspected.any_alive, "a held gc lock means in use");
    drop(holder);

    let joined = Pool::open(&pool.0, PoolOptions::default()).expect("join once it is free");
    assert_eq!(verdict(&pool.0, false), GcVerdict::InUse { live: 1 });
    drop(joined);
    assert!(gc_segment(&pool.0, false).expect("gc").removed);
}

#[test]
fn anonymous_pools_are_never_collected() {
    let pool = common::new_pool(4 * MIB);
    let o = gc_segment(pool.name(), false).expect("gc");
    assert_eq!(o.verdict, GcVerdict::Anonymous);
    assert!(!o.removed);
}

#[test]
fn inspection_of_a_truncated_pool_reports_it_and_never_faults() {
    let pool = abandoned_pool(2 * MIB);
    let original = std::fs::read(pool.path()).expect("read");
    let healthy = inspect(&pool.0).expect("inspect");
    assert_eq!(healthy.problem, None);
    assert_eq!(healthy.processes.len(), 1, "the dead creator");
    let set_len = |len: u64| {
        std::fs::File::options()
            .write(true)
            .open(pool.path())
            .and_then(|f| f.set_len(len))
            .expect("truncate");
    };
    for len in [0, 7, 8, 4096, 11751, 11752, 16384, MIB, 2 * MIB - 4096] {
        set_len(len);
        let info = inspect(&pool.0).expect("a truncated file is inspected, not an error");
        assert_eq!(info.size_bytes, len);
        assert!(info.problem.is_some(), "{len} bytes: {info:?}");
        assert!(matches!(
            verdict(&pool.0, false),
            GcVerdict::NotAPool { .. } | GcVerdict::BeingCreated { .. }
        ));
        assert!(pool.exists(), "gc removes no broken pool");
    }
    std::fs::write(pool.path(), &original).expect("restore");
    assert_eq!(inspect(&pool.0).expect("inspect").problem, None);

    // Now truncate and restore from another thread while inspecting: a
    // mapped read would die of SIGBUS here.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let stop = stop.clone();
        let path = pool.path();
        std::thread::spawn(move || {
            let mut seed = 7u64;
            let mut cuts = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                let len = (seed >> 33) % (2 * MIB);
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_len(len);
                    let _ = nix::sys::uio::pwrite(f.as_fd(), &original, 0);
                    cuts += 1;
                }
            }
            cuts
        })
    };
    let mut problems = 0;
    for _ in 0..2000 {
        let info = inspect(&pool.0).expect("inspect");
        problems += usize::from(info.problem.is_some());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let cuts = cutter.join().expect("cutter");
    println!("2000 inspections under {cuts} truncations: {problems} saw a problem");
    assert!(std::fs::metadata(pool.path()).expect("stat").size() > 0);
}
