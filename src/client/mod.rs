//! placeholder
use clap::Subcommand;
#[derive(Subcommand)]
pub enum QueueCommand {
    List,
}
#[derive(Subcommand)]
pub enum MessageCommand {
    List,
}
#[derive(Subcommand)]
pub enum ClaimCommand {
    List,
}
pub fn run_queue(_: QueueCommand) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
pub fn run_message(_: MessageCommand) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
pub fn run_claim(_: ClaimCommand) -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
