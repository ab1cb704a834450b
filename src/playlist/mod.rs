//! TEMPORARY STUB (replaced by the playlist branch)
use crate::token::{Key, ParamNames};
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum SegmentTtl {
    #[serde(skip)]
    Auto,
    Seconds(u64),
}
impl SegmentTtl {
    pub fn resolve(self, t: u64) -> u64 {
        match self {
            SegmentTtl::Auto => (3 * t).max(6),
            SegmentTtl::Seconds(s) => s,
        }
    }
}
pub struct Location<'a> {
    pub path: &'a str,
    pub host: Option<&'a str>,
}
pub struct Issue<'a> {
    pub key: &'a Key,
    pub ip: Option<&'a str>,
    pub names: &'a ParamNames,
    pub now: u64,
    pub session_ttl: u64,
    pub segment_ttl: SegmentTtl,
}
#[derive(Debug)]
pub enum PlaylistError {
    Unparsable(String),
}
impl std::fmt::Display for PlaylistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}
pub fn rewrite(text: &[u8], _at: &Location, _issue: &Issue) -> Result<String, PlaylistError> {
    Ok(String::from_utf8_lossy(text).into_owned())
}
pub fn simulate_live(vod: &[u8], _window: usize, _now_ms: u64) -> Result<String, PlaylistError> {
    Ok(String::from_utf8_lossy(vod).into_owned())
}
