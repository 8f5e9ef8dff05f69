//! The harness's one integration-test binary; one module per area.

mod bench;
mod compare;
mod infra;
mod report;
