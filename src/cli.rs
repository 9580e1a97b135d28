//! The command line: `marconi serve` and friends. Parses flags, builds the configuration and
//! hands over to [`crate::server`].

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Durability};

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
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (every shard accepts on it).
    #[arg(long, env = "MARCONI_LISTEN", default_value = "127.0.0.1:8888")]
    listen: SocketAddr,
    /// Number of shards (default: one per online CPU).
    #[arg(long, env = "MARCONI_SHARDS")]
    shards: Option<usize>,
    /// CPUs to pin shards to, e.g. `0,1` or `2-5` (default: every online CPU).
    #[arg(long, env = "MARCONI_CPUS", value_parser = parse_cpu_list)]
    cpus: Option<CpuList>,
    /// Data directory (default: ./marconi-data; unused with --durability memory).
    #[arg(long, env = "MARCONI_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// When a change is acknowledged: `sync` after it is on disk (group commit; the default),
    /// `interval` at once, flushed every --flush-interval-ms, `none` at once, flushed by the OS,
    /// `memory` nothing on disk at all. docs/storage.md says what each promises.
    #[arg(long, env = "MARCONI_DURABILITY")]
    durability: Option<Durability>,
    /// Flush period of `--durability interval`.
    #[arg(long, env = "MARCONI_FLUSH_INTERVAL_MS")]
    flush_interval_ms: Option<u64>,
    /// Size of each preallocated segment file (default 64 MiB).
    #[arg(long, env = "MARCONI_SEGMENT_SIZE_BYTES")]
    segment_size_bytes: Option<u64>,
    /// Start even if a segment file is damaged: keep every record that passes its checksum and move
    /// the damaged files aside (*.damaged). Without it, damage stops start-up and names its place.
    #[arg(long)]
    repair: bool,
    /// TOML configuration file; flags override it.
    #[arg(long, env = "MARCONI_CONFIG")]
    config: Option<PathBuf>,
    /// Secret key for pre-signed URLs (`POST /v2/queues/{q}/share`).
    #[arg(long, env = "MARCONI_SIGNED_URL_SECRET_KEY", hide_env_values = true)]
    signed_url_secret_key: Option<String>,
    /// Log filter, e.g. `info` or `marconi=debug`.
    #[arg(long, env = "MARCONI_LOG", default_value = "info")]
    log: String,
}

#[derive(Clone)]
struct CpuList(Vec<usize>);

fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not a CPU number or range like 2-5");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
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
    Ok(CpuList(cpus))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let mut config = match &args.config {
        None => Config::default(),
        Some(path) => match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| toml::from_str::<Config>(&text).map_err(|e| e.to_string()))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("marconi: cannot use configuration {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
    };
    config.listen = args.listen;
    config.shards = args.shards.or(config.shards);
    config.cpus = args.cpus.map(|c| c.0).or(config.cpus);
    config.data_dir = args.data_dir.or(config.data_dir);
    config.storage.durability = args.durability.unwrap_or(config.storage.durability);
    config.storage.flush_interval_ms = args.flush_interval_ms.unwrap_or(config.storage.flush_interval_ms);
    config.storage.segment_size_bytes = args.segment_size_bytes.unwrap_or(config.storage.segment_size_bytes);
    config.storage.repair |= args.repair;
    let storage_line = storage_summary(&config);
    if let Some(key) = args.signed_url_secret_key {
        // An empty key means "no key": the share endpoint then refuses, as Zaqar does.
        config.signed_url.secret_key = Some(key).filter(|k| !k.is_empty());
    }
    let result = crate::server::run(config, |addr, layout| {
        println!(
            "marconi listening on {addr} with {} shard(s) on CPUs {:?} (io_memory {} KiB per executor)",
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
            eprintln!("marconi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The start-up line that says where data lives and what an acknowledgement promises.
fn storage_summary(config: &Config) -> String {
    let storage = &config.storage;
    let promise = match storage.durability {
        Durability::Sync => "acknowledged after fdatasync, with group commit".to_owned(),
        Durability::Interval => format!("acknowledged at once, flushed every {} ms", storage.flush_interval_ms),
        Durability::None => "acknowledged at once, flushed by the OS".to_owned(),
        Durability::Memory => return "storage: durability memory (nothing survives a restart)".to_owned(),
    };
    let dir = crate::server::data_dir(config).unwrap_or_default();
    let shown = std::fs::canonicalize(&dir).unwrap_or(dir);
    format!(
        "storage: durability {} ({promise}); data in {}; {} KiB segments",
        storage.durability.as_str(),
        shown.display(),
        storage.segment_size_bytes / 1024
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_accept_ranges() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap().0, vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("4-2").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
