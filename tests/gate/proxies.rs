//! Client IP behind trusted proxies.

use super::*;

const XKEY: &str = "xff-key";

fn proxy_server(trusted: &str) -> Server {
    let setup = Setup::new("proxies");
    setup
        .file("x/a.ts", "a")
        .file("x/index.m3u8", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXT-X-ENDLIST\n");
    setup.start(
        &format!("trusted_proxies = {trusted}"),
        "[streams.x]\nkeys = [\"xff-key\"]\nentry_ip = \"required\"\n",
    )
}

/// GET /x/a.ts with a token bound to `bound_to`, from socket `from`, with extra headers.
async fn via(server: &Server, from: &str, bound_to: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req =
        Request::get(server.viewer_addr(), &url("/x/a.ts", XKEY, Some(bound_to), now() + 300)).from(from);
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.send().await.status
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let server = proxy_server("[]");
    for headers in
        [[("X-Forwarded-For", "127.0.0.9")], [("Forwarded", "for=127.0.0.9")], [("X-Real-IP", "127.0.0.9")]]
    {
        assert_eq!(via(&server, VIEWER, "127.0.0.9", &headers).await, 403, "{headers:?}");
        assert_eq!(via(&server, VIEWER, VIEWER, &headers).await, 200, "{headers:?}");
    }
    // Trusted proxies elsewhere do not make 127.0.0.1 trusted either.
    let server = proxy_server("[\"10.0.0.0/8\"]");
    let spoof = [("X-Forwarded-For", "127.0.0.9")];
    assert_eq!(via(&server, "127.0.0.1", "127.0.0.9", &spoof).await, 403);
    assert_eq!(via(&server, "127.0.0.1", "127.0.0.1", &spoof).await, 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_client() {
    let server = proxy_server("[\"127.0.0.1/32\", \"10.0.0.0/8\"]");
    let proxy = "127.0.0.1";
    // The client forged 6.6.6.6; the proxy appended the address it saw, 127.0.0.9.
    let xff = [("X-Forwarded-For", "6.6.6.6, 127.0.0.9")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &xff).await, 200);
    assert_eq!(via(&server, proxy, "6.6.6.6", &xff).await, 403, "a forged left entry does not help");
    assert_eq!(via(&server, proxy, proxy, &xff).await, 403, "the proxy is not the viewer");
    // Trusted hops on the right are skipped.
    let chain = [("X-Forwarded-For", "6.6.6.6, 127.0.0.9, 10.1.2.3")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &chain).await, 200);
    assert_eq!(via(&server, proxy, "10.1.2.3", &chain).await, 403);
    // Two header lines are one list.
    let lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "127.0.0.9")];
    assert_eq!(via(&server, proxy, "127.0.0.9", &lines).await, 200);
    assert_eq!(via(&server, proxy, "6.6.6.6", &lines).await, 403);
    // Only X-Forwarded-For is read by default: a client's own `Forwarded` changes nothing.
    let fwd = [("Forwarded", "for=6.6.6.6, for=\"127.0.0.9:4711\";proto=http")];
    assert_eq!(via(&server, proxy, proxy, &fwd).await, 200);
    assert_eq!(via(&server, proxy, "127.0.0.9", &fwd).await, 403);
    // No header: the proxy itself is the client.
    assert_eq!(via(&server, proxy, proxy, &[]).await, 200);
    // A trusted peer outside the list of the request's own addresses changes nothing for others.
    assert_eq!(via(&server, VIEWER, "127.0.0.9", &xff).await, 403);

    // The refusal log names the client as resolved through the proxy.
    assert!(server.logs().iter().any(|l| l.contains("refused") && l.contains("127.0.0.9")));

    // A playlist fetched through the proxy is bound to the viewer behind it.
    let entry = url("/x/index.m3u8", XKEY, Some("127.0.0.9"), now() + 300);
    let resp = Request::get(server.viewer_addr(), &entry).from(proxy).header(xff[0].0, xff[0].1).send().await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let host = server.viewer_addr().to_string();
    let seg = uris(&resp.text())
        .iter()
        .find_map(|u| signed_uri(u, "/x/index.m3u8", &host, &ParamNames::default()))
        .unwrap();
    assert_eq!(seg.token, sign(seg.expires, "/x/a.ts", Some("127.0.0.9"), &Key::new(XKEY)));
    assert_eq!(get(&server, &seg.target, "127.0.0.9").await.status, 200);
    assert_eq!(get(&server, &seg.target, VIEWER).await.status, 403);
}
