//! `pivotwatch ingest FILE... [--json]`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Zeek conn.log files (TSV or JSON lines, plain or gzip).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one JSON summary object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_args: IngestArgs) -> anyhow::Result<i32> {
    anyhow::bail!("ingest is not wired yet")
}
