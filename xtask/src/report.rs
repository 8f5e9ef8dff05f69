//! `cargo xtask report` (not implemented yet).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cargo xtask report` is not implemented yet")
}
