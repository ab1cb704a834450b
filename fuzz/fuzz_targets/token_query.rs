//! `token::parse_query` on any query: see `invariants::check_query`.

#![no_main]

use hlsgate_fuzz::{input, invariants};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (settings, query) = input::split_settings(data);
    let key = input::key();
    let signing = input::signing(settings, &key);
    invariants::check_query(&input::text(query), &input::names(settings), &signing);
});
