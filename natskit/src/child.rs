//! Waiting for child processes with a deadline, using std only.
//!
//! std has no "wait with timeout", so these poll `try_wait` at a short
//! interval. That is waiting for the event itself (the child's exit), bounded
//! by a deadline, not a sleep that hopes something has happened meanwhile.

use std::{
    fs::File,
    io::{self, Read, Seek},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// How often deadline-bounded waits look at the thing they wait for.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Waits for `child` to exit; `Ok(None)` if it is still running at `deadline`.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Runs `cmd` to completion, killing it if it takes longer than `timeout`.
///
/// Output goes to anonymous temp files rather than pipes, so a chatty child
/// (pip) can never block on a full pipe while we wait for it to exit.
/// A failure to spawn keeps its `io::Error` in the chain so callers can tell
/// "not installed" (`NotFound`) from other failures.
pub(crate) fn run_with_deadline(mut cmd: Command, timeout: Duration) -> Result<Output> {
    let mut stdout = tempfile::tempfile().context("creating a temp file for stdout")?;
    let mut stderr = tempfile::tempfile().context("creating a temp file for stderr")?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout.try_clone().context("duplicating the stdout file")?)
        .stderr(stderr.try_clone().context("duplicating the stderr file")?)
        .spawn()?;
    let Some(status) = wait_until(&mut child, Instant::now() + timeout)? else {
        // Best effort: the child may exit between the check and the kill.
        let _ = child.kill();
        let _ = child.wait();
        bail!("timed out after {timeout:?} waiting for it to exit");
    };
    Ok(Output {
        status,
        stdout: read_all(&mut stdout)?,
        stderr: read_all(&mut stderr)?,
    })
}

fn read_all(file: &mut File) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.rewind().context("rewinding captured output")?;
    file.read_to_end(&mut buf)
        .context("reading captured output")?;
    Ok(buf)
}
