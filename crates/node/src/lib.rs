//! Node binding (to be written).
