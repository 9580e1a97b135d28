//! `marconi token keygen|issue|inspect|revoke` (docs/cli.md, docs/security.md).
//!
//! `keygen`, `issue` and `inspect` work offline, with the keys file alone: the server need not
//! run, and never sees a token before it is used. `revoke` asks the server
//! (`DELETE /v2/tokens/{id or name}` with a `manage` token), which makes the revocation durable
//! and in force on every shard before it answers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{finish, ClientError, Session, Target};
use crate::auth::keys::Keyring;
use crate::auth::token::{self, Claims, TokenId};
use crate::auth::Ops;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(flatten)]
    pub target: Target,
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Add a new random signing key to the keys file (made, mode 0600, if absent); from then on
    /// it signs new tokens. Restart the server so that it verifies them.
    Keygen {
        #[arg(long, env = "MARCONI_AUTH_KEYS_FILE")]
        keys_file: PathBuf,
        /// Key id [default: k-YYYYMMDD-HHMMSS].
        #[arg(long)]
        id: Option<String>,
    },
    /// Print a token signed with the newest key of the keys file.
    Issue {
        #[arg(long, env = "MARCONI_AUTH_KEYS_FILE")]
        keys_file: PathBuf,
        /// Queues it may touch: a glob where `*` matches any run of characters.
        #[arg(long, default_value = "*")]
        queues: String,
        /// What it may do: post, read, claim, delete, manage, or all.
        #[arg(long, default_value = "all")]
        ops: String,
        /// How long it lives: N followed by s, m, h or d.
        #[arg(long, default_value = "30d")]
        ttl: String,
        /// A name to revoke it (and every token of that name issued before) by.
        #[arg(long)]
        name: Option<String>,
    },
    /// Show what a token says (and, with --keys-file, whether its signature holds).
    Inspect {
        token: String,
        #[arg(long, env = "MARCONI_AUTH_KEYS_FILE")]
        keys_file: Option<PathBuf>,
    },
    /// Revoke tokens by id (32 hex digits) or by name, on the server (needs --token with
    /// `manage` on every queue of the project).
    Revoke { subject: String },
}

pub fn run_token(args: TokenArgs) -> ExitCode {
    let json = args.target.json;
    finish(json, token(args))
}

fn usage(text: impl Into<String>) -> ClientError {
    ClientError::Usage(text.into())
}

fn token(args: TokenArgs) -> Result<(), ClientError> {
    let json = args.target.json;
    let now_s = crate::time::now_ms() / 1000;
    match args.command {
        TokenCommand::Keygen { keys_file, id } => {
            let id = Keyring::append_new(&keys_file, id.as_deref(), now_s).map_err(|e| usage(e.to_string()))?;
            if json {
                println!("{}", json!({"key_id": id, "keys_file": keys_file}));
            } else {
                println!(
                    "added key {id} to {}: it signs new tokens; restart the server to verify them",
                    keys_file.display()
                );
            }
        }
        TokenCommand::Issue { keys_file, queues, ops, ttl, name } => {
            // `--project` (the client's global flag) is the project the token acts in.
            let project = args
                .target
                .project
                .ok_or_else(|| usage("name the token's project: marconi token issue --project P"))?;
            let keys = Keyring::load(&keys_file).map_err(|e| usage(e.to_string()))?;
            let ops = Ops::parse(&ops).map_err(usage)?;
            let ttl_s = parse_ttl(&ttl).map_err(usage)?;
            let id = TokenId::random().map_err(|e| usage(e.to_string()))?;
            let name = name.unwrap_or_default();
            let claims = Claims {
                key_id: &keys.newest().id,
                id,
                issued_s: now_s,
                expires_s: now_s.saturating_add(ttl_s),
                ops,
                project: &project,
                queues: &queues,
                name: &name,
            };
            let text = token::issue(&claims, keys.newest()).map_err(usage)?;
            if json {
                println!("{}", describe(&text, &claims, None));
            } else {
                println!("{text}");
                eprintln!(
                    "token {id}{} for project {project}: {ops} on queues {queues}, expires {} (key {})",
                    if name.is_empty() { String::new() } else { format!(" ({name})") },
                    crate::time::iso8601(claims.expires_s),
                    claims.key_id
                );
            }
        }
        TokenCommand::Inspect { token: text, keys_file } => {
            let mut buf = crate::auth::token_buf();
            let verdict = match &keys_file {
                Some(path) => {
                    let keys = Keyring::load(path).map_err(|e| usage(e.to_string()))?;
                    let mut check = crate::auth::token_buf();
                    Some(match token::verify(&text, &mut check, &keys, now_s, u64::MAX) {
                        Ok(_) => "valid".to_owned(),
                        Err(e) => e.to_string(),
                    })
                }
                None => None,
            };
            let (claims, _, _) = token::parse(&text, &mut buf).map_err(|e| usage(e.to_string()))?;
            let out = describe(&text, &claims, verdict.as_deref());
            if json {
                println!("{out}");
            } else {
                println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
            }
        }
        TokenCommand::Revoke { subject } => {
            if args.target.token.is_none() {
                return Err(usage("revoking needs a manage token: --token or MARCONI_TOKEN"));
            }
            let s = Session::new(&args.target)?;
            let answer = s.call("DELETE", &format!("/v2/tokens/{}", super::http::encode(&subject)), None, 0)?;
            s.print(&answer, |_| format!("revoked {subject}"));
        }
    }
    Ok(())
}

fn describe(text: &str, c: &Claims<'_>, verdict: Option<&str>) -> serde_json::Value {
    let mut out = json!({
        "id": c.id.to_string(),
        "project": c.project,
        "queues": c.queues,
        "ops": c.ops.to_string(),
        "issued_at": crate::time::iso8601(c.issued_s),
        "expires_at": crate::time::iso8601(c.expires_s),
        "key_id": c.key_id,
        "name": (!c.name.is_empty()).then_some(c.name),
    });
    match verdict {
        Some(v) => out["signature"] = json!(v),
        None => out["token"] = json!(text),
    }
    out
}

/// `30d`, `12h`, `90m`, `3600s` or `3600` (seconds), at most 3650 days.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let bad = || format!("`{text}` is not a lifetime: use N followed by s, m, h or d, e.g. 30d");
    let text = text.trim();
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let ttl = n.checked_mul(seconds).ok_or_else(bad)?;
    if ttl == 0 || ttl > 3650 * 86_400 {
        return Err(format!("a token lives between 1 s and 3650 d, not {text}"));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_take_units() {
        assert_eq!(parse_ttl("30d"), Ok(30 * 86_400));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("90m"), Ok(5_400));
        assert_eq!(parse_ttl("3600"), Ok(3_600));
        for bad in ["", "d", "0s", "5y", "-1d", "9999d"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
