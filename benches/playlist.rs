//! What rewriting a playlist for one viewer costs, next to the two things it is made of:
//! vetting the text with m3u8-rs and signing each URI. Inputs are the committed demo.
//!
//! The server vets through `Verdicts`, so a playlist whose text has not changed since the last
//! viewer costs `verdicts_hit` plus `rewrite_vetted`, not the whole `rewrite`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hlsgate::playlist::{self, Issue, Location, SegmentTtl};
use hlsgate::token::{Key, ParamNames};

fn bench(c: &mut Criterion) {
    let root = env!("CARGO_MANIFEST_DIR");
    let master = std::fs::read(format!("{root}/streams/demo/master.m3u8")).expect("demo master");
    let vod = std::fs::read(format!("{root}/streams/demo/180p/index.m3u8")).expect("demo media playlist");
    let live = playlist::simulate_live(&vod, 6, 1_764_000_000_000).expect("demo loops");
    let key = Key::new("bench-key");
    let names = ParamNames::default();
    let issue = Issue {
        key: &key,
        ip: Some("203.0.113.7"),
        names: &names,
        now: 1_764_000_000,
        session_ttl: 14400,
        segment_ttl: SegmentTtl::Auto,
        sticky: None,
    };
    let media_at =
        Location { path: "/demo/180p/index.m3u8", query: "", origin_bases: &[], public_hosts: &[] };
    let master_at = Location { path: "/demo/master.m3u8", query: "", origin_bases: &[], public_hosts: &[] };

    let mut group = c.benchmark_group("playlist");
    group.bench_function("rewrite_master_2_uris", |b| {
        b.iter(|| playlist::rewrite(black_box(&master), &master_at, &issue))
    });
    group.bench_function("rewrite_vod_8_segments", |b| {
        b.iter(|| playlist::rewrite(black_box(&vod), &media_at, &issue))
    });
    group.bench_function("rewrite_live_6_segments", |b| {
        b.iter(|| playlist::rewrite(black_box(live.as_bytes()), &media_at, &issue))
    });
    let verdicts = playlist::Verdicts::default();
    let shape = verdicts.vet(media_at.path, &vod).expect("the demo vets").shape();
    group.bench_function("verdicts_hit_vod", |b| b.iter(|| verdicts.vet(media_at.path, black_box(&vod))));
    group.bench_function("rewrite_vetted_vod_8_segments", |b| {
        b.iter(|| playlist::rewrite_vetted(black_box(&vod), shape, &media_at, &issue))
    });
    group
        .bench_function("m3u8_rs_parse_vod", |b| b.iter(|| m3u8_rs::parse_playlist(black_box(&vod)).is_ok()));
    group.bench_function("simulate_live_window", |b| {
        b.iter(|| playlist::simulate_live(black_box(&vod), 6, black_box(1_764_000_000_000)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
