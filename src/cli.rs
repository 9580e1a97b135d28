//! The command line: `marconi serve` and friends. Parses flags, builds the configuration and
//! hands over to [`crate::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::Config;

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
    /// Data directory (default: keep everything in memory).
    #[arg(long, env = "MARCONI_DATA_DIR")]
    data_dir: Option<PathBuf>,
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
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("marconi: {e}");
            ExitCode::FAILURE
        }
    }
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
