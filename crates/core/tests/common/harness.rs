//! Child processes for tests that must survive their children's death:
//! the test binary re-executes itself (one `#[ignore]`d entry test, chosen
//! by `--exact`), with a deadline, its output captured in files (a pipe
//! could fill up and stall a chatty child, which would then look hung).
//! Also reads words straight from a named pool's file in /dev/shm.
//!
//! Included with `#[path = "common/harness.rs"] mod harness;` so that
//! `common/mod.rs`, which other tests share, stays as it is.
#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code (101: a panic, libtest's failure code).
    Code(i32),
    /// Killed by this signal (not by us).
    Signal(i32),
    /// Still running at its deadline; we SIGKILLed it.
    Hung,
}

#[derive(Debug)]
pub struct Finished {
    pub exit: Exit,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The first stdout line containing `prefix`, from `prefix` on (libtest
    /// prints "test <name> ... " without a newline before the child's output).
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.stdout
            .lines()
            .find_map(|l| l.find(prefix).map(|at| l[at..].trim().to_string()))
    }

    /// The last `lines` lines of stderr, for failure reports.
    pub fn stderr_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

pub fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

static OUTPUT_FILES: AtomicU64 = AtomicU64::new(0);

/// A child process running this test binary's `entry` test.
pub struct Running {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
    started: Instant,
    deadline: Duration,
}

impl Running {
    /// Starts the `#[ignore]`d test `entry` of this binary in a new process
    /// with `env` added. The child is SIGKILLed if it outlives `deadline`.
    pub fn spawn(entry: &str, env: &[(&str, String)], deadline: Duration) -> Running {
        let n = OUTPUT_FILES.fetch_add(1, Relaxed);
        let base = std::env::temp_dir().join(format!(
            "arraypool-test-{}-{}-{n}",
            std::process::id(),
            entry
        ));
        let stdout = base.with_extension("out");
        let stderr = base.with_extension("err");
        let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
        cmd.args([
            "--exact",
            entry,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        // A panic's message names its location; a backtrace would only
        // slow down thousands of children.
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("child stdout file"))
        .stderr(File::create(&stderr).expect("child stderr file"));
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = cmd.spawn().expect("spawn child");
        Running {
            child: Some(child),
            stdout,
            stderr,
            started: Instant::now(),
            deadline,
        }
    }

    /// The result if the child has ended (or was just killed at its
    /// deadline); `None` while it runs. Does not block.
    pub fn poll(&mut self) -> Option<Finished> {
        let child = self.child.as_mut()?;
        let status = match child.try_wait().expect("try_wait") {
            Some(status) => status,
            None if self.started.elapsed() < self.deadline => return None,
            None => {
                let _ = child.kill();
                child.wait().expect("reap the killed child");
                self.child = None;
                return Some(self.collect(Exit::Hung));
            }
        };
        self.child = None;
        let exit = match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Code(-1),
        };
        Some(self.collect(exit))
    }

    /// Waits for the child (at most until its deadline).
    pub fn wait(mut self) -> Finished {
        loop {
            if let Some(done) = self.poll() {
                return done;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn collect(&self, exit: Exit) -> Finished {
        let read = |p: &PathBuf| {
            String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
        };
        Finished {
            exit,
            stdout: read(&self.stdout),
            stderr: read(&self.stderr),
        }
    }
}

impl Drop for Running {
    /// A child must not outlive a failed test, nor its output files.
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.stdout);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

/// The 64-bit word at `offset` of the named (/dev/shm) pool `name`, read
/// through the file: the same memory every process maps.
pub fn read_segment_word(name: &str, offset: u64) -> u64 {
    let file = File::open(format!("/dev/shm/{name}")).expect("open the segment file");
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, offset)
        .expect("read the segment file");
    u64::from_le_bytes(bytes)
}

/// splitmix64: a small, seedable generator (no dependency, reproducible
/// across platforms and crate versions).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut x = self.below(weights.iter().sum());
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}
