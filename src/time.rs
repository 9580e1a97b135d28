//! Wall-clock time in milliseconds. The engine never reads the clock itself: callers pass `now_ms`,
//! so tests control time instead of sleeping.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
