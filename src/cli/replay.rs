//! `pivotwatch replay load`: fills the local replay tenant in the data directory from
//! Zeek telemetry and an inventory, so hunts and `xql run` have a tenant to ask.

use std::path::PathBuf;

use crate::baseline::DetectConfig;
use crate::pipeline::{BaselineSource, DetectInput, detect_files};
use crate::timefmt::rfc3339;
use crate::xdr::replay::Replay;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub command: ReplayCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ReplayCommand {
    /// Copy flow files and an inventory into the replay tenant, replacing what it held.
    Load(LoadArgs),
}

/// The data directory every embedded default lives under.
#[derive(Clone, Debug, clap::Args)]
pub struct DataDirArg {
    /// Where the embedded defaults keep their files.
    #[arg(long, env = "PIVOTWATCH_DATA_DIR", default_value = "pivotwatch-data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub data_dir: DataDirArg,
    /// Device inventory (CSV or JSON).
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Zeek conn.log files (TSV or JSON lines, plain or gzip).
    #[arg(long, required = true, num_args = 1..)]
    pub flows: Vec<PathBuf>,
    /// Also run detection, learning from flows before this time, and file its alerts
    /// as the tenant's incidents (RFC 3339, a date, or Unix seconds).
    #[arg(long, value_parser = crate::timefmt::parse_time)]
    pub baseline_until: Option<f64>,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<i32> {
    match args.command {
        ReplayCommand::Load(args) => load(args),
    }
}

fn load(args: LoadArgs) -> anyhow::Result<i32> {
    let info = Replay::load(&args.data_dir.data_dir, args.inventory.as_deref(), &args.flows)?;
    if info.skipped > 0 {
        eprintln!(
            "warning: {} malformed lines were skipped (see `pivotwatch ingest`)",
            info.skipped
        );
    }
    let span = match (info.first_ts, info.last_ts) {
        (Some(first), Some(last)) => format!("from {} to {}", rfc3339(first), rfc3339(last)),
        _ => "with no flows".into(),
    };
    println!(
        "replay tenant in {}: {} flows {span}, {} inventoried devices",
        args.data_dir.data_dir.join(crate::xdr::replay::REPLAY_DIR).display(),
        info.flows,
        info.devices
    );
    if let Some(until) = args.baseline_until {
        let replay = Replay::open(&args.data_dir.data_dir)?;
        let (alerts, incidents) = file_incidents(&replay, until)?;
        println!("detection filed {alerts} alerts as {incidents} incidents");
    }
    Ok(0)
}

/// Runs detection over the tenant's own files and files its alerts as incidents.
/// Returns the number of alerts and of incidents the tenant then has.
pub(crate) fn file_incidents(replay: &Replay, until: f64) -> anyhow::Result<(usize, u64)> {
    let input = DetectInput {
        inventory: replay.inventory_file(),
        flows: replay.flow_files(),
        baseline: BaselineSource::Until(until),
    };
    let output = detect_files(DetectConfig::default(), &input, &mut |_| {})?;
    file_findings(replay, &output.detection.findings)
}

/// Files the alerting findings as the tenant's alerts and incidents. Returns the number
/// of alerts and of incidents the tenant then has.
pub(crate) fn file_findings(
    replay: &Replay,
    findings: &[crate::model::Finding],
) -> anyhow::Result<(usize, u64)> {
    let alerts =
        replay.import_findings(findings).map_err(|err| anyhow::anyhow!("{}", err.message))?;
    let request = crate::xdr::IncidentQuery::new().to_request();
    let (incidents, _) = replay
        .list_wire(crate::xdr::replay::records::ListKind::Incidents, &request)
        .map_err(|err| anyhow::anyhow!("{}", err.message))?;
    Ok((alerts, incidents))
}
