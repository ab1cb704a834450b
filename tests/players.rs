//! Issue 4 end to end: real clients (ffmpeg, ffprobe, hls.js in Chromium, a live ffmpeg
//! packager) against the real `hlsgate` binary, anti-restreaming with real tools, and the
//! Docker files checked against the binary's real flags and config schema.
//!
//! Every child process has a deadline and is killed by PID; every server listens on port 0.
//! Needs `scripts/test-deps.sh` (ffmpeg, ffprobe, chromium, node + playwright-core).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The demo's signing key (the first of `hlsgate.toml`'s `[streams.demo] keys`).
const DEMO_KEY: &str = "demo-key-2026-11";
/// ffmpeg's own deadline; the slowest run reads 20 s of live media in real time.
const FFMPEG_LIMIT: Duration = Duration::from_secs(60);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

fn fetch(req: Request) -> Response {
    block_on(req.send())
}

/// A config serving the committed demo as a live stream, on ephemeral ports.
fn demo_config(top: &str, demo: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n{top}\n\
         [streams.demo]\nkeys = [\"{DEMO_KEY}\"]\nsimulate_live = true\n{demo}\n",
        toml_path(&repo_streams())
    )
}

/// `http://host:port/path?query` → `/path?query`, for the raw client.
fn target_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.find('/').map_or("/".to_string(), |i| rest[i..].to_string())
}

/// The URI lines of a playlist, resolved against the playlist's own path (`/a/b/index.m3u8`).
fn uris(playlist: &str, playlist_path: &str) -> Vec<String> {
    let dir = &playlist_path[..playlist_path.rfind('/').unwrap() + 1];
    playlist
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| if l.starts_with('/') || l.contains("://") { target_of(l) } else { format!("{dir}{l}") })
        .collect()
}

/// The path part of a target (`/demo/180p/seg_001.ts?md5=…` → `/demo/180p/seg_001.ts`).
fn path_of(target: &str) -> &str {
    target.split('?').next().unwrap()
}

/// ffmpeg reading `url` (decoding everything, so a broken segment is an error too), stopping
/// after `seconds` of media. `-xerror`: without it ffmpeg skips a refused segment and exits 0.
/// `-v info` keeps the `Opening '…'` lines; `-progress pipe:1` reports the media time read.
fn ffmpeg_pull(url: &str, seconds: u32, extra_input_args: &[&str]) -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-hide_banner", "-v", "info", "-nostats", "-xerror"])
        .args(["-rw_timeout", "10000000"])
        .args(extra_input_args)
        .args(["-i", url, "-map", "0:p:0?", "-t", &seconds.to_string()])
        .args(["-progress", "pipe:1", "-f", "null", "-"]);
    cmd
}

fn assert_ffmpeg_ok(run: &Finished, min_seconds: f64) {
    assert!(run.status.success(), "ffmpeg failed ({}):\n{}", run.status, run.stderr);
    let got = ffmpeg_out_seconds(&run.stdout);
    assert!(got >= min_seconds, "ffmpeg read only {got} s of media (wanted {min_seconds}):\n{}", run.stderr);
}

/// Segment numbers (`seg_007.ts` → 7) of the URLs ffmpeg opened under `dir` (e.g. `/demo/180p/`).
fn segment_numbers(opened: &[String], dir: &str) -> Vec<u32> {
    opened
        .iter()
        .map(|u| target_of(u))
        .filter_map(|t| {
            let name = path_of(&t).strip_prefix(dir)?.to_string();
            name.strip_prefix("seg_")?.strip_suffix(".ts")?.parse().ok()
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. ffmpeg plays the signed demo link the server announced, across a loop point
// ---------------------------------------------------------------------------------------

#[test]
fn ffmpeg_plays_the_announced_demo_link_across_a_loop_point() {
    let server = Server::start(&demo_config("", ""));
    let url = logged_link(&server, "demo");
    assert!(
        url.starts_with(&format!("http://{}/demo/master.m3u8?md5=", server.viewer_addr())),
        "announced link: {url}"
    );

    // 18 s of media is 9 two-second segments: any 9 in a row of the 8-segment loop contain a
    // seg_007 → seg_000 step, wherever in the loop the live window is when ffmpeg joins.
    // `-map 0:p:0`: one rendition; ffmpeg reading both stalls on the unread one.
    let run = run_bounded(&mut ffmpeg_pull(&url, 18, &[]), FFMPEG_LIMIT);
    assert_ffmpeg_ok(&run, 12.0);

    let opened = ffmpeg_opened(&run.stderr);
    let seq = segment_numbers(&opened, "/demo/180p/");
    assert!(seq.len() >= 6, "ffmpeg opened few 180p segments: {opened:#?}");
    assert!(
        seq.windows(2).any(|w| w == [7, 0]),
        "ffmpeg never crossed the loop point (seg_007 → seg_000): {seq:?}"
    );
    // Every request ffmpeg made carried a token hlsgate issued (nothing reached it unsigned).
    for u in &opened {
        assert!(u.contains("md5=") && u.contains("expires="), "unsigned URL opened: {u}");
    }
}

// ---------------------------------------------------------------------------------------
// 2. A real live packager: ffmpeg writes live HLS, a second ffmpeg pulls it through hlsgate
// ---------------------------------------------------------------------------------------

#[test]
fn ffmpeg_pulls_a_real_live_packager_through_the_gate() {
    let dir = TempDir::new("packager");
    let live = dir.join("streams/live");
    std::fs::create_dir_all(&live).unwrap();
    // 1-second segments (keyframe every 25 frames at 25 fps), 6 listed, old ones deleted,
    // temp_file so hlsgate never sees a half-written file. `-t 90` caps it even if the guard
    // below were never dropped.
    let mut packager = Command::new("ffmpeg");
    packager
        .args(["-nostdin", "-hide_banner", "-loglevel", "warning", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", "25", "-keyint_min", "25", "-sc_threshold", "0", "-b:v", "300k"])
        .args(["-c:a", "aac", "-b:a", "64k", "-ac", "2", "-t", "90"])
        .args(["-f", "hls", "-hls_time", "1", "-hls_list_size", "6"])
        .args(["-hls_flags", "delete_segments+temp_file", "-hls_segment_filename"])
        .arg(live.join("seg_%05d.ts"))
        .arg(live.join("index.m3u8"));
    let packager = Bounded::spawn(&mut packager);

    // Start pulling once the live window holds a few segments (ffmpeg starts 3 from the end).
    let playlist = live.join("index.m3u8");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&playlist).unwrap_or_default();
        if text.matches("#EXTINF").count() >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the packager wrote no 3-segment playlist within 30 s; its stderr:\n{}",
            packager.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let config = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n\
         [streams.live]\nkeys = [\"live-key\"]\n",
        toml_path(&dir.join("streams"))
    );
    let server = Server::start(&config);
    // A link the broadcaster's site would hand out: bound to the viewer's address.
    let url = format!(
        "http://{}{}",
        server.viewer_addr(),
        signed("/live/index.m3u8", "live-key", Some("127.0.0.1"), now() + 600)
    );
    let run = run_bounded(&mut ffmpeg_pull(&url, 11, &[]), FFMPEG_LIMIT);
    let packager_log = packager.stop();
    assert_ffmpeg_ok(&run, 10.0);

    // It really was the live playlist, re-read while it grew, through hlsgate with tokens.
    let opened = ffmpeg_opened(&run.stderr);
    let playlists = opened.iter().filter(|u| path_of(&target_of(u)) == "/live/index.m3u8").count();
    assert!(playlists >= 3, "ffmpeg read the live playlist {playlists} times: {opened:#?}");
    let segments: BTreeSet<String> = opened
        .iter()
        .map(|u| target_of(u))
        .filter(|t| path_of(t).ends_with(".ts"))
        .map(|t| path_of(&t).to_string())
        .collect();
    assert!(segments.len() >= 10, "ffmpeg read {} segments: {segments:?}", segments.len());
    assert!(opened.iter().all(|u| u.contains("md5=")), "unsigned URL opened: {opened:#?}");
    assert!(!packager_log.contains("Error"), "packager errors:\n{packager_log}");
}

// ---------------------------------------------------------------------------------------
// 3. hls.js in headless Chromium, on the player page hlsgate serves itself
// ---------------------------------------------------------------------------------------

#[test]
fn browser_plays_the_signed_demo_on_the_served_player_page() {
    let server = Server::start(&demo_config("", ""));
    let url = logged_link(&server, "demo");
    let page = player_url(server.viewer_addr(), &url);
    // The page the server announced is this same page.
    let announced = server.wait_for_log("player=", Duration::from_secs(1));
    assert_eq!(log_field(&announced, "player").as_deref(), Some(page.as_str()));

    // 17 s of media is more than the 16 s loop: hls.js crosses a discontinuity on the way.
    let result = play_for(&page, 17.0);
    eprintln!("{result:?}");
    assert!(result.fatal.is_none() && !result.timed_out, "{result:?}");
    assert!(result.current_time > 6.0, "{result:?}");
    // Live playback starts mid-timeline, so currentTime alone proves little: it really played.
    assert!(result.played >= 17.0, "{result:?}");
}

#[test]
fn browser_reports_an_expired_link_as_410_and_another_ips_link_as_403() {
    let server = Server::start(&demo_config("", ""));
    let addr = server.viewer_addr();

    // Expired well beyond the 5 s skew tolerance.
    let expired = format!("http://{addr}{}", signed("/demo/master.m3u8", DEMO_KEY, None, now() - 60));
    let result = play(&player_url(addr, &expired), 1.0);
    assert_eq!(result.fatal_status(), Some(410), "{result:?}");

    // Signed for 127.0.0.9; Chromium connects from 127.0.0.1.
    let elsewhere =
        format!("http://{addr}{}", signed("/demo/master.m3u8", DEMO_KEY, Some("127.0.0.9"), now() + 600));
    let result = play(&player_url(addr, &elsewhere), 1.0);
    assert_eq!(result.fatal_status(), Some(403), "{result:?}");
}

// ---------------------------------------------------------------------------------------
// 4. Anti-restreaming
// ---------------------------------------------------------------------------------------

#[test]
fn a_restreamer_replaying_a_viewers_urls_gets_403_on_every_one() {
    let server = Server::start(&demo_config("", ""));
    let addr = server.viewer_addr();
    let entry = signed("/demo/master.m3u8", DEMO_KEY, None, now() + 600);

    // Viewer A, from 127.0.0.2.
    let master = fetch(Request::get(addr, &entry).from("127.0.0.2"));
    assert_eq!(master.status, 200, "{}", master.text());
    let variants = uris(&master.text(), "/demo/master.m3u8");
    assert_eq!(variants.len(), 2, "{}", master.text());
    let variant = fetch(Request::get(addr, &variants[0]).from("127.0.0.2"));
    assert_eq!(variant.status, 200, "{}", variant.text());
    let segments = uris(&variant.text(), path_of(&variants[0]));
    assert!(segments.len() >= 6, "{}", variant.text());
    let segment = fetch(Request::get(addr, &segments[0]).from("127.0.0.2"));
    assert_eq!(segment.status, 200);
    assert!(!segment.body.is_empty() && segment.body[0] == 0x47, "not MPEG-TS");

    // Restreamer B, from 127.0.0.3, replays everything A was given below the entry link.
    for target in variants.iter().chain(&segments) {
        let replay = fetch(Request::get(addr, target).from("127.0.0.3"));
        assert_eq!(replay.status, 403, "B replaying {target}: {}", replay.text());
        assert!(replay.body.len() < 1024, "a refusal carries no media");
    }
}

#[test]
fn ffmpeg_as_a_restreamer_fails_where_the_viewer_it_copies_succeeds() {
    // Behind a trusted proxy (the test itself), X-Forwarded-For is who is asking: ffmpeg can
    // then take any identity, and the viewer's and the restreamer's differ only in that.
    let server = Server::start(&demo_config("trusted_proxies = [\"127.0.0.1/32\"]", ""));
    let addr = server.viewer_addr();
    let viewer_a = "203.0.113.5";
    let restreamer = "198.51.100.7";
    let entry = signed("/demo/master.m3u8", DEMO_KEY, None, now() + 600);

    let master = fetch(Request::get(addr, &entry).header("X-Forwarded-For", viewer_a));
    assert_eq!(master.status, 200, "{}", master.text());
    let media = format!("http://{addr}{}", uris(&master.text(), "/demo/master.m3u8")[0]);

    let as_identity = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let stolen = run_bounded(
        &mut ffmpeg_pull(&media, 4, &["-headers", &as_identity(restreamer)]),
        Duration::from_secs(30),
    );
    assert!(!stolen.status.success(), "the restreamer's ffmpeg played A's playlist:\n{}", stolen.stderr);
    assert!(stolen.stderr.contains("403"), "expected a 403 in:\n{}", stolen.stderr);

    // Control: the very same command with A's identity plays (segments included, so the
    // header reaches every request and the failure above is the binding, not the command).
    let control =
        run_bounded(&mut ffmpeg_pull(&media, 4, &["-headers", &as_identity(viewer_a)]), FFMPEG_LIMIT);
    assert_ffmpeg_ok(&control, 4.0);
    let segs = segment_numbers(&ffmpeg_opened(&control.stderr), "/demo/180p/");
    assert!(segs.len() >= 2, "control read {segs:?}");
}

#[test]
fn a_two_second_entry_link_expires_while_a_viewer_who_entered_keeps_playing() {
    // skew = 1: the default 5 s of clock-skew tolerance would keep a 2 s link open for 7 s.
    let server = Server::start(&demo_config("trusted_proxies = [\"127.0.0.1/32\"]", "skew = 1"));
    let addr = server.viewer_addr();
    let viewer = "192.0.2.44";
    let signed_at = now();
    let entry = signed("/demo/master.m3u8", DEMO_KEY, None, signed_at + 2);

    // The viewer enters within the 2 s.
    let master = fetch(Request::get(addr, &entry).header("X-Forwarded-For", viewer));
    assert_eq!(master.status, 200, "{}", master.text());
    let media = format!("http://{addr}{}", uris(&master.text(), "/demo/master.m3u8")[0]);
    // …and plays from the variant URL hlsgate issued, for 20 s of media (~15 s of wall time).
    let player = Bounded::spawn(&mut ffmpeg_pull(
        &media,
        20,
        &["-headers", &format!("X-Forwarded-For: {viewer}\r\n")],
    ));

    // Meanwhile, 4 s after signing, the entry link itself is dead, for anyone.
    while now() < signed_at + 4 {
        std::thread::sleep(Duration::from_millis(100));
    }
    for from in [viewer, "192.0.2.45"] {
        let late = fetch(Request::get(addr, &entry).header("X-Forwarded-For", from));
        assert_eq!(late.status, 410, "entry link after 4 s from {from}: {}", late.text());
    }

    let run = player.finish(FFMPEG_LIMIT);
    assert_ffmpeg_ok(&run, 20.0);
    let segs = segment_numbers(&ffmpeg_opened(&run.stderr), "/demo/180p/");
    assert!(segs.len() >= 10, "the viewer read {segs:?}");
}

// ---------------------------------------------------------------------------------------
// 5. Docker files against the binary's real flags and config schema
// ---------------------------------------------------------------------------------------

/// The lines of one top-level service in compose.yaml (indented under `services:`).
fn compose_service<'a>(compose: &'a str, name: &str) -> Vec<&'a str> {
    let header = format!("  {name}:");
    let mut lines = compose.lines().skip_while(|l| l.trim_end() != header);
    assert!(lines.next().is_some(), "no service {name:?} in compose.yaml");
    lines
        .take_while(|l| l.trim().is_empty() || l.starts_with("    ") || l.trim_start().starts_with('#'))
        .collect()
}

/// The `- item` entries of a list key (`volumes:`, `command:`, …) in a service's lines, with
/// folded (`>-`) items joined into one line.
fn compose_list(service: &[&str], key: &str) -> Vec<String> {
    let header = format!("    {key}:");
    let Some(start) = service.iter().position(|l| l.trim_end() == header) else {
        return Vec::new();
    };
    let mut items: Vec<String> = Vec::new();
    for line in &service[start + 1..] {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if !line.starts_with("      ") {
            break;
        }
        match trimmed.strip_prefix("- ") {
            // A folded block scalar (`- >-`): its text is on the following lines.
            Some(">-" | ">" | "|" | "|-") => items.push(String::new()),
            Some(item) => items.push(item.trim_matches('"').to_string()),
            None => {
                let last = items.last_mut().expect("continuation before any item");
                if !last.is_empty() {
                    last.push(' ');
                }
                last.push_str(trimmed);
            }
        }
    }
    items
}

/// A key's scalar value in a service's lines (`    image: x` → `x`).
fn compose_scalar(service: &[&str], key: &str) -> Option<String> {
    let prefix = format!("    {key}:");
    service.iter().find_map(|l| l.strip_prefix(prefix.as_str())).map(|v| v.trim().to_string())
}

/// The JSON-array form of a Dockerfile instruction (`CMD ["serve", …]`).
fn dockerfile_exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    let json: serde_json::Value = serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("{instruction} is not in exec form ({e}): {line}"));
    json.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

/// `source:target[:mode]` of a volume entry.
fn mount(volume: &str) -> (String, String) {
    let mut parts = volume.split(':');
    (parts.next().unwrap().to_string(), parts.next().expect("volume without a target").to_string())
}

#[test]
fn docker_files_match_the_binary_flags_and_config_schema() {
    let docker = repo_root().join("docker");
    let read = |name: &str| std::fs::read_to_string(docker.join(name)).unwrap();
    let (compose, dockerfile, config_text) = (read("compose.yaml"), read("Dockerfile"), read("hlsgate.toml"));

    // The container's config is one the server accepts.
    let config = hlsgate::config::parse(&config_text, Path::new("/etc/hlsgate"))
        .unwrap_or_else(|e| panic!("docker/hlsgate.toml refused: {e}"));
    assert!(!config.streams.is_empty(), "docker/hlsgate.toml serves no stream");

    // The command the container runs: ENTRYPOINT + (compose's command, else the image's CMD).
    let entrypoint = dockerfile_exec_form(&dockerfile, "ENTRYPOINT");
    assert_eq!(entrypoint, ["hlsgate"]);
    let gate = compose_service(&compose, "hlsgate");
    let mut args = compose_list(&gate, "command");
    if args.is_empty() {
        args = dockerfile_exec_form(&dockerfile, "CMD");
    }
    assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
    // Every flag it uses is one `hlsgate serve` really has.
    let help = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_hlsgate")).args(["serve", "--help"]),
        Duration::from_secs(10),
    );
    assert!(help.status.success(), "{}", help.stderr);
    let mut config_path = None;
    for (i, arg) in args.iter().enumerate().skip(1) {
        if let Some(flag) = arg.strip_prefix("--") {
            let flag = flag.split('=').next().unwrap();
            assert!(
                help.stdout.contains(&format!("--{flag}")),
                "hlsgate serve has no --{flag}:\n{}",
                help.stdout
            );
            if flag == "config" {
                config_path = Some(args[i + 1].clone());
            }
        }
    }
    let config_path = config_path.expect("the container must name its config with --config");

    // The config it names is the one compose mounts, and that file is docker/hlsgate.toml.
    let gate_volumes: Vec<(String, String)> =
        compose_list(&gate, "volumes").iter().map(|v| mount(v)).collect();
    let (config_source, _) = gate_volumes
        .iter()
        .find(|(_, target)| *target == config_path)
        .unwrap_or_else(|| panic!("compose mounts nothing at {config_path}: {gate_volumes:?}"));
    assert_eq!(
        docker.join(config_source).canonicalize().unwrap(),
        docker.join("hlsgate.toml").canonicalize().unwrap()
    );
    // The image bakes in the same file at the same place.
    assert!(
        dockerfile.contains(&format!("COPY docker/hlsgate.toml {config_path}")),
        "Dockerfile copies the config elsewhere"
    );

    // Streams: the volume hlsgate reads is mounted at streams_dir.
    let streams_dir = config.streams_dir.to_string_lossy().into_owned();
    let (streams_volume, _) = gate_volumes
        .iter()
        .find(|(_, target)| *target == streams_dir)
        .unwrap_or_else(|| panic!("compose mounts nothing at streams_dir {streams_dir}: {gate_volumes:?}"));

    // Ports: what compose publishes are the ports the config listens on.
    let ports = compose_list(&gate, "ports");
    for (field, addr) in [("listen", config.listen), ("admin_listen", config.admin_listen)] {
        assert!(
            ports.iter().any(|p| p.ends_with(&format!(":{}", addr.port()))),
            "compose publishes no container port {} ({field}): {ports:?}",
            addr.port()
        );
        assert!(dockerfile.contains(&format!("{}", addr.port())), "Dockerfile EXPOSEs no {}", addr.port());
    }

    // HEALTHCHECK: /healthz on the admin port from the config.
    let health = dockerfile
        .lines()
        .skip_while(|l| !l.starts_with("HEALTHCHECK"))
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let want = format!("http://127.0.0.1:{}/healthz", config.admin_listen.port());
    assert!(health.contains(&want), "HEALTHCHECK does not hit {want}: {health}");

    // The packager writes into <streams_dir>/<a configured stream>/ on the same volume.
    let packager = compose_service(&compose, "packager");
    let packager_volumes: Vec<(String, String)> =
        compose_list(&packager, "volumes").iter().map(|v| mount(v)).collect();
    assert!(
        packager_volumes.iter().any(|(source, target)| source == streams_volume && *target == streams_dir),
        "the packager does not share {streams_volume}:{streams_dir}: {packager_volumes:?}"
    );
    let script = compose_list(&packager, "command").join(" ");
    let playlist = script
        .split_whitespace()
        .find(|w| w.ends_with(".m3u8"))
        .unwrap_or_else(|| panic!("the packager writes no playlist: {script}"));
    let stream = playlist
        .strip_prefix(&format!("{streams_dir}/"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(stream, _)| stream)
        .unwrap_or_else(|| panic!("the packager writes {playlist}, outside {streams_dir}/<stream>/"));
    assert!(config.streams.contains_key(stream), "the packager writes stream {stream:?}, not in the config");
    assert!(script.contains(&format!("mkdir -p {streams_dir}/{stream}")), "{script}");
    // hlsgate announces links at start only for streams with a playlist, so it waits for the
    // packager to be healthy, which is when that very playlist exists.
    let healthcheck =
        packager.iter().find(|l| l.trim_start().starts_with("test:")).expect("packager healthcheck");
    assert!(healthcheck.contains(&format!("\"{playlist}\"")), "{healthcheck} does not test {playlist}");
    assert!(
        gate.iter().any(|l| l.trim() == "condition: service_healthy"),
        "hlsgate does not wait for the packager"
    );
    assert_eq!(compose_scalar(&packager, "entrypoint").as_deref(), Some("[\"/bin/sh\", \"-c\"]"));

    // The packager's command really runs (this ffmpeg is older than the image's; the flags
    // are the same): into a temp dir instead of the volume, for a few seconds.
    let tmp = TempDir::new("compose-packager");
    let local = script.replace(&streams_dir, &tmp.path().to_string_lossy());
    let mut sh = Command::new("sh");
    sh.args(["-c", &local]);
    let packager_run = Bounded::spawn(&mut sh);
    let out_playlist = tmp.join(format!("{stream}/index.m3u8"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&out_playlist).is_ok_and(|t| t.contains("#EXTINF")) {
        assert!(
            Instant::now() < deadline,
            "the compose packager wrote no playlist:\n{}",
            packager_run.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = packager_run.stop();
    assert!(!log.contains("Unrecognized option") && !log.contains("Error"), "{log}");

    // And the server, on that config (ports and streams_dir made local), serves /healthz on
    // the admin port and the packager's stream on the viewer port.
    let local_config = config_text
        .replace(&format!("\"{}\"", config.listen), "\"127.0.0.1:0\"")
        .replace(&format!("\"{}\"", config.admin_listen), "\"127.0.0.1:0\"")
        .replace(&toml_str(&streams_dir), &toml_path(tmp.path()));
    assert_ne!(local_config, config_text);
    let server = Server::start(&local_config);
    let healthz = fetch(Request::get(server.admin_addr(), "/healthz"));
    assert_eq!(healthz.status, 200, "{}", healthz.text());
    let url = logged_link(&server, stream);
    let playlist = fetch(Request::get(server.viewer_addr(), &target_of(&url)));
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    assert!(playlist.text().contains("md5="), "{}", playlist.text());
}

// ---------------------------------------------------------------------------------------
// 6. The README quick start: the repo's own hlsgate.toml, as `cargo run --release -- serve`
// ---------------------------------------------------------------------------------------

#[test]
fn the_repo_config_serves_a_demo_link_that_ffprobe_plays() {
    let text = std::fs::read_to_string(repo_root().join("hlsgate.toml")).unwrap();
    // Same file, but ephemeral ports (parallel tests, and 8080/9090 may be taken here) and the
    // repo's streams/ from the temp dir it is copied to.
    let replaced = [
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\""),
        ("admin_listen = \"127.0.0.1:9090\"", "admin_listen = \"127.0.0.1:0\""),
        ("streams_dir = \"streams\"", &format!("streams_dir = {}", toml_path(&repo_streams()))),
    ];
    let mut config = text.clone();
    for (from, to) in replaced {
        assert!(config.contains(from), "hlsgate.toml no longer has {from}; update this test");
        config = config.replacen(from, to, 1);
    }
    let server = Server::start(&config);
    let url = logged_link(&server, "demo");
    let probe = run_bounded(
        Command::new("ffprobe").args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height",
            "-of",
            "csv=p=0",
            &url,
        ]),
        Duration::from_secs(45),
    );
    assert!(probe.status.success(), "ffprobe failed ({}):\n{}", probe.status, probe.stderr);
    assert!(probe.stdout.contains("h264,320,180"), "{}", probe.stdout);
    assert!(probe.stdout.contains("aac"), "{}", probe.stdout);
}

// ---------------------------------------------------------------------------------------
// The helpers above, on fixed text
// ---------------------------------------------------------------------------------------

#[test]
fn helpers_parse_ffmpeg_output_and_compose_text() {
    let stderr = "[hls @ 0x1] Opening 'http://h/demo/180p/seg_007.ts?md5=a&expires=1' for reading\n\
                  frame=1 [http @ 0x2] Opening 'http://h/demo/180p/seg_000.ts?md5=b&expires=1' for reading\n\
                  [hls @ 0x1] Opening 'http://h/demo/270p/seg_003.ts?md5=c&expires=1' for reading";
    let opened = ffmpeg_opened(stderr);
    assert_eq!(opened.len(), 3);
    assert_eq!(segment_numbers(&opened, "/demo/180p/"), [7, 0]);
    assert_eq!(
        ffmpeg_out_seconds("out_time_us=1000\nprogress=continue\nout_time_us=12500000\nprogress=end"),
        12.5
    );
    assert_eq!(ffmpeg_out_seconds("nothing"), 0.0);
    assert_eq!(target_of("http://127.0.0.1:1/a/b?x=1"), "/a/b?x=1");
    assert_eq!(
        uris("#EXTM3U\n#EXTINF:2,\nseg.ts?t=1\n\n/abs.ts\n", "/s/v/index.m3u8"),
        ["/s/v/seg.ts?t=1", "/abs.ts"]
    );

    let compose = "services:\n  a:\n    image: x\n    command:\n      - >-\n        one\n        two\n    # note\n    volumes:\n      - \"v:/p\"\n  b:\n    image: y\n";
    let a = compose_service(compose, "a");
    assert_eq!(compose_list(&a, "command"), ["one two"]);
    assert_eq!(compose_list(&a, "volumes"), ["v:/p"]);
    assert_eq!(compose_scalar(&a, "image").as_deref(), Some("x"));
    assert!(compose_list(&compose_service(compose, "b"), "volumes").is_empty());
}
