//! The secure-token format against the outside world: the shared vectors (nginx's documented
//! value among them), the `hlsgate sign` / `verify` CLI, and the README's PHP, Python, Node and
//! OpenSSL snippets run by their real interpreters.

use std::path::PathBuf;
use std::process::{Command, Output};

use hlsgate::token::{self, Key};
use serde_json::Value;

struct Vector {
    expires: u64,
    path: String,
    ip: Option<String>,
    secret: String,
    md5: String,
    url: String,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn vectors() -> Vec<Vector> {
    let text = std::fs::read_to_string(repo().join("tests/data/secure-token.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let vectors: Vec<Vector> = json["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| Vector {
            expires: v["expires"].as_u64().unwrap(),
            path: v["path"].as_str().unwrap().to_string(),
            ip: v["ip"].as_str().map(str::to_string),
            secret: v["secret"].as_str().unwrap().to_string(),
            md5: v["md5"].as_str().unwrap().to_string(),
            url: v["url"].as_str().unwrap().to_string(),
        })
        .collect();
    assert!(vectors.len() >= 9, "the vector file lost rows");
    vectors
}

fn hlsgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hlsgate")).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn library_signs_every_vector() {
    for v in vectors() {
        assert_eq!(
            token::sign(v.expires, &v.path, v.ip.as_deref(), &Key::new(v.secret.clone())),
            v.md5,
            "{}",
            v.url
        );
    }
}

#[test]
fn nginx_documented_value_is_among_the_vectors() {
    assert!(vectors().iter().any(|v| v.md5 == "_e4Nc3iduzkWRm01TBBNYw" && v.path == "/s/link"));
}

#[test]
fn cli_sign_reproduces_every_vector_byte_for_byte() {
    for v in vectors() {
        let expires = v.expires.to_string();
        let mut args = vec!["sign", "--key", &v.secret, "--path", &v.path, "--expires", &expires];
        if let Some(ip) = &v.ip {
            args.extend(["--ip", ip]);
        }
        let out = hlsgate(&args);
        assert!(out.status.success(), "{:?}", out);
        assert_eq!(stdout(&out), format!("{}\n", v.url), "exactly one line");
    }
}

/// `hlsgate sign` for `/a.ts` until 2000000000 with these extra flags.
fn sign_a_ts(extra: &[&str]) -> String {
    let mut args = vec!["sign", "--key", "k", "--path", "/a.ts", "--expires", "2000000000"];
    args.extend(extra);
    stdout(&hlsgate(&args))
}

#[test]
fn cli_sign_writes_canonical_ip_and_base() {
    assert_eq!(sign_a_ts(&["--ip", "::FFFF:1.2.3.4"]), sign_a_ts(&["--ip", "1.2.3.4"]));
    let want = token::sign(2000000000, "/a.ts", Some("2001:db8::1"), &Key::new("k"));
    assert!(sign_a_ts(&["--ip", "2001:DB8:0::1"]).contains(&want));
    let based = sign_a_ts(&["--base", "https://cdn.example.com/"]);
    assert!(based.starts_with("https://cdn.example.com/a.ts?md5="), "{based}");
}

#[test]
fn cli_sign_ttl_is_relative_to_now() {
    let before = now();
    let out = stdout(&hlsgate(&["sign", "--key", "k", "--path", "/a.ts", "--ttl", "600"]));
    let expires: u64 = out.trim().rsplit_once("expires=").unwrap().1.parse().unwrap();
    assert!((before + 600..=now() + 600).contains(&expires), "{out}");
}

#[test]
fn cli_sign_refuses_bad_arguments_with_exit_2() {
    for args in [
        vec!["sign", "--key", "k", "--path", "/a", "--ttl", "5", "--ip", "1.2.3"],
        vec!["sign", "--key", "k", "--path", "a.ts", "--ttl", "5"],
        vec!["sign", "--key", "k", "--path", "/a.ts?x=1", "--ttl", "5"],
        vec!["sign", "--key", "k", "--path", "/a", "--ttl", "0"],
        vec!["sign", "--key", "k", "--path", "/a", "--ttl", "-5"],
        vec!["sign", "--key", "k", "--path", "/a"],
        vec!["sign", "--key", "k", "--path", "/a", "--ttl", "5", "--expires", "9"],
    ] {
        let out = hlsgate(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "a message on stderr for {args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn cli_verify_accepts_valid_and_names_the_denial() {
    let url = stdout(&hlsgate(&[
        "sign",
        "--key",
        "new",
        "--path",
        "/demo/a.ts",
        "--ttl",
        "300",
        "--ip",
        "10.1.2.3",
    ]));
    let full = format!("http://example.com:8080{}", url.trim());

    let ok = hlsgate(&["verify", "--key", "old", "--key", "new", "--ip", "10.1.2.3", &full]);
    assert_eq!(ok.status.code(), Some(0));
    assert!(stdout(&ok).starts_with("valid, expires in "), "{}", stdout(&ok));

    let wrong_ip = hlsgate(&["verify", "--key", "new", "--ip", "10.1.2.4", url.trim()]);
    assert_eq!(
        (wrong_ip.status.code(), stdout(&wrong_ip).trim()),
        (Some(1), "token invalid for this path or address")
    );

    let wrong_key = hlsgate(&["verify", "--key", "old", "--ip", "10.1.2.3", url.trim()]);
    assert_eq!(wrong_key.status.code(), Some(1));

    let missing = hlsgate(&["verify", "--key", "new", "/demo/a.ts?x=1"]);
    assert_eq!((missing.status.code(), stdout(&missing).trim()), (Some(1), "token missing"));

    let malformed = hlsgate(&["verify", "--key", "new", "/demo/a.ts?md5=short&expires=5"]);
    assert_eq!((malformed.status.code(), stdout(&malformed).trim()), (Some(1), "token malformed"));

    let bad = hlsgate(&["verify", "--key", "new", "/demo/../a.ts?md5=x&expires=1"]);
    assert_eq!(bad.status.code(), Some(2));
    let bad = hlsgate(&["verify", &full]);
    assert_eq!(bad.status.code(), Some(2), "--key is required");
}

#[test]
fn cli_verify_expiry_and_skew() {
    // Vector rows expire in 2023 (expired) and in 2038 (valid).
    for v in vectors() {
        let mut args = vec!["verify", "--key", &v.secret, &v.url];
        if let Some(ip) = &v.ip {
            args.extend(["--ip", ip]);
        }
        let out = hlsgate(&args);
        if v.expires > now() + 60 {
            assert_eq!(out.status.code(), Some(0), "{}: {}", v.url, stdout(&out));
        } else {
            assert_eq!((out.status.code(), stdout(&out).trim()), (Some(1), "token expired"), "{}", v.url);
        }
    }
    // 100 s ago: expired with no skew, valid with 200 s of skew.
    let expires = (now() - 100).to_string();
    let url = stdout(&hlsgate(&["sign", "--key", "k", "--path", "/a.ts", "--expires", &expires]));
    assert_eq!(hlsgate(&["verify", "--key", "k", url.trim()]).status.code(), Some(1));
    assert_eq!(hlsgate(&["verify", "--key", "k", "--skew", "200", url.trim()]).status.code(), Some(0));
}

#[test]
fn cli_verify_accepts_directory_tokens() {
    let url = stdout(&hlsgate(&["sign", "--key", "k", "--path", "/videos/video-1/", "--ttl", "300"]));
    let query = url.trim().split_once('?').unwrap().1;
    let inside = format!("/videos/video-1/seg_001.ts?{query}");
    let below = format!("/videos/video-1/720p/seg_001.ts?{query}");
    assert_eq!(hlsgate(&["verify", "--key", "k", &inside]).status.code(), Some(0));
    assert_eq!(hlsgate(&["verify", "--key", "k", &below]).status.code(), Some(1));
}

/// The fenced code block that follows `<!-- snippet:NAME -->` in the README.
fn readme_snippet(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let marker = format!("<!-- snippet:{name} -->");
    let after = readme.split_once(&marker).unwrap_or_else(|| panic!("README lost {marker}")).1;
    let fence_start = after.find("```").unwrap();
    let body = &after[fence_start..];
    let body = body.split_once('\n').unwrap().1;
    body.split_once("\n```").unwrap().0.to_string()
}

fn run(program: &str, args: &[&str], code: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .arg(code)
        .output()
        .unwrap_or_else(|e| panic!("{program} must be installed (scripts/test-deps.sh): {e}"));
    assert!(out.status.success(), "{program} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Single-quoted literal safe for Python, PHP, JS and sh (the vectors have no quotes).
fn quoted(s: &str) -> String {
    assert!(!s.contains('\'') && !s.contains('\\'));
    format!("'{s}'")
}

/// Runs a README snippet once per vector, with a call written in the snippet's language, and
/// compares what it prints with the vector's URL.
fn snippet_matches_every_vector(name: &str, program: &str, flag: &str, call: fn(&str) -> String) {
    let snippet = readme_snippet(name);
    // `php -r` takes code without the opening tag.
    let snippet = snippet.trim_start_matches("<?php");
    for v in vectors() {
        let args = format!(
            "{}, {}, {}, {}",
            quoted(&v.path),
            quoted(&v.secret),
            v.expires,
            quoted(v.ip.as_deref().unwrap_or(""))
        );
        let code = format!("{snippet}\n{}\n", call(&args));
        assert_eq!(run(program, &[flag], &code).trim(), v.url, "{name}");
    }
}

#[test]
fn readme_python_snippet_matches_every_vector() {
    snippet_matches_every_vector("python", "python3", "-c", |args| format!("print(signed_url({args}))"));
}

#[test]
fn readme_php_snippet_matches_every_vector() {
    snippet_matches_every_vector("php", "php", "-r", |args| format!("echo signed_url({args});"));
}

#[test]
fn readme_node_snippet_matches_every_vector() {
    snippet_matches_every_vector("node", "node", "-e", |args| format!("console.log(signedUrl({args}));"));
}

#[test]
fn readme_openssl_pipeline_matches_every_vector() {
    let snippet = readme_snippet("openssl");
    // The first line picks example values; the test sets its own and runs the rest.
    let pipeline = snippet.split_once('\n').unwrap().1;
    for v in vectors() {
        let script = format!(
            "expires={}; path={}; ip={}; secret={}\n{pipeline}",
            v.expires,
            quoted(&v.path),
            quoted(v.ip.as_deref().unwrap_or("")),
            quoted(&v.secret)
        );
        assert_eq!(run("bash", &["-c"], &script).trim(), v.url);
    }
}

#[test]
fn independent_md5_agrees_with_the_library_on_random_inputs() {
    // openssl is an implementation we did not write: 20 inputs we did not choose by hand.
    for i in 0..20u64 {
        let expires = 1_800_000_000 + i * 7919;
        let path = format!("/s{i}/seg_{:05}.ts", i * 31);
        let ip = if i % 2 == 0 { format!("198.51.100.{i}") } else { format!("2001:db8::{i:x}") };
        let script = format!(
            "echo -n '{expires}{path}{ip} key-{i}' | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d ="
        );
        let theirs = run("bash", &["-c"], &script);
        assert_eq!(theirs.trim(), token::sign(expires, &path, Some(&ip), &Key::new(format!("key-{i}"))));
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
