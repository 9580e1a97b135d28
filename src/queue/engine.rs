//! Placeholder replaced by the engine implementation.
use crate::storage::Store;
pub struct Engine<S: Store> {
    pub store: S,
}
