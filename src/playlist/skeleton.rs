//! A playlist rewritten once per text and request path with a gap where each token goes. What
//! a viewer's rewrite spends besides the MD5s (resolving every URI as a browser and as the gate
//! would, deciding what to sign, copying the rest) depends on neither the viewer nor the time,
//! so every viewer of a live playlist after the first pays only the tokens and one copy.

use std::sync::Arc;

use super::sign::{Slot, Tokens};
use super::{Issue, Location, PlaylistError};
use crate::token::ParamNames;

/// The rewritten text without its tokens, and where they go.
#[derive(Debug)]
pub struct Skeleton {
    key: Key,
    text: String,
    slots: Vec<Slot>,
}

/// What besides the playlist's text a skeleton depends on.
#[derive(Debug, PartialEq, Eq)]
struct Key {
    /// Relative URIs resolve against the path as the player spelled it.
    path: String,
    names: ParamNames,
    public_hosts: Vec<String>,
    origin_bases: Vec<String>,
}

impl Skeleton {
    pub(super) fn new(at: &Location, issue: &Issue, text: String, slots: Vec<Slot>) -> Self {
        Skeleton { key: Key::of(at, issue.names), text, slots }
    }

    /// Whether this skeleton is the one for a request at `at`.
    pub(super) fn fits(&self, at: &Location, names: &ParamNames) -> bool {
        let key = &self.key;
        key.path == at.path
            && key.names == *names
            && key.public_hosts == at.public_hosts
            && key.origin_bases == at.origin_bases
    }

    /// The playlist for one viewer: the text, each token written into its gap in order (so LL-HLS
    /// sticky expiries are asked in the same order as a rewrite asks them).
    pub(super) fn fill(&self, tokens: &Tokens) -> String {
        let mut out = String::with_capacity(self.text.len() + self.slots.len() * 48);
        let mut from = 0;
        for slot in &self.slots {
            out.push_str(self.text.get(from..slot.at).unwrap_or_default());
            tokens.push(&slot.path, slot.sticky, &mut out);
            from = slot.at;
        }
        out.push_str(self.text.get(from..).unwrap_or_default());
        out
    }
}

impl Key {
    fn of(at: &Location, names: &ParamNames) -> Self {
        Key {
            path: at.path.to_owned(),
            names: names.clone(),
            public_hosts: at.public_hosts.to_vec(),
            origin_bases: at.origin_bases.to_vec(),
        }
    }
}

/// The few skeletons of one playlist text (one per spelling of its path a player used).
#[derive(Debug, Default)]
pub(super) struct Skeletons {
    kept: std::sync::Mutex<Vec<Arc<Skeleton>>>,
}

impl Skeletons {
    /// Spellings kept per text: players ask with the path they were given; a few more than one
    /// covers `//`, `%2e` and case games without letting them grow the memory.
    const PER_TEXT: usize = 4;

    pub(super) fn find(&self, at: &Location, names: &ParamNames) -> Option<Arc<Skeleton>> {
        self.lock().iter().find(|skeleton| skeleton.fits(at, names)).cloned()
    }

    pub(super) fn keep(&self, skeleton: Arc<Skeleton>) {
        let mut kept = self.lock();
        if kept.len() >= Self::PER_TEXT {
            kept.remove(0);
        }
        kept.push(skeleton);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Skeleton>>> {
        self.kept.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Compiles the rewrite of `text` at `at` into a skeleton; `None` when the rewrite depends on the
/// request itself (`EXT-X-DEFINE`: `QUERYPARAM` values come from the request's query).
pub(super) fn compile(
    text: &str,
    at: &Location,
    issue: &Issue,
    ttl: u64,
) -> Result<Option<Skeleton>, PlaylistError> {
    let signer = super::Signer::recording(at, issue, ttl);
    let (rewritten, defines) = super::rewrite_with(text, &signer, at)?;
    if defines {
        return Ok(None);
    }
    Ok(Some(Skeleton::new(at, issue, rewritten, signer.into_slots())))
}
