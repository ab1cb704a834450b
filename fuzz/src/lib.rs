//! The fuzz targets' shared code: the invariants (also run by `tests/properties.rs`) and the
//! decoding of a fuzzer's bytes into their inputs.

pub mod input;
pub mod invariants;
