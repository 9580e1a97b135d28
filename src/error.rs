//! The one table from what went wrong to what the client sees.
//!
//! Every client-visible failure is an [`ApiError`]. Its variant fixes the HTTP status, Zaqar's
//! `title` and a stable machine-readable `code` (a divergence from Zaqar, which has only
//! title/description: clients depend on codes, not prose). It sits at the bottom of the
//! dependency order: `http` answers protocol errors with it, and the API maps every lower
//! layer's own error type into it, once, in `api::errors`.

use std::borrow::Cow;

use crate::limits::{Limit, Refused};

/// Seconds a client is asked to wait after a 503 (sent as `Retry-After`).
pub const RETRY_AFTER_S: u32 = 1;

type Text = Cow<'static, str>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// Semantic validation failed (Zaqar: "Invalid API request").
    #[error("{0}")]
    InvalidRequest(Text),
    /// The body could not be parsed or has the wrong shape (Zaqar: "Invalid request body").
    #[error("{0}")]
    InvalidBody(Text),
    /// A query parameter is not of its type (Falcon: "Invalid parameter").
    #[error("{0}")]
    InvalidParam(Text),
    /// A required header is absent.
    #[error("{description}")]
    MissingHeader { title: &'static str, description: Text },
    /// A header is present but malformed.
    #[error("{description}")]
    InvalidHeader { title: &'static str, description: Text },
    /// The queue name in the path (or the project id) is malformed.
    #[error("The format of the submitted queue name or project id is not valid.")]
    InvalidQueueName,
    #[error("{0}")]
    NotFound(Text),
    #[error("{0}")]
    Conflict(Text),
    /// A message delete that the claim rules refuse (400 or 403, title "Unable to delete").
    #[error("{description}")]
    UnableToDelete { forbidden: bool, description: Text },
    #[error("{0}")]
    UnsupportedMediaType(Text),
    #[error("Response must be JSON; the Accept header does not allow it.")]
    NotAcceptable,
    #[error("This resource does not support the {method} method.")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("{0}")]
    NotImplemented(Text),
    /// HTTP-level problems found by the parser.
    #[error("{0}")]
    BadHttp(Text),
    #[error("Request head is larger than {0} bytes.")]
    HeadTooLarge(usize),
    #[error("Request body is larger than {0} bytes.")]
    BodyTooLarge(usize),
    /// A quota of the project is full (docs/api.md, "Quotas and rate limits").
    #[error("Quota exceeded: {} is {value} for this project.", limit.name())]
    QuotaExceeded { limit: Limit, value: u64 },
    /// A rate limit ran out of tokens; `Retry-After` says when one is back.
    #[error("Rate limit exceeded: {} is {value} per second. Retry after {retry_after_s} s.", limit.name())]
    RateLimited { limit: Limit, value: u64, retry_after_s: u32 },
    #[error("{0} Please try again in a few seconds.")]
    Unavailable(Text),
    /// No credential, or one that is not valid (401). `code` says which (`auth_missing`,
    /// `auth_invalid`, `auth_expired`, `auth_revoked`); `challenge` is the `WWW-Authenticate`
    /// value that tells the client how to authenticate.
    #[error("{description}")]
    Unauthorized { code: &'static str, description: Text, challenge: Text },
    /// A valid credential that may not do this (403): the same answer whether or not the thing
    /// asked for exists.
    #[error("{0}")]
    Forbidden(Text),
    /// The identity service could not say whether a credential is valid (503, never a pass).
    #[error("{0} Please try again in a few seconds.")]
    AuthUnavailable(Text),
    #[error("{0}")]
    Internal(Text),
}

impl ApiError {
    /// Status code, Zaqar title and stable code of this error.
    pub fn parts(&self) -> (u16, &'static str, &'static str) {
        match self {
            ApiError::InvalidRequest(_) => (400, "Invalid API request", "invalid_request"),
            ApiError::InvalidBody(_) => (400, "Invalid request body", "invalid_body"),
            ApiError::InvalidParam(_) => (400, "Invalid parameter", "invalid_parameter"),
            ApiError::MissingHeader { title, .. } => (400, title, "missing_header"),
            ApiError::InvalidHeader { title, .. } => (400, title, "invalid_header"),
            ApiError::InvalidQueueName => (400, "Invalid queue identification", "invalid_queue_name"),
            ApiError::NotFound(_) => (404, "Not found", "not_found"),
            ApiError::Conflict(_) => (409, "Resource conflict", "conflict"),
            ApiError::UnableToDelete { forbidden: true, .. } => (403, "Unable to delete", "message_claimed"),
            ApiError::UnableToDelete { forbidden: false, .. } => (400, "Unable to delete", "claim_mismatch"),
            ApiError::UnsupportedMediaType(_) => (415, "Unsupported media type", "unsupported_media_type"),
            ApiError::NotAcceptable => (406, "Media type not acceptable", "not_acceptable"),
            ApiError::MethodNotAllowed { .. } => (405, "Method not allowed", "method_not_allowed"),
            ApiError::NotImplemented(_) => (501, "Not implemented", "not_implemented"),
            ApiError::BadHttp(_) => (400, "Bad request", "bad_http"),
            ApiError::HeadTooLarge(_) => (431, "Request header fields too large", "head_too_large"),
            ApiError::BodyTooLarge(_) => (413, "Request body too large", "body_too_large"),
            ApiError::QuotaExceeded { .. } => (403, "Quota exceeded", "quota_exceeded"),
            ApiError::RateLimited { .. } => (429, "Too many requests", "rate_limited"),
            ApiError::Unavailable(_) => (503, "Service temporarily unavailable", "unavailable"),
            ApiError::Unauthorized { code, .. } => (401, "Unauthorized", code),
            ApiError::Forbidden(_) => (403, "Forbidden", "forbidden"),
            ApiError::AuthUnavailable(_) => (503, "Service temporarily unavailable", "auth_unavailable"),
            ApiError::Internal(_) => (500, "Internal server error", "internal"),
        }
    }

    pub fn status(&self) -> u16 {
        self.parts().0
    }

    /// Whether the connection must close after this error (the request stream can't be trusted).
    pub fn closes_connection(&self) -> bool {
        matches!(self, ApiError::BadHttp(_) | ApiError::HeadTooLarge(_) | ApiError::BodyTooLarge(_))
    }

    /// The seconds to send in `Retry-After`, if this error asks the client to wait.
    pub fn retry_after_s(&self) -> Option<u32> {
        match self {
            ApiError::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            ApiError::Unavailable(_) | ApiError::AuthUnavailable(_) => Some(RETRY_AFTER_S),
            _ => None,
        }
    }

    pub fn invalid_request(text: impl Into<Text>) -> Self {
        ApiError::InvalidRequest(text.into())
    }
    pub fn invalid_body(text: impl Into<Text>) -> Self {
        ApiError::InvalidBody(text.into())
    }
    pub fn not_found(text: impl Into<Text>) -> Self {
        ApiError::NotFound(text.into())
    }
}

impl From<Refused> for ApiError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Quota { limit, value } => ApiError::QuotaExceeded { limit, value },
            Refused::Rate { limit, value, retry_after_s } => ApiError::RateLimited { limit, value, retry_after_s },
        }
    }
}
