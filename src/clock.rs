//! Unix time: the clock every token is issued and checked against, read in one place. A clock
//! set before 1970 reads as 0, which every check then treats as long ago, never as a panic.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Seconds since the Unix epoch: what `expires` counts.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}
