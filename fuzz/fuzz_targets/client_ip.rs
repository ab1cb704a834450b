//! `client_ip::client_ip` on any forwarding headers, from any peer, behind any trusted
//! proxies: see `invariants::check_client_ip`.

#![no_main]

use hlsgate_fuzz::{input, invariants};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (settings, lines) = input::split_settings(data);
    let (peer, proxies) = input::peer_and_proxies(settings);
    invariants::check_client_ip(peer, &input::headers(lines), &proxies);
});
