//! Playlist variables (`EXT-X-DEFINE`, RFC 8216bis §4.3): a player replaces each `{$name}` in a
//! URI before it requests it, so a URI is signed for the path it becomes, not as written.
//!
//! `NAME`/`VALUE` definitions are known from the lines above; `QUERYPARAM` ones from the query of
//! the playlist's own request. `IMPORT` ones come from the master playlist, which a media
//! playlist's rewrite never sees: they stay unknown, and the signer decides what that allows.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::attrs::{self, AttrError};

/// The variables defined so far in one playlist, as its player knows them.
pub(super) struct Variables<'a> {
    /// The playlist request's raw query, for `QUERYPARAM`.
    query: &'a str,
    /// Name and value; `None` for a variable whose value hlsgate cannot know.
    defined: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

impl<'a> Variables<'a> {
    pub(super) fn new(query: &'a str) -> Self {
        Variables { query, defined: Vec::new() }
    }

    /// Whether any variable is defined: then the rewrite depends on the request's query.
    pub(super) fn any(&self) -> bool {
        !self.defined.is_empty()
    }

    /// Reads one `EXT-X-DEFINE` attribute list. A later definition of a name wins, as a later
    /// duplicate is an error the player reports anyway.
    pub(super) fn define(&mut self, list: &'a str) -> Result<(), AttrError> {
        let attributes = attrs::parse(list)?;
        let value_of =
            |name: &str| attributes.iter().find(|a| a.name == name).and_then(|a| list.get(a.span.clone()));
        let definition = if let (Some(name), Some(value)) = (value_of("NAME"), value_of("VALUE")) {
            Some((name, Some(Cow::Borrowed(value))))
        } else if let Some(name) = value_of("QUERYPARAM") {
            Some((name, query_value(self.query, name)))
        } else {
            value_of("IMPORT").map(|name| (name, None))
        };
        if let Some((name, value)) = definition {
            self.defined.retain(|(known, _)| *known != name);
            self.defined.push((name, value));
        }
        Ok(())
    }

    /// `text` with every reference to a known variable replaced; references to unknown or
    /// undefined ones stay as written (see [`has_reference`]).
    pub(super) fn substitute<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if !has_reference(text) {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some((before, name, after)) = next_reference(rest) {
            out.push_str(before);
            match self.value(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("{$");
                    out.push_str(name);
                    out.push('}');
                }
            }
            rest = after;
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.defined.iter().rev().find(|(known, _)| *known == name).and_then(|(_, value)| value.as_deref())
    }
}

/// Whether `text` holds a variable reference, `{$name}` with a name of letters, digits, `-`
/// and `_`.
pub(super) fn has_reference(text: &str) -> bool {
    // Nearly every URI has no `{` at all: one byte search decides.
    memchr::memchr(b'{', text.as_bytes()).is_some() && next_reference(text).is_some()
}

/// The text before the first reference, the name, and the text after it.
fn next_reference(text: &str) -> Option<(&str, &str, &str)> {
    let mut from = 0;
    while let Some(start) = text.get(from..)?.find("{$").map(|i| i + from) {
        let name_start = start + 2;
        let rest = text.get(name_start..)?;
        let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        if let Some(len) =
            name_len.filter(|&len| len > 0 && rest.get(len..).is_some_and(|r| r.starts_with('}')))
        {
            let (before, name) = (text.get(..start)?, rest.get(..len)?);
            return Some((before, name, rest.get(len + 1..)?));
        }
        from = name_start;
    }
    None
}

/// The value of the first `name` parameter of a raw query, decoded as a browser's
/// `URLSearchParams` does (`+` is a space); hls.js reads `QUERYPARAM` values that way.
fn query_value<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let decode = |text: &'a str| -> Cow<'a, str> {
        if text.contains(['+', '%']) {
            let spaced = text.replace('+', " ");
            Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
        } else {
            Cow::Borrowed(text)
        }
    };
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defined(lines: &[&'static str], query: &'static str) -> Variables<'static> {
        let mut vars = Variables::new(query);
        for line in lines {
            vars.define(line).unwrap();
        }
        vars
    }

    #[test]
    fn references_are_found_by_their_exact_syntax() {
        assert!(has_reference("{$p}1.ts"));
        assert!(has_reference("a/{$a-b_9}/c"));
        for plain in ["a.ts", "{$}.ts", "{$p .ts", "{p}.ts", "$p.ts", "{$p!}.ts", "{$", "{$é}"] {
            assert!(!has_reference(plain), "{plain}");
        }
        assert_eq!(next_reference("x{$}{$p}y"), Some(("x{$}", "p", "y")));
    }

    #[test]
    fn name_value_queryparam_and_import() {
        let vars = defined(
            &[
                r#"NAME="p",VALUE="part-""#,
                r#"QUERYPARAM="token""#,
                r#"IMPORT="v""#,
                r#"QUERYPARAM="absent""#,
            ],
            "a=1&token=ab%2Fc+d&token=second",
        );
        assert_eq!(vars.substitute("{$p}1.ts"), "part-1.ts");
        assert_eq!(vars.substitute("x-{$token}.ts"), "x-ab/c d.ts");
        assert_eq!(vars.substitute("a{$v}.ts"), "a{$v}.ts", "an IMPORT is not known here");
        assert_eq!(vars.substitute("a{$absent}.ts"), "a{$absent}.ts");
        assert_eq!(vars.substitute("a{$undefined}{$p}"), "a{$undefined}part-");
        assert!(matches!(vars.substitute("plain.ts"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_later_definition_replaces_an_earlier_one() {
        let vars = defined(&[r#"NAME="p",VALUE="a""#, r#"NAME="p",VALUE="b""#], "");
        assert_eq!(vars.substitute("{$p}"), "b");
    }

    #[test]
    fn a_value_is_not_substituted_again() {
        let vars = defined(&[r#"NAME="a",VALUE="{$b}""#, r#"NAME="b",VALUE="x""#], "");
        assert_eq!(vars.substitute("{$a}"), "{$b}");
    }
}
