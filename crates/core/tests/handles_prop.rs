//! Property test of handle validation: arbitrary handles (random, extreme,
//! near real blocks) are accepted exactly when they name a live block and a
//! range inside it, and are otherwise `InvalidHandle` or `StaleHandle`;
//! nothing panics and the heap stays consistent. Runs in CI (bounded cases).

mod common;

use arraypool_core::{Handle, PoolError};
use common::*;
use proptest::prelude::*;

fn near(values: Vec<u64>) -> impl Strategy<Value = u64> {
    let n = values.len();
    (0..n, -130i64..130).prop_map(move |(i, delta)| values[i].wrapping_add(delta as u64))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn only_live_blocks_and_ranges_inside_them_are_accepted(
        pick in 0usize..64,
        offset_kind in 0u8..4,
        raw_offset in any::<u64>(),
        gen_delta in -3i64..3,
        raw_generation in any::<u64>(),
        byte_offset in prop_oneof![Just(0u64), 0u64..5000, any::<u64>()],
        byte_length in prop_oneof![Just(0u64), 0u64..5000, any::<u64>()],
        near_offset in near(vec![0, 4096, 1 << 20, u64::MAX]),
    ) {
        let pool = new_pool(4 << 20);
        let mut live = Vec::new();
        let mut freed = Vec::new();
        for i in 0..16u64 {
            let b = pool.allocate(100 + i * 333, false).unwrap();
            if i % 3 == 0 { freed.push(b); } else { live.push(b); }
        }
        for b in &freed { pool.release(b.offset, b.generation).unwrap(); }
        let all: Vec<_> = live.iter().chain(freed.iter()).collect();
        let base = all[pick % all.len()];
        let offset = match offset_kind {
            0 => base.offset,
            1 => raw_offset,
            2 => near_offset,
            _ => base.offset.wrapping_add(64 * (pick as u64 % 5)),
        };
        let generation = if pick % 4 == 0 { raw_generation } else { base.generation.wrapping_add(gen_delta as u64) };
        let h = Handle { segment: pool.name().into(), offset, generation, byte_offset, byte_length };
        let other = open(&pool);
        let expected_ok = live.iter().any(|b| b.offset == offset && b.generation == generation
            && byte_offset.checked_add(byte_length).is_some_and(|end| end <= b.data_len));
        match other.attach(&h) {
            Ok(r) => {
                prop_assert!(expected_ok, "accepted {h:?}");
                other.release(r.offset, r.generation).unwrap();
            }
            Err(PoolError::InvalidHandle { .. }) | Err(PoolError::StaleHandle { .. }) => {
                prop_assert!(!expected_ok, "refused a valid handle {h:?}");
            }
            Err(e) => prop_assert!(false, "unexpected error {e:?} for {h:?}"),
        }
        prop_assert_eq!(pool.check().unwrap().violation, None);
    }
}
