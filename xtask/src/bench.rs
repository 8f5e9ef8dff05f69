//! `cargo xtask bench` (not implemented yet).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<u8> {
    anyhow::bail!("`cargo xtask bench` is not implemented yet")
}
