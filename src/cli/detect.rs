//! `pivotwatch detect` and `pivotwatch demo`.

use std::path::PathBuf;

use super::DemoArgs;

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Device inventory (CSV or JSON).
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Flow files to learn from and score.
    #[arg(long, required = true, num_args = 1..)]
    pub flows: Vec<PathBuf>,
    /// Learn from flows before this time and score the rest.
    #[arg(long)]
    pub baseline_until: Option<String>,
    /// Learn from these files only and score every --flows file.
    #[arg(long, num_args = 1..)]
    pub baseline_flows: Vec<PathBuf>,
    /// Window length (1h, 5m, ...).
    #[arg(long, default_value = "1h")]
    pub window: String,
    /// Print one JSON object per finding.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: DetectArgs) -> anyhow::Result<i32> {
    anyhow::bail!("detect is not wired yet")
}

pub fn run_demo(_args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("demo is not wired yet")
}
