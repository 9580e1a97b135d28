//! Who a request is from and what it may do (docs/security.md).
//!
//! # Credentials
//! Every `/v2` request is decided once, in the API's hooks, before anything touches a shard:
//! [`Authenticator::authenticate`] turns the request's credential into a [`Verified`] (`none`
//! mode: the `X-Project-ID` it names; `token` mode: a marconi token checked with the keys in
//! memory; `keystone` mode: a Keystone token, validated once and then cached per shard), whose
//! [`Credential`] is a project, a queue glob and a set of operations. A pre-signed URL stands for
//! its own credential (checked by `api::share`). Then [`Authenticator::authorize`] judges the
//! route's [`Access`] (the one table is `api::router::Route::access`) against it.
//!
//! # Answers
//! No or an invalid credential: 401 with `WWW-Authenticate` and a stable `code` (`auth_missing`,
//! `auth_invalid`, `auth_expired`, `auth_revoked`). Valid but not allowed: 403 `forbidden`, the
//! same whether or not what was asked for exists, and before any lookup, so nothing about another
//! project or another queue leaks. Keystone unreachable: 503 `auth_unavailable` with
//! `Retry-After`, never a pass. Each refusal is counted in `/metrics` by reason.
//!
//! # For what comes next
//! [`Subject`] names who holds a credential in a stable way: per-credential rate limits can key
//! on [`Credential::subject_key`], and a client-certificate identity is one more `Subject`.

#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

pub mod cache;
pub mod keys;
pub mod keystone;
pub mod subjects;
pub mod token;

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use ahash::AHashMap;

use crate::config::{AuthConfig, AuthMode, MAX_PROJECT_ID_BYTES};
use crate::error::ApiError;
use crate::http::{Known, RequestHead};
use crate::metrics::AuthFailure;
use crate::shard::Shard;

pub use crate::queue::{glob_matches, is_valid_glob, MAX_GLOB_BYTES};
pub use keys::Keyring;
pub use token::TokenId;

/// One kind of thing a request does. Every route needs some of these (`Route::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Post messages.
    Post = 1,
    /// Read queues, their stats and messages.
    Read = 2,
    /// Claim messages, and read, renew and release claims.
    Claim = 4,
    /// Delete messages (one, by ids, or by popping them).
    Delete = 8,
    /// Create, change, purge, share and delete queues; revoke tokens; read metrics and health.
    Manage = 16,
}

impl Op {
    pub const ALL: [Op; 5] = [Op::Post, Op::Read, Op::Claim, Op::Delete, Op::Manage];

    pub fn name(self) -> &'static str {
        match self {
            Op::Post => "post",
            Op::Read => "read",
            Op::Claim => "claim",
            Op::Delete => "delete",
            Op::Manage => "manage",
        }
    }
}

/// A set of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ops(u8);

impl Ops {
    pub const NONE: Ops = Ops(0);
    pub const ALL: Ops = Ops(31);

    pub const fn of(ops: &[Op]) -> Ops {
        let mut bits = 0;
        let mut rest = ops;
        while let [op, tail @ ..] = rest {
            bits |= *op as u8;
            rest = tail;
        }
        Ops(bits)
    }

    /// `None` when a bit names no operation.
    pub fn from_bits(bits: u8) -> Option<Ops> {
        (bits & !Self::ALL.0 == 0).then_some(Ops(bits))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every operation of `needed` is in this set.
    pub fn contains(self, needed: Ops) -> bool {
        self.0 & needed.0 == needed.0
    }

    /// `post,read` or `all`, as `marconi token issue --ops` takes it.
    pub fn parse(text: &str) -> Result<Ops, String> {
        let mut bits = 0;
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if word == "all" {
                bits |= Self::ALL.0;
                continue;
            }
            let op = Op::ALL
                .iter()
                .find(|op| op.name() == word)
                .ok_or_else(|| format!("`{word}` is not an operation: use post, read, claim, delete, manage or all"))?;
            bits |= *op as u8;
        }
        if bits == 0 {
            return Err("name at least one operation (post, read, claim, delete, manage or all)".into());
        }
        Ok(Ops(bits))
    }
}

impl fmt::Display for Ops {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Op::ALL.iter().filter(|op| self.0 & **op as u8 != 0).map(|op| op.name()).collect();
        f.write_str(&names.join(","))
    }
}

/// What a route needs of the credential (the table: `api::router::Route::access`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: the versions document.
    Public,
    /// Any valid credential (the home document, ping, out-of-scope routes).
    Authenticated,
    /// Every one of these operations, on the queue in the path if there is one.
    Needs(Ops),
}

impl Access {
    pub const fn needs(op: Op) -> Access {
        Access::Needs(Ops::of(&[op]))
    }
}

/// Who holds a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// `auth.mode = none`: whoever names the project.
    Open,
    /// A pre-signed URL (its methods and paths were checked with its signature).
    SignedUrl,
    /// A marconi token.
    Token { id: TokenId, name: &'a str, key_id: &'a str },
    /// A Keystone token of this user.
    Keystone { user_id: &'a str },
    /// A verified client certificate with this subject (`auth.subjects_file`).
    Certificate { subject: &'a str },
}

/// What a request may do: operations on the queues of one project that match a glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credential<'a> {
    pub project: &'a str,
    pub queues: &'a str,
    pub ops: Ops,
    pub subject: Subject<'a>,
}

impl Credential<'_> {
    /// The glob of queues a listing may show, `None` when every queue of the project is visible.
    pub fn visible_queues(&self) -> Option<&str> {
        (self.queues != "*").then_some(self.queues)
    }

    pub fn sees(&self, queue: &str) -> bool {
        glob_matches(self.queues, queue)
    }

    /// A stable name of the holder, for per-credential accounting (rate limits): the token id,
    /// the Keystone user, or `None` for credentials that name no one.
    pub fn subject_key(&self) -> Option<String> {
        match self.subject {
            Subject::Token { id, .. } => Some(format!("token:{id}")),
            Subject::Keystone { user_id } => Some(format!("keystone:{user_id}")),
            Subject::Certificate { subject } => Some(format!("cert:{subject}")),
            Subject::Open | Subject::SignedUrl => None,
        }
    }
}

/// A request's verified credential, borrowing from the request or the caller's token buffer.
#[derive(Debug)]
pub enum Verified<'b> {
    Open { project: &'b str },
    SignedUrl { project: &'b str },
    Token(token::Claims<'b>),
    Keystone(Rc<keystone::Identity>),
    Certificate(Rc<subjects::Grant>),
}

impl Verified<'_> {
    pub fn credential(&self) -> Credential<'_> {
        match self {
            Verified::Open { project } => Credential { project, queues: "*", ops: Ops::ALL, subject: Subject::Open },
            Verified::SignedUrl { project } => {
                Credential { project, queues: "*", ops: Ops::ALL, subject: Subject::SignedUrl }
            }
            Verified::Token(c) => Credential {
                project: c.project,
                queues: c.queues,
                ops: c.ops,
                subject: Subject::Token { id: c.id, name: c.name, key_id: c.key_id },
            },
            Verified::Keystone(identity) => Credential {
                project: &identity.project,
                queues: "*",
                ops: Ops::ALL,
                subject: Subject::Keystone { user_id: &identity.user_id },
            },
            Verified::Certificate(grant) => Credential {
                project: &grant.project,
                queues: &grant.queues,
                ops: grant.ops,
                subject: Subject::Certificate { subject: &grant.subject },
            },
        }
    }
}

/// Where a verified token's bytes live while its request runs (no allocation per request).
pub type TokenBuf = [u8; token::MAX_TOKEN_BYTES];

pub fn token_buf() -> TokenBuf {
    [0u8; token::MAX_TOKEN_BYTES]
}

/// One shard's authenticator.
pub struct Authenticator {
    mode: AuthMode,
    keys: Option<Arc<Keyring>>,
    keystone: Option<keystone::Keystone>,
    /// Client-certificate subjects that stand for a credential (`token` mode).
    subjects: AHashMap<Box<str>, Rc<subjects::Grant>>,
    shard: Rc<Shard>,
    max_token_ttl_s: u64,
    public_metrics: bool,
    /// The `WWW-Authenticate` of a 401 without a credential, and of one with a bad one.
    challenge: String,
    invalid_challenge: String,
}

impl Authenticator {
    /// `keys` must be given in `token` mode, `keystone` (its endpoint resolved) in `keystone`
    /// mode; `server` loads both before any shard serves.
    pub fn new(
        config: &AuthConfig,
        keys: Option<Arc<Keyring>>,
        keystone: Option<keystone::Endpoint>,
        grants: &[subjects::Grant],
        shard: Rc<Shard>,
    ) -> Self {
        let (challenge, invalid_challenge) = match config.mode {
            AuthMode::Keystone => {
                let uri = format!("Keystone uri=\"{}\"", config.keystone.url.as_deref().unwrap_or(""));
                (uri.clone(), uri)
            }
            _ => {
                ("Bearer realm=\"marconi\"".to_owned(), "Bearer realm=\"marconi\", error=\"invalid_token\"".to_owned())
            }
        };
        Authenticator {
            mode: config.mode,
            keys,
            keystone: keystone.map(|endpoint| keystone::Keystone::new(endpoint, config)),
            subjects: grants.iter().map(|g| (g.subject.clone(), Rc::new(g.clone()))).collect(),
            shard,
            max_token_ttl_s: config.max_token_ttl_s,
            public_metrics: config.public_metrics,
            challenge,
            invalid_challenge,
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The longest a token may live, and so how long a revocation is kept.
    pub fn max_token_ttl_s(&self) -> u64 {
        self.max_token_ttl_s
    }

    /// Whether `/metrics` and `/v2/health` need a credential that may `manage`.
    pub fn protects_metrics(&self) -> bool {
        self.mode != AuthMode::None && !self.public_metrics
    }

    /// The credential of a request that carries no pre-signed URL (the API checks those), in
    /// `keystone` and `token` modes: the token in `X-Auth-Token` or `Authorization: Bearer`, or
    /// in `token` mode, without a token, the verified client certificate's `subject` if
    /// `auth.subjects_file` names it. `None` in `none` mode, where the request's `X-Project-ID`
    /// is its credential.
    pub async fn authenticate<'b>(
        &self,
        head: &RequestHead<'b>,
        subject: Option<&str>,
        buf: &'b mut TokenBuf,
    ) -> Result<Option<Verified<'b>>, ApiError> {
        if self.mode == AuthMode::None {
            return Ok(None);
        }
        let Some(text) = presented_token(head)? else {
            if let Some(grant) = subject.and_then(|s| self.subjects.get(s)).filter(|_| self.mode == AuthMode::Token) {
                return Ok(Some(Verified::Certificate(grant.clone())));
            }
            return Err(self.refuse(AuthFailure::Missing, "This request needs a credential: send X-Auth-Token."));
        };
        if self.mode == AuthMode::Keystone {
            let keystone = self.keystone.as_ref().ok_or_else(|| self.down("Keystone is not configured"))?;
            return match keystone.validate(text).await {
                Ok(identity) => Ok(Some(Verified::Keystone(identity))),
                Err(keystone::Failure::Invalid) => {
                    Err(self.refuse(AuthFailure::Invalid, "The token is not valid (Keystone refused it)."))
                }
                Err(keystone::Failure::Down(why)) => Err(self.down(&why)),
            };
        }
        let keys = self.keys.as_deref().ok_or_else(|| self.down("no signing keys are loaded"))?;
        let now_s = crate::time::now_ms() / 1000;
        let claims = match token::verify(text, buf, keys, now_s, self.max_token_ttl_s) {
            Ok(claims) => claims,
            Err(token::TokenError::Expired) => return Err(self.refuse(AuthFailure::Expired, "The token has expired.")),
            Err(err) => return Err(self.refuse(AuthFailure::Invalid, &format!("The token is not valid: {err}."))),
        };
        let issued_ms = claims.issued_s.saturating_mul(1000);
        let hex = claims.id.to_hex();
        let id = std::str::from_utf8(&hex).unwrap_or_default();
        let revoked = self.shard.is_revoked(claims.project, id, issued_ms)
            || (!claims.name.is_empty() && self.shard.is_revoked(claims.project, claims.name, issued_ms));
        if revoked {
            return Err(self.refuse(AuthFailure::Revoked, "The token has been revoked."));
        }
        Ok(Some(Verified::Token(claims)))
    }

    /// Judges `access` to `queue` (the queue in the path, if any) for `credential`, and the
    /// project the request names (`X-Project-ID`), which must be the credential's own.
    pub fn authorize(
        &self,
        credential: &Credential<'_>,
        access: Access,
        queue: Option<&str>,
        named_project: Option<&str>,
    ) -> Result<(), ApiError> {
        if named_project.is_some_and(|p| p != credential.project) {
            return Err(self.forbid("This credential is for another project than X-Project-ID names."));
        }
        let Access::Needs(ops) = access else { return Ok(()) };
        if !credential.ops.contains(ops) {
            return Err(self.forbid(&format!("This credential may not {ops} (it may {}).", credential.ops)));
        }
        if queue.is_some_and(|q| !credential.sees(q)) {
            return Err(self.forbid("This credential may not use this queue."));
        }
        Ok(())
    }

    /// 403, counted.
    pub fn forbid(&self, description: &str) -> ApiError {
        crate::metrics::with(|m| m.auth_failed(AuthFailure::Forbidden));
        ApiError::Forbidden(description.to_owned().into())
    }

    fn refuse(&self, why: AuthFailure, description: &str) -> ApiError {
        crate::metrics::with(|m| m.auth_failed(why));
        let (code, challenge) = match why {
            AuthFailure::Missing => ("auth_missing", &self.challenge),
            AuthFailure::Expired => ("auth_expired", &self.invalid_challenge),
            AuthFailure::Revoked => ("auth_revoked", &self.invalid_challenge),
            _ => ("auth_invalid", &self.invalid_challenge),
        };
        ApiError::Unauthorized { code, description: description.to_owned().into(), challenge: challenge.clone().into() }
    }

    fn down(&self, why: &str) -> ApiError {
        crate::metrics::with(|m| m.auth_failed(AuthFailure::KeystoneDown));
        ApiError::AuthUnavailable(format!("The identity service cannot be reached ({why}).").into())
    }
}

/// The token a request presents: `X-Auth-Token` (Zaqar's header) or `Authorization: Bearer`.
/// Both at once must agree; another `Authorization` scheme is no token.
fn presented_token<'b>(head: &RequestHead<'b>) -> Result<Option<&'b str>, ApiError> {
    let header = head.known(Known::XAuthToken).map(str::trim);
    let bearer = head.known(Known::Authorization).and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    match (header, bearer) {
        (Some(a), Some(b)) if a != b => Err(ApiError::InvalidHeader {
            title: "Conflicting credentials",
            description: "X-Auth-Token and Authorization name different tokens; send one.".into(),
        }),
        (Some(t), _) | (None, Some(t)) => Ok(Some(t).filter(|t| !t.is_empty())),
        (None, None) => Ok(None),
    }
}

/// `X-Project-ID`, checked as Zaqar checks it (present and empty, or too long, is a 400).
pub fn project_header<'b>(head: &RequestHead<'b>) -> Result<Option<&'b str>, ApiError> {
    match head.known(Known::XProjectId) {
        None => Ok(None),
        Some("") => Err(ApiError::InvalidHeader {
            title: "Invalid project",
            description: "Empty project header not allowed".into(),
        }),
        Some(p) if p.len() > MAX_PROJECT_ID_BYTES => Err(ApiError::InvalidQueueName),
        Some(p) => Ok(Some(p)),
    }
}

pub fn missing_project() -> ApiError {
    ApiError::MissingHeader { title: "Project-Id Missing", description: "The header X-PROJECT-ID was missing".into() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ops_parse_print_and_contain() {
        let ops = Ops::parse("read, claim,delete").unwrap();
        assert_eq!(ops.to_string(), "read,claim,delete");
        assert!(ops.contains(Ops::of(&[Op::Read, Op::Delete])));
        assert!(!ops.contains(Ops::of(&[Op::Read, Op::Post])));
        assert_eq!(Ops::parse("all").unwrap(), Ops::ALL);
        assert!(Ops::parse("read,fly").unwrap_err().contains("`fly`"));
        assert!(Ops::parse("").is_err());
        assert_eq!(Ops::from_bits(32), None);
    }

    #[test]
    fn a_credential_sees_the_queues_its_glob_matches() {
        let c = Credential { project: "p", queues: "agent-42-*", ops: Ops::ALL, subject: Subject::Open };
        assert!(c.sees("agent-42-inbox") && !c.sees("agent-43-inbox"));
        assert_eq!(c.visible_queues(), Some("agent-42-*"));
        assert_eq!(Credential { queues: "*", ..c }.visible_queues(), None);
    }
}
