//! The harness's one integration-test binary; one module per area.

mod compare;
mod infra;
mod report;
