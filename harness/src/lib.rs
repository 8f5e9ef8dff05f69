//! Rosey bench: provisions NATS, starts the services under test, runs scenarios, records
//! HdrHistograms, writes results, renders reports, keeps history and compares runs.
//!
//! Nothing depends on this crate; `xtask` is its thin command-line front.

pub mod ab;
pub mod bare;
pub mod cluster;
pub mod compare;
pub mod config;
pub mod env;
pub mod exit;
pub mod export;
pub mod files;
pub mod histogram;
pub mod history;
pub mod load;
pub mod provision;
pub mod publishers;
pub mod record;
pub mod report;
pub mod results;
pub mod run;
pub mod sampler;
pub mod scenario;
pub mod scenarios;
pub mod services;
pub mod workers;

pub use run::{run_bench, BenchOptions, BenchOutcome, ServicesUnderTest};
pub use services::ServiceBinaries;
