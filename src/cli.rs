//! The command line: `marconi serve`, `marconi check`, and the client commands (`queue`,
//! `message`, `claim`, `token`). Parses flags, builds the configuration ([`crate::settings`]) and hands
//! over to [`crate::server`], [`crate::preflight`] or [`crate::client`].
//!
//! Exit codes: 0 success; 1 the server failed or a start-up check found a fatal problem; 2 bad
//! usage or configuration; 3 `marconi check` found only warnings (the server would run, below
//! its configuration); the client commands add 4 (4xx), 5 (5xx) and 6 (transport), see
//! `docs/cli.md`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Durability};
use crate::preflight::{self, Severity};
use crate::settings::{self, Effective, Flags, SettingsError};

#[derive(Parser)]
#[command(name = "marconi", version, about = "A thread-per-core message queue speaking the Zaqar v2 API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Check this machine for what the server needs (io_uring, locked memory, open files, CPUs,
    /// data directory, listen address) without starting it.
    Check(ConfigArgs),
    /// Manage queues on any Zaqar v2 endpoint (--url, MARCONI_URL).
    Queue(crate::client::QueueArgs),
    /// Post, read, delete and pop messages.
    Message(crate::client::MessageArgs),
    /// Claim messages, and renew or release claims.
    Claim(crate::client::ClaimArgs),
    /// Make signing keys, issue, inspect and revoke marconi tokens (auth.mode = token).
    Token(crate::client::token::TokenArgs),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Print the effective configuration, with where each value came from, and exit.
    #[arg(long)]
    print_config: bool,
    #[arg(long, help = settings::flag_help("storage.repair"))]
    repair: bool,
}

/// Where the configuration comes from. Every knob has a `MARCONI_…` variable (see
/// `--print-config`) and can be set with `--set KEY=VALUE`; the common ones have flags too.
#[derive(Args)]
struct ConfigArgs {
    /// TOML configuration file (see tuning/ for annotated profiles).
    #[arg(long, env = "MARCONI_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    knobs: KnobFlags,
    /// Set any knob, e.g. `--set api.max_wait_s=10` (repeatable; later wins). tuning/README.md
    /// lists them all.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

/// Knobs with a flag of their own, as (key, flag). Each flag's help, placeholder and switch-ness
/// come from the knob table; every knob also takes `--set KEY=VALUE`.
const FLAG_KNOBS: [(&str, &str); 21] = [
    ("listen", "listen"),
    ("shards", "shards"),
    ("cpus", "cpus"),
    ("data_dir", "data-dir"),
    ("storage.backend", "backend"),
    ("storage.durability", "durability"),
    ("storage.flush_interval_ms", "flush-interval-ms"),
    ("storage.segment_size_bytes", "segment-size-bytes"),
    ("signed_url.secret_key", "signed-url-secret-key"),
    ("redis.nodes", "redis-nodes"),
    ("redis.ack", "redis-ack"),
    ("auth.mode", "auth"),
    ("auth.keys_file", "auth-keys-file"),
    ("auth.insecure_no_auth", "insecure-no-auth"),
    ("log", "log"),
    ("access_log", "access-log"),
    ("tls.cert_file", "tls-cert"),
    ("tls.key_file", "tls-key"),
    ("tls.client_ca_file", "tls-client-ca"),
    ("tls.client_auth", "tls-client-auth"),
    ("tls.listen", "tls-listen"),
];

/// A boolean knob's flag is a switch (`--access-log`); the others take a value.
fn is_switch(key: &str) -> bool {
    settings::knob(key).is_some_and(|k| matches!(k.kind, settings::Kind::Bool))
}

/// The values of the [`FLAG_KNOBS`] flags given, as (key, value, flag).
#[derive(Default)]
struct KnobFlags(Flags);

impl clap::FromArgMatches for KnobFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Self::default();
        flags.update_from_arg_matches(matches)?;
        Ok(flags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        for (key, flag) in FLAG_KNOBS {
            let value = if is_switch(key) {
                matches.get_flag(key).then(|| "true".to_owned())
            } else {
                matches.get_one::<String>(key).cloned()
            };
            if let Some(value) = value {
                self.0.push((key.to_owned(), value, format!("--{flag}")));
            }
        }
        Ok(())
    }
}

impl Args for KnobFlags {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        FLAG_KNOBS.iter().fold(cmd, |cmd, &(key, flag)| {
            let arg = clap::Arg::new(key).long(flag).help(settings::flag_help(key));
            cmd.arg(if is_switch(key) {
                arg.action(clap::ArgAction::SetTrue)
            } else {
                arg.value_name(settings::knob(key).map_or("VALUE", |k| k.value_name()))
            })
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl ConfigArgs {
    /// The flag layer of the configuration, as (key, value, flag) triples: the knobs' own flags,
    /// then `extra`, then `--set` (later wins).
    fn flags(&self, extra: &[(&str, &str, &str)]) -> Result<Flags, SettingsError> {
        let mut flags = self.knobs.0.clone();
        flags.extend(extra.iter().map(|&(key, value, flag)| (key.to_owned(), value.to_owned(), flag.to_owned())));
        for item in &self.set {
            let (key, value) = item.split_once('=').ok_or_else(|| SettingsError::BadSet(item.clone()))?;
            flags.push((key.trim().to_owned(), value.to_owned(), format!("--set {}", key.trim())));
        }
        Ok(flags)
    }

    fn load(&self, extra: &[(&str, &str, &str)]) -> Result<Effective, SettingsError> {
        Effective::load(self.config.as_deref(), |var| std::env::var(var).ok(), &self.flags(extra)?)
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Check(args) => check(args),
        Command::Queue(cmd) => crate::client::run_queue(cmd),
        Command::Message(cmd) => crate::client::run_message(cmd),
        Command::Claim(cmd) => crate::client::run_claim(cmd),
        Command::Token(cmd) => crate::client::token::run_token(cmd),
    }
}

fn load_or_exit(args: &ConfigArgs, extra: &[(&str, &str, &str)]) -> Result<Effective, ExitCode> {
    args.load(extra).map_err(|e| {
        eprintln!("marconi: {e}");
        ExitCode::from(2)
    })
}

fn serve(args: ServeArgs) -> ExitCode {
    let repair: &[(&str, &str, &str)] = if args.repair { &[("storage.repair", "true", "--repair")] } else { &[] };
    let effective = match load_or_exit(&args.config, repair) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let unknown_env = settings::unknown_env(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
    let notes = effective.notes();
    if args.print_config {
        print!("{}", effective.render());
        for var in &unknown_env {
            println!("# ignored: environment variable {var} names no knob");
        }
        for note in &notes {
            println!("# note: {note}");
        }
        return ExitCode::SUCCESS;
    }
    let config = effective.config;
    // validate() has accepted the filter; fall back to `info` all the same rather than panic.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    tracing::info!(
        file = %args.config.config.as_deref().map_or("none".into(), |p| p.display().to_string()),
        listen = %config.listen,
        "configuration loaded"
    );
    for var in &unknown_env {
        tracing::warn!("ignoring environment variable {var}: it names no knob (see `marconi serve --print-config`)");
    }
    for note in &notes {
        tracing::warn!("{note}");
    }
    let report = preflight::run_startup(&config);
    for finding in &report.findings {
        match finding.severity {
            Severity::Ok => tracing::info!(check = finding.check, "{}", finding.message),
            Severity::Warning => tracing::warn!(check = finding.check, "{}", finding.message),
            Severity::Fatal => tracing::error!(check = finding.check, "{}", finding.message),
        }
    }
    if report.has_fatal() {
        eprintln!("marconi: not starting: a start-up check failed (run `marconi check` for the full report)");
        return ExitCode::FAILURE;
    }
    let storage_line = storage_summary(&config);
    tracing::info!("{storage_line}");
    abort_on_panic();
    let result = crate::server::run(config, |bound, layout| {
        let main = bound.main().map_or_else(|| "?".to_owned(), |a| a.to_string());
        // TLS: `tls on ADDR` last, so the address of `listen` stays the fourth word.
        let tls = bound.tls.map_or_else(String::new, |a| format!(", tls on {a}"));
        println!(
            "marconi listening on {main} with {} shard(s) on CPUs {:?} (io_memory {} KiB per executor){tls}",
            layout.shards,
            layout.cpus,
            layout.io_memory_bytes / 1024
        );
        // Whoever started us may have read the first line and closed the pipe: not an error.
        let _ = writeln!(std::io::stdout().lock(), "{storage_line}");
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("marconi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line saying what an acknowledgement promises and where the data lives.
fn storage_summary(config: &Config) -> String {
    let storage = &config.storage;
    if storage.backend == crate::config::Backend::RedisCluster {
        let redis = &config.redis;
        let promise = match redis.ack {
            crate::config::RedisAck::Replicas => format!("acknowledged once {} replica(s) have it", redis.ack_replicas),
            crate::config::RedisAck::Fsync => {
                format!("acknowledged once the master's and {} replica(s)' disks have it", redis.ack_replicas)
            }
            crate::config::RedisAck::Async => "acknowledged by the master alone; a failover can undo it".to_owned(),
        };
        return format!(
            "storage: Redis Cluster at {} ({promise}); this node keeps no data",
            redis.nodes.as_deref().unwrap_or_default().join(",")
        );
    }
    let promise = match storage.durability {
        Durability::Sync => "acknowledged after fdatasync, with group commit".to_owned(),
        Durability::Interval => format!("acknowledged at once, flushed every {} ms", storage.flush_interval_ms),
        Durability::None => "acknowledged at once, flushed by the OS".to_owned(),
        Durability::Memory => return "storage: durability memory (nothing survives a restart)".to_owned(),
    };
    let dir = crate::machine::data_dir(config).unwrap_or_default();
    let shown = std::fs::canonicalize(&dir).unwrap_or(dir);
    format!(
        "storage: durability {} ({promise}); data in {}; {} KiB segments",
        storage.durability.as_str(),
        shown.display(),
        storage.segment_size_bytes / 1024
    )
}

fn check(args: ConfigArgs) -> ExitCode {
    let effective = match load_or_exit(&args, &[]) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let report = preflight::run_all(&effective.config);
    print!("{}", report.render());
    match report.worst() {
        Severity::Ok => ExitCode::SUCCESS,
        Severity::Warning => ExitCode::from(3),
        Severity::Fatal => ExitCode::FAILURE,
    }
}

/// A panic in the server is a broken invariant of ours (an index naming a body the log does not
/// hold, say): the state in memory can no longer be trusted, while the log on disk is checked
/// record by record at start. So the whole process stops at once, after the usual message, for
/// its supervisor to restart it and recovery to rebuild the index; a shard thread that died
/// alone would leave its peers answering 503 for its queues forever.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!("marconi: aborting: a panic means a broken invariant; restart to recover from the log");
        std::process::abort();
    }));
}
