//! The API edge: every lower layer's error becomes the [`ApiError`] a client sees, here and
//! nowhere else.

use crate::error::ApiError;
use crate::queue::EngineError;
use crate::shard::ShardError;
use crate::storage::StoreError;

impl From<ShardError> for ApiError {
    fn from(e: ShardError) -> Self {
        match e {
            ShardError::Engine(e) => ApiError::from(e),
            ShardError::MeshDown => ApiError::Unavailable("A shard of this server is not answering.".into()),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        use EngineError as E;
        match e {
            E::QueueNotFound => ApiError::not_found("Queue does not exist."),
            E::MessageNotFound => ApiError::not_found("Message does not exist."),
            E::ClaimNotFound => ApiError::not_found("Claim does not exist or has expired."),
            E::MessageClaimed => ApiError::UnableToDelete {
                forbidden: true,
                description: "This message is claimed; it cannot be deleted without a valid claim ID.".into(),
            },
            E::MessageNotClaimed => ApiError::UnableToDelete {
                forbidden: false,
                description: "A claim was specified, but the message is not currently claimed.".into(),
            },
            E::ClaimMismatch => ApiError::UnableToDelete {
                forbidden: false,
                description: "The specified claim does not exist or has expired.".into(),
            },
            E::Conflict(text) => ApiError::Conflict(text.into()),
            E::Invalid(text) => ApiError::InvalidRequest(text.into()),
            E::Store(err) => ApiError::from(err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(format!("Storage is unavailable: {e}.").into())
    }
}
