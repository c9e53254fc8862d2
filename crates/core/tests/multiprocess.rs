//! Real processes: the test binary re-executes itself as a child
//! (`child_process_entry`, chosen by the ARRAYPOOL_TEST_ROLE variable) and
//! the children talk to the parent through their stdout.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use arraypool_core::{memfd, testing, Backing, Handle, Pool, PoolOptions};
use common::*;

const MIB: u64 = 1 << 20;

fn spawn_child(role: &str, pool: &str, extra: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ARRAYPOOL_TEST_ROLE", role)
        .env("ARRAYPOOL_TEST_POOL", pool)
        .env("ARRAYPOOL_TEST_EXTRA", extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Reads the child's stdout until a line starting with `prefix`.
fn wait_for_line(child: &mut Child, prefix: &str) -> String {
    let out = child.stdout.as_mut().expect("piped stdout");
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("read child stdout");
        assert!(
            n > 0,
            "child exited before printing {prefix:?}; it printed:\n{seen}"
        );
        seen.push_str(&line);
        // The child's test harness prints "test child_process_entry ... "
        // without a newline before the child's first line.
        if let Some(at) = line.find(prefix) {
            return line[at..].trim().to_string();
        }
    }
}

fn kill(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    child.wait().expect("reap child");
}

fn encode(h: &Handle) -> String {
    format!("{}:{}:{}", h.offset, h.generation, h.byte_length)
}

fn decode(pool: &str, s: &str) -> Handle {
    let f: Vec<u64> = s.split(':').map(|x| x.parse().expect("number")).collect();
    Handle {
        segment: pool.into(),
        offset: f[0],
        generation: f[1],
        byte_offset: 0,
        byte_length: f[2],
    }
}

/// The child side. Ignored when run directly; only re-execution selects it.
#[test]
#[ignore]
fn child_process_entry() {
    let Ok(role) = std::env::var("ARRAYPOOL_TEST_ROLE") else {
        return;
    };
    let name = std::env::var("ARRAYPOOL_TEST_POOL").expect("pool name");
    let extra = std::env::var("ARRAYPOOL_TEST_EXTRA").unwrap_or_default();
    if role == "create" || role == "create-shm" {
        let backing = if role == "create-shm" {
            Backing::Shm
        } else {
            Backing::Memfd
        };
        let pool = Pool::create(PoolOptions {
            capacity: Some(8 * MIB),
            backing,
            ..Default::default()
        })
        .expect("create");
        pool.allocate(1000, false).expect("allocate");
        println!("CREATED {}", pool.name());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let pool = Pool::open(&name, PoolOptions::default()).expect("child opens pool");
    match role.as_str() {
        // Allocates/frees its own blocks and attaches the parent's, checking contents.
        "churn" => {
            let shared: Vec<Handle> = extra.split(',').map(|s| decode(&name, s)).collect();
            let mut seed = std::process::id() as u64;
            for i in 0..3000u64 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let len = (seed >> 33) % 20_000;
                let b = pool.allocate(len, i % 2 == 0).expect("allocate");
                fill(&pool, &b, (i % 251) as u8);
                let h = &shared[(seed as usize >> 7) % shared.len()];
                let a = pool.attach(h).expect("attach parent's block");
                let expected = (h.offset / 64 % 256) as u8;
                assert!(
                    data(&pool, &a).iter().all(|&x| x == expected),
                    "parent's data corrupted"
                );
                assert!(
                    data(&pool, &b).iter().all(|&x| x == (i % 251) as u8),
                    "own data corrupted"
                );
                pool.release(a.offset, a.generation)
                    .expect("release attached");
                if i % 2 == 0 {
                    // transfer required: attach once more (as a receiver would) so it frees.
                    let again = pool.attach(&handle(&pool, &b)).expect("self attach");
                    pool.release(again.offset, again.generation)
                        .expect("release");
                }
                pool.release(b.offset, b.generation).expect("release own");
            }
            println!("DONE");
        }
        // Takes the lock inside an allocation and sleeps there until killed.
        "hold-lock" => {
            testing::pause_inside_allocation(600_000);
            println!("ALLOCATING");
            let _ = pool.allocate(1000, false);
            println!("UNREACHABLE");
        }
        // Holds references (its own and the parent's) until killed.
        "hold-refs" => {
            let shared: Vec<Handle> = extra.split(',').map(|s| decode(&name, s)).collect();
            let mut held = Vec::new();
            for h in &shared {
                held.push(pool.attach(h).expect("attach"));
            }
            for i in 0..100u64 {
                held.push(pool.allocate(1000 + i * 100, i % 2 == 0).expect("allocate"));
            }
            println!("HOLDING {}", held.len());
            std::thread::sleep(Duration::from_secs(600));
        }
        // Frees small blocks into its cache (one handle of a freed one
        // printed), keeps one block, and waits to be killed.
        "cache-and-hold" => {
            let kept = pool.allocate(2000, false).expect("allocate");
            let mut stale = None;
            for len in [100u64, 1000, 5000, 30_000] {
                let b = pool.allocate(len, false).expect("allocate");
                fill(&pool, &b, 0x5c);
                stale.get_or_insert(handle(&pool, &b));
                pool.release(b.offset, b.generation).expect("release");
            }
            let (bytes, blocks) = pool.cached();
            let stale = stale.expect("a freed block");
            println!("CACHED {bytes} {blocks} {} {}", kept.offset, encode(&stale));
            std::thread::sleep(Duration::from_secs(600));
        }
        // Makes a result, drops it and exits: the parent must still get it.
        "result" => {
            let b = pool.allocate(4096, true).expect("allocate");
            fill(&pool, &b, 77);
            let h = handle(&pool, &b);
            pool.release(b.offset, b.generation).expect("release");
            drop(pool);
            println!("RESULT {}", encode(&h));
        }
        // Keeps an attachment (and uses it) until killed.
        "stay" => {
            let b = pool.allocate(100, false).expect("allocate");
            println!("STAYING {}", b.offset);
            std::thread::sleep(Duration::from_secs(600));
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn two_processes_allocate_attach_and_free_concurrently() {
    let parent = new_pool(256 * MIB);
    let shared: Vec<_> = (0..8)
        .map(|i| {
            let b = parent.allocate(5000 + i * 1000, false).unwrap();
            fill(&parent, &b, (b.offset / 64 % 256) as u8);
            b
        })
        .collect();
    let baseline = parent.stats().unwrap().used_bytes;
    let list: Vec<String> = shared.iter().map(|b| encode(&handle(&parent, b))).collect();
    let mut children: Vec<Child> = (0..2)
        .map(|_| spawn_child("churn", parent.name(), &list.join(",")))
        .collect();
    for c in children.iter_mut() {
        wait_for_line(c, "DONE");
        assert!(c.wait().unwrap().success());
    }
    assert_consistent(&parent);
    let s = parent.stats().unwrap();
    assert_eq!(
        s.used_bytes, baseline,
        "every block the children made was freed"
    );
    assert_eq!(s.in_flight_blocks, 0);
}

#[test]
fn lock_holder_killed_inside_critical_section_is_taken_over() {
    let parent = new_pool(16 * MIB);
    let before = parent.stats().unwrap();
    let mut child = spawn_child("hold-lock", parent.name(), "");
    wait_for_line(&mut child, "ALLOCATING");
    // Wait (bounded) until the child really holds the lock mid-transaction.
    let deadline = Instant::now() + Duration::from_secs(30);
    while parent.lock_owner().is_none() {
        assert!(Instant::now() < deadline, "child never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    kill(&mut child);
    let killed_at = Instant::now();
    let b = parent
        .allocate(1000, false)
        .expect("the lock is taken over, not waited for forever");
    let recovery = killed_at.elapsed();
    println!(
        "lock takeover after owner death: {:.1} ms",
        recovery.as_secs_f64() * 1e3
    );
    assert_consistent(&parent);
    let s = parent.stats().unwrap();
    assert_eq!(s.lock_takeovers, 1);
    assert_eq!(
        s.live_blocks,
        before.live_blocks + 1,
        "the dead child's half allocation was undone"
    );
    assert_eq!(s.processes, 1, "the dead child was reaped on takeover");
    parent.release(b.offset, b.generation).unwrap();
}

#[test]
fn reference_holder_killed_then_reap_returns_to_baseline() {
    let parent = new_pool(64 * MIB);
    let mine: Vec<_> = (0..10)
        .map(|i| {
            let b = parent.allocate(3000 + i, false).unwrap();
            fill(&parent, &b, 200 + i as u8);
            b
        })
        .collect();
    let baseline = parent.stats().unwrap().used_bytes;
    let list: Vec<String> = mine
        .iter()
        .take(5)
        .map(|b| encode(&handle(&parent, b)))
        .collect();
    let mut child = spawn_child("hold-refs", parent.name(), &list.join(","));
    assert_eq!(wait_for_line(&mut child, "HOLDING"), "HOLDING 105");
    assert!(parent.stats().unwrap().used_bytes > baseline);
    kill(&mut child);
    let report = parent.reap().unwrap();
    assert_eq!(
        (report.processes, report.references, report.blocks_freed),
        (1, 105, 100)
    );
    assert_eq!(parent.stats().unwrap().used_bytes, baseline);
    for (i, b) in mine.iter().enumerate() {
        assert!(
            data(&parent, b).iter().all(|&x| x == 200 + i as u8),
            "parent's block {i} intact"
        );
    }
    assert_consistent(&parent);
}

#[test]
fn a_process_killed_with_cached_blocks_is_reaped_back_to_zero() {
    let parent = new_pool(64 * MIB);
    let mut child = spawn_child("cache-and-hold", parent.name(), "");
    let line = wait_for_line(&mut child, "CACHED");
    let f: Vec<&str> = line.split(' ').collect();
    let (bytes, blocks): (u64, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
    let sizes = [100u64, 1000, 5000, 30_000].map(|len| (len + 64).div_ceil(64) * 64);
    assert_eq!((bytes, blocks), (sizes.iter().sum(), 4));
    // Seen from here: cached apart from used, listed as cached, clean.
    let s = parent.stats().unwrap();
    assert_eq!(
        (s.used_bytes, s.live_blocks, s.cached_bytes, s.cached_blocks),
        (2048 + 64, 1, bytes, 4)
    );
    let listed = parent.blocks(10).unwrap();
    assert_eq!((listed.total, listed.cached), (5, 4));
    assert_consistent(&parent);
    // A handle to a freed (cached) block is stale here too.
    let stale = decode(parent.name(), f[4]);
    assert_eq!(
        parent.attach(&stale).unwrap_err().code(),
        "ERR_STALE_HANDLE"
    );
    kill(&mut child);
    let report = parent.reap().unwrap();
    assert_eq!(
        (report.processes, report.references, report.blocks_freed),
        (1, 5, 5),
        "its block and its 4 cached ones"
    );
    let s = parent.stats().unwrap();
    assert_eq!(
        (s.used_bytes, s.live_blocks, s.cached_bytes, s.cached_blocks),
        (0, 0, 0, 0)
    );
    assert_eq!(parent.blocks(10).unwrap().total, 0);
    assert_consistent(&parent);
}

#[test]
fn a_result_survives_its_exited_creator() {
    let parent = new_pool(16 * MIB);
    let mut child = spawn_child("result", parent.name(), "");
    let line = wait_for_line(&mut child, "RESULT ");
    assert!(child.wait().unwrap().success());
    let h = decode(parent.name(), line.trim_start_matches("RESULT "));
    let got = parent
        .attach(&h)
        .expect("the in-flight result is still there");
    assert!(data(&parent, &got).iter().all(|&x| x == 77));
    parent.release(got.offset, got.generation).unwrap();
    assert_eq!(parent.stats().unwrap().live_blocks, 0);
    assert!(matches!(
        parent.attach(&h),
        Err(arraypool_core::PoolError::StaleHandle { .. })
    ));
}

#[test]
fn no_space_instead_of_sigbus_on_a_small_tmpfs() {
    // A private mount namespace with an 8 MiB tmpfs on /dev/shm; needs
    // root (CI and the dev machines run as root).
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args([
            "-m",
            "--",
            "sh",
            "-c",
            "mount -t tmpfs -o size=8m tmpfs /dev/shm && exec \"$0\" \"$@\"",
        ])
        .arg(&exe)
        .args(["--exact", "small_tmpfs_child", "--ignored", "--nocapture"])
        .env("ARRAYPOOL_TEST_SMALL_TMPFS", "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("NO_SPACE_OK"), "{stdout}");
    assert!(stdout.contains("MEMFD_OK"), "{stdout}");
}

#[test]
#[ignore]
fn small_tmpfs_child() {
    if std::env::var("ARRAYPOOL_TEST_SMALL_TMPFS").is_err() {
        return;
    }
    let (total, _) = arraypool_core::shm_filesystem_bytes().unwrap();
    assert_eq!(total, 8 * MIB, "runs inside its own 8 MiB tmpfs");
    // An anonymous pool is not bounded by /dev/shm: 64 MiB in an 8 MiB tmpfs.
    let anonymous = new_pool(64 * MIB);
    let big = anonymous
        .allocate(32 * MIB, false)
        .expect("memfd pool beyond /dev/shm's size");
    fill(&anonymous, &big, 7);
    anonymous.release(big.offset, big.generation).unwrap();
    println!("MEMFD_OK");
    let pool = new_shm_pool(8 * MIB);
    // Someone else fills most of the tmpfs.
    let filler = "/dev/shm/filler";
    std::fs::write(filler, vec![1u8; 5 * MIB as usize]).unwrap();
    match pool.allocate(4 * MIB, false) {
        Err(arraypool_core::PoolError::NoSpace { .. }) => {}
        other => panic!("expected NoSpace, got {other:?}"),
    }
    let small = pool
        .allocate(256 * 1024, false)
        .expect("smaller requests still served");
    fill(&pool, &small, 1);
    assert_consistent(&pool);
    pool.release(small.offset, small.generation).unwrap();
    println!("NO_SPACE_OK");
}

#[test]
fn gc_removes_a_segment_only_once_all_its_processes_are_dead() {
    let mine = new_shm_pool(4 * MIB);
    assert!(
        !arraypool_core::remove_if_abandoned(mine.name()).unwrap(),
        "never a live pool"
    );

    let mut creator = spawn_child("create-shm", "", "");
    let line = wait_for_line(&mut creator, "CREATED ");
    let name = line.trim_start_matches("CREATED ").to_string();
    let mut attached = spawn_child("stay", &name, "");
    wait_for_line(&mut attached, "STAYING");

    kill(&mut creator);
    assert!(
        segment_exists(&name),
        "a SIGKILLed creator leaves its name behind"
    );
    let info = arraypool_core::inspect(&name).unwrap();
    assert_eq!(info.problem, None);
    assert_eq!(info.processes.len(), 2);
    assert_eq!(info.processes.iter().filter(|p| p.alive).count(), 1);
    assert!(
        !arraypool_core::remove_if_abandoned(&name).unwrap(),
        "the attached child lives"
    );
    assert!(segment_exists(&name));

    kill(&mut attached);
    let info = arraypool_core::inspect(&name).unwrap();
    assert!(!info.any_alive);
    assert_eq!(
        info.live_blocks, 2,
        "the dead processes' blocks are still recorded"
    );
    assert!(arraypool_core::remove_if_abandoned(&name).unwrap());
    assert!(!segment_exists(&name));
}

#[test]
fn a_dead_peer_is_reaped_by_the_allocation_path_on_its_own() {
    let parent = new_pool(16 * MIB);
    let mut child = spawn_child(
        "hold-refs",
        parent.name(),
        &encode(&handle(&parent, &parent.allocate(64, false).unwrap())),
    );
    wait_for_line(&mut child, "HOLDING");
    kill(&mut child);
    // No explicit reap: allocations sweep for dead peers at least once a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    while parent.stats().unwrap().processes > 1 || parent.stats().unwrap().live_blocks > 1 {
        let b = parent.allocate(64, false).unwrap();
        parent.release(b.offset, b.generation).unwrap();
        assert!(Instant::now() < deadline, "never swept");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_consistent(&parent);
}

#[test]
fn an_anonymous_pool_lives_while_a_member_lives_and_is_gone_with_the_last() {
    let mut creator = spawn_child("create", "", "");
    let line = wait_for_line(&mut creator, "CREATED ");
    let name = line.trim_start_matches("CREATED ").to_string();
    assert!(memfd::is_memfd_name(&name), "{name}");
    assert!(!segment_exists(&name), "nothing in /dev/shm");
    // Attach by name alone (no hint): found through /proc.
    let mut attached = spawn_child("stay", &name, "");
    wait_for_line(&mut attached, "STAYING");
    let held = |n: &str| memfd::list_pools().iter().any(|(p, _)| p == n);
    assert!(held(&name));

    kill(&mut creator);
    // The creator is gone: a newcomer still attaches through the survivor,
    // also when its locator's only hint is the dead creator.
    let dead_hint = format!("{name}@{}:3", creator.id());
    let late =
        Pool::open(&dead_hint, PoolOptions::default()).expect("attach after the creator died");
    let info = arraypool_core::inspect(&name).expect("inspect through /proc");
    assert_eq!(
        info.processes.iter().filter(|p| p.alive).count(),
        2,
        "the survivor and this process: {info:?}"
    );
    late.close().unwrap();
    drop(late);

    kill(&mut attached);
    assert!(
        !held(&name),
        "the kernel freed the pool with its last member"
    );
    assert!(matches!(
        Pool::open(&name, PoolOptions::default()),
        Err(arraypool_core::PoolError::SegmentNotFound { .. })
    ));
}

#[test]
fn a_forged_or_foreign_memfd_locator_is_refused() {
    let pool = new_pool(4 * MIB);
    // Same pid and fd, another id: the link does not name that pool.
    let other = memfd::name_of(0xfeed);
    let forged = format!("{other}@{}:{}", std::process::id(), 0);
    assert!(matches!(
        Pool::open(&forged, PoolOptions::default()),
        Err(arraypool_core::PoolError::SegmentNotFound { .. })
    ));
    // A shm name that claims the anonymous prefix is refused at creation.
    let err = Pool::create(PoolOptions {
        capacity: Some(4 * MIB),
        name: Some(memfd::name_of(7)),
        backing: Backing::Shm,
        ..Default::default()
    });
    assert!(matches!(
        err,
        Err(arraypool_core::PoolError::InvalidName { .. })
    ));
    let locator = pool.locator(None);
    assert!(locator.starts_with(&format!("{}@{}:", pool.name(), std::process::id())));
    let again = Pool::open(&locator, PoolOptions::default()).expect("open by locator");
    again.close().unwrap();
}
