//! `pivotwatch simulate --out DIR [--devices N] [--days N] [--seed S]`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Folder to write inventory.csv, conn.log, truth.json and simulation.json into.
    #[arg(long)]
    pub out: PathBuf,
    /// Number of field devices (servers come on top).
    #[arg(long, default_value_t = 60)]
    pub devices: usize,
    /// Days of telemetry.
    #[arg(long, default_value_t = 10)]
    pub days: u32,
    /// Seed; the same seed gives byte-identical files.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

pub fn run(_args: SimulateArgs) -> anyhow::Result<i32> {
    anyhow::bail!("simulate is not wired yet")
}
