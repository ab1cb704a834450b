//! What a token costs next to the MD5 inside it, measured in the same run.
//!
//! `raw_md5` hashes the same bytes a check hashes, from a ready-made string; the goal is a
//! check within 1.25x of it (the parse and the constant-time compare are all a check adds).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
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

criterion_group!(benches, bench);
criterion_main!(benches);
