//! The harness's one integration-test binary; one module per area.

mod bench;
mod cluster;
mod compare;
mod infra;
mod knee;
mod report;
mod workers;

/// The tests of this binary run one at a time. Some measure this very process (the sampler's CPU
/// and RSS of the test process) or the machine's timing (calibration against its bare floor),
/// and any test running beside them in parallel threads, on what may be a 2-core machine, would
/// be measured with them. Every test holds this for its whole run.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold [`ONE_AT_A_TIME`]; a panicking holder does not block the rest.
fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}
