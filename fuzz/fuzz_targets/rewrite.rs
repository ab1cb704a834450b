//! `playlist::rewrite` on any playlist, at any of a few playlist URLs and viewer settings: see
//! `invariants::check_rewrite`.

#![no_main]

use hlsgate_fuzz::{input, invariants};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (settings, text) = input::split_settings(data);
    let (key, names, urls) = (input::key(), input::names(settings), input::urls(settings));
    let at = input::playlist_at(settings, &urls);
    let _ = invariants::check_rewrite(text, &at, &input::issue(settings, &key, &names));
});
