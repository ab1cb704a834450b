//! The README's "Four uses" table, run as written: each row's config on the demo stream, each
//! row's `hlsgate sign` command with its placeholder filled by a loopback viewer address, then
//! what that use promises, checked from two viewer addresses (127.0.0.2 and 127.0.0.3).
//!
//! If a row of the table changes, these tests run the new text; if a row disappears or its
//! command no longer parses, they fail and say which.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const KEY: &str = "four-uses-key";
const VIEWER: &str = "127.0.0.2";
const OTHER: &str = "127.0.0.3";
const MASTER: &str = "/demo/master.m3u8";
/// Seconds a test may take between signing and checking an expiry it computed from `now()`.
const SLACK: u64 = 5;

/// One row of the table: its config lines and its `sign` arguments.
struct Use {
    config: Vec<String>,
    sign_args: Vec<String>,
}

impl Use {
    /// The row whose first cell starts with `name`.
    fn from_readme(name: &str) -> Use {
        let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
        let section = readme.split("\n## Four uses").nth(1).expect("README has a \"## Four uses\" section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let row = section
            .lines()
            .find(|line| line.starts_with(&format!("| {name}")))
            .unwrap_or_else(|| panic!("no row {name:?} in README's four uses"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let [_, _, config, link, ..] = cells.as_slice() else { panic!("row {row:?} has too few cells") };
        let command = backticked(link)
            .into_iter()
            .find(|code| code.starts_with("sign "))
            .unwrap_or_else(|| panic!("row {name:?} shows no `sign …` command"));
        let command = command.replace("<office egress IP>", VIEWER).replace("<viewer IP>", VIEWER);
        assert!(!command.contains('<'), "a placeholder this test does not know: {command}");
        Use {
            config: backticked(config),
            sign_args: command.split_whitespace().skip(1).map(String::from).collect(),
        }
    }

    /// The demo stream under this row's config, plus `extra` lines for the stream.
    fn serve(&self, extra: &str) -> Server {
        let config = format!(
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n\n\
             [streams.demo]\nkeys = [\"{KEY}\"]\n{}\n{extra}\n",
            toml_path(&repo_streams()),
            self.config.join("\n"),
        );
        Server::start_in(TempDir::new("use"), &config, &[])
    }

    /// The master link the row's command prints.
    fn link(&self) -> String {
        sign_cli(&self.sign_args)
    }

    /// The row's command with `flag VALUE` replaced by `instead` (nothing, to drop it).
    fn link_with(&self, flag: &str, instead: &[&str]) -> String {
        let mut args = self.sign_args.clone();
        let at = args.iter().position(|arg| arg == flag);
        let at = at.unwrap_or_else(|| panic!("the row's command {args:?} has no {flag}"));
        args.splice(at..at + 2, instead.iter().map(|arg| arg.to_string()));
        sign_cli(&args)
    }
}

/// The `code` spans of a table cell.
fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(String::from).collect()
}

fn sign_cli(args: &[String]) -> String {
    let run = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_hlsgate")).args(["sign", "--key", KEY, "--path", MASTER]).args(args),
        Duration::from_secs(10),
    );
    assert!(run.status.success(), "hlsgate sign {args:?}: {}", run.stderr);
    run.stdout.trim().to_string()
}

async fn get(server: &Server, target: &str, from: &str) -> Response {
    Request::get(server.viewer_addr(), target).from(from).send().await
}

/// The URI lines of a demo playlist at `path`, as fetchable targets.
fn uri_targets(playlist: &str, path: &str) -> Vec<String> {
    let dir = path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let targets: Vec<String> = playlist
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|uri| format!("{dir}/{uri}"))
        .collect();
    assert!(!targets.is_empty(), "no URIs in {path}:\n{playlist}");
    targets
}

fn expires_of(target: &str) -> u64 {
    let query = target.split_once('?').map_or("", |(_, query)| query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("expires=")?.parse().ok())
        .unwrap_or_else(|| panic!("no expires in {target}"))
}

/// The viewer's master playlist, then the first variant playlist listed in it.
async fn enter(server: &Server, link: &str, from: &str) -> (Vec<String>, String, Vec<String>) {
    let master = get(server, link, from).await;
    assert_eq!(master.status, 200, "{link} from {from}: {}", master.text());
    let variants = uri_targets(&master.text(), MASTER);
    let variant = variants[0].clone();
    let media = get(server, &variant, from).await;
    assert_eq!(media.status, 200, "{variant} from {from}: {}", media.text());
    let segments = uri_targets(&media.text(), variant.split('?').next().unwrap_or(&variant));
    (variants, media.text(), segments)
}

#[tokio::test]
async fn office_only_content_opens_from_the_office_address_and_nowhere_else() {
    let office = Use::from_readme("Office-only content");
    let server = office.serve("");
    let link = office.link();
    let day = expires_of(&link).saturating_sub(now());
    assert!((28800 - SLACK..=28800).contains(&day), "an office link lasts a working day, not {day} s");

    let (variants, _, segments) = enter(&server, &link, VIEWER).await;
    for target in [&link].into_iter().chain(&variants).chain(&segments) {
        assert_eq!(get(&server, target, OTHER).await.status, 403, "{target} from outside the office");
    }
    assert_eq!(get(&server, &segments[0], VIEWER).await.status, 200);
    // entry_ip = "required": the same link without the address does not open.
    let ip_less = office.link_with("--ip", &[]);
    assert_eq!(get(&server, &ip_less, VIEWER).await.status, 403, "an IP-less link into office content");
}

#[tokio::test]
async fn paid_month_long_links_keep_every_uri_open_for_the_month_for_the_buyer_only() {
    let paid = Use::from_readme("Paid content");
    let server = paid.serve("");
    let link = paid.link();
    let month = 2_678_400;
    let entered = now();
    assert!(expires_of(&link) >= entered + month - SLACK, "the purchase link lasts the month");

    let (variants, _, segments) = enter(&server, &link, VIEWER).await;
    // The demo's variants are VOD: everything inside gets session_ttl, the month.
    for target in variants.iter().chain(&segments) {
        assert!(expires_of(target) >= entered + month, "{target} expires before the month is out");
        assert_eq!(get(&server, target, OTHER).await.status, 403, "{target} from someone else");
    }
    assert_eq!(get(&server, &segments[0], VIEWER).await.status, 200);
    assert_eq!(get(&server, &link, OTHER).await.status, 403, "the buyer's link from someone else");
    let ip_less = paid.link_with("--ip", &[]);
    assert_eq!(get(&server, &ip_less, VIEWER).await.status, 403, "entry_ip = \"required\"");
}

#[tokio::test]
async fn a_shared_24_hour_link_opens_for_anyone_and_binds_each_viewer_inside() {
    let shared = Use::from_readme("User-shared temporary link");
    let server = shared.serve("");
    let link = shared.link();
    let day = expires_of(&link).saturating_sub(now());
    assert!((86400 - SLACK..=86400).contains(&day), "a shared link lasts a day, not {day} s");

    let (a_variants, _, a_segments) = enter(&server, &link, VIEWER).await;
    let (_, _, b_segments) = enter(&server, &link, OTHER).await;
    assert_eq!(get(&server, &b_segments[0], OTHER).await.status, 200);
    for target in a_variants.iter().chain(&a_segments) {
        assert_eq!(get(&server, target, OTHER).await.status, 403, "A's {target} replayed by B");
    }
}

#[tokio::test]
async fn a_two_second_live_link_opens_the_broadcast_and_dies_while_the_viewer_plays_on() {
    let live = Use::from_readme("Live broadcast");
    // The demo stands in for a live packager.
    let server = live.serve("simulate_live = true");
    let link = live.link();
    let ttl = expires_of(&link).saturating_sub(now());
    assert!(ttl <= 2, "a live link lasts 2 s, not {ttl}");

    let before = now();
    let (variants, media, segments) = enter(&server, &link, VIEWER).await;
    let after = now();
    assert!(!media.contains("#EXT-X-ENDLIST"), "the broadcast is live:\n{media}");
    // The master's URIs carry the session: the viewer keeps refreshing long after the link died.
    for variant in &variants {
        assert!(expires_of(variant) >= before + 14_400, "{variant}");
    }
    // Segment URIs live a few target durations (segment_ttl = "auto": 3 x 2 s, at least 6 s),
    // rounded up by at most a step (a quarter of that, at least 1 s).
    for segment in &segments {
        let expires = expires_of(segment);
        assert!((before + 6..=after + 6 + 1).contains(&expires), "{segment}: signed at {before}..{after}");
        assert_eq!(get(&server, segment, OTHER).await.status, 403, "{segment} from a restreamer");
    }
    assert_eq!(get(&server, &segments[0], VIEWER).await.status, 200);
    assert_eq!(get(&server, &link, OTHER).await.status, 403, "the viewer's link from another address");

    // The same command once its 2 s and the 1 s of skew are past: gone.
    let dead = live.link_with("--ttl", &["--expires", &(now() - 2).to_string()]);
    assert_eq!(get(&server, &dead, VIEWER).await.status, 410, "{dead}");
}
