//! A simulated fleet loaded as a replay tenant, with detection run over it.

use std::path::Path;

use pivotwatch::baseline::DetectConfig;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::model::{Finding, Severity};
use pivotwatch::pipeline::{BaselineSource, DetectInput, detect_files};
use pivotwatch::xdr::replay::Replay;

/// Simulates `config` into `sim`, loads it as the replay tenant of `data` (they may be
/// the same folder) and returns the tenant and every finding.
pub fn tenant(config: &SimConfig, sim: &Path, data: &Path) -> (Replay, Vec<Finding>) {
    let summary = simulate(config, sim).unwrap();
    let inventory = sim.join(INVENTORY_FILE);
    let conn_log = sim.join(CONN_LOG_FILE);
    Replay::load(data, Some(&inventory), std::slice::from_ref(&conn_log)).unwrap();
    let input = DetectInput {
        inventory: Some(inventory),
        flows: vec![conn_log],
        baseline: BaselineSource::Until(summary.baseline_until),
    };
    let output = detect_files(DetectConfig::default(), &input, &mut |_| {}).unwrap();
    (Replay::open(data).unwrap(), output.detection.findings)
}

/// The critical findings, riskiest first.
pub fn critical(findings: Vec<Finding>) -> Vec<Finding> {
    let mut critical: Vec<Finding> =
        findings.into_iter().filter(|f| f.severity == Severity::Critical).collect();
    critical.sort_by(|a, b| b.risk.total_cmp(&a.risk));
    critical
}
