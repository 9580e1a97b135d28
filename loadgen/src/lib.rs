//! `loadgen`: a thread-per-core load generator and checker for Zaqar v2 endpoints (marconi or
//! OpenStack Zaqar). See README.md for flags and workloads.

pub mod check;
pub mod cli;
pub mod conn;
pub mod dist;
pub mod http;
pub mod plan;
pub mod poll;
pub mod report;
pub mod run;
pub mod setup;
pub mod stats;
pub mod target;
pub mod worker;
pub mod zaqar;
