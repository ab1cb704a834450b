//! `request_path::parse` on any request path: see `invariants::check_request_path`.

#![no_main]

use hlsgate_fuzz::{input, invariants};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    invariants::check_request_path(&input::text(data));
});
