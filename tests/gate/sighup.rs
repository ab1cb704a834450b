//! SIGHUP: keys and policies reload; a broken config changes nothing.

use super::*;

fn reload_config(server: &Server, streams: &str) -> String {
    config_text(&server.dir().join("streams"), "", streams)
}

async fn status_with(server: &Server, key: &str) -> u16 {
    get(server, &url("/r/a.ts", key, Some(VIEWER), now() + 300), VIEWER).await.status
}

#[tokio::test]
async fn sighup_rotates_keys_and_refuses_a_broken_config() {
    let setup = Setup::new("reload");
    setup.file("r/a.ts", "a");
    let server = setup.start("", "[streams.r]\nkeys = [\"key-one\"]\n");
    assert_eq!(status_with(&server, "key-one").await, 200);
    assert_eq!(status_with(&server, "key-two").await, 403);

    // Rotation: the new key signs, the old one still verifies.
    server.rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-two\", \"key-one\"]\n"));
    server.reload();
    wait_for_lines(&server, "config reloaded", 1);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-one").await, 200);

    // Removal.
    server.rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-two\"]\n"));
    server.reload();
    wait_for_lines(&server, "config reloaded", 2);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-one").await, 403);

    // Broken TOML: nothing changes.
    server.rewrite_config("this is [[[ not toml\n[streams.r]\nkeys = [\"key-three\"]\n");
    server.reload();
    wait_for_lines(&server, "config reload refused", 1);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-three").await, 403);

    // A field error: nothing changes, and the log names the field.
    server
        .rewrite_config(&reload_config(&server, "[streams.r]\nkeys = [\"key-three\"]\nip_prefix_v4 = 99\n"));
    server.reload();
    wait_for_lines(&server, "config reload refused", 2);
    assert_eq!(status_with(&server, "key-two").await, 200);
    assert_eq!(status_with(&server, "key-three").await, 403);
    let refusals: Vec<String> =
        server.logs().into_iter().filter(|l| l.contains("config reload refused")).collect();
    assert!(refusals[1].contains("streams.r.ip_prefix_v4"), "{}", refusals[1]);
    for line in server.logs() {
        assert!(!line.contains("key-three") && !line.contains("key-two"), "a key in the log: {line}");
    }

    let metrics = admin(&server, "/metrics").await.text();
    assert_eq!(metric(&metrics, "hlsgate_config_reloads_total{result=\"ok\"}"), Some(2), "{metrics}");
    assert_eq!(metric(&metrics, "hlsgate_config_reloads_total{result=\"error\"}"), Some(2), "{metrics}");
}

#[tokio::test]
async fn sighup_applies_new_policies_to_issued_playlists() {
    let setup = Setup::new("reload-pl");
    setup.file("r/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("r/a.ts", "a");
    let server = setup.start("", "[streams.r]\nkeys = [\"key-one\"]\n");
    server.rewrite_config(&reload_config(
        &server,
        "[streams.r]\nkeys = [\"key-two\", \"key-one\"]\nsession_ttl = 100\ntoken_params = [\"st\", \"e\"]\n",
    ));
    server.reload();
    wait_for_lines(&server, "config reloaded", 1);
    let check = Rewritten {
        server: &server,
        key: "key-two",
        names: ParamNames { token: "st".into(), expires: "e".into() },
        viewer: VIEWER,
        binding: VIEWER.into(),
    };
    let disk = disk(&server, "r/index.m3u8");
    let signed = check.check("/r/index.m3u8", &disk, 100, &[]).await;
    check.fetch_all(&signed, OTHER).await;

    // trusted_proxies is reloadable too.
    let behind = |server: &Server| {
        let target = url("/r/a.ts", "key-two", Some("127.0.0.9"), now() + 300);
        Request::get(server.viewer_addr(), &target).from("127.0.0.1").header("X-Forwarded-For", "127.0.0.9")
    };
    assert_eq!(behind(&server).send().await.status, 403);
    let streams = "[streams.r]\nkeys = [\"key-two\"]\n";
    let trusting = config_text(&server.dir().join("streams"), "trusted_proxies = [\"127.0.0.1\"]", streams);
    server.rewrite_config(&trusting);
    server.reload();
    wait_for_lines(&server, "config reloaded", 2);
    assert_eq!(behind(&server).send().await.status, 200);
}
