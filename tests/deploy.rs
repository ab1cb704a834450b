//! Issue 12's Kubernetes manifests (`deploy/k8s/`) checked against each other, against the
//! config their ConfigMap carries and against the real binary's flags, as tests/players.rs
//! checks the Docker files. No cluster is needed: the YAML is read by a small reader of the
//! subset the manifests are written in (block mappings and sequences, JSON-style flow
//! sequences, `|` block scalars), into serde_json values.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{repo_root, run_bounded};
use serde_json::Value;

// ---------------------------------------------------------------------------------------
// The manifests against their config and the binary
// ---------------------------------------------------------------------------------------

#[test]
fn hlsgate_manifest_matches_its_config_and_the_binary() {
    let docs = manifest("hlsgate.yaml");
    let config_map = find(&docs, "ConfigMap", "hlsgate");
    let deployment = find(&docs, "Deployment", "hlsgate");
    let service = find(&docs, "Service", "hlsgate");
    let config = Toml::new(str_at(config_map, "/data/hlsgate.toml"));

    // A fleet, one pod template, and the selectors point at it.
    assert!(at(deployment, "/spec/replicas").as_u64().unwrap() >= 2, "one replica is not a fleet");
    let labels = at(deployment, "/spec/template/metadata/labels");
    for (what, selector) in [
        ("the Deployment's selector", at(deployment, "/spec/selector/matchLabels")),
        ("the Service's selector", at(service, "/spec/selector")),
    ] {
        assert!(is_subset(selector, labels), "{what} {selector} does not select the pods {labels}");
    }
    let pod = at(deployment, "/spec/template/spec");
    let container = the_container(pod, "hlsgate");

    // Ports: the container declares the ones the config listens on.
    let (listen, admin) = (config.port("listen"), config.port("admin_listen"));
    for (field, port) in [("listen", listen), ("admin_listen", admin)] {
        let declared = at(container, "/ports").as_array().unwrap();
        assert!(
            declared.iter().any(|p| at(p, "/containerPort").as_u64() == Some(port.into())),
            "the container declares no port {port} ({field}): {declared:?}"
        );
    }
    // The Service sends viewers to `listen`, and never to the admin port.
    let service_ports = at(service, "/spec/ports").as_array().unwrap();
    assert!(!service_ports.is_empty());
    for port in service_ports {
        let target = resolve_port(container, at(port, "/targetPort"));
        assert_eq!(target, listen, "Service port {port} does not reach listen ({listen})");
    }
    assert!(service_ports.iter().any(|p| at(p, "/port").as_u64() == Some(80)), "{service_ports:?}");

    // Probes: readiness on /readyz, liveness on /healthz, both on the admin port.
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = at(container, &format!("/{probe}/httpGet"));
        assert_eq!(str_at(get, "/path"), path, "{probe}");
        assert_eq!(resolve_port(container, at(get, "/port")), admin, "{probe} is not on admin_listen");
        assert!(get.get("scheme").is_none_or(|s| s == "HTTP"), "{probe}: the admin port speaks HTTP");
    }
    if let Some(port) = template_annotation(deployment, "prometheus.io/port") {
        assert_eq!(port, admin.to_string(), "Prometheus would scrape another port than admin_listen");
    }

    // The command: the image's entrypoint unless the manifest gives one, then `serve`, with
    // flags `hlsgate serve` really has.
    let dockerfile = std::fs::read_to_string(repo_root().join("docker/Dockerfile")).unwrap();
    let mut argv = match container.get("command") {
        Some(command) => strings(command),
        None => dockerfile_exec_form(&dockerfile, "ENTRYPOINT"),
    };
    argv.extend(container.get("args").map(strings).unwrap_or_default());
    assert_eq!(argv.get(..2), Some(&["hlsgate".to_string(), "serve".to_string()][..]), "{argv:?}");
    let help = run_bounded(
        Command::new(env!("CARGO_BIN_EXE_hlsgate")).args(["serve", "--help"]),
        Duration::from_secs(10),
    );
    assert!(help.status.success(), "{}", help.stderr);
    let mut config_path = None;
    for (i, arg) in argv.iter().enumerate().skip(2) {
        if let Some(flag) = arg.strip_prefix("--") {
            let (flag, inline) = match flag.split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_string())),
                None => (flag, None),
            };
            assert!(
                help.stdout.contains(&format!("--{flag}")),
                "hlsgate serve has no --{flag}:\n{}",
                help.stdout
            );
            if flag == "config" {
                config_path = inline.or_else(|| argv.get(i + 1).cloned());
            }
        }
    }
    let config_path = PathBuf::from(config_path.expect("the container must name its config with --config"));

    // That path is the ConfigMap's file: a volume from this ConfigMap mounted at its folder.
    let mount = at(container, "/volumeMounts")
        .as_array()
        .unwrap()
        .iter()
        .find(|m| Path::new(str_at(m, "/mountPath")) == config_path.parent().unwrap())
        .unwrap_or_else(|| panic!("nothing is mounted at {}", config_path.parent().unwrap().display()));
    assert!(mount.get("subPath").is_none(), "a subPath mount never sees the ConfigMap change");
    let volume_name = str_at(mount, "/name");
    let volume = at(pod, "/volumes")
        .as_array()
        .unwrap()
        .iter()
        .find(|v| str_at(v, "/name") == volume_name)
        .unwrap_or_else(|| panic!("no volume {volume_name}"));
    assert_eq!(str_at(volume, "/configMap/name"), str_at(config_map, "/metadata/name"));
    assert!(volume.pointer("/configMap/items").is_none(), "items would rename the ConfigMap's keys");
    let file_name = config_path.file_name().unwrap().to_str().unwrap();
    assert!(config_map.pointer(&format!("/data/{file_name}")).is_some(), "no {file_name} in the ConfigMap");

    // Stopping drains: the grace period covers the preStop sleep and then drain_timeout, since
    // the kubelet counts it from the start of preStop.
    let drain_timeout = config.int("drain_timeout").unwrap_or(30);
    let pre_stop = at(container, "/lifecycle/preStop");
    let sleep = match pre_stop.pointer("/sleep/seconds") {
        Some(seconds) => seconds.as_u64().unwrap(),
        None => {
            let command = strings(at(pre_stop, "/exec/command"));
            assert!(
                matches!(command[0].as_str(), "sleep" | "/bin/sleep"),
                "preStop is not a sleep: {command:?}"
            );
            command[1].parse().unwrap()
        }
    };
    assert!(sleep > 0);
    let grace = at(pod, "/terminationGracePeriodSeconds").as_u64().expect("terminationGracePeriodSeconds");
    assert!(grace > drain_timeout, "terminationGracePeriodSeconds {grace} <= drain_timeout {drain_timeout}");
    assert!(
        grace > sleep + drain_timeout,
        "terminationGracePeriodSeconds {grace} <= preStop sleep {sleep} + drain_timeout {drain_timeout}: \
         the kubelet would kill downloads still draining"
    );

    // The image docker/ builds.
    let compose = yaml_documents(&std::fs::read_to_string(repo_root().join("docker/compose.yaml")).unwrap());
    assert_eq!(str_at(container, "/image"), str_at(&compose[0], "/services/hlsgate/image"));

    // Non-root, read-only root: the image's USER is a name, which the kubelet cannot check
    // against runAsNonRoot, so a numeric runAsUser must be given.
    let user = dockerfile.lines().find_map(|l| l.strip_prefix("USER ")).expect("the Dockerfile sets USER");
    let context = |field: &str| {
        container
            .pointer(&format!("/securityContext/{field}"))
            .or_else(|| pod.pointer(&format!("/securityContext/{field}")))
    };
    assert_eq!(context("runAsNonRoot"), Some(&Value::Bool(true)));
    if user.trim().parse::<u32>().is_err() {
        let uid = context("runAsUser").and_then(Value::as_u64);
        assert!(uid.is_some_and(|uid| uid > 0), "USER {user} is a name: give runAsUser a non-zero number");
    }
    assert_eq!(at(container, "/securityContext/readOnlyRootFilesystem"), &Value::Bool(true));
    assert_eq!(at(container, "/securityContext/allowPrivilegeEscalation"), &Value::Bool(false));

    // Resources: requests and a memory limit, which must hold the live cache.
    let cache_bytes = config.int("cache_bytes").unwrap_or(256 << 20);
    let memory = quantity(str_at(container, "/resources/limits/memory"));
    assert!(memory > cache_bytes + cache_bytes / 4, "memory limit {memory} B < cache_bytes x 1.25");
    assert!(container.pointer("/resources/requests/cpu").is_some());
    assert!(container.pointer("/resources/requests/memory").is_some());

    // trusted_proxies: the ingress's network, as CIDRs or addresses, and not the whole Internet.
    let proxies = config.strings("trusted_proxies");
    assert!(!proxies.is_empty(), "behind an ingress, trusted_proxies must list it");
    for proxy in &proxies {
        let net: ipnet::IpNet = proxy
            .parse()
            .or_else(|_| proxy.parse::<std::net::IpAddr>().map(Into::into))
            .unwrap_or_else(|_| panic!("trusted_proxies: {proxy} is neither a CIDR nor an address"));
        assert!(net.prefix_len() >= 8, "trusted_proxies {proxy} would let viewers forge their address");
    }
}

/// The config hlsgate would load from the ConfigMap. It has a `[keys]` section, which this
/// tree does not parse yet.
#[test]
fn the_configmap_config_is_one_hlsgate_accepts() {
    let docs = manifest("hlsgate.yaml");
    let text = str_at(find(&docs, "ConfigMap", "hlsgate"), "/data/hlsgate.toml");
    let raw = Toml::new(text);
    // needs [keys] (issue 12)
    let config = hlsgate::config::parse(text, Path::new("/etc/hlsgate"))
        .unwrap_or_else(|e| panic!("the ConfigMap's hlsgate.toml refused: {e}"));
    assert_eq!(config.listen.port(), raw.port("listen"));
    assert_eq!(config.admin_listen.port(), raw.port("admin_listen"));
    assert_eq!(config.drain_timeout, Duration::from_secs(raw.int("drain_timeout").unwrap_or(30)));
    assert!(config.streams.is_empty(), "with [keys] source, streams come from Redis only");
}

/// `[keys] source` names redis.yaml's Service, which reaches the Redis container, and the
/// NetworkPolicy lets the hlsgate pods through.
#[test]
fn the_key_source_is_the_redis_service() {
    let gate = manifest("hlsgate.yaml");
    let config = Toml::new(str_at(find(&gate, "ConfigMap", "hlsgate"), "/data/hlsgate.toml"));
    let source = config.str("keys.source").expect("[keys] source");
    let (host, port) = redis_host_port(&source);

    let docs = manifest("redis.yaml");
    let service = find(&docs, "Service", &host);
    let deployment = find(&docs, "Deployment", &host);
    assert_eq!(at(deployment, "/spec/replicas").as_u64(), Some(1));
    let labels = at(deployment, "/spec/template/metadata/labels");
    assert!(is_subset(at(service, "/spec/selector"), labels));
    assert!(is_subset(at(deployment, "/spec/selector/matchLabels"), labels));
    let container = the_container(at(deployment, "/spec/template/spec"), "redis");
    assert!(str_at(container, "/image").starts_with("redis:7"), "{container}");
    let service_port = at(service, "/spec/ports")
        .as_array()
        .unwrap()
        .iter()
        .find(|p| at(p, "/port").as_u64() == Some(port.into()))
        .unwrap_or_else(|| panic!("Service {host} has no port {port}"));
    let target = service_port.get("targetPort").unwrap_or(at(service_port, "/port"));
    assert_eq!(resolve_port(container, target), 6379);

    // A PersistentVolumeClaim the Deployment mounts at Redis's data folder, with one writer.
    let claim = find(&docs, "PersistentVolumeClaim", "redis-data");
    let volumes = at(deployment, "/spec/template/spec/volumes").as_array().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v.pointer("/persistentVolumeClaim/claimName") == claim.pointer("/metadata/name")));
    assert_eq!(str_at(deployment, "/spec/strategy/type"), "Recreate");

    let policy = find(&docs, "NetworkPolicy", &host);
    assert!(is_subset(at(policy, "/spec/podSelector/matchLabels"), labels));
    let gate_labels = at(find(&gate, "Deployment", "hlsgate"), "/spec/template/metadata/labels");
    let rules = at(policy, "/spec/ingress").as_array().unwrap();
    assert!(
        rules.iter().any(|rule| {
            let from_gate = at(rule, "/from").as_array().unwrap().iter().any(|peer| {
                peer.pointer("/podSelector/matchLabels").is_some_and(|m| is_subset(m, gate_labels))
            });
            let on_port = at(rule, "/ports")
                .as_array()
                .unwrap()
                .iter()
                .any(|p| resolve_port(container, at(p, "/port")) == 6379);
            from_gate && on_port
        }),
        "the NetworkPolicy keeps hlsgate out of Redis: {rules:?}"
    );
}

/// deploy/k8s/README.md: the manifests it applies exist, Redis first, and its `keys` commands
/// name the same Redis as the ConfigMap.
#[test]
fn the_k8s_readme_matches_the_manifests() {
    let readme = std::fs::read_to_string(repo_root().join("deploy/k8s/README.md")).unwrap();
    let applied: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("kubectl apply -f "))
        .map(|f| f.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(applied, ["deploy/k8s/redis.yaml", "deploy/k8s/hlsgate.yaml"], "apply order");
    for file in &applied {
        assert!(repo_root().join(file).is_file(), "{file}");
    }
    let gate = manifest("hlsgate.yaml");
    let config = Toml::new(str_at(find(&gate, "ConfigMap", "hlsgate"), "/data/hlsgate.toml"));
    let source = config.str("keys.source").unwrap();
    let keys_commands: Vec<&str> =
        readme.lines().filter(|l| l.contains("kubectl exec") && l.contains("hlsgate keys ")).collect();
    assert!(keys_commands.iter().any(|l| l.contains("hlsgate keys add ")), "{keys_commands:?}");
    for line in keys_commands {
        assert!(line.contains(&format!("--redis {source} ")), "{line} does not use {source}");
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn manifest(name: &str) -> Vec<Value> {
    let path = repo_root().join("deploy/k8s").join(name);
    yaml_documents(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// The document of `kind` named `name`.
fn find<'v>(docs: &'v [Value], kind: &str, name: &str) -> &'v Value {
    docs.iter()
        .find(|d| {
            d.get("kind").is_some_and(|k| k == kind) && d.pointer("/metadata/name").is_some_and(|n| n == name)
        })
        .unwrap_or_else(|| panic!("no {kind} named {name}"))
}

fn at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

fn str_at<'v>(value: &'v Value, pointer: &str) -> &'v str {
    at(value, pointer).as_str().unwrap_or_else(|| panic!("{pointer} is not a string in {value}"))
}

fn strings(list: &Value) -> Vec<String> {
    let items = list.as_array().unwrap_or_else(|| panic!("not a list: {list}"));
    items.iter().map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()).collect()
}

/// Every `key: value` of `small` is in `big` (label selectors).
fn is_subset(small: &Value, big: &Value) -> bool {
    let (Some(small), Some(big)) = (small.as_object(), big.as_object()) else { return false };
    !small.is_empty() && small.iter().all(|(k, v)| big.get(k) == Some(v))
}

fn the_container<'v>(pod: &'v Value, name: &str) -> &'v Value {
    at(pod, "/containers")
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c.get("name").is_some_and(|n| n == name))
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// A port as Kubernetes resolves it against a container: a number, or the name of one of its
/// `ports`.
fn resolve_port(container: &Value, port: &Value) -> u16 {
    if let Some(number) = port.as_u64() {
        return number.try_into().unwrap();
    }
    let name = port.as_str().unwrap_or_else(|| panic!("port {port} is neither a number nor a name"));
    let declared = at(container, "/ports").as_array().unwrap();
    let found = declared.iter().find(|p| p.get("name").is_some_and(|n| n == name));
    let found = found.unwrap_or_else(|| panic!("the container has no port named {name}: {declared:?}"));
    at(found, "/containerPort").as_u64().unwrap().try_into().unwrap()
}

/// A pod-template annotation's value.
fn template_annotation(deployment: &Value, key: &str) -> Option<String> {
    let annotations = deployment.pointer("/spec/template/metadata/annotations")?;
    annotations
        .get(key)
        .map(|v| v.as_str().unwrap_or_else(|| panic!("annotation {key} must be a string")).to_string())
}

/// A Kubernetes memory quantity (`512Mi`, `1Gi`, `1G`, bytes) in bytes.
fn quantity(text: &str) -> u64 {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().unwrap_or_else(|_| panic!("quantity {text}"));
    let scale: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => panic!("quantity {text}: unit {unit} not read here"),
    };
    number * scale
}

/// `redis://[user:password@]host:port/db` (or `rediss://`) → host and port.
fn redis_host_port(url: &str) -> (String, u16) {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .unwrap_or_else(|| panic!("keys.source {url} is not a redis:// URL"));
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = host_port.rsplit_once(':').unwrap_or((host_port, "6379"));
    (host.to_string(), port.parse().unwrap())
}

/// The JSON-array form of a Dockerfile instruction (`ENTRYPOINT ["hlsgate"]`).
fn dockerfile_exec_form(dockerfile: &str, instruction: &str) -> Vec<String> {
    let line = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    strings(&serde_json::from_str(line.trim()).unwrap())
}

/// The ConfigMap's hlsgate.toml read as plain TOML, for the fields the manifest must agree
/// with, whether or not this tree's `config::parse` accepts the whole file.
struct Toml(toml::Table);

impl Toml {
    fn new(text: &str) -> Self {
        Toml(text.parse().unwrap_or_else(|e| panic!("the ConfigMap's hlsgate.toml is not TOML: {e}")))
    }

    /// A value by dotted path (`keys.source`).
    fn get(&self, path: &str) -> Option<&toml::Value> {
        let mut parts = path.split('.');
        let mut value = self.0.get(parts.next().unwrap())?;
        for part in parts {
            value = value.get(part)?;
        }
        Some(value)
    }

    fn str(&self, path: &str) -> Option<String> {
        self.get(path).map(|v| v.as_str().unwrap_or_else(|| panic!("{path} is not a string")).to_string())
    }

    fn int(&self, path: &str) -> Option<u64> {
        self.get(path)
            .map(|v| v.as_integer().and_then(|i| i.try_into().ok()).unwrap_or_else(|| panic!("{path}")))
    }

    fn strings(&self, path: &str) -> Vec<String> {
        let Some(list) = self.get(path) else { return Vec::new() };
        let list = list.as_array().unwrap_or_else(|| panic!("{path} is not a list"));
        list.iter().map(|v| v.as_str().unwrap().to_string()).collect()
    }

    /// The port of an address field (`listen`, `admin_listen`), which must be set: the
    /// defaults listen on loopback, where neither the kubelet nor the Service reaches.
    fn port(&self, field: &str) -> u16 {
        let text = self.str(field).unwrap_or_else(|| panic!("{field} unset: the default is loopback"));
        let addr: SocketAddr = text.parse().unwrap_or_else(|e| panic!("{field} = {text}: {e}"));
        assert!(addr.ip().is_unspecified(), "{field} = {text}: the pod's address must reach it");
        addr.port()
    }
}

// ---------------------------------------------------------------------------------------
// A reader for the YAML the manifests are written in
// ---------------------------------------------------------------------------------------

/// The documents of a (multi-document) YAML text, as JSON values. Reads block mappings and
/// sequences (`- key: v` items too), scalars (plain, quoted, numbers, booleans), flow
/// collections written as JSON (`["a", "b"]`), `|` and `>` block scalars, comments; panics on
/// what it cannot read rather than guess.
fn yaml_documents(text: &str) -> Vec<Value> {
    let mut documents = vec![Vec::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            documents.push(Vec::new());
        } else {
            documents.last_mut().unwrap().push(line);
        }
    }
    documents
        .into_iter()
        .filter_map(|lines| {
            let mut reader = Yaml { lines, at: 0 };
            reader.skip_blank();
            let first = reader.lines.get(reader.at)?;
            assert_eq!(indent_of(first), 0, "a document starts at column 0: {first}");
            let value = reader.node(0);
            reader.skip_blank();
            if let Some(line) = reader.lines.get(reader.at) {
                panic!("YAML not read from here on: {line}");
            }
            Some(value)
        })
        .collect()
}

struct Yaml<'a> {
    lines: Vec<&'a str>,
    at: usize,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_item(text: &str) -> bool {
    text == "-" || text.starts_with("- ")
}

fn is_block_scalar(text: &str) -> bool {
    matches!(text, "|" | "|-" | ">" | ">-")
}

/// `key: value` or `key:` → (key, value); None for anything else (a scalar with colons in it).
fn split_entry(text: &str) -> Option<(&str, &str)> {
    if text.starts_with(['"', '\'', '[', '{']) {
        return None;
    }
    if let Some(key) = text.strip_suffix(':') {
        return (!key.contains(": ")).then_some((key, ""));
    }
    text.split_once(": ").map(|(key, value)| (key, value.trim()))
}

/// A value without its trailing ` # comment` (outside quotes).
fn strip_comment(value: &str) -> &str {
    if value.starts_with('#') {
        return "";
    }
    let (mut single, mut double, mut previous) = (false, false, ' ');
    for (i, c) in value.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single && previous != '\\' => double = !double,
            '#' if !single && !double && previous == ' ' => return value[..i].trim_end(),
            _ => {}
        }
        previous = c;
    }
    value
}

fn scalar(text: &str) -> Value {
    if text.starts_with('"') {
        return Value::String(serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}")));
    }
    if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        return Value::String(inner.replace("''", "'"));
    }
    if text.starts_with(['[', '{']) {
        return serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("flow collection not JSON ({e}): {text}"));
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" | "~" => Value::Null,
        _ => text.parse::<i64>().map_or_else(|_| Value::String(text.to_string()), Value::from),
    }
}

impl<'a> Yaml<'a> {
    fn skip_blank(&mut self) {
        while self.lines.get(self.at).is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            self.at += 1;
        }
    }

    /// The block starting at the current line, whose indentation is `indent`.
    fn node(&mut self, indent: usize) -> Value {
        if is_item(self.lines[self.at].trim_start()) {
            self.sequence(indent)
        } else {
            self.mapping(indent, None)
        }
    }

    fn sequence(&mut self, indent: usize) -> Value {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            let Some(&line) = self.lines.get(self.at) else { break };
            let text = line.trim_start();
            if indent_of(line) != indent || !is_item(text) {
                break;
            }
            self.at += 1;
            let after_dash = text[1..].trim_start();
            let rest = strip_comment(after_dash);
            items.push(if rest.is_empty() {
                self.nested(indent)
            } else if is_block_scalar(rest) {
                self.block_scalar(indent, rest)
            } else if split_entry(rest).is_some() {
                // `- key: value`: a mapping whose keys line up with this first one.
                self.mapping(indent + text.len() - after_dash.len(), Some(after_dash))
            } else {
                scalar(rest)
            });
        }
        Value::Array(items)
    }

    fn mapping(&mut self, indent: usize, mut first: Option<&'a str>) -> Value {
        let mut map = serde_json::Map::new();
        loop {
            let entry = match first.take() {
                Some(entry) => entry,
                None => {
                    self.skip_blank();
                    let Some(&line) = self.lines.get(self.at) else { break };
                    let text = line.trim_start();
                    if indent_of(line) != indent || is_item(text) {
                        assert!(indent_of(line) <= indent, "unexpected indentation: {line}");
                        break;
                    }
                    self.at += 1;
                    text
                }
            };
            let (key, value) =
                split_entry(entry).unwrap_or_else(|| panic!("not a `key: value` line: {entry}"));
            let value = strip_comment(value);
            let value = if value.is_empty() {
                self.nested(indent)
            } else if is_block_scalar(value) {
                self.block_scalar(indent, value)
            } else {
                scalar(value)
            };
            let key = match key.starts_with('"') {
                true => serde_json::from_str(key).unwrap(),
                false => key.to_string(),
            };
            assert!(map.insert(key.clone(), value).is_none(), "key {key} twice");
        }
        Value::Object(map)
    }

    /// The value of a `key:` (or `-`) with nothing after it: the block indented below it, a
    /// sequence at its own indentation (`key:\n- a`), or null.
    fn nested(&mut self, indent: usize) -> Value {
        self.skip_blank();
        match self.lines.get(self.at) {
            Some(&line) if indent_of(line) > indent => self.node(indent_of(line)),
            Some(&line) if indent_of(line) == indent && is_item(line.trim_start()) => self.sequence(indent),
            _ => Value::Null,
        }
    }

    /// The lines indented below a `key: |` (comments and blank lines included), dedented.
    fn block_scalar(&mut self, indent: usize, style: &str) -> Value {
        let mut body = Vec::new();
        while let Some(&line) = self.lines.get(self.at) {
            if !line.trim().is_empty() && indent_of(line) <= indent {
                break;
            }
            body.push(line);
            self.at += 1;
        }
        while body.last().is_some_and(|l| l.trim().is_empty()) {
            body.pop();
        }
        let cut = body.iter().filter(|l| !l.trim().is_empty()).map(|l| indent_of(l)).min().unwrap_or(0);
        let lines: Vec<&str> = body.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
        let mut text = if style.starts_with('|') {
            lines.join("\n")
        } else {
            // Folded: lines joined by spaces, an empty line a newline.
            let mut folded = String::new();
            for line in lines {
                match (line.is_empty(), folded.is_empty() || folded.ends_with('\n')) {
                    (true, _) => folded.push('\n'),
                    (false, true) => folded.push_str(line),
                    (false, false) => {
                        folded.push(' ');
                        folded.push_str(line);
                    }
                }
            }
            folded
        };
        if !style.ends_with('-') {
            text.push('\n');
        }
        Value::String(text)
    }
}

#[test]
fn the_yaml_reader_on_fixed_text() {
    let text = "# head\n---\na: 1\nb: \"x: #1\"  # note\nc:\n  - name: n\n    port: 80\n  - plain\n  -\n    deep: true\n\
                d:\n- e\n- [\"f\", \"g\"]\nconf: |\n  one\n\n    two # kept\n  # kept too\nfold:\n  - >-\n    a\n    b\nurl: http://h:1/p\n\
                vol: ./x:/y:ro\nempty:\n---\n\n---\nk: 'it''s'\n";
    let docs = yaml_documents(text);
    assert_eq!(docs.len(), 2, "{docs:?}");
    let want = serde_json::json!({
        "a": 1,
        "b": "x: #1",
        "c": [{"name": "n", "port": 80}, "plain", {"deep": true}],
        "d": ["e", ["f", "g"]],
        "conf": "one\n\n  two # kept\n# kept too\n",
        "fold": ["a b"],
        "url": "http://h:1/p",
        "vol": "./x:/y:ro",
        "empty": null,
    });
    assert_eq!(docs[0], want);
    assert_eq!(docs[1], serde_json::json!({"k": "it's"}));

    assert_eq!(quantity("512Mi"), 512 << 20);
    assert_eq!(quantity("1G"), 1_000_000_000);
    assert_eq!(redis_host_port("redis://redis:6379/0"), ("redis".into(), 6379));
    assert_eq!(redis_host_port("rediss://:p@w@r.example:6380/1"), ("r.example".into(), 6380));
    assert_eq!(redis_host_port("redis://10.0.0.1/0"), ("10.0.0.1".into(), 6379));

    // And what the manifests rely on: the real files read, with every document's kind.
    let kinds: BTreeMap<String, usize> = ["hlsgate.yaml", "redis.yaml"]
        .iter()
        .flat_map(|f| manifest(f))
        .fold(BTreeMap::new(), |mut kinds, d| {
            *kinds.entry(str_at(&d, "/kind").to_string()).or_default() += 1;
            kinds
        });
    assert!(
        kinds.keys().eq([
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service"
        ]),
        "{kinds:?}"
    );
}
