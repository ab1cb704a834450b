//! A fleet sharing one key source (issue 12): instances of the real binary on distinct loopback
//! addresses, a real `redis-server`, and `hlsgate keys …` run as an operator would. A viewer is
//! spread over the instances as a round-robin balancer would spread it.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const K1: &str = "fleet-key-one";
const K2: &str = "fleet-key-two";
const K3: &str = "fleet-key-three";

/// `path` resolved against the folder of `base` (both absolute paths, `uri` maybe relative).
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let dir = base.split('?').next().unwrap_or(base).rsplit_once('/').map_or("", |(dir, _)| dir);
    format!("{dir}/{uri}")
}

/// One viewer's walk, each step on the next instance: the entry (master) playlist, its first
/// variant, that variant's first and last segment. Every (target, status) on the way.
async fn walk(instances: &[SocketAddr], first: usize, viewer: &str, entry: &str) -> Vec<(String, u16)> {
    let on = |step: usize| instances[(first + step) % instances.len()];
    let mut seen = Vec::new();
    let master = Request::get(on(0), entry).from(viewer).send().await;
    seen.push((entry.to_string(), master.status));
    let Some(variant) = uri_lines(&master.text()).first().map(|uri| resolve(entry, uri)) else { return seen };
    let media = Request::get(on(1), &variant).from(viewer).send().await;
    seen.push((variant.clone(), media.status));
    let segments = uri_lines(&media.text());
    for segment in [segments.first(), segments.last()].into_iter().flatten() {
        let target = resolve(&variant, segment);
        let response = Request::get(on(2), &target).from(viewer).send().await;
        seen.push((target, response.status));
    }
    seen
}

/// Three instances on 127.0.0.11–13 sharing `redis`.
fn three_instances(redis: &Redis, extra: &str, defaults: &str) -> Vec<Server> {
    (11..=13)
        .map(|last| {
            let config = fleet_config(&format!("127.0.0.{last}"), redis, extra, defaults);
            Server::start_in(TempDir::new("fleet"), &config, &[("RUST_LOG", "info")])
        })
        .collect()
}

fn entry_link(key: &str) -> String {
    signed("/demo/master.m3u8", key, None, now() + 600)
}

/// The stream every test starts from: the demo, looped live, IP-less entry links allowed.
fn seed_demo(redis: &Redis, key: &str) {
    keys_ok(redis, &["set", "demo", "simulate_live", "true"]);
    keys_ok(redis, &["set", "demo", "entry_ip", "optional"]);
    keys_ok(redis, &["add", "demo", key]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_spread_over_three_instances_is_served_by_each() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    let fleet = three_instances(&redis, "", "");
    let addrs: Vec<SocketAddr> = fleet.iter().map(Server::viewer_addr).collect();
    for first in 0..3 {
        let seen = walk(&addrs, first, "127.0.0.2", &entry_link(K1)).await;
        assert_eq!(seen.len(), 4, "master, variant, two segments: {seen:?}");
        assert!(seen.iter().all(|(_, status)| *status == 200), "starting on instance {first}: {seen:?}");
    }
    // Bound to the viewer: the same walk replayed from another address is refused past the entry.
    let stolen = walk(&addrs, 0, "127.0.0.2", &entry_link(K1)).await;
    let variant = &stolen[1].0;
    let replay = Request::get(addrs[2], variant).from("127.0.0.3").send().await;
    assert_eq!(replay.status, 403, "a restreamer at another address");
    // Every instance reports a heartbeat the rotation command can wait on.
    let listed = keys_ok(&redis, &["list"]);
    assert_eq!(listed.lines().filter(|l| l.starts_with("instance ")).count(), 3, "{listed}");
    for addr in &addrs {
        assert!(listed.contains(&addr.to_string()), "{addr} missing from:\n{listed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_refuses_nobody_and_retires_the_old_key_everywhere() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    let fleet = three_instances(&redis, "", "");
    let addrs: Vec<SocketAddr> = fleet.iter().map(Server::viewer_addr).collect();

    // Six viewers walk the fleet in a loop, each step on the next instance, with the site's
    // entry link (signed with the key in force when the page loaded: K1 throughout).
    let stop = Arc::new(AtomicBool::new(false));
    let walks = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut viewers = Vec::new();
    for v in 0..6usize {
        let (addrs, stop, walks, failures) = (addrs.clone(), stop.clone(), walks.clone(), failures.clone());
        viewers.push(tokio::spawn(async move {
            let viewer = format!("127.0.0.{}", 20 + v);
            let entry = entry_link(K1);
            let mut round = v;
            while !stop.load(Ordering::Relaxed) {
                for (target, status) in walk(&addrs, round, &viewer, &entry).await {
                    if status != 200 {
                        failures.lock().unwrap().push(format!("{viewer} {target} → {status}"));
                    }
                }
                walks.fetch_add(1, Ordering::Relaxed);
                round += 1;
            }
        }));
    }
    let more_walks = async |walks: &AtomicU64, n: u64| {
        let start = walks.load(Ordering::Relaxed);
        eventually(Duration::from_secs(60), async || walks.load(Ordering::Relaxed) >= start + n).await
    };
    assert!(more_walks(&walks, 30).await, "the load never got going");

    let redis_url = redis.url();
    let rotate = tokio::task::spawn_blocking(move || {
        run_bounded(
            std::process::Command::new(env!("CARGO_BIN_EXE_hlsgate"))
                .args(["keys", "--redis", &redis_url, "rotate", "demo", K2, "--grace", "4"]),
            Duration::from_secs(120),
        )
    })
    .await
    .unwrap();
    assert!(rotate.status.success(), "rotate failed:\n{}\n{}", rotate.stdout, rotate.stderr);
    assert!(more_walks(&walks, 30).await, "the load stalled after the rotation");
    stop.store(true, Ordering::Relaxed);
    for viewer in viewers {
        viewer.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let total = walks.load(Ordering::Relaxed);
    println!("rotation under load: {total} walks (4 requests each) across 3 instances\n{}", rotate.stdout);
    assert!(
        failures.is_empty(),
        "{} refused during the rotation: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );

    // The order the command kept: every instance held the new key before it signed anything.
    let out = &rotate.stdout;
    let held = out.find("all 3 live instance(s) hold version").expect("waited for the instances");
    let signs = out.find("signs from version").expect("promoted");
    assert!(held < signs, "promoted before every instance verified the new key:\n{out}");

    // What the fleet issues now is signed with K2: recompute a token from the issued URI.
    let seen = walk(&addrs, 0, "127.0.0.2", &entry_link(K1)).await;
    let (variant, _) = &seen[1];
    let (path, query) = variant.split_once('?').unwrap();
    let expires: u64 = query.split('&').find_map(|p| p.strip_prefix("expires=")).unwrap().parse().unwrap();
    assert_eq!(variant, &signed(path, K2, Some("127.0.0.2"), expires), "issued with the new key");

    // After the grace, the old key opens nothing anywhere; the new one opens everything.
    for addr in &addrs {
        let refused = eventually(Duration::from_secs(30), async || {
            Request::get(*addr, &entry_link(K1)).from("127.0.0.2").send().await.status == 403
        })
        .await;
        assert!(refused, "{addr} still accepts the retired key");
        assert_eq!(Request::get(*addr, &entry_link(K2)).from("127.0.0.2").send().await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_keeps_serving_turns_stale_and_follows_again_when_back() {
    let mut redis = Redis::start();
    seed_demo(&redis, K1);
    let config = fleet_config("127.0.0.1", &redis, "", "").replace(
        &format!("source = \"{}\"", redis.url()),
        &format!("source = \"{}\"\nstale_after = 2\nresync_interval = 5", redis.url()),
    );
    let server = Server::start_in(TempDir::new("fleet"), &config, &[("RUST_LOG", "info")]);
    let viewers = server.viewer_addr();
    assert_eq!(Request::get(viewers, &entry_link(K1)).send().await.status, 200);
    assert_eq!(readyz(&server).await, (200, "ready\n".to_string()));

    redis.stop();
    let stale = eventually(Duration::from_secs(30), async || readyz(&server).await.0 == 503).await;
    assert!(stale, "/readyz never turned stale");
    let (_, body) = readyz(&server).await;
    assert!(body.starts_with("stale"), "{body}");
    // Serving on the cached keys all along, and the loss logged once, not per retry.
    for _ in 0..5 {
        assert_eq!(Request::get(viewers, &entry_link(K1)).send().await.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let metrics = Request::get(server.admin_addr(), "/metrics").send().await.text();
    assert!(metrics.contains("hlsgate_keys_source_up 0"), "{metrics}");
    assert_eq!(
        server.logs().iter().filter(|l| l.contains("key source lost")).count(),
        1,
        "{:?}",
        server.logs()
    );

    redis.restart();
    keys_ok(&redis, &["add", "demo", K3]);
    let follows = eventually(Duration::from_secs(90), async || {
        Request::get(viewers, &entry_link(K3)).send().await.status == 200
    })
    .await;
    assert!(
        follows,
        "a key added after Redis came back never reached the instance:\n{}",
        server.logs().join("\n")
    );
    assert!(eventually(Duration::from_secs(10), async || readyz(&server).await.0 == 200).await);
    assert_eq!(
        Request::get(viewers, &entry_link(K1)).send().await.status,
        200,
        "the first key still verifies"
    );
}

#[tokio::test]
async fn a_bad_field_keeps_the_streams_policy_and_names_the_field() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    let server = Server::start_in(TempDir::new("fleet"), &fleet_config("127.0.0.1", &redis, "", ""), &[]);
    let viewers = server.viewer_addr();
    redis.cli(&["HSET", "hlsgate:stream:demo", "session_ttl", "ninety-seconds"]);
    keys_ok(&redis, &["add", "demo", K2]); // a change the instances are told about
    let line = server.wait_for_log("streams.demo.session_ttl", Duration::from_secs(20));
    assert!(!line.contains("ninety-seconds"), "the value was logged: {line}");
    assert_eq!(Request::get(viewers, &entry_link(K1)).send().await.status, 200, "the previous policy stays");
    assert_eq!(
        Request::get(viewers, &entry_link(K2)).send().await.status,
        403,
        "nothing of the refused hash is in force, its new key neither"
    );
    // Changing the key source is a restart, not a reload.
    server.rewrite_config(
        &fleet_config("127.0.0.1", &redis, "", "").replace(&redis.url(), "redis://127.0.0.1:1/0"),
    );
    server.reload();
    let refused = server.wait_for_log("config reload refused", Duration::from_secs(20));
    assert!(refused.contains("keys.source"), "{refused}");
    assert_eq!(Request::get(viewers, &entry_link(K1)).send().await.status, 200);
}

#[test]
fn no_key_source_at_start_is_a_clear_exit() {
    let dir = TempDir::new("fleet");
    let port = free_port();
    let config = dir.write(
        "hlsgate.toml",
        format!("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[keys]\nsource = \"redis://:hunter2@127.0.0.1:{port}/0\"\n"),
    );
    let done = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_hlsgate")).args(["serve", "--config"]).arg(&config),
        Duration::from_secs(30),
    );
    assert_eq!(done.status.code(), Some(1), "{}", done.stderr);
    assert!(
        done.stderr.contains("keys.source") && done.stderr.contains("cannot read the key source"),
        "{}",
        done.stderr
    );
    assert!(!done.stderr.contains("hunter2"), "the password was logged: {}", done.stderr);
}

#[test]
fn keys_list_and_show_never_print_a_key() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    keys_ok(&redis, &["add", "demo", K2]);
    let shown = keys_ok(&redis, &["show", "demo"]) + &keys_ok(&redis, &["list"]);
    assert!(shown.contains("signing") && shown.contains("verify-only"), "{shown}");
    for key in [K1, K2] {
        assert!(!shown.contains(key), "a key was printed:\n{shown}");
    }
    // The signing key cannot be retired; an unknown stream or key is a clear refusal.
    let id = shown.lines().find(|l| l.contains("signing") && l.contains("key ")).unwrap();
    let id = id.split_whitespace().nth(1).unwrap();
    let refused = keys_cmd(&redis, &["retire", "demo", id, "--grace", "1"], Duration::from_secs(30));
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stderr.contains("signing key"), "{}", refused.stderr);
    let unknown = keys_cmd(&redis, &["show", "nosuch"], Duration::from_secs(30));
    assert!(unknown.stderr.contains("no stream nosuch"), "{}", unknown.stderr);
    // A policy field is checked as an instance reads it before it is written; key fields are
    // the key commands' own.
    let typo = keys_cmd(&redis, &["set", "demo", "session_ttl", "an-hour"], Duration::from_secs(30));
    assert_eq!(typo.status.code(), Some(1));
    assert!(
        typo.stderr.contains("streams.demo.session_ttl") && !typo.stderr.contains("an-hour"),
        "{}",
        typo.stderr
    );
    let owned = keys_cmd(&redis, &["set", "demo", "signing", "x"], Duration::from_secs(30));
    assert!(owned.stderr.contains("key commands"), "{}", owned.stderr);
    keys_ok(&redis, &["set", "demo", "session_ttl", "3600"]);
    assert!(keys_ok(&redis, &["show", "demo"]).contains("session_ttl = 3600"));
    keys_ok(&redis, &["unset", "demo", "session_ttl"]);
    assert!(!keys_ok(&redis, &["show", "demo"]).contains("session_ttl"));
}

#[test]
fn promote_waits_for_an_instance_behind_and_names_it() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    let id = keys_ok(&redis, &["add", "demo", K2]);
    // "demo: added key ID, verify-only; version N"
    let id = id.split("key ").nth(1).and_then(|rest| rest.split(',').next()).unwrap().to_string();
    // An instance that has not loaded the new key yet (its heartbeat says version 0).
    redis.cli(&[
        "HSET",
        "hlsgate:instance:laggard",
        "applied",
        "0",
        "listen",
        "192.0.2.9:8080",
        "grace",
        "60",
    ]);
    redis.cli(&["EXPIRE", "hlsgate:instance:laggard", "60"]);
    let done = keys_cmd(&redis, &["promote", "demo", &id, "--timeout", "2"], Duration::from_secs(60));
    assert_eq!(
        done.status.code(),
        Some(1),
        "promoted past an instance that cannot verify the key:\n{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("waiting for version") && done.stdout.contains("laggard"),
        "{}",
        done.stdout
    );
    assert!(done.stderr.contains("laggard (192.0.2.9:8080, version 0)"), "{}", done.stderr);
    let shown = keys_ok(&redis, &["show", "demo"]);
    assert!(shown.contains(&format!("key {id}  verify-only")), "the signing key changed anyway:\n{shown}");
    // Caught up: the same command goes through.
    redis.cli(&["HSET", "hlsgate:instance:laggard", "applied", "99"]);
    keys_ok(&redis, &["promote", "demo", &id, "--timeout", "10"]);
    assert!(keys_ok(&redis, &["show", "demo"]).contains(&format!("key {id}  signing")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_link_is_counted_across_the_fleet() {
    let redis = Redis::start();
    seed_demo(&redis, K1);
    redis.cli(&["HSET", "hlsgate:stream:demo", "max_ips_per_link", "3"]);
    let fleet = three_instances(&redis, "", "");
    let addrs: Vec<SocketAddr> = fleet.iter().map(Server::viewer_addr).collect();
    let link = entry_link(K1);
    // 40 addresses open the one IP-less link, spread over the three instances.
    let mut opened = Vec::new();
    for i in 0..40usize {
        let (addr, link) = (addrs[i % 3], link.clone());
        opened.push(tokio::spawn(async move {
            let viewer = format!("127.0.0.{}", 100 + i);
            let response = Request::get(addr, &link).from(&viewer).send().await;
            (viewer, response.status, response.text())
        }));
    }
    let mut served = Vec::new();
    for task in opened {
        let (viewer, status, body) = task.await.unwrap();
        match status {
            200 => served.push(viewer),
            403 => assert_eq!(body, "shared link\n"),
            other => panic!("{viewer}: {other} {body}"),
        }
    }
    assert_eq!(served.len(), 3, "served across the fleet: {served:?}");
    // The admitted keep playing, on every instance, the entry link included.
    for (n, viewer) in served.iter().enumerate() {
        let seen = walk(&addrs, n, viewer, &link).await;
        assert!(seen.len() == 4 && seen.iter().all(|(_, s)| *s == 200), "{viewer}: {seen:?}");
    }
    // The count is Redis's: one set of three networks, expiring with the token.
    let sets = redis.cli(&["--scan", "--pattern", "hlsgate:link:*"]);
    let set = sets.lines().next().expect("a link set in Redis");
    assert_eq!(redis.cli(&["SCARD", set]).trim(), "3");
    let ttl: i64 = redis.cli(&["TTL", set]).trim().parse().unwrap();
    assert!((500..=700).contains(&ttl), "expires with the 600 s token (+ skew): {ttl}");
    let refused: u64 = fleet
        .iter()
        .map(|server| server.logs().iter().filter(|l| l.contains("reason=shared link")).count() as u64)
        .sum();
    assert!(refused >= 1, "refused sharers are logged");
}

#[tokio::test]
async fn rediss_is_verified_and_a_private_ca_is_trusted_through_ssl_cert_file() {
    let redis = Redis::start_tls();
    seed_demo(&redis, K1);
    let cert = redis.certificate().unwrap().to_owned();
    // Without being told to trust it, the certificate is refused.
    let untrusted = run_bounded(
        std::process::Command::new(env!("CARGO_BIN_EXE_hlsgate")).args([
            "keys",
            "--redis",
            &redis.url(),
            "list",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(untrusted.status.code(), Some(1));
    assert!(untrusted.stderr.contains("certificate"), "{}", untrusted.stderr);
    let server = Server::start_in(
        TempDir::new("fleet"),
        &fleet_config("127.0.0.1", &redis, "", ""),
        &[("SSL_CERT_FILE", cert.to_str().unwrap())],
    );
    assert_eq!(Request::get(server.viewer_addr(), &entry_link(K1)).send().await.status, 200);
    keys_ok(&redis, &["add", "demo", K2]);
    let follows = eventually(Duration::from_secs(20), async || {
        Request::get(server.viewer_addr(), &entry_link(K2)).send().await.status == 200
    })
    .await;
    assert!(follows, "a change over rediss:// never arrived");
}
