//! The API edge: every lower layer's error becomes the [`ApiError`] a client sees, here and
//! nowhere else.

use crate::error::ApiError;
use crate::queue::EngineError;
use crate::random::RandomError;
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
            E::Refused(refused) => ApiError::from(refused),
        }
    }
}

impl From<RandomError> for ApiError {
    fn from(e: RandomError) -> Self {
        ApiError::Unavailable(format!("{e}.").into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            // Retrying can never help: say why, with a 4xx, instead of a 503 clients retry forever.
            StoreError::TooLarge => ApiError::invalid_request(
                "The request is too large to be stored: it does not fit in one segment file of this \
                 server (storage.segment_size_bytes). Send fewer or smaller messages.",
            ),
            StoreError::DiskFull | StoreError::NotReady | StoreError::Io(_) => {
                ApiError::Unavailable(format!("Storage is unavailable: {e}.").into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_retrying_cannot_fix_is_a_4xx_and_what_it_can_a_503() {
        let too_large = ApiError::from(ShardError::Engine(EngineError::Store(StoreError::TooLarge)));
        assert_eq!(too_large.status(), 400);
        assert!(too_large.to_string().contains("segment_size_bytes"), "{too_large}");
        for transient in [StoreError::DiskFull, StoreError::NotReady, StoreError::Io("x".into())] {
            assert_eq!(ApiError::from(transient).status(), 503);
        }
        assert_eq!(ApiError::from(ShardError::MeshDown).status(), 503);
    }
}
