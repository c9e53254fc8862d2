//! arraypool-core (work in progress).
pub const LAYOUT_VERSION: u32 = 1;
