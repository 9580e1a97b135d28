//! Entry point: parse flags, run, print the summary, exit with 0 (clean), 1 (violations, or
//! errors with `--fail-on-errors`), 2 (bad usage or the run could not start) or 3 (the
//! watchdog had to stop workers that ignored the deadline).

use clap::Parser;

use loadgen::cli::Args;

fn main() {
    let args = Args::parse();
    let json = args.json;
    match loadgen::run::run(args) {
        Ok(summary) => {
            if json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.human());
            }
            std::process::exit(summary.exit_code());
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    }
}
