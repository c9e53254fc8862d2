//! The compact handle form (format 2), read on the fast path of reviving:
//! `2:segment:offset:generation:byteOffset:byteLength:dtype:d0,d1,...`
//! (src/handle.ts writes it; README, "Handles").
//!
//! This reader accepts a subset of what the JS reader (`parseHandle`) and
//! Python's `parse_handle` accept: the one spelling of a handle naming the
//! given pool, with every field checked as they check it. Anything else,
//! every malformed string included, is `None`, and the caller then reads the
//! string the slow way, which gives the error its message. Reading a handle
//! here never takes a decision the other readers would not.

use crate::handle::BlockRange;

/// The dtypes a handle may name, with their element sizes, in the order of
/// `DTYPES` in src/dtypes.ts (the index is what crosses to JS).
pub const COMPACT_DTYPES: [(&str, u64); 12] = [
    ("int8", 1),
    ("uint8", 1),
    ("uint8clamped", 1),
    ("int16", 2),
    ("uint16", 2),
    ("int32", 4),
    ("uint32", 4),
    ("float32", 4),
    ("float64", 8),
    ("bigint64", 8),
    ("biguint64", 8),
    ("buffer", 1),
];

/// Most dimensions a shape may have (src/handle.ts `MAX_DIMS`).
pub const MAX_DIMS: usize = 32;

/// The longest compact string read (src/handle.ts `MAX_COMPACT_LENGTH`).
pub const MAX_COMPACT_LEN: usize = 1024;

/// Longest segment a handle may spell (printable ASCII, as JS checks it).
const MAX_SEGMENT_LEN: usize = 200;

/// Number.MAX_SAFE_INTEGER: every number of a handle is a safe integer.
const MAX_SAFE: u64 = (1 << 53) - 1;

/// A compact handle's fields, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactHandle {
    pub range: BlockRange,
    /// Index into `COMPACT_DTYPES`.
    pub dtype: usize,
    /// The first `ndims` entries are the shape.
    pub dims: [u64; MAX_DIMS],
    pub ndims: usize,
}

impl CompactHandle {
    pub fn shape(&self) -> &[u64] {
        &self.dims[..self.ndims]
    }
}

/// The segment a compact string names (its second field), when it starts
/// as a compact handle does: how the caller finds the pool before
/// `parse_compact` reads the rest. Checks nothing else.
pub fn compact_segment(text: &[u8]) -> Option<&[u8]> {
    let rest = text.strip_prefix(b"2:")?;
    let end = rest.iter().position(|&b| b == b':')?;
    rest.get(..end)
}

/// Reads `text` as a compact handle naming the pool `segment`; `None` for
/// anything the JS reader would refuse, and for a handle naming another
/// segment (or spelling this one otherwise).
pub fn parse_compact(text: &[u8], segment: &str) -> Option<CompactHandle> {
    if text.len() > MAX_COMPACT_LEN || !is_handle_segment(segment) {
        return None;
    }
    // Eight fields: the shape is the rest, and may not hold another ':'.
    let mut fields = text.splitn(8, |&b| b == b':');
    if fields.next()? != b"2" || fields.next()? != segment.as_bytes() {
        return None;
    }
    let offset = decimal(fields.next()?)?;
    let generation = decimal(fields.next()?)?;
    let byte_offset = decimal(fields.next()?)?;
    let byte_length = decimal(fields.next()?)?;
    let dtype_name = fields.next()?;
    let dtype = COMPACT_DTYPES
        .iter()
        .position(|(name, _)| name.as_bytes() == dtype_name)?;
    let shape = fields.next()?;
    if shape.contains(&b':') {
        return None;
    }
    let mut dims = [0u64; MAX_DIMS];
    let mut ndims = 0;
    // The product of the non-zero dimensions must stay a safe integer (a
    // zero makes the count 0 but does not excuse the others), as in JS.
    let mut product: u64 = 1;
    let mut zero = false;
    for field in shape.split(|&b| b == b',') {
        let dim = decimal(field)?;
        *dims.get_mut(ndims)? = dim;
        ndims += 1;
        if dim == 0 {
            zero = true;
        } else {
            product = product.checked_mul(dim).filter(|&p| p <= MAX_SAFE)?;
        }
    }
    let count = if zero { 0 } else { product };
    let (_, element) = COMPACT_DTYPES[dtype];
    // No overflow: count <= 2^53 - 1 and an element is at most 8 bytes.
    if count * element != byte_length || byte_offset % element != 0 {
        return None;
    }
    Some(CompactHandle {
        range: BlockRange {
            offset,
            generation,
            byte_offset,
            byte_length,
        },
        dtype,
        dims,
        ndims,
    })
}

/// A segment as a handle may spell it (JS: `/^[\x20-\x7e]{0,200}$/`).
fn is_handle_segment(segment: &str) -> bool {
    segment.len() <= MAX_SEGMENT_LEN && segment.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// A field's number: plain decimal digits, no sign, no leading zero, at most
/// 16 of them, a safe integer (JS `decimalAt` and `isIndex`).
fn decimal(field: &[u8]) -> Option<u64> {
    if field.is_empty() || field.len() > 16 || (field.len() > 1 && field[0] == b'0') {
        return None;
    }
    let mut value: u64 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        // No overflow: 16 digits are below 10^16 < 2^64.
        value = value * 10 + u64::from(b - b'0');
    }
    (value <= MAX_SAFE).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: &str = "arraypool-memfd-0123abcd";

    fn parse(text: &str) -> Option<CompactHandle> {
        parse_compact(text.as_bytes(), POOL)
    }

    #[test]
    fn a_handle_of_the_pool_is_read_field_by_field() {
        let h = parse(&format!("2:{POOL}:4096:7:16:96:float64:3,4")).expect("a good handle");
        assert_eq!(
            h.range,
            BlockRange {
                offset: 4096,
                generation: 7,
                byte_offset: 16,
                byte_length: 96
            }
        );
        assert_eq!(COMPACT_DTYPES[h.dtype].0, "float64");
        assert_eq!(h.shape(), &[3, 4]);
        let zero = parse(&format!("2:{POOL}:0:0:0:0:uint8:0,5")).expect("a zero dimension");
        assert_eq!(zero.shape(), &[0, 5]);
    }

    #[test]
    fn every_other_spelling_is_left_to_the_slow_reader() {
        let good = format!("2:{POOL}:4096:7:16:96:float64:3,4");
        assert!(parse(&good).is_some());
        let bad = [
            format!("1:{POOL}:4096:7:16:96:float64:3,4"),
            format!("02:{POOL}:4096:7:16:96:float64:3,4"),
            format!("2:/{POOL}:4096:7:16:96:float64:3,4"),
            format!("2:{POOL}x:4096:7:16:96:float64:3,4"),
            "2:arraypool-memfd-0123abce:4096:7:16:96:float64:3,4".to_string(),
            format!("2:{POOL}:04096:7:16:96:float64:3,4"),
            format!("2:{POOL}:+4096:7:16:96:float64:3,4"),
            format!("2:{POOL}:4096.0:7:16:96:float64:3,4"),
            format!("2:{POOL}:4096:7:16:96:float64:3,4:"),
            format!("2:{POOL}:4096:7:16:96:float64:3,4,"),
            format!("2:{POOL}:4096:7:16:96:float64:"),
            format!("2:{POOL}:4096:7:16:96:FLOAT64:3,4"),
            format!("2:{POOL}:4096:7:16:96:float6:3,4"),
            format!("2:{POOL}:4096:7:16:96:float64"),
            format!("2:{POOL}:4096:7:12:96:float64:3,4"), // byteOffset not aligned
            format!("2:{POOL}:4096:7:16:95:float64:3,4"), // shape against byteLength
            format!("2:{POOL}:4096:7:16:96:float64:13"),  // likewise
            format!("2:{POOL}:9007199254740992:7:16:96:float64:3,4"), // 2^53
            format!("2:{POOL}:10000000000000000:7:16:96:float64:3,4"), // 17 digits
            format!("2:{POOL}:4096:7:16:96:float64:03,4"),
            format!("2:{POOL}:4096:7:16:96:float64:3, 4"),
            format!("2:{POOL}:4096:7:16:96:float64:3,4 "),
            format!("2:{POOL}:4096:7:16:96:float64:3٤"),
        ];
        for text in bad {
            assert_eq!(parse(&text), None, "{text}");
        }
    }

    #[test]
    fn shapes_are_bounded_as_in_js() {
        let dims = |n: usize| vec!["1"; n].join(",");
        assert!(parse(&format!("2:{POOL}:0:0:0:1:uint8:{}", dims(MAX_DIMS))).is_some());
        assert!(parse(&format!("2:{POOL}:0:0:0:1:uint8:{}", dims(MAX_DIMS + 1))).is_none());
        // A zero dimension does not excuse a product past 2^53 - 1.
        let huge = 9_007_199_254_740_991u64;
        assert!(parse(&format!("2:{POOL}:0:0:0:0:uint8:{huge},{huge},0")).is_none());
        assert!(parse(&format!("2:{POOL}:0:0:0:0:uint8:{huge},0")).is_some());
        assert!(parse(&format!("2:{POOL}:0:0:0:{huge}:uint8:{huge}")).is_some());
        let long = format!("2:{POOL}:0:0:0:0:uint8:{}", vec!["0"; 600].join(","));
        assert!(long.len() > MAX_COMPACT_LEN && parse(&long).is_none());
    }

    #[test]
    fn the_segment_is_the_second_field() {
        assert_eq!(
            compact_segment(b"2:pool-a:0:1:0:8:float64:1"),
            Some(&b"pool-a"[..])
        );
        assert_eq!(compact_segment(b"2::0"), Some(&b""[..]));
        assert_eq!(compact_segment(b"2:pool-a"), None);
        assert_eq!(compact_segment(b"1:pool-a:0"), None);
        assert_eq!(compact_segment(b"22:pool-a:0"), None);
        assert_eq!(compact_segment(b""), None);
    }

    #[test]
    fn a_segment_no_handle_could_spell_is_never_matched() {
        let odd = "pool\u{1}";
        assert!(parse_compact(format!("2:{odd}:0:0:0:1:uint8:1").as_bytes(), odd).is_none());
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert!(parse_compact(format!("2:{long}:0:0:0:1:uint8:1").as_bytes(), &long).is_none());
    }
}
