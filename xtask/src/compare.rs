//! `cargo xtask compare` (not implemented yet).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cargo xtask compare` is not implemented yet")
}
