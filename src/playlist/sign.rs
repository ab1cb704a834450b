//! Signing one URI of a playlist: resolving it as a browser will (RFC 3986 against the URL the
//! playlist was requested with, plus the WHATWG URL parser's habits), reading the result as the
//! gate will (`request_path::parse`: decoded, slashes merged), deciding whether it is hlsgate's
//! to sign, and writing it back with its token where the player will send it.

use std::borrow::Cow;
use std::cell::RefCell;

use super::vars::{has_reference, Variables};
use super::{Issue, Location};
use crate::request_path::{self, StreamPath};
use crate::token;

/// Everything one rewrite needs to sign a URI.
pub(super) struct Signer<'a> {
    /// The request path as the player sent it: players resolve URIs against that URL, before
    /// any decoding or slash merging.
    base: Cow<'a, str>,
    stream: String,
    public_hosts: &'a [String],
    origin_bases: &'a [String],
    issue: &'a Issue<'a>,
    tokens: Tokens<'a>,
    /// Compiling a skeleton: where each token goes, instead of the token.
    record: Option<RefCell<Vec<Slot>>>,
}

/// Where a skeleton's token goes: at this byte of its text, signed for `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Slot {
    pub at: usize,
    pub path: String,
    pub sticky: bool,
}

/// Writes the token parameters one viewer's URIs get.
pub(super) struct Tokens<'a> {
    issue: &'a Issue<'a>,
    ttl: u64,
    expires: u64,
}

impl<'a> Signer<'a> {
    pub(super) fn new(at: &Location<'a>, issue: &'a Issue<'a>, ttl: u64) -> Self {
        let base = if at.path.starts_with('/') {
            Cow::Borrowed(at.path)
        } else {
            Cow::Owned(format!("/{}", at.path))
        };
        let stream = request_path::parse(&base).map(|p| p.stream().to_owned()).unwrap_or_default();
        Signer {
            base,
            stream,
            public_hosts: at.public_hosts,
            origin_bases: at.origin_bases,
            issue,
            tokens: Tokens::new(issue, ttl),
            record: None,
        }
    }

    /// A signer that writes no token but notes where each goes (see `skeleton`).
    pub(super) fn recording(at: &Location<'a>, issue: &'a Issue<'a>, ttl: u64) -> Self {
        Signer { record: Some(RefCell::new(Vec::new())), ..Signer::new(at, issue, ttl) }
    }

    /// The slots a recording signer noted, in the order of the text.
    pub(super) fn into_slots(self) -> Vec<Slot> {
        self.record.map(RefCell::into_inner).unwrap_or_default()
    }

    /// Appends the URI with its token and returns true, or appends nothing and returns false
    /// when it stays untouched: empty, another scheme, another host, outside the stream, a
    /// directory, or a path the gate would refuse.
    pub(super) fn push_signed(
        &self,
        uri: &str,
        variables: &Variables,
        sticky: bool,
        out: &mut String,
    ) -> bool {
        if uri.is_empty() {
            return false;
        }
        if has_reference(uri) {
            return self.push_signed_with_variables(uri, variables, sticky, out);
        }
        let mut reference = Reference::split(uri);
        let mapped = self.on_hlsgate(reference.head);
        if let Some(head) = &mapped {
            reference.head = head;
        }
        let Some(path) = self.file_path(reference.head) else {
            return false;
        };
        self.push_signed_uri(&reference, path.as_str(), sticky, out);
        true
    }

    /// `http://packager/live/v/a.ts` as hlsgate serves it (`/stream/v/a.ts`), when the stream's
    /// origin is `http://packager/live/`: a player following the packager's own URL would go
    /// around the gate.
    fn on_hlsgate(&self, head: &str) -> Option<String> {
        let rest = self.origin_bases.iter().find_map(|base| strip_base(head, base))?;
        Some(format!("/{}/{rest}", self.stream))
    }

    /// A URI with variable references, signed for what the player makes of it: the written
    /// text stays (the player substitutes) and the token goes at its end, where the player will
    /// send it. A variable hlsgate cannot know (an `IMPORT` from the master) is allowed only in
    /// the file name: the token is then for the file's directory, which opens the files directly
    /// in it for this viewer. Anywhere else such a URI stays unsigned, never signed as written.
    fn push_signed_with_variables(
        &self,
        uri: &str,
        variables: &Variables,
        sticky: bool,
        out: &mut String,
    ) -> bool {
        let substituted = variables.substitute(uri);
        // A value that brings its own `#` would put the token in a fragment, never sent.
        if substituted.matches('#').count() != uri.matches('#').count() {
            return false;
        }
        let seen = Reference::split(&substituted);
        let path = if has_reference(seen.head) {
            let directory = match seen.head.rfind('/') {
                Some(slash) => seen.head.get(..=slash),
                None => Some("./"),
            };
            match directory.filter(|directory| !has_reference(directory)).and_then(|d| self.resolve(d)) {
                Some(path) => path,
                None => return false,
            }
        } else {
            match self.file_path(seen.head) {
                Some(path) => path,
                None => return false,
            }
        };
        let written = Reference::split(uri);
        let start = out.len();
        out.push_str(written.head);
        // Old token parameters go, as without variables.
        // As without variables: old token parameters go, and an empty query with them.
        if let Some(query) = written.query.filter(|query| !query.is_empty()) {
            let kept: Vec<&str> =
                query.split('&').filter(|pair| !token::is_token_param(pair, self.issue.names)).collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        // Whether ours starts the query or joins it depends on what the player's substitution
        // makes of the text before it.
        let before = variables.substitute(out.get(start..).unwrap_or_default());
        // A `?` ending the text starts the query only if it is the first one; after that it is
        // a character of the query, and ours must be joined with `&`.
        let separator = match before.find('?') {
            None => "?",
            Some(_) if before.ends_with('&') => "",
            Some(first) if first + 1 == before.len() => "",
            Some(_) => "&",
        };
        out.push_str(separator);
        self.push_token(path.as_str(), sticky, out);
        if let Some(fragment) = written.fragment {
            out.push('#');
            out.push_str(fragment);
        }
        true
    }

    /// The path a player will request for a reference to a file, as the gate will read it.
    fn file_path(&self, head: &str) -> Option<StreamPath> {
        self.resolve(head).filter(|path| !path.as_str().ends_with('/'))
    }

    /// Resolves a reference's scheme, authority and path against the playlist's URL as a player
    /// does (RFC 3986), then reads the result exactly as the gate will read the player's request
    /// (`request_path::parse`: decoded, slashes merged): whatever the gate would refuse is not
    /// signed. None outside the stream or on another host.
    fn resolve(&self, head: &str) -> Option<StreamPath> {
        // A browser reads `\` as `/` in an http(s) URL.
        let head =
            if head.contains('\\') { Cow::Owned(head.replace('\\', "/")) } else { Cow::Borrowed(head) };
        let resolved = match RawPath::of(&head, self.public_hosts)? {
            RawPath::Absolute(path) => remove_dot_segments(path.to_owned()),
            // A query- or fragment-only reference names the playlist itself.
            RawPath::Relative("") => remove_dot_segments(self.base.to_string()),
            RawPath::Relative(path) => remove_dot_segments([directory_of(&self.base), path].concat()),
        };
        let path = request_path::parse(&resolved).ok()?;
        (path.stream() == self.stream).then_some(path)
    }

    /// The URI as written, without old token parameters, plus the new ones (signed for
    /// `path`) before any fragment.
    fn push_signed_uri(&self, reference: &Reference, path: &str, sticky: bool, out: &mut String) {
        let names = self.issue.names;
        out.push_str(reference.head);
        let mut separator = '?';
        let query = reference.query.filter(|query| !query.is_empty());
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            if token::is_token_param(pair, names) {
                continue;
            }
            out.push(separator);
            out.push_str(pair);
            separator = '&';
        }
        out.push(separator);
        self.push_token(path, sticky, out);
        if let Some(fragment) = reference.fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
}

impl Signer<'_> {
    fn push_token(&self, path: &str, sticky: bool, out: &mut String) {
        match &self.record {
            Some(slots) => slots.borrow_mut().push(Slot { at: out.len(), path: path.to_owned(), sticky }),
            None => self.tokens.push(path, sticky, out),
        }
    }
}

impl<'a> Tokens<'a> {
    pub(super) fn new(issue: &'a Issue<'a>, ttl: u64) -> Self {
        Tokens { issue, ttl, expires: token::issue_expiry(issue.now, ttl, token::default_step(ttl)) }
    }

    /// `md5=…&expires=…` for `path`, with the stream's parameter names. A `sticky` URI (an
    /// LL-HLS part or preload hint) keeps the expiry it was first issued with while that still
    /// leaves half its TTL, so the hint a player preloads is the very URI the part then appears
    /// under, rather than one a rounding step later.
    pub(super) fn push(&self, path: &str, sticky: bool, out: &mut String) {
        let names = self.issue.names;
        let expires = match (sticky, self.issue.sticky) {
            (true, Some(memory)) => memory.expires(path, self.expires, self.issue.now, self.ttl),
            _ => self.expires,
        };
        out.push_str(&names.token);
        out.push('=');
        token::sign_into(expires, path, self.issue.ip, self.issue.key, out);
        out.push('&');
        out.push_str(&names.expires);
        out.push('=');
        token::push_decimal(expires, out);
    }
}

/// A URI reference cut at its first `?` and `#`.
struct Reference<'a> {
    /// Scheme, authority and path, as written.
    head: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

impl<'a> Reference<'a> {
    fn split(uri: &'a str) -> Self {
        let (rest, fragment) = match uri.split_once('#') {
            Some((rest, fragment)) => (rest, Some(fragment)),
            None => (uri, None),
        };
        let (head, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        Reference { head, query, fragment }
    }
}

/// The still-escaped path a reference names on this server.
enum RawPath<'a> {
    Absolute(&'a str),
    Relative(&'a str),
}

impl<'a> RawPath<'a> {
    /// None for another scheme than http(s) or a host that is not one of `public_hosts`.
    fn of(head: &'a str, public_hosts: &[String]) -> Option<Self> {
        if let Some(network) = head.strip_prefix("//") {
            return path_on_host(network, None, public_hosts);
        }
        if let Some((scheme, rest)) = split_scheme(head) {
            let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
            return if web {
                path_on_host(rest.strip_prefix("//")?, Some(scheme), public_hosts)
            } else {
                None
            };
        }
        if head.starts_with('/') {
            Some(RawPath::Absolute(head))
        } else {
            Some(RawPath::Relative(head))
        }
    }
}

/// The path of `authority/path` when the authority is a public host.
fn path_on_host<'a>(network: &'a str, scheme: Option<&str>, public_hosts: &[String]) -> Option<RawPath<'a>> {
    let (authority, path) = match network.find('/') {
        Some(slash) => network.split_at_checked(slash)?,
        None => (network, "/"),
    };
    let public = public_hosts.iter().any(|host| same_server(authority, scheme, host));
    public.then_some(RawPath::Absolute(path))
}

/// Whether a URL's authority names the server a `public_hosts` entry names: hosts compared
/// without regard to case, and a port left out meaning the scheme's default (a browser drops
/// `:80` from `http://` and `:443` from `https://`).
fn same_server(authority: &str, scheme: Option<&str>, public: &str) -> bool {
    let default = match scheme.map(str::to_ascii_lowercase).as_deref() {
        Some("http") => Some("80"),
        Some("https") => Some("443"),
        _ => None,
    };
    let (host, port) = split_port(authority);
    let (public_host, public_port) = split_port(public);
    host.eq_ignore_ascii_case(public_host) && port.or(default) == public_port.or(default)
}

/// `url` with `base` (`http://host:port/path/`) cut off its front: scheme and authority compared
/// without regard to case, the path exactly.
fn strip_base<'u>(url: &'u str, base: &str) -> Option<&'u str> {
    let authority = base.find("://")? + 3;
    let path_start = authority + base.get(authority..)?.find('/')?;
    let (origin, path) = base.split_at_checked(path_start)?;
    let head = url.get(..origin.len()).filter(|head| head.eq_ignore_ascii_case(origin))?;
    url.get(head.len()..)?.strip_prefix(path)
}

/// `host` and `port` of `host[:port]` (`[v6]:port` too).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// `scheme:rest` when the text before the first `:` is an RFC 3986 scheme.
fn split_scheme(head: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = head.split_once(':')?;
    let mut chars = scheme.chars();
    let starts_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let valid = starts_alpha && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// The path up to and including its last `/`.
fn directory_of(path: &str) -> &str {
    path.rfind('/').and_then(|slash| path.get(..=slash)).unwrap_or("/")
}

/// RFC 3986 §5.2.4 for an absolute path: drops `.` segments, and `..` with the segment
/// before it, never climbing above the root.
pub(super) fn remove_dot_segments(path: String) -> String {
    // Every dot segment follows a `/`: most paths have none, and go back as they came.
    if !path.contains("/.") && !path.contains("%2e") && !path.contains("%2E") {
        return path;
    }
    let mut kept: Vec<&str> = Vec::new();
    let mut segments = path.strip_prefix('/').unwrap_or(&path).split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        // A browser reads `%2e` as `.` in a dot segment (the WHATWG URL standard).
        match segment.to_ascii_lowercase().as_str() {
            "." | "%2e" => {}
            ".." | ".%2e" | "%2e." | "%2e%2e" => {
                kept.pop();
            }
            _ => {
                kept.push(segment);
                continue;
            }
        }
        // A path ending in `.` or `..` names a directory: keep its trailing slash.
        if last {
            kept.push("");
        }
    }
    format!("/{}", kept.join("/"))
}
