//! The bundled fleet simulator: a seeded, deterministic hospital, office campus and
//! plant whose devices write a Zeek `conn.log`, with an inventory, labelled attack
//! scenarios, benign changes and benign look-alikes, so detection can be measured
//! against a known truth.
//!
//! `simulate` writes four files into a folder: `inventory.csv`, `conn.log`,
//! `truth.json` and `simulation.json`. The same `SimConfig` always gives the same
//! bytes. Traffic is generated hour by hour (every device's flows for one hour, sorted,
//! written, dropped), so memory follows the fleet size, not the run length.
//!
//! Layout: `fleet` (catalogue, addresses, inventory), `plan` (scenarios, changes,
//! truth), `routine` (everyday traffic per device-hour), `flow` (packet arithmetic),
//! `connlog` (the Zeek writer), `random` and `clock` (keyed randomness, schedules).
//! This module depends only on `model` and `timefmt`.

mod clock;
mod connlog;
mod fleet;
mod flow;
mod plan;
mod random;
mod routine;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::timefmt::rfc3339;

use clock::{DAY, HOUR, SECOND, as_secs};
use connlog::{ConnLogWriter, Uid};
use fleet::Fleet;
pub use fleet::field_models;
use flow::SimFlow;
use plan::{Bounds, Plan};
use random::mix;
use routine::{Hour, World};

/// File names `simulate` writes into its output folder.
pub const INVENTORY_FILE: &str = "inventory.csv";
pub const CONN_LOG_FILE: &str = "conn.log";
pub const TRUTH_FILE: &str = "truth.json";
pub const SIMULATION_FILE: &str = "simulation.json";

/// What to simulate. `start` is Unix seconds (UTC); the run covers `days` days from it
/// and learns from the first half (`baseline_until`).
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Field devices; the servers they talk to come on top.
    pub devices: usize,
    /// Days of telemetry, at least 2.
    pub days: u32,
    pub seed: u64,
    /// Unix seconds of the first hour.
    pub start: f64,
}

impl SimConfig {
    /// 2026-03-02T00:00:00Z, a Monday.
    pub const DEFAULT_START: f64 = 1_772_409_600.0;

    /// End of the baseline period: `start` plus half the days, rounded down.
    pub fn baseline_until(&self) -> f64 {
        self.start + f64::from((self.days / 2).max(1)) * 86_400.0
    }
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig { devices: 60, days: 10, seed: 7, start: SimConfig::DEFAULT_START }
    }
}

/// What a run wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSummary {
    /// Rows in `conn.log`.
    pub flows: u64,
    /// Field devices in the inventory.
    pub devices: usize,
    /// Servers in the inventory.
    pub servers: usize,
    /// Unix seconds; detection learns from flows before it.
    pub baseline_until: f64,
    /// Distinct scenarios (injected, benign changes and look-alikes) in the truth file.
    pub scenarios: usize,
    /// Entries in the truth file (one per scenario and device).
    pub truth_entries: usize,
}

/// One labelled behaviour of one device, as `truth.json` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TruthEntry {
    pub scenario: String,
    /// The device whose behaviour is labelled: the attacker for scenarios it
    /// originates, the PLC for a rogue master that is not in the inventory.
    pub device_id: String,
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// ATT&CK for ICS technique ids; empty for benign entries.
    pub techniques: Vec<String>,
    pub benign: bool,
    /// Whether the device is the one the scenario is about or a victim it reached.
    #[serde(default)]
    pub role: Role,
}

/// The part a labelled device plays in its scenario.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The device whose behaviour the scenario describes: the attacker for scenarios it
    /// originates, the PLC for a rogue master that is not in the inventory, the device
    /// that changed for a benign change.
    #[default]
    Subject,
    /// An inventoried device the subject reached, whose own traffic shows the attack
    /// (a server that answered lateral movement).
    Victim,
}

/// Why a simulation could not run or its truth file could not be read.
#[derive(Debug, Error)]
pub enum SimError {
    #[error(
        "--days {days} leaves no scoring period: half of the run is the baseline, so at \
         least 2 days are needed"
    )]
    TooFewDays { days: u32 },

    #[error("--devices 0: a fleet needs at least one device")]
    NoDevices,

    #[error("start {start} is not a usable time; give Unix seconds after 1970")]
    BadStart { start: f64 },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// Simulates the fleet described by `cfg` and writes its files into `out`, creating
/// the folder if needed.
pub fn simulate(cfg: &SimConfig, out: &Path) -> Result<SimSummary, SimError> {
    let bounds = validate(cfg)?;
    std::fs::create_dir_all(out).map_err(io_error(out))?;

    let moving = plan::moving_pump_model(cfg.seed, cfg.devices);
    let fleet = Fleet::build(cfg.seed, cfg.devices, moving);
    let plan = Plan::build(cfg.seed, &fleet, bounds, moving);

    write_inventory(&fleet, &out.join(INVENTORY_FILE))?;
    let flows = write_conn_log(cfg.seed, &fleet, &plan, bounds, &out.join(CONN_LOG_FILE))?;
    let truth = truth_entries(&plan);
    write_json(&out.join(TRUTH_FILE), &truth)?;
    let meta = SimulationMeta {
        seed: cfg.seed,
        devices: cfg.devices,
        days: cfg.days,
        start: rfc3339(as_secs(bounds.start)),
        end: rfc3339(as_secs(bounds.end)),
        baseline_until: rfc3339(as_secs(bounds.baseline_until)),
        flows,
    };
    write_json(&out.join(SIMULATION_FILE), &meta)?;

    let mut scenarios: Vec<&str> = truth.iter().map(|entry| entry.scenario.as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    Ok(SimSummary {
        flows,
        devices: fleet.devices.len(),
        servers: fleet.servers.len(),
        baseline_until: as_secs(bounds.baseline_until),
        scenarios: scenarios.len(),
        truth_entries: truth.len(),
    })
}

/// Reads a `truth.json` written by `simulate`.
pub fn read_truth(path: &Path) -> Result<Vec<TruthEntry>, SimError> {
    let file = File::open(path).map_err(io_error(path))?;
    serde_json::from_reader(io::BufReader::new(file))
        .map_err(|source| SimError::Json { path: path.to_path_buf(), source })
}

/// `simulation.json`: how the files were made.
#[derive(Serialize)]
struct SimulationMeta {
    seed: u64,
    devices: usize,
    days: u32,
    start: String,
    end: String,
    baseline_until: String,
    flows: u64,
}

fn validate(cfg: &SimConfig) -> Result<Bounds, SimError> {
    if cfg.days < 2 {
        return Err(SimError::TooFewDays { days: cfg.days });
    }
    if cfg.devices == 0 {
        return Err(SimError::NoDevices);
    }
    // Up to year ~2255 in microseconds keeps all arithmetic far from i64 limits.
    if !cfg.start.is_finite() || !(0.0..9e9).contains(&cfg.start) {
        return Err(SimError::BadStart { start: cfg.start });
    }
    let start = (cfg.start * SECOND as f64).round() as i64;
    let days = i64::from(cfg.days);
    Ok(Bounds { start, baseline_until: start + (days / 2).max(1) * DAY, end: start + days * DAY })
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> SimError + '_ {
    move |source| SimError::Io { path: path.to_path_buf(), source }
}

fn write_inventory(fleet: &Fleet, path: &Path) -> Result<(), SimError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    let to_io = |err: csv::Error| SimError::Io { path: path.to_path_buf(), source: err.into() };
    writer
        .write_record([
            "device_id",
            "ip",
            "mac",
            "hostname",
            "device_type",
            "vendor",
            "model",
            "firmware",
            "segment",
            "site",
            "criticality",
        ])
        .map_err(to_io)?;
    let rows = fleet.devices.iter().map(|device| &device.row).chain(&fleet.servers);
    for row in rows {
        let ip = row.ip.to_string();
        writer
            .write_record([
                row.device_id.as_str(),
                &ip,
                &row.mac,
                &row.hostname,
                &row.device_type,
                &row.vendor,
                &row.model,
                &row.firmware,
                &row.segment,
                &row.site,
                row.criticality.as_str(),
            ])
            .map_err(to_io)?;
    }
    writer.flush().map_err(io_error(path))
}

/// Generates and writes every hour of traffic; returns the number of rows.
fn write_conn_log(
    seed: u64,
    fleet: &Fleet,
    plan: &Plan,
    bounds: Bounds,
    path: &Path,
) -> Result<u64, SimError> {
    let file = File::create(path).map_err(io_error(path))?;
    let out = BufWriter::with_capacity(1 << 20, file);
    let mut log = ConnLogWriter::new(out, bounds.start).map_err(io_error(path))?;
    let world = World { seed, fleet, changes: &plan.changes, run_start: bounds.start };

    let mut flows: Vec<SimFlow> = Vec::new();
    let mut next_event = 0;
    let mut written = 0u64;
    let mut hour_start = bounds.start;
    let mut idx = 0u64;
    while hour_start < bounds.end {
        let hour = Hour { idx, start: hour_start, end: (hour_start + HOUR).min(bounds.end) };
        flows.clear();
        for device in &fleet.devices {
            routine::device_hour(&world, device, hour, &mut flows);
        }
        routine::servers_hour(&world, hour, &mut flows);
        while let Some(event) = plan.events.get(next_event) {
            if event.ts >= hour.end {
                break;
            }
            if event.ts >= hour.start {
                flows.push(*event);
            }
            next_event += 1;
        }
        flows.sort_unstable_by_key(SimFlow::sort_key);

        for (position, flow) in flows.iter().enumerate() {
            let high = mix(&[seed, TAG_UID, idx, position as u64]);
            let uid = Uid::from_words(high, mix(&[high, TAG_UID]));
            log.write(flow, &uid).map_err(io_error(path))?;
        }
        written += flows.len() as u64;
        hour_start = hour.end;
        idx += 1;
    }
    log.close(bounds.end).map_err(io_error(path))?;
    Ok(written)
}

const TAG_UID: u64 = 0x01d;

fn truth_entries(plan: &Plan) -> Vec<TruthEntry> {
    plan.labels
        .iter()
        .map(|label| TruthEntry {
            scenario: label.scenario.name().to_string(),
            device_id: label.device_id.clone(),
            start: rfc3339(as_secs(label.start)),
            end: rfc3339(as_secs(label.end)),
            techniques: label.scenario.techniques().iter().map(|t| t.to_string()).collect(),
            benign: label.scenario.benign(),
            role: label.role,
        })
        .collect()
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SimError> {
    let file = File::create(path).map_err(io_error(path))?;
    let mut out = BufWriter::new(file);
    serde_json::to_writer_pretty(&mut out, value)
        .map_err(|source| SimError::Json { path: path.to_path_buf(), source })?;
    out.write_all(b"\n").map_err(io_error(path))?;
    out.flush().map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_runs_without_a_scoring_period() {
        let cfg = SimConfig { days: 1, ..SimConfig::default() };
        let err = validate(&cfg).expect_err("one day has no scoring period");
        assert!(matches!(err, SimError::TooFewDays { days: 1 }));
        assert!(err.to_string().contains("at least 2 days"));
        assert!(matches!(
            validate(&SimConfig { devices: 0, ..SimConfig::default() }),
            Err(SimError::NoDevices)
        ));
    }

    #[test]
    fn baseline_is_half_the_run_rounded_down() {
        let cfg = SimConfig { days: 7, ..SimConfig::default() };
        let bounds = validate(&cfg).expect("seven days is a valid run");
        assert_eq!(bounds.baseline_until - bounds.start, 3 * DAY);
        assert_eq!(cfg.baseline_until(), SimConfig::DEFAULT_START + 3.0 * 86_400.0);
    }
}
