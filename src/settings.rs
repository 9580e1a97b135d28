//! The one configuration model: defaults, then a TOML file, then `MARCONI_…` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! # One table of knobs
//! [`KNOBS`] lists every knob of [`Config`] once, by its dotted TOML key (`api.max_message_ttl_s`),
//! with its type and allowed range. Everything else is derived from it, so nothing is listed twice:
//! - the environment variable: `MARCONI_` + the key in upper case with dots as underscores
//!   (`MARCONI_API_MAX_MESSAGE_TTL_S`), see [`env_name`];
//! - the check of file keys (unknown keys are refused by name, with the known ones of the section);
//! - the parsing of environment and flag values (text) into typed TOML values;
//! - range validation ([`Config::validate`]) and `marconi serve --print-config`.
//!
//! A test keeps the table and `Config` in step: every key `Config` serializes is in the table and
//! every table key names a field.
//!
//! # Why TOML values in the middle
//! Each layer is turned into TOML values keyed by dotted path and merged into one table, which
//! then deserializes into [`Config`] (serde's `deny_unknown_fields` stays as a second guard). That
//! keeps the merge generic and lets every error name the key and the layer it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// What values a knob takes. Ranges are inclusive.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Int {
        min: i64,
        max: i64,
    },
    Bool,
    /// Any text.
    Str,
    /// Text never printed back (`--print-config` shows `<redacted>`).
    Secret,
    Enum(&'static [&'static str]),
    /// `host:port`, e.g. `0.0.0.0:8888`.
    Addr,
    /// CPU numbers, as a TOML array or as text like `0,2-5`.
    CpuList,
    Path,
    /// A `tracing` filter such as `info` or `marconi=debug,warn`.
    LogFilter,
}

/// One knob: its dotted key, what it takes, and a line about it (the full story of each is in
/// `tuning/README.md`).
#[derive(Debug, Clone, Copy)]
pub struct Knob {
    pub key: &'static str,
    pub kind: Kind,
    /// What an unset optional knob means; `None` for knobs that always have a value.
    pub unset: Option<&'static str>,
    pub help: &'static str,
}

const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;
const GIB: i64 = 1024 * MIB;
const DAY_S: i64 = 86_400;
/// Largest CPU number the kernel's affinity mask (`CPU_SETSIZE`) can name.
pub const MAX_CPU: i64 = 1023;

macro_rules! knob {
    ($key:literal, $kind:expr, $help:literal) => {
        Knob { key: $key, kind: $kind, unset: None, help: $help }
    };
    ($key:literal, $kind:expr, unset = $unset:literal, $help:literal) => {
        Knob { key: $key, kind: $kind, unset: Some($unset), help: $help }
    };
}

/// Every knob, in the order `--print-config` shows them (top-level keys first, then by section).
pub const KNOBS: &[Knob] = &[
    knob!("listen", Kind::Addr, "address every shard accepts on (SO_REUSEPORT)"),
    knob!("log", Kind::LogFilter, "log filter; start-up steps and errors only, never requests"),
    knob!("access_log", Kind::Bool, "one info line per request (target marconi::access)"),
    knob!("shards", int(1, 1024), unset = "one per CPU in `cpus`", "executors, one pinned thread each"),
    knob!("cpus", Kind::CpuList, unset = "every CPU this process may run on", "CPUs to pin shards to, in order"),
    knob!(
        "data_dir",
        Kind::Path,
        unset = "./marconi-data (none with storage.durability = memory)",
        "where shards keep their data"
    ),
    knob!("mesh_channel_capacity", int(8, 65_536), "slots of each shard-to-shard channel"),
    knob!("io_memory_bytes", int(64 * KIB, GIB), "io_uring registered buffer per shard (locked memory, x3 rings)"),
    knob!("io_ring_depth", int(8, 4096), "submission entries of each io_uring ring"),
    knob!("api.default_message_ttl_s", int(60, 31_536_000), "TTL of messages posted without one"),
    knob!("api.max_message_ttl_s", int(60, 31_536_000), "largest message TTL accepted"),
    knob!("api.max_message_delay_s", int(0, 31_536_000), "largest message delay accepted"),
    knob!("api.default_claim_ttl_s", int(60, 14 * DAY_S), "TTL of claims made without one"),
    knob!("api.max_claim_ttl_s", int(60, 14 * DAY_S), "largest claim TTL accepted"),
    knob!("api.default_claim_grace_s", int(60, 14 * DAY_S), "grace of claims made without one"),
    knob!("api.max_claim_grace_s", int(60, 14 * DAY_S), "largest claim grace accepted"),
    knob!("api.max_queues_per_page", int(1, 1000), "largest `limit` of a queue listing"),
    knob!("api.max_messages_per_page", int(1, 1000), "largest `limit` of a message listing or `ids` list"),
    knob!("api.max_messages_per_claim_or_pop", int(1, 1000), "most messages one claim or pop takes"),
    knob!("api.max_queue_metadata_bytes", int(KIB, 16 * MIB), "largest queue metadata body"),
    knob!("api.max_messages_post_size_bytes", int(KIB, 64 * MIB), "largest message post body"),
    knob!("api.client_id_uuid_safe", Kind::Enum(&["strict", "off"]), "strict: Client-ID must be a UUID"),
    knob!("api.message_delete_with_claim_id", Kind::Bool, "bulk delete by ids also needs claim_ids"),
    knob!("api.max_wait_s", int(0, 600), "cap on the `wait` of a long poll"),
    knob!("api.admin_mode", Kind::Bool, "serve GET /v2/health"),
    knob!(
        "api.max_json_depth",
        int(1, crate::config::MAX_JSON_DEPTH_CEILING as i64),
        "deepest nesting of arrays and objects in a JSON body (400 above)"
    ),
    knob!(
        "api.max_messages_per_post",
        int(1, crate::config::MAX_MESSAGES_PER_POST_CEILING as i64),
        "most messages in one post (400 above)"
    ),
    knob!("http.max_head_bytes", int(KIB, MIB), "request line plus headers (431 above)"),
    knob!("http.max_headers", int(8, 1024), "headers per request (431 above)"),
    knob!("http.max_body_bytes", int(4 * KIB, GIB), "any request body (413 above)"),
    knob!("http.header_read_timeout_ms", int(100, 600_000), "time to receive a whole request head"),
    knob!("http.body_read_timeout_ms", int(100, 3_600_000), "time to receive a whole request body (408 above)"),
    knob!("http.idle_timeout_ms", int(100, DAY_S * 1000), "keep-alive idle time between requests"),
    knob!("http.max_connections_per_shard", int(1, 1_048_576), "open connections per shard; more are closed"),
    knob!(
        "storage.durability",
        Kind::Enum(&["sync", "interval", "none", "memory"]),
        "what an acknowledgement promises"
    ),
    knob!("storage.flush_interval_ms", int(1, 60_000), "flush period of `interval` durability"),
    knob!("storage.segment_size_bytes", int(64 * KIB, 4 * GIB), "size of each preallocated segment file"),
    knob!("storage.repair", Kind::Bool, "start despite damaged segments, keeping what passes its CRC"),
    knob!(
        "signed_url.secret_key",
        Kind::Secret,
        unset = "the share endpoint answers 400",
        "HMAC key of pre-signed URLs"
    ),
];

/// The knob with this dotted key.
pub fn knob(key: &str) -> Option<&'static Knob> {
    KNOBS.iter().find(|k| k.key == key)
}

/// The environment variable of a knob: `api.max_wait_s` ↔ `MARCONI_API_MAX_WAIT_S`.
pub fn env_name(key: &str) -> String {
    let mut name = String::with_capacity(8 + key.len());
    name.push_str("MARCONI_");
    name.extend(key.chars().map(|c| if c == '.' { '_' } else { c.to_ascii_uppercase() }));
    name
}

/// `MARCONI_…` variables that are not knobs: the configuration file and the client's target.
pub const OTHER_ENV: [&str; 4] = ["MARCONI_CONFIG", "MARCONI_URL", "MARCONI_PROJECT", "MARCONI_CLIENT_ID"];

/// The `MARCONI_…` names among `names` that no knob reads: a typo there would otherwise be
/// silently ignored, so `serve` warns about each and `--print-config` lists them.
pub fn unknown_env<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut unknown: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().to_owned())
        .filter(|n| n.starts_with("MARCONI_") && !OTHER_ENV.contains(&n.as_str()))
        .filter(|n| !KNOBS.iter().any(|k| env_name(k.key) == *n))
        .collect();
    unknown.sort();
    unknown
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("configuration file {} is not valid TOML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("unknown configuration key `{key}` ({origin}); known keys{near}: {known}")]
    UnknownKey { key: String, origin: Source, near: String, known: String },
    #[error("`{key}` = {value} ({origin}) is not valid: expected {expected}")]
    BadValue { key: String, origin: Source, value: String, expected: String },
    #[error("`{key}` = {value}{from} is out of range: allowed {min}..={max}")]
    OutOfRange { key: &'static str, value: i64, min: i64, max: i64, from: String },
    #[error("`{key}` = {value}{from} must not exceed `{limit_key}` = {limit}")]
    Exceeds { key: &'static str, value: i64, limit_key: &'static str, limit: i64, from: String },
    #[error("`--set {0}` must look like KEY=VALUE, e.g. --set api.max_wait_s=10")]
    BadSet(String),
    #[error("the configuration does not fit its own model: {0}")]
    Internal(String),
}

/// The configuration in force and where each of its values came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    sources: BTreeMap<&'static str, Source>,
}

/// The command line's contribution: `(key, value, flag as typed)`, in the order given (later wins).
pub type Flags = Vec<(String, String, String)>;

impl Effective {
    /// Where the value of `key` came from.
    pub fn source(&self, key: &str) -> Source {
        knob(key).and_then(|k| self.sources.get(k.key)).cloned().unwrap_or(Source::Default)
    }

    /// Builds the configuration from its four layers. `env` is looked up by variable name (pass
    /// `|v| std::env::var(v).ok()` outside tests).
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &[(String, String, String)],
    ) -> Result<Self, SettingsError> {
        let mut merged = toml::Table::new();
        let mut sources = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| SettingsError::Read { path: path.to_owned(), source })?;
            let table: toml::Table = toml::from_str(&text)
                .map_err(|e| SettingsError::Syntax { path: path.to_owned(), message: e.message().to_owned() })?;
            let mut leaves = Vec::new();
            flatten("", toml::Value::Table(table), &mut leaves);
            for (key, value) in leaves {
                let source = Source::File(path.to_owned());
                let Some(knob) = knob(&key) else { return Err(unknown(&key, source)) };
                let value = typed(knob, value, &source)?;
                insert(&mut merged, knob.key, value);
                sources.insert(knob.key, source);
            }
        }
        for knob in KNOBS {
            let var = env_name(knob.key);
            if let Some(text) = env(&var) {
                let source = Source::Env(var);
                let value = typed(knob, toml::Value::String(text), &source)?;
                insert(&mut merged, knob.key, value);
                sources.insert(knob.key, source);
            }
        }
        for (key, text, flag) in flags {
            let source = Source::Flag(flag.clone());
            let Some(knob) = knob(key) else { return Err(unknown(key, source)) };
            let value = typed(knob, toml::Value::String(text.clone()), &source)?;
            insert(&mut merged, knob.key, value);
            sources.insert(knob.key, source);
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| SettingsError::Internal(e.to_string()))?;
        // An empty key means "no key": the share endpoint then refuses, as Zaqar does.
        if config.signed_url.secret_key.as_deref() == Some("") {
            config.signed_url.secret_key = None;
        }
        let effective = Effective { config, sources };
        effective.config.validate().map_err(|e| effective.attribute(e))?;
        Ok(effective)
    }

    /// Adds the origin of the offending value to a validation error.
    fn attribute(&self, err: SettingsError) -> SettingsError {
        let from = |key: &str| match self.source(key) {
            Source::Default => " (default)".to_owned(),
            other => format!(" (from {other})"),
        };
        match err {
            SettingsError::OutOfRange { key, value, min, max, .. } => {
                SettingsError::OutOfRange { key, value, min, max, from: from(key) }
            }
            SettingsError::Exceeds { key, value, limit_key, limit, .. } => {
                SettingsError::Exceeds { key, value, limit_key, limit, from: from(key) }
            }
            other => other,
        }
    }

    /// The effective configuration as TOML (usable as a configuration file), each value followed
    /// by a comment naming its source. Secrets are redacted.
    pub fn render(&self) -> String {
        let values = match flat_values(&self.config) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        let mut out = String::from(
            "# marconi: effective configuration (defaults < file < MARCONI_* env < flags).\n\
             # Each line names where its value came from; unset optional keys are commented out.\n",
        );
        let mut section = "";
        for knob in KNOBS {
            let (sec, name) = knob.key.rsplit_once('.').unwrap_or(("", knob.key));
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            let source = self.source(knob.key);
            let env = env_name(knob.key);
            let line = match (values.get(knob.key), knob.kind) {
                (Some(_), Kind::Secret) => format!("{name} = \"<redacted>\""),
                (Some(v), _) => format!("{name} = {v}"),
                (None, _) => format!("# {name} = (unset: {})", knob.unset.unwrap_or("none")),
            };
            out.push_str(&format!("{line:<48} # {source}; env {env}\n"));
        }
        out
    }
}

impl Config {
    /// Checks every knob against its range in [`KNOBS`], then the rules that tie knobs together.
    /// The single place where a configuration is judged, whatever built it.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let values = flat_values(self)?;
        for knob in KNOBS {
            let Some(value) = values.get(knob.key) else { continue };
            match (knob.kind, value) {
                (Kind::Int { min, max }, toml::Value::Integer(v)) if !(min..=max).contains(v) => {
                    return Err(SettingsError::OutOfRange { key: knob.key, value: *v, min, max, from: String::new() });
                }
                (Kind::CpuList, toml::Value::Array(cpus)) => {
                    for cpu in cpus.iter().filter_map(toml::Value::as_integer) {
                        if !(0..=MAX_CPU).contains(&cpu) {
                            return Err(SettingsError::OutOfRange {
                                key: knob.key,
                                value: cpu,
                                min: 0,
                                max: MAX_CPU,
                                from: String::new(),
                            });
                        }
                    }
                    if cpus.is_empty() {
                        return Err(SettingsError::BadValue {
                            key: knob.key.to_owned(),
                            origin: Source::Default,
                            value: "[]".into(),
                            expected: "at least one CPU".into(),
                        });
                    }
                }
                _ => {}
            }
        }
        // A default above its own maximum would make requests that name nothing fail.
        const NOT_ABOVE: [(&str, &str); 5] = [
            ("api.default_message_ttl_s", "api.max_message_ttl_s"),
            ("api.default_claim_ttl_s", "api.max_claim_ttl_s"),
            ("api.default_claim_grace_s", "api.max_claim_grace_s"),
            // An API body limit above the HTTP layer's would never be reached: 413 comes first.
            ("api.max_messages_post_size_bytes", "http.max_body_bytes"),
            ("api.max_queue_metadata_bytes", "http.max_body_bytes"),
        ];
        for (key, limit_key) in NOT_ABOVE {
            let get = |k: &str| values.get(k).and_then(toml::Value::as_integer);
            if let (Some(value), Some(limit)) = (get(key), get(limit_key)) {
                if value > limit {
                    let key = knob(key).map_or("?", |k| k.key);
                    let limit_key = knob(limit_key).map_or("?", |k| k.key);
                    return Err(SettingsError::Exceeds { key, value, limit_key, limit, from: String::new() });
                }
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log).is_err() {
            return Err(SettingsError::BadValue {
                key: "log".into(),
                origin: Source::Default,
                value: format!("{:?}", self.log),
                expected: "a log filter such as `info` or `marconi=debug,warn`".into(),
            });
        }
        Ok(())
    }
}

fn unknown(key: &str, source: Source) -> SettingsError {
    let section = key.rsplit_once('.').map_or("", |(s, _)| s);
    let mut in_section: Vec<&str> =
        KNOBS.iter().map(|k| k.key).filter(|k| k.rsplit_once('.').map_or("", |(s, _)| s) == section).collect();
    let near = if in_section.is_empty() || section.is_empty() {
        in_section = KNOBS.iter().map(|k| k.key).collect();
        String::new()
    } else {
        format!(" in [{section}]")
    };
    SettingsError::UnknownKey { key: key.to_owned(), origin: source, near, known: in_section.join(", ") }
}

/// Checks `value` against the knob's kind (and range), turning text from the environment or a flag
/// into the typed value. Ranges are checked here too, so the error names the layer at fault.
fn typed(knob: &'static Knob, value: toml::Value, source: &Source) -> Result<toml::Value, SettingsError> {
    use toml::Value as V;
    let bad = |value: &V, expected: String| SettingsError::BadValue {
        key: knob.key.to_owned(),
        origin: source.clone(),
        value: value.to_string(),
        expected,
    };
    let text = value.as_str();
    let out = match knob.kind {
        Kind::Int { min, max } => {
            let n = match (&value, text) {
                (V::Integer(n), _) => Some(*n),
                (_, Some(t)) => t.trim().replace('_', "").parse::<i64>().ok(),
                _ => None,
            };
            let n = n.ok_or_else(|| bad(&value, format!("an integer in {min}..={max}")))?;
            if !(min..=max).contains(&n) {
                let from = format!(" (from {source})");
                return Err(SettingsError::OutOfRange { key: knob.key, value: n, min, max, from });
            }
            V::Integer(n)
        }
        Kind::Bool => match (&value, text.map(|t| t.trim().to_ascii_lowercase())) {
            (V::Boolean(b), _) => V::Boolean(*b),
            (_, Some(t)) if matches!(t.as_str(), "true" | "1" | "yes" | "on") => V::Boolean(true),
            (_, Some(t)) if matches!(t.as_str(), "false" | "0" | "no" | "off") => V::Boolean(false),
            _ => return Err(bad(&value, "true or false".into())),
        },
        Kind::Str | Kind::Secret | Kind::Path | Kind::LogFilter => match text {
            Some(t) => V::String(t.to_owned()),
            None => return Err(bad(&value, "a string".into())),
        },
        Kind::Enum(choices) => match text {
            Some(t) if choices.contains(&t) => V::String(t.to_owned()),
            _ => return Err(bad(&value, format!("one of {}", choices.join(", ")))),
        },
        Kind::Addr => match text.map(|t| t.trim().parse::<SocketAddr>()) {
            Some(Ok(addr)) => V::String(addr.to_string()),
            _ => return Err(bad(&value, "an address like 127.0.0.1:8888 or [::]:8888".into())),
        },
        Kind::CpuList => {
            let cpus = match &value {
                V::String(t) => parse_cpu_list(t).map_err(|e| bad(&value, e))?,
                V::Array(items) => items
                    .iter()
                    .map(|v| v.as_integer().and_then(|n| usize::try_from(n).ok()))
                    .collect::<Option<Vec<usize>>>()
                    .ok_or_else(|| bad(&value, "CPU numbers".into()))?,
                _ => return Err(bad(&value, "a CPU list like [0, 1] or \"0,2-5\"".into())),
            };
            if let Some(&cpu) = cpus.iter().find(|&&c| c as i64 > MAX_CPU) {
                let from = format!(" (from {source})");
                return Err(SettingsError::OutOfRange { key: knob.key, value: cpu as i64, min: 0, max: MAX_CPU, from });
            }
            V::Array(cpus.into_iter().map(|c| V::Integer(c as i64)).collect())
        }
    };
    Ok(out)
}

/// Parses `0,2-4` into `[0, 2, 3, 4]`.
pub fn parse_cpu_list(s: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not a CPU number or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
                if a > b || b as i64 > MAX_CPU {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("the CPU list is empty".into());
    }
    Ok(cpus)
}

/// Leaves of a TOML tree as (dotted key, value); arrays are leaves.
fn flatten(prefix: &str, value: toml::Value, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        leaf => out.push((prefix.to_owned(), leaf)),
    }
}

/// Sets `key` (dotted) in `table`, creating sections on the way.
fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((section, rest)) => {
            let entry = table.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

/// Every value `config` holds, by dotted key (unset optional knobs are absent).
pub fn flat_values(config: &Config) -> Result<BTreeMap<String, toml::Value>, SettingsError> {
    let value = toml::Value::try_from(config).map_err(|e| SettingsError::Internal(e.to_string()))?;
    let mut leaves = Vec::new();
    flatten("", value, &mut leaves);
    Ok(leaves.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: Option<&str>, env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Effective, SettingsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("marconi.toml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let flags: Flags = flags.iter().map(|(k, v)| (k.to_string(), v.to_string(), format!("--{k}"))).collect();
        Effective::load(
            file.map(|_| path.as_path()),
            |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
            &flags,
        )
    }

    #[test]
    fn table_and_config_name_the_same_knobs() {
        let mut full =
            Config { shards: Some(2), cpus: Some(vec![0]), data_dir: Some("/tmp".into()), ..Default::default() };
        full.signed_url.secret_key = Some("k".into());
        let keys: Vec<String> = flat_values(&full).unwrap().into_keys().collect();
        for key in &keys {
            assert!(knob(key).is_some(), "Config has `{key}` but KNOBS does not: add a row");
        }
        for knob in KNOBS {
            assert!(keys.iter().any(|k| k == knob.key), "KNOBS has `{}` but Config does not", knob.key);
        }
        let mut envs: Vec<String> = KNOBS.iter().map(|k| env_name(k.key)).collect();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), KNOBS.len(), "two knobs map to one environment variable");
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        let effective = load(None, &[], &[]).unwrap();
        assert_eq!(effective.source("api.max_wait_s"), Source::Default);
    }

    #[test]
    fn unknown_marconi_variables_are_named() {
        let names = ["MARCONI_API_MAX_WAIT_S", "MARCONI_API_MAX_WAIT", "MARCONI_URL", "PATH", "MARCONI_SHARD"];
        assert_eq!(unknown_env(names), ["MARCONI_API_MAX_WAIT", "MARCONI_SHARD"]);
    }

    #[test]
    fn env_names_are_derived_from_keys() {
        assert_eq!(env_name("api.max_message_ttl_s"), "MARCONI_API_MAX_MESSAGE_TTL_S");
        assert_eq!(env_name("listen"), "MARCONI_LISTEN");
        assert_eq!(env_name("signed_url.secret_key"), "MARCONI_SIGNED_URL_SECRET_KEY");
    }

    #[test]
    fn layers_override_in_order_and_remember_their_source() {
        let file = "shards = 3\n[api]\nmax_wait_s = 5\nmax_message_ttl_s = 7200\n[http]\nidle_timeout_ms = 5000\n";
        let e = load(
            Some(file),
            &[("MARCONI_API_MAX_WAIT_S", "7"), ("MARCONI_HTTP_MAX_HEADERS", "32"), ("MARCONI_SHARDS", "4")],
            &[("shards", "5")],
        )
        .unwrap();
        assert_eq!(e.config.shards, Some(5));
        assert_eq!(e.source("shards"), Source::Flag("--shards".into()));
        assert_eq!(e.config.api.max_wait_s, 7);
        assert_eq!(e.source("api.max_wait_s"), Source::Env("MARCONI_API_MAX_WAIT_S".into()));
        assert_eq!(e.config.api.max_message_ttl_s, 7200);
        assert!(matches!(e.source("api.max_message_ttl_s"), Source::File(_)));
        assert_eq!(e.config.http.max_headers, 32);
        assert_eq!(e.config.http.idle_timeout_ms, 5000);
        assert_eq!(e.config.http.max_body_bytes, Config::default().http.max_body_bytes);
        let text = e.render();
        assert!(text.contains("max_wait_s = 7"), "{text}");
        assert!(text.contains("env MARCONI_API_MAX_WAIT_S"), "{text}");
        assert!(text.contains("flag --shards"), "{text}");
        assert!(text.contains("# cpus = (unset"), "{text}");
    }

    #[test]
    fn rendered_configuration_loads_back_to_the_same_values() {
        let e = load(None, &[("MARCONI_CPUS", "0")], &[("api.max_wait_s", "3")]).unwrap();
        let again = load(Some(&e.render()), &[], &[]).unwrap();
        assert_eq!(flat_values(&again.config).unwrap(), flat_values(&e.config).unwrap());
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = load(Some("[api]\nmax_ttl = 5\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`api.max_ttl`") && err.contains("api.max_message_ttl_s"), "{err}");
        let err = load(Some("colour = 1\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("`colour`"), "{err}");
        let err = load(None, &[], &[("http.nope", "1")]).unwrap_err().to_string();
        assert!(err.contains("`http.nope`") && err.contains("--http.nope"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_key_range_and_source() {
        let err = load(None, &[("MARCONI_API_MAX_MESSAGE_TTL_S", "5")], &[]).unwrap_err().to_string();
        assert!(err.contains("api.max_message_ttl_s") && err.contains("60..=31536000"), "{err}");
        assert!(err.contains("MARCONI_API_MAX_MESSAGE_TTL_S"), "{err}");
        let err = load(Some("[http]\nmax_headers = 2\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("http.max_headers") && err.contains("8..=1024"), "{err}");
        let err = load(Some("io_memory_bytes = -1\n"), &[], &[]).unwrap_err().to_string();
        assert!(err.contains("io_memory_bytes"), "{err}");
        let err = load(None, &[], &[("shards", "many")]).unwrap_err().to_string();
        assert!(err.contains("shards") && err.contains("an integer in 1..=1024"), "{err}");
        let err = load(None, &[("MARCONI_API_CLIENT_ID_UUID_SAFE", "maybe")], &[]).unwrap_err().to_string();
        assert!(err.contains("strict, off"), "{err}");
        let err = load(None, &[], &[("listen", "localhost")]).unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
    }

    #[test]
    fn knobs_that_bound_each_other_are_checked_together() {
        let err = load(Some("[api]\ndefault_message_ttl_s = 7200\nmax_message_ttl_s = 3600\n"), &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("api.default_message_ttl_s") && err.contains("api.max_message_ttl_s"), "{err}");
        let err = load(None, &[("MARCONI_HTTP_MAX_BODY_BYTES", "100000")], &[]).unwrap_err().to_string();
        assert!(err.contains("http.max_body_bytes"), "{err}");
    }

    #[test]
    fn cpu_lists_accept_ranges_arrays_and_text() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
        assert_eq!(load(Some("cpus = [1, 0]\n"), &[], &[]).unwrap().config.cpus, Some(vec![1, 0]));
        assert_eq!(load(Some("cpus = \"0-2\"\n"), &[], &[]).unwrap().config.cpus, Some(vec![0, 1, 2]));
        assert!(load(None, &[], &[("cpus", "5000")]).is_err());
    }

    #[test]
    fn secrets_are_redacted_and_empty_secrets_unset() {
        let e = load(None, &[("MARCONI_SIGNED_URL_SECRET_KEY", "hunter2")], &[]).unwrap();
        assert!(!e.render().contains("hunter2"));
        assert!(e.render().contains("<redacted>"));
        let e = load(None, &[], &[("signed_url.secret_key", "")]).unwrap();
        assert_eq!(e.config.signed_url.secret_key, None);
    }

    #[test]
    fn bad_log_filters_are_refused() {
        assert!(load(None, &[], &[("log", "info,=[")]).is_err());
        assert!(load(None, &[], &[("log", "marconi=debug,warn")]).is_ok());
    }
}
