//! Paths: traversal in every spelling is refused before the token, and nothing leaks.

use super::*;

#[tokio::test]
async fn traversal_in_every_spelling_is_400_before_the_token_and_never_leaks() {
    let dir = TempDir::new("paths");
    let streams = copy_demo(&dir);
    dir.write("secret.txt", "TOPSECRET next to the streams dir\n");
    dir.write("streams/loose.txt", "TOPSECRET in streams_dir itself\n");
    let key = "path-key-secret";
    let config = config_text(&streams, "", &format!("[streams.demo]\nkeys = [\"{key}\"]\n"));
    let server = Server::start_in(dir, &config, &[]);

    let bad = [
        "/demo/../secret.txt",
        "/demo/../../secret.txt",
        "/demo/../../hlsgate.toml",
        "/demo/../hlsgate.toml",
        "/demo/%2e%2e/%2e%2e/secret.txt",
        "/demo/%2E%2E/%2E%2E/hlsgate.toml",
        "/demo/.%2e/.%2e/secret.txt",
        "/demo/180p/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/demo/..%2f..%2fsecret.txt",
        "/demo/..%2F..%2Fhlsgate.toml",
        "/demo%2F..%2F..%2Fsecret.txt",
        "/demo/..%5c..%5csecret.txt",
        "/demo/..%5C..%5Chlsgate.toml",
        "/demo/..\\..\\secret.txt",
        "/demo\\..\\..\\hlsgate.toml",
        "/demo/%00",
        "/demo/master.m3u8%00.ts",
        "/demo/master.m3u8%00",
        "/demo/./master.m3u8",
        "/demo//../secret.txt",
        "/demo/180p/.",
        "/demo/..",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/./demo/master.m3u8",
        "http://127.0.0.1/demo/../../secret.txt",
    ];
    let exp = now() + 300;
    for target in bad {
        // With no token, and with a token genuinely signed for the very path sent.
        let path = target.strip_prefix("http://127.0.0.1").unwrap_or(target);
        let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy().into_owned();
        let with_token = url(&decoded, key, Some(VIEWER), exp);
        let with_token = with_token.replacen(&decoded, target, 1);
        for attempt in [target.to_string(), with_token] {
            let resp = get(&server, &attempt, VIEWER).await;
            assert_eq!(resp.status, 400, "{attempt}: {}", resp.text());
            assert!(!resp.text().contains("TOPSECRET") && !resp.text().contains(key), "{attempt} leaked");
        }
    }
    // Doubled slashes are merged, as nginx's `merge_slashes` does: the token is for the merged
    // path, and nothing outside the streams dir is reachable that way either.
    for (target, merged) in
        [("//demo/master.m3u8", "/demo/master.m3u8"), ("/demo//master.m3u8", "/demo/master.m3u8")]
    {
        let signed = url(merged, key, Some(VIEWER), exp).replacen(merged, target, 1);
        assert_eq!(get(&server, &signed, VIEWER).await.status, 200, "{signed}");
        let literal = url(target, key, Some(VIEWER), exp);
        assert_eq!(get(&server, &literal, VIEWER).await.status, 403, "{literal}");
    }
    let resp =
        get(&server, &url("/secret.txt", key, Some(VIEWER), exp).replacen("/secret", "//secret", 1), VIEWER)
            .await;
    assert_eq!(resp.status, 403);
    assert!(!resp.text().contains("TOPSECRET"));
    // Spellings that are not traversal are plain names: refused without a token, absent with.
    for target in
        ["/demo/%252e%252e/%252e%252e/secret.txt", "/secret.txt", "/loose.txt", "/streams/loose.txt"]
    {
        let resp = get(&server, target, VIEWER).await;
        assert!([403, 404].contains(&resp.status), "{target}: {}", resp.status);
        assert!(!resp.text().contains("TOPSECRET"));
        let decoded = percent_encoding::percent_decode_str(target).decode_utf8_lossy().into_owned();
        let signed = url(&decoded, key, Some(VIEWER), exp).replacen(&decoded, target, 1);
        let resp = get(&server, &signed, VIEWER).await;
        // 404 in the demo stream; outside any stream, the refusal every unknown stream gets.
        let expected = if target.starts_with("/demo/") { 404 } else { 403 };
        assert_eq!(resp.status, expected, "{signed}");
        assert!(!resp.text().contains("TOPSECRET"));
    }
    // Bad paths are counted as such and logged with their reason.
    assert!(server.logs().iter().any(|l| l.contains("refused") && l.contains("dot segment")));
    for line in server.logs() {
        assert!(!line.contains(key), "key in log: {line}");
    }
}
