//! The harness's one integration-test binary; one module per area.

mod infra;
mod report;
