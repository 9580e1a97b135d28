//! Placeholder replaced by the metadata implementation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata(pub serde_json::Map<String, serde_json::Value>);
#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {}
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueueSettings {}
