//! Client-certificate subjects that stand for a credential in `token` mode: an agent with a
//! device certificate needs no bearer token. The TLS handshake verifies the certificate against
//! `tls.client_ca_file`; this file (`auth.subjects_file`) says what each verified subject may do.
//!
//! ## Format
//! ```toml
//! [[subject]]
//! subject = "CN=agent-42"        # exactly as the handshake reports it (RFC 4514, x509-parser's form)
//! project = "fleet"
//! queues = "agent-42-*"           # a queue glob, as `marconi token issue --queues`
//! ops = "read,claim,delete"       # as `marconi token issue --ops`
//! ```
//! A request that carries a token is judged by its token; one without is judged by its
//! certificate's subject if the file names it, and is otherwise a 401 like any request without a
//! credential. To take a subject's rights away, remove its entry and restart (or revoke the
//! certificate at its CA).

use std::path::Path;

use super::token::check_fields;
use super::{Ops, TokenId};
use crate::auth::token::Claims;

/// What a certificate subject may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub subject: Box<str>,
    pub project: Box<str>,
    pub queues: Box<str>,
    pub ops: Ops,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    subject: Vec<Entry>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    subject: String,
    project: String,
    #[serde(default = "every_queue")]
    queues: String,
    ops: String,
}

fn every_queue() -> String {
    "*".into()
}

/// Most entries a subjects file may hold.
pub const MAX_SUBJECTS: usize = 100_000;

/// Reads and checks a subjects file (`auth.subjects_file`).
pub fn load(path: &Path) -> Result<Vec<Grant>, super::keys::KeysError> {
    let shown = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| super::keys::KeysError::Read { path: shown.clone(), source })?;
    from_toml(&text).map_err(|reason| super::keys::KeysError::Invalid { path: shown, reason })
}

pub fn from_toml(text: &str) -> Result<Vec<Grant>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    if file.subject.len() > MAX_SUBJECTS {
        return Err(format!("more than {MAX_SUBJECTS} [[subject]] entries"));
    }
    let mut grants: Vec<Grant> = Vec::with_capacity(file.subject.len());
    for e in file.subject {
        let ops = Ops::parse(&e.ops).map_err(|why| format!("subject {:?}: {why}", e.subject))?;
        // The same rules as a token's fields.
        let claims = Claims {
            key_id: "",
            id: TokenId([0; 16]),
            issued_s: 0,
            expires_s: 1,
            ops,
            project: &e.project,
            queues: &e.queues,
            name: "",
        };
        check_fields(&claims).map_err(|why| format!("subject {:?}: {why}", e.subject))?;
        if e.subject.is_empty() || grants.iter().any(|g| *g.subject == *e.subject) {
            return Err(format!("subject {:?} is empty or appears twice", e.subject));
        }
        grants.push(Grant { subject: e.subject.into(), project: e.project.into(), queues: e.queues.into(), ops });
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::auth::Op;

    #[test]
    fn entries_are_checked_like_tokens() {
        let g = from_toml("[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nqueues = \"a-*\"\nops = \"read,claim\"\n")
            .unwrap();
        assert_eq!(g[0].ops, Ops::of(&[Op::Read, Op::Claim]));
        assert_eq!(&*g[0].queues, "a-*");
        let every = from_toml("[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nops = \"all\"\n").unwrap();
        assert_eq!(&*every[0].queues, "*");
        for bad in [
            "[[subject]]\nsubject = \"CN=a\"\nproject = \"\"\nops = \"read\"\n",
            "[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nqueues = \"a/b\"\nops = \"read\"\n",
            "[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nops = \"fly\"\n",
            "[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nops = \"read\"\n[[subject]]\nsubject = \"CN=a\"\nproject = \"q\"\nops = \"read\"\n",
            "[[subject]]\nsubject = \"CN=a\"\nproject = \"p\"\nops = \"read\"\nextra = 1\n",
        ] {
            assert!(from_toml(bad).is_err(), "{bad}");
        }
    }
}
