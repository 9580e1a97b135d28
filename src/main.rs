//! The `marconi` binary: parses the command line and hands over to [`marconi::cli`].

fn main() -> std::process::ExitCode {
    marconi::cli::main()
}
