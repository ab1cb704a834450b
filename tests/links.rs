//! Leaked links, against the real `hlsgate serve` on loopback: one IP-less entry link posted
//! where 40 viewers (40 loopback addresses) find it at once. With `max_ips_per_link = 3` the
//! first 3 networks play on and the other 37 get 403 `shared link`, counted and logged by a
//! digest prefix; without the setting everyone is served, as before.

mod common;

use std::collections::BTreeSet;

use common::*;
use hlsgate::token::{digest, Key};
use tokio::task::JoinSet;

const KEY: &str = "links-key";
const MASTER: &str = "/x/master.m3u8";
const SHARERS: u8 = 40;

/// Stream `x`: a master playlist, one variant, two segments; `x_table` adds to its table.
fn x_server(x_table: &str) -> Server {
    let setup = Setup::new("links");
    setup
        .file("x/master.m3u8", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\nv/index.m3u8\n")
        .file(
            "x/v/index.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n",
        )
        .file("x/v/a.ts", "segment a")
        .file("x/v/b.ts", "segment b");
    setup.start("", &format!("[streams.x]\nkeys = [\"{KEY}\"]\nentry_ip = \"optional\"\n{x_table}\n"))
}

/// The 40 viewers: 127.0.0.10 to 127.0.0.49, each its own network under the default /32.
fn sharers() -> Vec<String> {
    (10..10 + SHARERS).map(|last| format!("127.0.0.{last}")).collect()
}

/// Every sharer opens `link` at once; the statuses and bodies by address.
async fn open_all(server: &Server, link: &str) -> Vec<(String, Response)> {
    let mut requests = JoinSet::new();
    for from in sharers() {
        let request = Request::get(server.viewer_addr(), link).from(&from);
        requests.spawn(async move { (from, request.send().await) });
    }
    let mut answers = Vec::new();
    while let Some(answer) = requests.join_next().await {
        answers.push(answer.expect("a request task"));
    }
    answers.sort_by(|a, b| a.0.cmp(&b.0));
    answers
}

/// The URI lines of a playlist, as targets under `dir` (e.g. `/x/`).
fn uri_targets(playlist: &str, dir: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|uri| format!("{dir}{uri}"))
        .collect()
}

/// Fetches every URI of the playlist `text` (served at `dir`) from `from`, and the URIs of the
/// playlists among them: everything a player would; returns how many were fetched.
async fn play_through(server: &Server, text: &str, dir: &str, from: &str) -> usize {
    let mut fetched = 0;
    let mut pending: Vec<(String, String)> = vec![(text.to_string(), dir.to_string())];
    while let Some((text, dir)) = pending.pop() {
        for target in uri_targets(&text, &dir) {
            let resp = get(server, &target, from).await;
            assert_eq!(resp.status, 200, "{target} from {from}: {}", resp.text());
            fetched += 1;
            let path = target.split('?').next().unwrap_or(&target);
            if path.ends_with(".m3u8") {
                let sub = path.rsplit_once('/').map_or("/", |(dir, _)| dir);
                pending.push((resp.text(), format!("{sub}/")));
            }
        }
    }
    fetched
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_link_shared_by_40_networks_opens_for_the_first_3_only() {
    let server = x_server("max_ips_per_link = 3");
    let expires = now() + 600;
    let link = signed(MASTER, KEY, None, expires);
    let token = link.split("md5=").nth(1).and_then(|rest| rest.split('&').next()).unwrap().to_string();
    let full_digest = digest(expires, MASTER, None, &Key::new(KEY));
    let prefix = hex(&full_digest[..4]);

    let answers = open_all(&server, &link).await;
    let admitted: Vec<&(String, Response)> = answers.iter().filter(|(_, r)| r.status == 200).collect();
    let refused: Vec<&(String, Response)> = answers.iter().filter(|(_, r)| r.status != 200).collect();
    assert_eq!(admitted.len(), 3, "{:?}", answers.iter().map(|(f, r)| (f, r.status)).collect::<Vec<_>>());
    assert_eq!(refused.len(), 37);
    for (from, resp) in &refused {
        assert_eq!((resp.status, resp.text().as_str()), (403, "shared link\n"), "{from}");
        assert_short_reason(resp, &[KEY, &token]);
    }

    // The admitted viewers play on: every URI inside their playlists (bound to them, so never
    // counted), and the entry link itself again.
    for (from, master) in &admitted {
        let fetched = play_through(&server, &master.text(), "/x/", from).await;
        assert_eq!(fetched, 3, "the variant and its two segments");
        assert_eq!(get(&server, &link, from).await.status, 200, "{from} reopening the link");
    }
    // A refused network stays refused; a fourth network still is.
    assert_eq!(get(&server, &link, &refused[0].0).await.status, 403);
    assert_eq!(get(&server, &link, "127.0.0.99").await.status, 403);
    let refusals = 37 + 2;

    // IP-bound entry links are never counted: each opens from its own address, however many.
    for last in 100..110 {
        let from = format!("127.0.0.{last}");
        let bound = signed(MASTER, KEY, Some(&from), expires);
        assert_eq!(get(&server, &bound, &from).await.status, 200, "{bound} from {from}");
    }

    let metrics = admin(&server, "/metrics").await.text();
    assert_eq!(
        metric(&metrics, "hlsgate_shared_link_refusals_total{stream=\"x\"}"),
        Some(refusals),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE hlsgate_shared_link_refusals_total counter\n"), "{metrics}");
    assert_eq!(metric(&metrics, "hlsgate_link_ledger_evictions_total"), Some(0), "{metrics}");
    assert_eq!(
        metric(&metrics, "hlsgate_requests_total{stream=\"x\",kind=\"playlist\",outcome=\"forbidden\"}"),
        Some(refusals)
    );

    // One line per refused sharer (one per client and reason per window), with the link's
    // digest prefix, and never the token or its whole digest.
    let lines = |server: &Server| -> Vec<String> {
        server.logs().into_iter().filter(|l| l.contains("refused") && l.contains("shared link")).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lines(&server).len() < 38 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let shared = lines(&server);
    let clients: BTreeSet<String> = shared.iter().filter_map(|l| log_field(l, "client")).collect();
    assert_eq!((shared.len(), clients.len()), (38, 38), "{shared:#?}");
    for line in &shared {
        assert_eq!(log_field(line, "link").as_deref(), Some(prefix.as_str()), "{line}");
        assert!(line.contains("status=403"), "{line}");
    }
    for line in server.logs() {
        assert!(!line.contains(&token), "the token was logged: {line}");
        assert!(!line.contains(&hex(&full_digest)), "the whole digest was logged: {line}");
    }
}

#[tokio::test]
async fn without_max_ips_per_link_a_shared_link_opens_for_everyone() {
    let server = x_server("");
    let link = signed(MASTER, KEY, None, now() + 600);
    let answers = open_all(&server, &link).await;
    for (from, resp) in &answers {
        assert_eq!(resp.status, 200, "{from}: {}", resp.text());
    }
    assert_eq!(answers.len(), usize::from(SHARERS));
    let metrics = admin(&server, "/metrics").await.text();
    assert!(!metrics.contains("hlsgate_shared_link_refusals_total{"), "{metrics}");
}

/// The count is per network under the stream's prefix: a /24 of viewers is one network.
#[tokio::test]
async fn viewers_in_one_prefix_count_once() {
    let server = x_server("max_ips_per_link = 1\nip_prefix_v4 = 24");
    let link = signed(MASTER, KEY, None, now() + 600);
    let answers = open_all(&server, &link).await;
    assert!(answers.iter().all(|(_, resp)| resp.status == 200), "all of 127.0.0.0/24");
    let resp = get(&server, &link, "127.0.1.1").await;
    assert_eq!((resp.status, resp.text().as_str()), (403, "shared link\n"), "another /24");
}
