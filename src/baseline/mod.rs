//! Behavioural baselines and deviation scoring.
//!
//! Flows stream into per-device windows (`window`). Once every flow is in, the windows
//! of the baseline period become profiles: per device (the conversations, external
//! peers, schedule and feature distribution it had) and per peer group (the same, over
//! all members, plus a seeded isolation forest over the members' windows). Each window
//! of the scoring period is then scored against both (`score`): what is new to the
//! device and its group, how far its shape lies from their history, and whether it runs
//! at an hour the device is normally idle. The result is a `Finding` per window with
//! reasons, ATT&CK for ICS techniques by rule, and a risk weighted by criticality.
//!
//! This module depends only on `model`; it reads no files and prints nothing.

mod cluster;
mod iforest;
mod pca;
mod profile;
mod score;
mod stats;
pub mod truth;
mod window;

use std::io::Write;

use crate::model::{Finding, Flow, Inventory, PeerAttr, Severity};

pub use cluster::TypeMismatch;
pub use iforest::{ForestParams, IsolationForest};
pub use profile::FEATURE_NAMES;
pub(crate) use score::human_bytes;
use window::{Registry, Windows};

/// How a detection run groups devices and cuts time.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// Window length in seconds.
    pub window_secs: f64,
    /// Attributes a peer group is keyed on, most specific first. Groups smaller than
    /// `min_group_size` fall back to a shorter key, ending at the first attribute.
    pub peer_key: Vec<PeerAttr>,
    pub min_group_size: usize,
    /// Seed of the isolation forests and the clustering.
    pub seed: u64,
}

impl Default for DetectConfig {
    fn default() -> DetectConfig {
        DetectConfig {
            window_secs: 3600.0,
            peer_key: vec![PeerAttr::DeviceType, PeerAttr::Model, PeerAttr::Segment],
            min_group_size: 3,
            seed: 1,
        }
    }
}

/// Where the baseline ends and scoring begins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BaselineSplit {
    /// Flows before this Unix time are the baseline; the rest are scored.
    Until(f64),
    /// Baseline flows arrive through `Detector::observe_baseline`; every flow given to
    /// `Detector::observe` is scored.
    Separate,
}

/// A detection run: feed it flows, then `finish` it.
#[derive(Debug)]
pub struct Detector {
    config: DetectConfig,
    split: BaselineSplit,
    registry: Registry,
    baseline: Windows,
    scoring: Windows,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Detection {
    /// One finding per scored device window, ordered by device and time.
    pub findings: Vec<Finding>,
    /// Devices whose behaviour clusters with another device type than their label.
    pub type_mismatches: Vec<TypeMismatch>,
    pub devices: usize,
    pub peer_groups: usize,
    pub baseline_windows: usize,
    pub scored_windows: usize,
    /// Feature rows of every window, baseline first, for `--export-features`.
    feature_rows: Vec<profile::FeatureRow>,
}

impl Detector {
    /// A run over an inventory, or, without one, over every local address that
    /// originates flows, as devices of unknown type in one group.
    pub fn new(config: DetectConfig, split: BaselineSplit, inventory: Option<&Inventory>) -> Self {
        let registry = match inventory {
            Some(inventory) => Registry::from_inventory(inventory),
            None => Registry::discovering(),
        };
        Detector {
            config,
            split,
            registry,
            baseline: Windows::default(),
            scoring: Windows::default(),
        }
    }

    /// Adds a flow, to the baseline or the scoring period as the split says.
    pub fn observe(&mut self, flow: &Flow) {
        let to_baseline = matches!(self.split, BaselineSplit::Until(until) if flow.ts < until);
        let windows = if to_baseline { &mut self.baseline } else { &mut self.scoring };
        window::accumulate(&mut self.registry, windows, self.config.window_secs, flow);
    }

    /// Adds a flow to the baseline whatever its time.
    pub fn observe_baseline(&mut self, flow: &Flow) {
        window::accumulate(&mut self.registry, &mut self.baseline, self.config.window_secs, flow);
    }

    /// Builds the profiles from the baseline and scores every other window.
    pub fn finish(self) -> Detection {
        let Detector { config, split: _, registry, baseline, scoring } = self;
        let profiles = profile::Profiles::build(&config, &registry, &baseline, &scoring);
        let scored = score::score_all(&config, &registry, &profiles, &scoring);
        let type_mismatches = cluster::type_mismatches(&registry, &profiles, config.seed);

        let mut feature_rows = profiles.baseline_rows(&registry, &baseline, config.window_secs);
        feature_rows.extend(scored.rows);
        Detection {
            findings: scored.findings,
            type_mismatches,
            devices: registry.devices.len(),
            peer_groups: profiles.groups.len(),
            baseline_windows: baseline.len(),
            scored_windows: scoring.len(),
            feature_rows,
        }
    }
}

impl Detection {
    /// Findings at or above a severity.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    pub fn count_by_severity(&self) -> [(Severity, usize); 5] {
        Severity::ALL.map(|s| (s, self.findings.iter().filter(|f| f.severity == s).count()))
    }

    /// Writes one CSV row per window: `device_id`, `window_start`, `window_end`, one
    /// column per feature in `FEATURE_NAMES` order, and `is_baseline` (1 for windows of
    /// the baseline period, 0 for scored ones) last, for tools that fit on the first
    /// and score the second.
    pub fn write_features_csv(&self, out: impl Write) -> std::io::Result<()> {
        profile::write_features_csv(&self.feature_rows, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ConnState, Criticality, Device, Flow, Proto, Service};
    use std::net::IpAddr;

    const HOUR: f64 = 3600.0;
    const DAYS: f64 = 86400.0;

    fn device(n: u8) -> Device {
        Device {
            device_id: format!("pump-{n}"),
            ip: format!("10.1.0.{n}").parse().unwrap(),
            mac: String::new(),
            hostname: String::new(),
            device_type: "Infusion Pump".to_string(),
            vendor: "Acme".to_string(),
            model: "P1".to_string(),
            firmware: "1.0".to_string(),
            segment: "clinical".to_string(),
            site: "main".to_string(),
            criticality: Criticality::Critical,
            tags: Default::default(),
        }
    }

    fn server() -> Device {
        Device {
            device_id: "pump-server".to_string(),
            ip: "10.9.0.1".parse().unwrap(),
            device_type: "Pump Server".to_string(),
            criticality: Criticality::High,
            ..device(1)
        }
    }

    fn flow(ts: f64, orig: IpAddr, resp: IpAddr, port: u16) -> Flow {
        Flow {
            ts,
            orig_h: orig,
            orig_p: 40000,
            resp_h: resp,
            resp_p: port,
            proto: Proto::Tcp,
            service: Service::Ssl,
            duration: 0.5,
            orig_bytes: 800,
            resp_bytes: 400,
            orig_pkts: 6,
            resp_pkts: 5,
            conn_state: ConnState::SF,
        }
    }

    /// Four pumps that talk to their server every five minutes for ten days; the hook
    /// adds whatever a test injects after day seven.
    fn run(inject: impl Fn(&mut Detector)) -> Detection {
        fleet_run(4, inject)
    }

    /// `run` with `n` pumps.
    fn fleet_run(n: u8, inject: impl Fn(&mut Detector)) -> Detection {
        let mut devices: Vec<Device> = (1..=n).map(device).collect();
        devices.push(server());
        let inventory = Inventory::new(devices.clone()).unwrap();
        let until = 7.0 * DAYS;
        let mut detector =
            Detector::new(DetectConfig::default(), BaselineSplit::Until(until), Some(&inventory));
        let server_ip = server().ip;
        let mut ts = 0.0;
        while ts < 10.0 * DAYS {
            for (i, d) in devices.iter().take(usize::from(n)).enumerate() {
                detector.observe(&flow(ts + i as f64 * 7.0, d.ip, server_ip, 443));
            }
            ts += 300.0;
        }
        inject(&mut detector);
        detector.finish()
    }

    fn worst(detection: &Detection, device_id: &str) -> Severity {
        detection
            .findings
            .iter()
            .filter(|f| f.device_id == device_id)
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Info)
    }

    #[test]
    fn a_quiet_fleet_raises_nothing() {
        let detection = run(|_| {});
        assert!(detection.findings.len() > 200);
        assert!(detection.findings.iter().all(|f| f.severity < Severity::Medium));
    }

    #[test]
    fn outbound_ssh_to_the_internet_is_an_alert_with_reasons_and_techniques() {
        let pump = device(2).ip;
        let outside: IpAddr = "203.0.113.50".parse().unwrap();
        let detection = run(|d| {
            for i in 0..4 {
                d.observe(&flow(8.0 * DAYS + 2.0 * HOUR + f64::from(i) * 60.0, pump, outside, 22));
            }
        });
        let alert = detection
            .findings
            .iter()
            .filter(|f| f.device_id == "pump-2")
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
            .unwrap();
        assert!(alert.severity >= Severity::High, "{alert:?}");
        assert_eq!(alert.window_start, "1970-01-09T02:00:00Z");
        assert!(alert.techniques.contains(&"T0886".to_string()));
        assert!(alert.reasons.iter().any(|r| r.feature == "new_conversation"));
        assert_eq!(alert.evidence.examples[0].resp_h, outside);
        assert!(alert.peer_percentile > 99.0);
        assert_eq!(worst(&detection, "pump-1"), Severity::Info);
    }

    #[test]
    fn a_change_the_whole_group_makes_at_once_is_not_an_alert() {
        let vendor: IpAddr = "198.51.100.20".parse().unwrap();
        let detection = run(|d| {
            for n in 1..=4 {
                let ip = device(n).ip;
                d.observe(&flow(8.0 * DAYS + f64::from(n) * 100.0, ip, vendor, 8443));
            }
        });
        for n in 1..=4 {
            assert!(worst(&detection, &format!("pump-{n}")) < Severity::High);
        }
    }

    #[test]
    fn an_unknown_host_speaking_modbus_to_a_device_is_an_alert() {
        let pump = device(3).ip;
        let rogue: IpAddr = "10.1.0.250".parse().unwrap();
        let detection = run(|d| {
            for i in 0..30 {
                d.observe(&flow(9.0 * DAYS + f64::from(i) * 30.0, rogue, pump, 502));
            }
        });
        let alert = detection.findings.iter().find(|f| f.device_id == "pump-3" && f.risk >= 60.0);
        let alert = alert.expect("the rogue master raises an alert");
        assert!(alert.techniques.contains(&"T0848".to_string()));
        assert!(alert.techniques.contains(&"T0855".to_string()));
    }

    #[test]
    fn a_sweep_alerts_on_the_sweeping_device_not_on_each_target() {
        let sweeper = device(1).ip;
        // A minority of the group, so that the probes are not a fleet-wide change.
        let detection = fleet_run(60, |d| {
            for n in 2..=26 {
                let target = device(n).ip;
                for (k, port) in [22, 23, 80, 102, 502, 44818].into_iter().enumerate() {
                    let ts = 8.0 * DAYS + f64::from(n) * 20.0 + k as f64;
                    let mut probe = flow(ts, sweeper, target, port);
                    // Closed ports refuse; open ones complete the handshake and are
                    // dropped without a byte of payload.
                    probe.conn_state = if port == 23 { ConnState::REJ } else { ConnState::SF };
                    (probe.orig_bytes, probe.resp_bytes) = (0, 0);
                    d.observe(&probe);
                }
            }
        });
        let alert = detection
            .findings
            .iter()
            .filter(|f| f.device_id == "pump-1")
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
            .unwrap();
        assert!(alert.severity >= Severity::High, "{alert:?}");
        assert!(alert.techniques.contains(&"T0846".to_string()), "{alert:?}");
        for n in 2..=26 {
            let id = format!("pump-{n}");
            assert!(worst(&detection, &id) < Severity::High, "{id} alerted");
        }
        let target = detection
            .findings
            .iter()
            .filter(|f| f.device_id == "pump-2")
            .max_by(|a, b| a.risk.total_cmp(&b.risk))
            .unwrap();
        assert!(target.reasons.iter().any(|r| r.detail.contains("a target of its sweep")));
    }

    #[test]
    fn the_same_input_gives_the_same_findings() {
        let a = run(|_| {});
        let b = run(|_| {});
        assert_eq!(a.findings, b.findings);
    }

    #[test]
    fn features_export_has_a_header_and_one_row_per_window() {
        let detection = run(|_| {});
        let mut csv = Vec::new();
        detection.write_features_csv(&mut csv).unwrap();
        let text = String::from_utf8(csv).unwrap();
        let mut lines = text.lines();
        let header = lines.next().unwrap();
        assert!(header.starts_with("device_id,window_start,window_end,flows_log,"));
        assert!(header.ends_with(",off_schedule,is_baseline"));
        let n_rows = lines.count();
        assert_eq!(n_rows, detection.baseline_windows + detection.scored_windows);
    }
}
