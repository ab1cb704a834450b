//! Token rules: missing, malformed, wrong key, expiry, skew, bindings, directory tokens, parameter names.
//! In-process (`InProcess`): these rules need HTTP only, not the process around the server.

use super::*;

const TOKEN_STREAMS: &str = r#"
[streams.s]
keys = ["key-new", "key-old"]

[streams.req]
keys = ["key-req"]
entry_ip = "required"

[streams.pfx]
keys = ["key-pfx"]
ip_prefix_v4 = 24

[streams.skew0]
keys = ["key-skew"]
skew = 0

[streams.skew60]
keys = ["key-skew"]
skew = 60

[streams.custom]
keys = ["key-custom"]
token_params = ["st", "e"]
"#;

async fn token_setup() -> InProcess {
    let setup = Setup::new("tokens");
    for stream in ["s", "req", "pfx", "skew0", "skew60", "custom"] {
        setup.file(&format!("{stream}/a.ts"), pattern(1000, 1));
    }
    setup.file("s/dir/a.ts", "dir-a").file("s/dir/sub/b.ts", "dir-sub-b");
    setup.file("pfx/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.file("custom/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.start_in_process("", TOKEN_STREAMS).await
}

#[tokio::test]
async fn missing_malformed_and_wrong_key_tokens_are_403_with_a_short_reason() {
    let server = token_setup().await;
    let exp = now() + 300;
    let good = sign(exp, "/s/a.ts", Some(VIEWER), &Key::new("key-new"));
    let cases = [
        "/s/a.ts".to_string(),
        format!("/s/a.ts?expires={exp}"),
        format!("/s/a.ts?md5={good}"),
        format!("/s/a.ts?md5=short&expires={exp}"),
        format!("/s/a.ts?md5={good}xx&expires={exp}"),
        format!("/s/a.ts?md5={}&expires={exp}", good.replace(|c: char| c.is_ascii_alphanumeric(), "+")),
        format!("/s/a.ts?md5={good}&expires=soon"),
        format!("/s/a.ts?md5={good}&expires=-{exp}"),
        format!("/s/a.ts?md5={good}&expires={}", exp + 1),
        url("/s/a.ts", "key-wrong", Some(VIEWER), exp),
        url("/s/a.ts", "key-new ", Some(VIEWER), exp),
        // Genuine, but for another path.
        url("/s/a.ts", "key-new", Some(VIEWER), exp).replacen("/s/a.ts", "/s/dir/a.ts", 1),
    ];
    for target in &cases {
        let resp = get(&server, target, VIEWER).await;
        assert_eq!(resp.status, 403, "{target}: {}", resp.text());
        assert_short_reason(&resp, &["key-new", "key-old", &good]);
    }
    // The genuine one, for contrast.
    let resp = get(&server, &format!("/s/a.ts?md5={good}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, pattern(1000, 1));
}

#[tokio::test]
async fn expired_token_is_410_with_a_short_reason() {
    let server = token_setup().await;
    let exp = now() - 120;
    let target = url("/s/a.ts", "key-new", Some(VIEWER), exp);
    let resp = get(&server, &target, VIEWER).await;
    assert_eq!(resp.status, 410, "{}", resp.text());
    let expected_now = sign(now() + 300, "/s/a.ts", Some(VIEWER), &Key::new("key-new"));
    assert_short_reason(&resp, &["key-new", "key-old", &expected_now]);
    assert!(resp.text().contains("expired"), "{}", resp.text());
    // Signature before clock: an expired forgery is a 403, so only the key holder learns expiry.
    let forged = url("/s/a.ts", "not-the-key", Some(VIEWER), exp);
    assert_eq!(get(&server, &forged, VIEWER).await.status, 403);
}

#[tokio::test]
async fn every_key_verifies_and_tokens_bind_to_the_address() {
    let server = token_setup().await;
    let exp = now() + 300;
    for key in ["key-new", "key-old"] {
        let resp = get(&server, &url("/s/a.ts", key, Some(VIEWER), exp), VIEWER).await;
        assert_eq!(resp.status, 200, "{key}: {}", resp.text());
    }
    // Bound to 127.0.0.2, used from 127.0.0.3.
    let resp = get(&server, &url("/s/a.ts", "key-new", Some(VIEWER), exp), OTHER).await;
    assert_eq!(resp.status, 403);
    // A key of another stream opens nothing here.
    assert_eq!(get(&server, &url("/s/a.ts", "key-req", Some(VIEWER), exp), VIEWER).await.status, 403);
}

#[tokio::test]
async fn ip_less_tokens_only_where_entry_ip_is_optional() {
    let server = token_setup().await;
    let exp = now() + 300;
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", None, exp), VIEWER).await.status, 200);
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", None, exp), OTHER).await.status, 200);
    let resp = get(&server, &url("/req/a.ts", "key-req", None, exp), VIEWER).await;
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(get(&server, &url("/req/a.ts", "key-req", Some(VIEWER), exp), VIEWER).await.status, 200);
}

#[tokio::test]
async fn prefix_binding_lets_a_neighbour_in_the_network_use_issued_tokens() {
    let server = token_setup().await;
    let exp = now() + 300;
    // A link bound to the /24 works from any address in it, and only there.
    let net = url("/pfx/a.ts", "key-pfx", Some("127.0.0.0/24"), exp);
    assert_eq!(get(&server, &net, VIEWER).await.status, 200);
    assert_eq!(get(&server, &net, OTHER).await.status, 200);
    assert_eq!(get(&server, &net, "127.0.1.2").await.status, 403);
    // An exact-address link stays exact.
    let exact = url("/pfx/a.ts", "key-pfx", Some(VIEWER), exp);
    assert_eq!(get(&server, &exact, VIEWER).await.status, 200);
    assert_eq!(get(&server, &exact, OTHER).await.status, 403);

    // What hlsgate issues to 127.0.0.2 is bound to 127.0.0.0/24: it opens from 127.0.0.3.
    let check = Rewritten {
        server: &server,
        key: "key-pfx",
        names: ParamNames::default(),
        viewer: VIEWER,
        binding: "127.0.0.0/24".into(),
    };
    let disk = std::fs::read(server.dir().join("streams/pfx/index.m3u8")).unwrap();
    let signed = check.check("/pfx/index.m3u8", &disk, 14400, &[]).await;
    assert_eq!(signed.len(), 1);
    for from in [VIEWER, OTHER] {
        assert_eq!(get(&server, &signed[0].target, from).await.status, 200, "from {from}");
    }
    assert_eq!(get(&server, &signed[0].target, "127.0.1.2").await.status, 403);
}

#[tokio::test]
async fn ipv6_viewers_are_bound_in_rfc5952_text_and_by_prefix() {
    let setup = Setup::new("ipv6");
    setup
        .file("v/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n")
        .file("v/a.ts", "six");
    let config = format!(
        "listen = \"[::1]:0\"\nadmin_listen = \"127.0.0.1:0\"\nstreams_dir = {}\n\
         [streams.v]\nkeys = [\"v6-key\"]\nentry_ip = \"required\"\nip_prefix_v6 = 64\n",
        toml_path(&setup.streams())
    );
    let server = Server::start_in(setup.dir, &config, &[]);
    assert!(server.viewer_addr().is_ipv6(), "{}", server.viewer_addr());
    let exp = now() + 300;

    // A link bound to the viewer's address as RFC 5952 text opens; one for another address not.
    let entry = url("/v/index.m3u8", "v6-key", Some("::1"), exp);
    let resp = get(&server, &entry, "::1").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let spelled_long = url("/v/a.ts", "v6-key", Some("0:0:0:0:0:0:0:1"), exp);
    assert_eq!(get(&server, &spelled_long, "::1").await.status, 403, "only the canonical text is hashed");
    assert_eq!(get(&server, &url("/v/a.ts", "v6-key", Some("2001:db8::1"), exp), "::1").await.status, 403);

    // What hlsgate issues is bound to the viewer's /64, written `::/64`.
    let uri = uris(&resp.text()).pop().expect("one segment URI");
    let signed = signed_uri(&uri, "/v/index.m3u8", "", &ParamNames::default()).expect("signed");
    assert_eq!(signed.token, sign(signed.expires, "/v/a.ts", Some("::/64"), &Key::new("v6-key")));
    let media = get(&server, &signed.target, "::1").await;
    assert_eq!((media.status, media.body.as_slice()), (200, &b"six"[..]));
}

#[tokio::test]
async fn skew_is_tolerance_after_expiry() {
    let server = token_setup().await;
    // Margins of 30 s either side: no clock tick can flip these.
    let past = now() - 30;
    let future = now() + 30;
    let at = |stream: &str, exp: u64| url(&format!("/{stream}/a.ts"), "key-skew", Some(VIEWER), exp);
    assert_eq!(get(&server, &at("skew60", past), VIEWER).await.status, 200);
    assert_eq!(get(&server, &at("skew0", past), VIEWER).await.status, 410);
    assert_eq!(get(&server, &at("skew0", future), VIEWER).await.status, 200);
    assert_eq!(get(&server, &at("skew60", now() - 120), VIEWER).await.status, 410);
    // The default skew (5 s) does not cover 30 s.
    assert_eq!(get(&server, &url("/s/a.ts", "key-new", Some(VIEWER), past), VIEWER).await.status, 410);
}

#[tokio::test]
async fn directory_tokens_open_direct_children_only() {
    let server = token_setup().await;
    let exp = now() + 300;
    let token = sign(exp, "/s/dir/", Some(VIEWER), &Key::new("key-new"));
    let query = format!("md5={token}&expires={exp}");
    let resp = get(&server, &format!("/s/dir/a.ts?{query}"), VIEWER).await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "dir-a"));
    assert_eq!(get(&server, &format!("/s/dir/sub/b.ts?{query}"), VIEWER).await.status, 403);
    assert_eq!(get(&server, &format!("/s/a.ts?{query}"), VIEWER).await.status, 403);
    // A directory token without its trailing slash is a token for a file named `dir`.
    let no_slash = sign(exp, "/s/dir", Some(VIEWER), &Key::new("key-new"));
    let resp = get(&server, &format!("/s/dir/a.ts?md5={no_slash}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 403);
}

#[tokio::test]
async fn custom_token_parameter_names() {
    let server = token_setup().await;
    let exp = now() + 300;
    let names = ParamNames { token: "st".into(), expires: "e".into() };
    let token = sign(exp, "/custom/a.ts", Some(VIEWER), &Key::new("key-custom"));
    let resp = get(&server, &format!("/custom/a.ts?e={exp}&foo=1&st={token}"), VIEWER).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let resp = get(&server, &format!("/custom/a.ts?md5={token}&expires={exp}"), VIEWER).await;
    assert_eq!(resp.status, 403);

    // What it issues uses the same names.
    let check =
        Rewritten { server: &server, key: "key-custom", names, viewer: VIEWER, binding: VIEWER.into() };
    let disk = std::fs::read(server.dir().join("streams/custom/index.m3u8")).unwrap();
    let signed = check.check("/custom/index.m3u8", &disk, 14400, &[]).await;
    assert_eq!(signed.len(), 1);
    assert!(signed[0].uri.starts_with("a.ts?st=") && !signed[0].uri.contains("md5="), "{}", signed[0].uri);
    check.fetch_all(&signed, OTHER).await;
}

#[tokio::test]
async fn missing_files_and_unknown_streams() {
    let server = token_setup().await;
    let exp = now() + 300;
    let resp = get(&server, &url("/s/nope.ts", "key-new", Some(VIEWER), exp), VIEWER).await;
    assert_eq!(resp.status, 404, "a valid token may learn the file is missing");
    assert_eq!(get(&server, "/s/nope.ts", VIEWER).await.status, 403, "without one it learns nothing");
    assert_eq!(get(&server, &url("/s/dir", "key-new", Some(VIEWER), exp), VIEWER).await.status, 404);
    assert_eq!(get(&server, &url("/s/dir/", "key-new", Some(VIEWER), exp), VIEWER).await.status, 404);
    // Unknown streams are refused as a known stream without a valid token (tests/security.rs).
    assert_eq!(get(&server, "/nosuch/a.ts", VIEWER).await.status, 403);
    assert_eq!(get(&server, &url("/nosuch/a.ts", "key-new", Some(VIEWER), exp), VIEWER).await.status, 403);
    assert_eq!(get(&server, "/", VIEWER).await.status, 403);
    // Other methods: nothing without a token, 405 with one.
    let target = url("/s/a.ts", "key-new", Some(VIEWER), exp);
    let post = |t: &str| Request::new("POST", server.viewer_addr(), t).from(VIEWER);
    assert_eq!(post("/s/a.ts").send().await.status, 403);
    let resp = post(&target).send().await;
    assert_eq!(resp.status, 405);
    assert!(resp.header("allow").is_some_and(|a| a.contains("GET")), "{:?}", resp.headers);
}
