//! Property test: random sequences of allocate / attach / retain / release /
//! abandon+reap over two or three "processes" (Pool objects on one segment),
//! compared with a simple model; `check()` runs after every step.

mod common;

use arraypool_core::{BlockRef, Handle, Pool, PoolError};
use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Allocate {
        process: usize,
        len: u64,
        transfer_required: bool,
    },
    Attach {
        process: usize,
        pick: usize,
    },
    Release {
        process: usize,
        pick: usize,
    },
    AttachFreed {
        process: usize,
        pick: usize,
    },
    Crash {
        process: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, prop_oneof![0..200u64, 0..70_000u64, 0..600_000u64], any::<bool>())
            .prop_map(|(process, len, transfer_required)| Op::Allocate { process, len, transfer_required }),
        3 => (0..3usize, any::<usize>()).prop_map(|(process, pick)| Op::Attach { process, pick }),
        4 => (0..3usize, any::<usize>()).prop_map(|(process, pick)| Op::Release { process, pick }),
        1 => (0..3usize, any::<usize>()).prop_map(|(process, pick)| Op::AttachFreed { process, pick }),
        1 => (1..3usize).prop_map(|process| Op::Crash { process }),
    ]
}

/// The model of one block: who holds how many references, and the rule.
#[derive(Debug)]
struct ModelBlock {
    handle: Handle,
    refs: [u64; 3],
    transfer_required: bool,
    transferred: bool,
    fill: u8,
}

impl ModelBlock {
    fn alive(&self) -> bool {
        self.refs.iter().any(|&r| r > 0) || (self.transfer_required && !self.transferred)
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let creator = new_pool(8 << 20);
    let mut procs: Vec<Option<Pool>> = vec![None, Some(open(&creator)), Some(open(&creator))];
    let pool = |procs: &Vec<Option<Pool>>, i: usize| -> *const Pool {
        if i == 0 {
            &creator as *const Pool
        } else {
            procs[i].as_ref().unwrap() as *const Pool
        }
    };
    let mut blocks: Vec<ModelBlock> = Vec::new();
    let mut freed: Vec<Handle> = Vec::new();
    let mut fill = 0u8;
    for op in ops {
        match op {
            Op::Allocate {
                process,
                len,
                transfer_required,
            } => {
                // SAFETY: the pointer comes from `creator` or `procs`, alive here.
                let p = unsafe { &*pool(&procs, process) };
                match p.allocate(len, transfer_required) {
                    Ok(b) => {
                        fill = fill.wrapping_add(1);
                        common::fill(p, &b, fill);
                        let mut refs = [0; 3];
                        refs[process] = 1;
                        blocks.push(ModelBlock {
                            handle: handle(p, &b),
                            refs,
                            transfer_required,
                            transferred: false,
                            fill,
                        });
                    }
                    Err(PoolError::PoolFull { .. }) => {}
                    Err(e) => prop_assert!(false, "allocate: {e:?}"),
                }
            }
            Op::Attach { process, pick } if !blocks.is_empty() => {
                let i = pick % blocks.len();
                let p = unsafe { &*pool(&procs, process) };
                let b: BlockRef = p
                    .attach(&blocks[i].handle)
                    .map_err(|e| TestCaseError::fail(format!("attach: {e:?}")))?;
                let bytes = data(p, &b);
                prop_assert!(
                    bytes.iter().all(|&x| x == blocks[i].fill),
                    "attached data differs"
                );
                blocks[i].refs[process] += 1;
                blocks[i].transferred = true;
            }
            Op::Release { process, pick } => {
                let held: Vec<usize> = (0..blocks.len())
                    .filter(|&i| blocks[i].refs[process] > 0)
                    .collect();
                if held.is_empty() {
                    continue;
                }
                let i = held[pick % held.len()];
                let p = unsafe { &*pool(&procs, process) };
                p.release(blocks[i].handle.offset, blocks[i].handle.generation)
                    .map_err(|e| TestCaseError::fail(format!("release: {e:?}")))?;
                blocks[i].refs[process] -= 1;
            }
            Op::AttachFreed { process, pick } if !freed.is_empty() => {
                let p = unsafe { &*pool(&procs, process) };
                let h = &freed[pick % freed.len()];
                prop_assert!(
                    matches!(p.attach(h), Err(PoolError::StaleHandle { .. })),
                    "freed handle attached"
                );
            }
            Op::Crash { process } => {
                if let Some(p) = procs[process].take() {
                    p.abandon();
                }
                creator
                    .reap()
                    .map_err(|e| TestCaseError::fail(format!("reap: {e:?}")))?;
                for b in blocks.iter_mut() {
                    if b.refs[process] > 0 {
                        b.refs[process] = 0;
                        // Died holding it: freed unless someone else holds it.
                        b.transfer_required = false;
                    }
                }
                procs[process] = Some(open(&creator));
            }
            _ => {}
        }
        let (alive, dead): (Vec<_>, Vec<_>) = blocks.drain(..).partition(|b| b.alive());
        freed.extend(dead.into_iter().map(|b| b.handle));
        blocks = alive;
        let report = creator
            .check()
            .map_err(|e| TestCaseError::fail(format!("check: {e:?}")))?;
        prop_assert_eq!(report.violation, None);
        let stats = creator.stats().unwrap();
        prop_assert_eq!(stats.live_blocks, blocks.len() as u64);
        let in_flight = blocks
            .iter()
            .filter(|b| b.refs.iter().all(|&r| r == 0))
            .count() as u64;
        prop_assert_eq!(stats.in_flight_blocks, in_flight);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn random_operations_match_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
