//! What a token costs next to the MD5 inside it, measured in the same run.
//!
//! `raw_md5` hashes the same bytes a check hashes, from a ready-made string; the goal is a
//! check within 1.25x of it (the parse and the constant-time compare are all a check adds).
//! The `links` group is what an entry request adds on a stream with `max_ips_per_link`: the
//! ledger's answer, on a full ledger of 65 536 links.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use hlsgate::links::{Links, LocalLedger, Network, CAPACITY};
use hlsgate::token::{self, Accept, Key, ParamNames};
use md5::{Digest, Md5};

const PATH: &str = "/live/stream1/seg_00042.ts";
const IP: &str = "203.0.113.7";
const EXPIRES: u64 = 4_000_000_000;

fn bench(c: &mut Criterion) {
    let key = Key::new("s3cr3tKey");
    let keys = [key.clone()];
    let names = ParamNames::default();
    let hashed = format!("{EXPIRES}{PATH}{IP} s3cr3tKey");
    let good = format!("md5={}&expires={EXPIRES}", token::sign(EXPIRES, PATH, Some(IP), &key));
    let bad = format!("md5={}&expires={EXPIRES}", token::sign(EXPIRES, PATH, Some(IP), &Key::new("other")));
    let accept = Accept { paths: &[PATH], ips: &[Some(IP)], keys: &keys, skew: 5 };

    let mut group = c.benchmark_group("token");
    group.bench_function("raw_md5", |b| b.iter(|| Md5::digest(black_box(hashed.as_bytes()))));
    // The two halves of `check_valid`, to see where its time goes: reading the query, then the
    // hash and the constant-time compare.
    group.bench_function("parse_only", |b| b.iter(|| token::parse_query(black_box(&good), &names).ok()));
    let parsed = token::parse_query(&good, &names).expect("a signed query parses");
    group.bench_function("check_parsed", |b| {
        b.iter(|| token::check(black_box(&parsed), &accept, black_box(1_700_000_000)))
    });
    group.bench_function("sign", |b| {
        b.iter(|| token::sign(black_box(EXPIRES), black_box(PATH), Some(IP), &key))
    });
    group.bench_function("check_valid", |b| {
        b.iter(|| {
            let presented = token::parse_query(black_box(&good), &names).ok()?;
            token::check(&presented, &accept, black_box(1_700_000_000)).ok()
        })
    });
    group.bench_function("check_invalid", |b| {
        b.iter(|| {
            let presented = token::parse_query(black_box(&bad), &names).ok()?;
            token::check(&presented, &accept, black_box(1_700_000_000)).ok()
        })
    });
    group.finish();
}

/// A ledger holding `CAPACITY` links of 3 networks each, the digests numbered from 0.
fn full_ledger() -> LocalLedger {
    let mut ledger = LocalLedger::new(CAPACITY);
    for n in 0..CAPACITY as u64 {
        for viewer in 0..3u8 {
            ledger.admit("live", numbered(n), EXPIRES, network(viewer), 3, 1_700_000_000);
        }
    }
    ledger
}

fn numbered(n: u64) -> [u8; 16] {
    let mut digest = [0x5A; 16];
    digest[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    digest
}

fn network(viewer: u8) -> Network {
    Network::of(std::net::IpAddr::from([203, 0, 113, viewer]), 32, 128)
}

fn bench_links(c: &mut Criterion) {
    let mut group = c.benchmark_group("links");
    let now = 1_700_000_000;
    let mut ledger = full_ledger();
    // A viewer reopening the link (or its player reloading the master playlist): found, and
    // its network among those admitted.
    group.bench_function("admit_known", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = (n + 1) % CAPACITY as u64;
            ledger.admit("live", black_box(numbered(n)), EXPIRES, network(2), 3, now)
        })
    });
    // The 4th network on a link that admits 3.
    group.bench_function("refuse_shared", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n = (n + 1) % CAPACITY as u64;
            ledger.admit("live", black_box(numbered(n)), EXPIRES, network(9), 3, now)
        })
    });
    // A link never seen: the oldest is evicted to make room.
    group.bench_function("admit_new_evicting", |b| {
        let mut n = CAPACITY as u64;
        b.iter(|| {
            n += 1;
            ledger.admit("live", black_box(numbered(n)), EXPIRES, network(0), 3, now)
        })
    });
    // Through the facade the gate calls: the mutex and the (always ready) future included.
    let links = Links::default();
    group.bench_function("links_admit_known", |b| {
        b.iter(|| links.admit("live", black_box(numbered(1)), EXPIRES, network(0), 3, now).now_or_never())
    });
    group.finish();
}

criterion_group!(benches, bench, bench_links);
criterion_main!(benches);
