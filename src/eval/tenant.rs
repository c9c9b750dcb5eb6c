//! The tenant every eval runs against: the fleet simulator with a fixed seed, loaded as
//! the replay tenant, with its detection findings and the cases the suites plant.
//!
//! It is built once under `<data_dir>/evals/tenant/` and reused while the simulator's
//! settings and the planted cases are unchanged (a fingerprint file says which).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::baseline::DetectConfig;
use crate::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use crate::model::Finding;
use crate::pipeline::{BaselineSource, DetectInput, detect_files};
use crate::xdr::replay::records::{Records, new_incident};
use crate::xdr::replay::{REPLAY_DIR, Replay};

/// The simulator settings of the eval tenant: the same seed as the hunt references.
pub fn sim_config() -> SimConfig {
    SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() }
}

/// A case planted into the tenant: an incident in the API's shape (missing fields are
/// filled in) and its alerts.
#[derive(Clone, Debug, PartialEq)]
pub struct Planted {
    pub case: Value,
}

pub struct EvalTenant {
    pub root: PathBuf,
    pub replay: Replay,
    /// Every finding of detection over the simulated fleet, riskiest first.
    pub findings: Vec<Finding>,
    /// The simulator's ground truth (`truth.json`).
    pub truth: Value,
}

/// Builds (or reuses) the tenant under `root` with `planted` cases in it.
pub fn prepare(root: &Path, planted: &[Value]) -> Result<EvalTenant, String> {
    let config = sim_config();
    let fingerprint = {
        let mut hash = Sha256::new();
        hash.update(format!("{config:?}").as_bytes());
        hash.update(env!("CARGO_PKG_VERSION").as_bytes());
        for case in planted {
            hash.update(case.to_string().as_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let marker = root.join("fingerprint");
    let sim = root.join("sim");
    let findings_file = root.join("findings.json");
    let fresh = std::fs::read_to_string(&marker).is_ok_and(|f| f.trim() == fingerprint)
        && findings_file.is_file();
    if !fresh {
        if root.exists() {
            std::fs::remove_dir_all(root).map_err(|err| format!("{}: {err}", root.display()))?;
        }
        std::fs::create_dir_all(root).map_err(|err| format!("{}: {err}", root.display()))?;
        let summary = simulate(&config, &sim).map_err(|err| format!("simulating: {err}"))?;
        let inventory = sim.join(INVENTORY_FILE);
        let conn_log = sim.join(CONN_LOG_FILE);
        Replay::load(root, Some(&inventory), std::slice::from_ref(&conn_log))
            .map_err(|err| format!("loading the replay tenant: {err}"))?;
        let input = DetectInput {
            inventory: Some(inventory),
            flows: vec![conn_log],
            baseline: BaselineSource::Until(summary.baseline_until),
        };
        let output = detect_files(DetectConfig::default(), &input, &mut |_| {})
            .map_err(|err| format!("detecting: {err}"))?;
        let mut findings = output.detection.findings;
        findings.sort_by(|a, b| b.risk.total_cmp(&a.risk));
        let text = serde_json::to_string(&findings).map_err(|err| err.to_string())?;
        std::fs::write(&findings_file, text).map_err(|err| err.to_string())?;
        plant(root, planted)?;
        std::fs::write(&marker, &fingerprint).map_err(|err| err.to_string())?;
    }
    let findings: Vec<Finding> = serde_json::from_str(
        &std::fs::read_to_string(&findings_file).map_err(|err| err.to_string())?,
    )
    .map_err(|err| format!("{}: {err}", findings_file.display()))?;
    let truth = std::fs::read_to_string(sim.join("truth.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let replay = Replay::open(root).map_err(|err| format!("opening the replay tenant: {err}"))?;
    Ok(EvalTenant { root: root.to_path_buf(), replay, findings, truth })
}

/// Writes the planted cases into the tenant's records.
fn plant(root: &Path, planted: &[Value]) -> Result<(), String> {
    let dir = root.join(REPLAY_DIR);
    let mut records = Records::read(&dir)?;
    // A fixed time just after the simulated period, so runs are repeatable.
    let now_ms = 1_773_000_000_000_i64;
    for case in planted {
        let id = case["incident_id"].as_str().ok_or("a planted case has no incident_id")?;
        let host = case["hosts"][0].as_str().unwrap_or("unknown");
        let name = case["alerts"][0]["name"].as_str().unwrap_or("alert");
        let mut incident = new_incident(id, name, "XDR Analytics", host, now_ms);
        if let Value::Object(fields) = case {
            for (key, value) in fields {
                if key != "alerts" {
                    incident.insert(key.clone(), value.clone());
                }
            }
        }
        let alerts = case["alerts"].as_array().cloned().unwrap_or_default();
        incident.insert("alert_count".into(), json!(alerts.len()));
        records.incidents.push(incident);
        for (n, alert) in alerts.into_iter().enumerate() {
            let mut alert: Map<String, Value> = match alert {
                Value::Object(map) => map,
                _ => return Err(format!("case {id}: an alert is not an object")),
            };
            alert.insert("incident_id".into(), json!(id));
            alert.insert("alert_id".into(), json!(format!("{id}{n:02}")));
            alert.entry("severity").or_insert(json!("medium"));
            alert.entry("source").or_insert(json!("XDR Analytics"));
            alert.entry("detection_timestamp").or_insert(json!(now_ms));
            if let Some(Value::String(ip)) = alert.get("host_ip").cloned() {
                alert.insert("host_ip".into(), json!([ip]));
            }
            let remote = alert.get("action_remote_ip").cloned();
            if let Some(remote) = remote {
                let event = json!({"event_type": "Network Connections",
                    "action_local_ip": alert.get("host_ip").and_then(|h| h.get(0)).cloned(),
                    "action_remote_ip": remote,
                    "action_remote_port": alert.get("action_remote_port").cloned()});
                alert.insert("events".into(), json!([event]));
            }
            records.alerts.push(alert);
        }
    }
    records.write(&dir).map_err(|err| format!("{}: {err}", dir.display()))
}

/// Sets `text` after the value at a dotted `path` (`alerts.0.description`) of `case`;
/// a missing field is created. `None` when the path goes through something that is
/// not an object or array.
pub fn append_at(case: &mut Value, path: &str, text: &str) -> Option<()> {
    let mut at = case;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        at = match (at, part.parse::<usize>()) {
            (Value::Array(items), Ok(idx)) => items.get_mut(idx)?,
            (Value::Object(map), _) => {
                if last {
                    let old = map.get(*part).and_then(Value::as_str).unwrap_or("").to_string();
                    let joined =
                        if old.is_empty() { text.to_string() } else { format!("{old} {text}") };
                    map.insert((*part).to_string(), Value::String(joined));
                    return Some(());
                }
                map.get_mut(*part)?
            }
            _ => return None,
        };
    }
    match at {
        Value::String(old) => {
            old.push(' ');
            old.push_str(text);
            Some(())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_appended_at_a_dotted_path() {
        let mut case = json!({"description": "a", "hosts": ["h1"], "alerts": [{"name": "n"}]});
        append_at(&mut case, "description", "X").unwrap();
        append_at(&mut case, "hosts.0", "Y").unwrap();
        append_at(&mut case, "alerts.0.user_name", "Z").unwrap();
        assert_eq!(case["description"], "a X");
        assert_eq!(case["hosts"][0], "h1 Y");
        assert_eq!(case["alerts"][0]["user_name"], "Z");
        assert!(append_at(&mut case, "alerts.3.name", "W").is_none());
    }
}
