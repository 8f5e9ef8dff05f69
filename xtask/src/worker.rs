//! `cargo xtask worker …`: builds the load worker (`rosey-loadgen`, release) and runs it with the
//! given arguments, so a host with a checkout needs no separate install. The worker's command
//! line is the binary's own (`cargo xtask worker -- --help`).

use std::ffi::OsString;

#[derive(clap::Args)]
pub struct Args {
    /// Arguments for rosey-loadgen: `--nats-url <url> --run-id <id> [--name <name>]`.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<OsString>,
}

pub fn run(args: Args) -> anyhow::Result<u8> {
    let root = crate::workspace_root();
    let binary = crate::bench::build_loadgen(&root)?;
    let status = std::process::Command::new(&binary)
        .args(&args.args)
        .status()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", binary.display()))?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(harness::exit::HARNESS_ERROR))
}
