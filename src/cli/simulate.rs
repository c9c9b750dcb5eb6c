//! `pivotwatch simulate --out DIR [--devices N] [--days N] [--seed S]`.

use std::path::PathBuf;

use crate::ingest::sim::{
    CONN_LOG_FILE, INVENTORY_FILE, SIMULATION_FILE, SimConfig, TRUTH_FILE, simulate,
};
use crate::timefmt::rfc3339;

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

pub fn run(args: SimulateArgs) -> anyhow::Result<i32> {
    let cfg = SimConfig {
        devices: args.devices,
        days: args.days,
        seed: args.seed,
        start: SimConfig::DEFAULT_START,
    };
    let summary = simulate(&cfg, &args.out)?;

    println!(
        "simulated {} devices and {} servers over {} days (seed {}): {} flows",
        summary.devices, summary.servers, cfg.days, cfg.seed, summary.flows
    );
    println!("baseline until {}", rfc3339(summary.baseline_until));
    let (scenarios, entries) = (summary.scenarios, summary.truth_entries);
    println!("{scenarios} scenarios labelled in {entries} truth entries");
    for file in [INVENTORY_FILE, CONN_LOG_FILE, TRUTH_FILE, SIMULATION_FILE] {
        println!("  {}", args.out.join(file).display());
    }
    Ok(0)
}
