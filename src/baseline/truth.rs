//! Lines a detection up against a simulator's `truth.json`: which injected scenarios
//! raised an alert inside their labelled windows, which victims showed it too, and
//! which benign changes raised an alert they should not have.

use crate::ingest::sim::{Role, TruthEntry};
use crate::model::Finding;
use crate::timefmt::parse_time;

use super::Detection;

/// How one injected scenario fared.
#[derive(Debug)]
pub struct ScenarioCheck<'a> {
    pub scenario: &'a str,
    pub subject: &'a str,
    /// The highest-risk alert on the subject inside any of its labelled windows.
    pub best: Option<&'a Finding>,
    /// Each victim device with its highest-risk alert inside its windows.
    pub victims: Vec<(&'a str, Option<&'a Finding>)>,
}

/// The whole comparison.
#[derive(Debug)]
pub struct TruthCheck<'a> {
    /// Injected scenarios in truth-file order.
    pub scenarios: Vec<ScenarioCheck<'a>>,
    /// Benign entries on devices that no injected scenario touches.
    pub benign_entries: usize,
    pub benign_devices: usize,
    /// Benign entries of those with an alert inside their window.
    pub benign_alerted: Vec<(&'a TruthEntry, &'a Finding)>,
}

impl TruthCheck<'_> {
    pub fn found(&self) -> usize {
        self.scenarios.iter().filter(|s| s.best.is_some()).count()
    }
}

/// Compares a detection with the truth entries of the same run.
pub fn check<'a>(detection: &'a Detection, truth: &'a [TruthEntry]) -> TruthCheck<'a> {
    let mut scenarios: Vec<ScenarioCheck<'a>> = Vec::new();
    for entry in truth.iter().filter(|e| !e.benign) {
        let position = scenarios.iter().position(|s| s.scenario == entry.scenario);
        let index = position.unwrap_or_else(|| {
            scenarios.push(ScenarioCheck {
                scenario: &entry.scenario,
                subject: "",
                best: None,
                victims: Vec::new(),
            });
            scenarios.len() - 1
        });
        let check = &mut scenarios[index];
        let found = best_inside(detection, entry);
        match entry.role {
            Role::Subject => {
                check.subject = &entry.device_id;
                check.best = riskier(check.best, found);
            }
            Role::Victim => match check.victims.iter_mut().find(|v| v.0 == entry.device_id) {
                Some(victim) => victim.1 = riskier(victim.1, found),
                None => check.victims.push((&entry.device_id, found)),
            },
        }
    }

    let touched = |device: &str| truth.iter().any(|e| !e.benign && e.device_id == device);
    let benign: Vec<&TruthEntry> =
        truth.iter().filter(|e| e.benign && !touched(&e.device_id)).collect();
    let mut devices: Vec<&str> = benign.iter().map(|e| e.device_id.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let benign_alerted =
        benign.iter().filter_map(|e| best_inside(detection, e).map(|f| (*e, f))).collect();
    TruthCheck {
        scenarios,
        benign_entries: benign.len(),
        benign_devices: devices.len(),
        benign_alerted,
    }
}

fn riskier<'a>(a: Option<&'a Finding>, b: Option<&'a Finding>) -> Option<&'a Finding> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.risk > a.risk { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// The highest-risk alert (high or critical) of the entry's device whose window
/// overlaps the entry's.
pub fn best_inside<'a>(detection: &'a Detection, entry: &TruthEntry) -> Option<&'a Finding> {
    let start = parse_time(&entry.start).ok()?;
    let end = parse_time(&entry.end).ok()?;
    detection
        .findings
        .iter()
        .filter(|f| f.device_id == entry.device_id && f.severity.is_alert())
        .filter(|f| {
            let ws = parse_time(&f.window_start).unwrap_or(f64::MAX);
            let we = parse_time(&f.window_end).unwrap_or(f64::MIN);
            ws < end && start < we
        })
        .max_by(|a, b| a.risk.total_cmp(&b.risk))
}
