//! gc against processes joining the pool it is removing, with real
//! processes: the test binary re-executes itself as joiners
//! (`child_process_entry`, chosen by ARRAYPOOL_TEST_ROLE).
//!
//! Each trial leaves an abandoned named pool (created, then dropped as if
//! its creator had been killed: `Pool::abandon`), starts joiner processes
//! that wait on stdin, releases them all at once and runs gc on the pool
//! concurrently, after a varying delay, until it removes it or every
//! joiner has answered, then once more. Whatever the interleaving, a
//! joiner that got a pool must hold the file that is still under the name
//! (a *lost pool* is a joiner whose pool gc unlinked), and a joiner that
//! lost the race must fail with `ERR_SEGMENT_NOT_FOUND`. Nothing here
//! depends on timing: the delays (and the test-only pauses inside the
//! protocol's windows, `segment::hooks`) only vary which side wins.
//!
//! `ARRAYPOOL_GC_TRIALS=500 cargo test -p arraypool-core --test gc_race -- --nocapture`
//! runs more trials (default 80) and prints the tally.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arraypool_core::inspect::gc_segment;
use arraypool_core::segment::hooks;
use arraypool_core::{Backing, Pool, PoolOptions};

const JOINERS: usize = 4;

/// The child side. Ignored when run directly; only re-execution selects it.
#[test]
#[ignore]
fn child_process_entry() {
    let Ok(role) = std::env::var("ARRAYPOOL_TEST_ROLE") else {
        return;
    };
    assert_eq!(role, "join");
    let name = std::env::var("ARRAYPOOL_TEST_POOL").expect("pool name");
    let pause: u64 = std::env::var("ARRAYPOOL_TEST_JOIN_PAUSE_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    hooks::pause_while_joining(pause);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    println!("READY");
    let _go = lines.next();
    match Pool::open(&name, PoolOptions::default()) {
        Ok(pool) => {
            let (ino, nlink) = held_file(&name);
            println!("JOINED {ino} {nlink}");
            // Stay a member until the parent has looked, then look again.
            let _check = lines.next();
            let (ino, nlink) = held_file(&name);
            println!("STILL {ino} {nlink}");
            drop(pool);
        }
        Err(e) => println!("ERR {}", e.code()),
    }
}

/// Inode and link count of the file this process holds open under `name`
/// (found through /proc/self/fd, which still shows an unlinked file).
fn held_file(name: &str) -> (u64, u64) {
    let wanted = format!("/dev/shm/{name}");
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
    {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let link = link.to_string_lossy();
        if link == wanted || link == format!("{wanted} (deleted)") {
            let meta = std::fs::metadata(entry.path()).expect("stat the held file");
            return (meta.ino(), meta.nlink());
        }
    }
    panic!("no fd of {name} in this process");
}

struct Joiner {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Spawns a joiner; its stdout lines arrive on `tx` as (index, line).
fn spawn_joiner(
    name: &str,
    index: usize,
    join_pause_us: u64,
    tx: mpsc::Sender<(usize, String)>,
) -> Joiner {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_process_entry",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ARRAYPOOL_TEST_ROLE", "join")
        .env("ARRAYPOOL_TEST_POOL", name)
        .env("ARRAYPOOL_TEST_JOIN_PAUSE_US", join_pause_us.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn joiner");
    let stdout = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            // The child's harness prints "test child_process_entry ... "
            // without a newline before the child's first line.
            for tag in ["READY", "JOINED", "STILL", "ERR"] {
                if let Some(at) = line.find(tag) {
                    let _ = tx.send((index, line[at..].trim().to_string()));
                }
            }
        }
    });
    let stdin = child.stdin.take();
    Joiner { child, stdin }
}

fn recv(rx: &mpsc::Receiver<(usize, String)>) -> (usize, String) {
    rx.recv_timeout(Duration::from_secs(60))
        .expect("a joiner answers within a minute (it hung or died)")
}

fn file_ino(name: &str) -> Option<u64> {
    std::fs::symlink_metadata(format!("/dev/shm/{name}"))
        .ok()
        .map(|m| m.ino())
}

/// A small deterministic generator for the delays (no dependency needed).
fn next(seed: &mut u64) -> u64 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    *seed >> 33
}

#[derive(Default, Debug)]
struct Tally {
    trials: usize,
    gc_won: usize,
    joiners_won: usize,
    gc_saw_joining: usize,
    gc_saw_in_use: usize,
    joined: usize,
    not_found: usize,
    lost: usize,
}

#[test]
fn gc_never_removes_a_pool_a_process_is_joining() {
    let trials: usize = std::env::var("ARRAYPOOL_GC_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let mut seed = 0x5eed_u64 ^ std::process::id() as u64;
    let mut tally = Tally::default();
    for trial in 0..trials {
        let name = format!("arraypool-gcrace-{}-{trial}", std::process::id());
        let creator = Pool::create(PoolOptions {
            capacity: Some(1 << 20),
            name: Some(name.clone()),
            backing: Backing::Shm,
            ..Default::default()
        })
        .expect("create");
        // As if SIGKILLed: the name stays, no process holds the pool.
        creator.abandon();
        let pool_ino = file_ino(&name).expect("the abandoned pool is there");

        // A quarter of the trials each: natural timing, a slow joiner, a
        // slow gc, both slow (pauses of 0-2 ms inside the protocol's windows).
        let join_pause = if trial % 4 == 1 || trial % 4 == 3 {
            next(&mut seed) % 2000
        } else {
            0
        };
        let gc_pause = if trial % 4 >= 2 {
            next(&mut seed) % 2000
        } else {
            0
        };
        hooks::pause_before_removing(gc_pause);
        let (tx, rx) = mpsc::channel();
        let mut joiners: Vec<Joiner> = (0..JOINERS)
            .map(|i| spawn_joiner(&name, i, join_pause, tx.clone()))
            .collect();
        for _ in 0..JOINERS {
            assert!(recv(&rx).1.starts_with("READY"));
        }
        let delay = Duration::from_micros(next(&mut seed) % 1500);
        for j in &mut joiners {
            let stdin = j.stdin.as_mut().expect("stdin");
            stdin.write_all(b"go\n").expect("go");
            stdin.flush().expect("flush");
        }
        let start = Instant::now();
        while start.elapsed() < delay {
            std::hint::spin_loop();
        }
        // gc until it removes the pool or every joiner has answered; then
        // once more, with every joiner that joined still a member.
        let mut answers: Vec<Option<String>> = vec![None; JOINERS];
        let mut gc_removed = false;
        let mut verdicts = Vec::new();
        loop {
            let everyone_answered = answers.iter().all(Option::is_some);
            let o = gc_segment(&name, false).expect("gc runs");
            verdicts.push(o.verdict.kind());
            if o.removed {
                gc_removed = true;
            }
            while let Ok((i, line)) = rx.try_recv() {
                answers[i] = Some(line);
            }
            if gc_removed || everyone_answered {
                break;
            }
        }
        while answers.iter().any(Option::is_none) {
            let (i, line) = recv(&rx);
            answers[i] = Some(line);
        }
        let now = file_ino(&name);
        for (i, answer) in answers.iter().enumerate() {
            let answer = answer.as_deref().unwrap_or_default();
            if let Some(rest) = answer.strip_prefix("JOINED ") {
                tally.joined += 1;
                let ino: u64 = rest
                    .split(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("inode");
                assert_eq!(ino, pool_ino, "joiner {i} joined the abandoned pool");
                if now != Some(ino) {
                    tally.lost += 1;
                    eprintln!(
                        "trial {trial}: LOST POOL: joiner {i} holds inode {ino}, the name now {now:?}; gc said {verdicts:?}"
                    );
                }
            } else {
                assert_eq!(
                    answer, "ERR ERR_SEGMENT_NOT_FOUND",
                    "trial {trial}: joiner {i} failed otherwise than gc winning (gc said {verdicts:?})"
                );
                assert!(
                    gc_removed,
                    "trial {trial}: not found, yet gc removed nothing"
                );
                tally.not_found += 1;
            }
        }
        // The members confirm from inside that their file is still linked.
        for j in &mut joiners {
            if let Some(mut stdin) = j.stdin.take() {
                let _ = stdin.write_all(b"check\n");
            }
        }
        let members = answers
            .iter()
            .filter(|a| a.as_deref().is_some_and(|a| a.starts_with("JOINED")))
            .count();
        for _ in 0..members {
            let (i, line) = recv(&rx);
            let nlink: u64 = line
                .rsplit(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .expect("nlink");
            if nlink == 0 {
                tally.lost += 1;
                eprintln!("trial {trial}: joiner {i} holds an unlinked pool");
            }
        }
        for j in &mut joiners {
            j.child.wait().expect("reap joiner");
        }
        tally.trials += 1;
        if gc_removed {
            // Members here were counted as lost above.
            tally.gc_won += 1;
        } else {
            tally.joiners_won += 1;
            // The members have left: now it is abandoned again, and gc
            // (which must not have removed it while they were members) does.
            assert!(
                gc_segment(&name, false).expect("gc").removed,
                "trial {trial}: the pool is abandoned again once its joiners exit"
            );
        }
        hooks::pause_before_removing(0);
        if verdicts.contains(&"joining") {
            tally.gc_saw_joining += 1;
        }
        if verdicts.contains(&"in-use") {
            tally.gc_saw_in_use += 1;
        }
        assert_eq!(file_ino(&name), None, "trial {trial} cleaned up");
    }
    println!("gc vs joiners: {tally:?}");
    assert_eq!(tally.lost, 0, "lost pools: {tally:?}");
}
