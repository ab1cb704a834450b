//! A tokenizer for HLS attribute lists (RFC 8216 §4.2): `NAME=value` pairs separated by
//! commas, where a quoted-string value may itself hold commas and `=`.
//!
//! It only finds spans; it never rewrites, so the caller can splice a new value into the exact
//! bytes of the original line.

use std::fmt;
use std::ops::Range;

/// One `NAME=value` pair of an attribute list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribute<'a> {
    pub name: &'a str,
    /// The value's bytes in the list: for a quoted string only the part between the quotes.
    pub span: Range<usize>,
}

/// Why an attribute list could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrError {
    /// A pair without `=`, or a name holding `,` or `"`.
    BadName,
    /// A quoted string that never closes.
    Unterminated,
    /// Something other than `,` after a closing quote.
    JunkAfterQuote,
}

impl fmt::Display for AttrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttrError::BadName => "attribute without a name or '='",
            AttrError::Unterminated => "unterminated quoted string",
            AttrError::JunkAfterQuote => "text after a quoted string",
        })
    }
}

/// Splits an attribute list (the text after `#EXT-X-…:`) into its pairs, in order.
///
/// Whitespace before a name or after a closing quote is tolerated: some packagers write
/// `, ` between pairs. A trailing comma is tolerated too.
pub(crate) fn parse(list: &str) -> Result<Vec<Attribute<'_>>, AttrError> {
    // Every `rest` below is a suffix of `list`, so its offset is `list.len() - rest.len()`.
    let offset = |suffix: &str| list.len() - suffix.len();
    let mut attributes = Vec::new();
    let mut rest = skip_blanks(list);
    while !rest.is_empty() {
        let (name, after) = rest.split_once('=').ok_or(AttrError::BadName)?;
        if name.is_empty() || name.contains([',', '"']) {
            return Err(AttrError::BadName);
        }
        if let Some(quoted) = after.strip_prefix('"') {
            let (inner, tail) = quoted.split_once('"').ok_or(AttrError::Unterminated)?;
            let start = offset(quoted);
            attributes.push(Attribute { name, span: start..start + inner.len() });
            rest = after_separator(tail)?;
        } else {
            let (value, tail) = after.split_once(',').unwrap_or((after, ""));
            let start = offset(after);
            attributes.push(Attribute { name, span: start..start + value.len() });
            rest = skip_blanks(tail);
        }
    }
    Ok(attributes)
}

/// What follows a closing quote: blanks, then a comma or the end of the list.
fn after_separator(tail: &str) -> Result<&str, AttrError> {
    let tail = skip_blanks(tail);
    if tail.is_empty() {
        return Ok(tail);
    }
    tail.strip_prefix(',').map(skip_blanks).ok_or(AttrError::JunkAfterQuote)
}

fn skip_blanks(text: &str) -> &str {
    text.trim_start_matches([' ', '\t'])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Name and value text of every pair.
    fn pairs(list: &str) -> Vec<(&str, &str)> {
        parse(list).unwrap().into_iter().map(|a| (a.name, &list[a.span])).collect()
    }

    #[test]
    fn quoted_values_may_hold_commas_and_equals() {
        assert_eq!(
            pairs(r#"BANDWIDTH=1280000,CODECS="avc1.4d401f,mp4a.40.2",URI="a.m3u8?x=1&y=2,3""#),
            [("BANDWIDTH", "1280000"), ("CODECS", "avc1.4d401f,mp4a.40.2"), ("URI", "a.m3u8?x=1&y=2,3")]
        );
    }

    #[test]
    fn span_of_a_quoted_value_excludes_the_quotes() {
        let list = r#"METHOD=AES-128,URI="k.key",IV=0x1"#;
        let uri = parse(list).unwrap().into_iter().find(|a| a.name == "URI").unwrap();
        assert_eq!(&list[uri.span.start - 1..uri.span.end + 1], r#""k.key""#);
    }

    #[test]
    fn names_are_kept_exactly() {
        let names: Vec<_> = parse(r#"SERVER-URI="s.json",PATHWAY-ID="CDN",URI="x""#)
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["SERVER-URI", "PATHWAY-ID", "URI"]);
    }

    #[test]
    fn empty_values_and_lists() {
        assert_eq!(pairs(""), []);
        assert_eq!(pairs(r#"URI="""#), [("URI", "")]);
        assert_eq!(pairs("A=,B=1"), [("A", ""), ("B", "1")]);
    }

    #[test]
    fn blanks_between_pairs_and_a_trailing_comma_are_tolerated() {
        assert_eq!(pairs(r#"A=1, URI="u" , B=2,"#), [("A", "1"), ("URI", "u"), ("B", "2")]);
    }

    #[test]
    fn malformed_lists_are_errors() {
        assert_eq!(parse(r#"URI="open"#), Err(AttrError::Unterminated));
        assert_eq!(parse(r#"URI="a"b,C=1"#), Err(AttrError::JunkAfterQuote));
        assert_eq!(parse("NOVALUE"), Err(AttrError::BadName));
        assert_eq!(parse("=1"), Err(AttrError::BadName));
        assert_eq!(parse("A,B=1"), Err(AttrError::BadName));
        assert_eq!(parse(r#"A"=1"#), Err(AttrError::BadName));
    }

    #[test]
    fn non_ascii_values_keep_char_boundaries() {
        let list = r#"NAME="Français",URI="pistes/é.m3u8""#;
        assert_eq!(pairs(list), [("NAME", "Français"), ("URI", "pistes/é.m3u8")]);
    }
}
