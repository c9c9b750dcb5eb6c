//! Detection end to end: on a simulated fleet whose attacks and benign changes are
//! labelled, on real IoT-23 captures, and through `pivotwatch detect` as a user runs it.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use pivotwatch::baseline::{DetectConfig, Detection, truth};
use pivotwatch::ingest::sim::{
    CONN_LOG_FILE, INVENTORY_FILE, SimConfig, SimSummary, TRUTH_FILE, TruthEntry, read_truth,
    simulate,
};
use pivotwatch::model::{Finding, Severity};
use pivotwatch::pipeline::{BaselineSource, DetectInput, PipelineOutput, detect_files};
use pivotwatch::timefmt::parse_time;
use serde_json::Value;
use tempfile::TempDir;

/// The default simulation (60 devices, 10 days, seed 7) and its detection, shared by
/// the tests of this binary.
struct SimRun {
    dir: TempDir,
    summary: SimSummary,
    truth: Vec<TruthEntry>,
    output: PipelineOutput,
}

impl SimRun {
    fn input(&self) -> DetectInput {
        DetectInput {
            inventory: Some(self.dir.path().join(INVENTORY_FILE)),
            flows: vec![self.dir.path().join(CONN_LOG_FILE)],
            baseline: BaselineSource::Until(self.summary.baseline_until),
        }
    }
}

fn sim_run() -> &'static SimRun {
    static RUN: OnceLock<SimRun> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = TempDir::new().unwrap();
        let summary = simulate(&SimConfig::default(), dir.path()).unwrap();
        let truth = read_truth(&dir.path().join(TRUTH_FILE)).unwrap();
        let input = DetectInput {
            inventory: Some(dir.path().join(INVENTORY_FILE)),
            flows: vec![dir.path().join(CONN_LOG_FILE)],
            baseline: BaselineSource::Until(summary.baseline_until),
        };
        let output = detect_files(DetectConfig::default(), &input, &mut |_| {}).unwrap();
        SimRun { dir, summary, truth, output }
    })
}

fn span(start: &str, end: &str) -> (f64, f64) {
    (parse_time(start).unwrap(), parse_time(end).unwrap())
}

fn overlaps(finding: &Finding, entry: &TruthEntry) -> bool {
    let (ws, we) = span(&finding.window_start, &finding.window_end);
    let (start, end) = span(&entry.start, &entry.end);
    finding.device_id == entry.device_id && ws < end && start < we
}

#[test]
fn every_injected_attack_alerts_inside_its_window() {
    let run = sim_run();
    let detection = &run.output.detection;
    assert_eq!(run.output.read.skipped, 0);
    let check = truth::check(detection, &run.truth);
    assert_eq!(check.scenarios.len(), 8);
    for scenario in &check.scenarios {
        let best = scenario.best.unwrap_or_else(|| panic!("{} was missed", scenario.scenario));
        assert!(best.severity >= Severity::High, "{}: {best:?}", scenario.scenario);
        assert!(!best.techniques.is_empty(), "{} has no technique", scenario.scenario);
        assert!(!best.reasons.is_empty() && best.evidence.flows > 0, "{best:?}");
    }
}

#[test]
fn the_techniques_match_what_each_attack_did() {
    let run = sim_run();
    let check = truth::check(&run.output.detection, &run.truth);
    let expected = [
        ("outbound_ssh_medical", "T0869"),
        ("https_beacon", "T0885"),
        ("night_bulk_upload", "T0882"),
        ("internal_port_sweep", "T0846"),
        ("rogue_ot_master", "T0848"),
        ("public_dns_high_volume", "T0869"),
        ("telnet_bruteforce_cameras", "T0812"),
        ("building_controller_rdp_smb", "T0886"),
    ];
    for (scenario, technique) in expected {
        let found = check.scenarios.iter().find(|s| s.scenario == scenario).unwrap();
        let best = found.best.unwrap();
        assert!(best.techniques.iter().any(|t| t == technique), "{scenario}: {best:?}");
    }
}

#[test]
fn no_alert_falls_outside_an_injected_attack() {
    let run = sim_run();
    let detection = &run.output.detection;
    let check = truth::check(detection, &run.truth);
    assert!(check.benign_entries >= 30, "{}", check.benign_entries);
    assert!(check.benign_alerted.is_empty(), "{:?}", check.benign_alerted);
    let injected: Vec<&TruthEntry> = run.truth.iter().filter(|e| !e.benign).collect();
    let stray: Vec<&Finding> = detection
        .at_least(Severity::High)
        .filter(|f| !injected.iter().any(|entry| overlaps(f, entry)))
        .collect();
    assert!(stray.is_empty(), "alerts outside every attack: {stray:#?}");
    // Medium findings are leads, not alerts, but a fleet of 60 should not drown in them.
    let scored = detection.findings.len();
    let medium = detection.findings.iter().filter(|f| f.severity == Severity::Medium).count();
    assert!(medium * 50 < scored, "{medium} medium of {scored}");
}

#[test]
fn the_same_input_gives_the_same_findings() {
    let run = sim_run();
    let again = detect_files(DetectConfig::default(), &run.input(), &mut |_| {}).unwrap();
    let text = |d: &Detection| serde_json::to_string(&d.findings).unwrap();
    assert_eq!(text(&run.output.detection), text(&again.detection));
}

#[test]
fn another_seed_changes_the_forests_but_not_the_alerts() {
    let run = sim_run();
    let config = DetectConfig { seed: 99, ..DetectConfig::default() };
    let other = detect_files(config, &run.input(), &mut |_| {}).unwrap();
    let alerts = |d: &Detection| -> BTreeSet<(String, String)> {
        d.at_least(Severity::High).map(|f| (f.device_id.clone(), f.window_start.clone())).collect()
    };
    let (a, b) = (alerts(&run.output.detection), alerts(&other.detection));
    let common = a.intersection(&b).count();
    assert!(common * 10 >= a.len().max(b.len()) * 9, "{a:?} vs {b:?}");
}

// ---- IoT-23 -------------------------------------------------------------------------

fn capture(scenario: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/iot23")
        .join(scenario)
        .join("conn.log.labeled")
}

/// Splits a labelled capture into a baseline file of its header and its first `n`
/// benign lines, and returns the timestamps of the malicious lines.
fn benign_prefix(path: &Path, n: usize, out: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut file = std::fs::File::create(out).unwrap();
    let mut kept = 0;
    let mut malicious = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            writeln!(file, "{line}").unwrap();
        } else if line.contains("Malicious") {
            malicious.push(line.split('\t').next().unwrap().parse().unwrap());
        } else if kept < n {
            writeln!(file, "{line}").unwrap();
            kept += 1;
        }
    }
    assert_eq!(kept, n, "{} has fewer than {n} benign lines", path.display());
    malicious
}

#[test]
fn mirai_windows_on_a_real_capture_are_found_and_nothing_else_is() {
    // CTU-IoT-Malware-Capture-34-1: a Raspberry Pi with Mirai. Its first 960 benign
    // flows are the baseline; every 5-minute window of the whole capture is scored.
    let dir = TempDir::new().unwrap();
    let baseline = dir.path().join("baseline.log");
    let malicious = benign_prefix(&capture("CTU-IoT-Malware-Capture-34-1"), 960, &baseline);
    let input = DetectInput {
        inventory: None,
        flows: vec![capture("CTU-IoT-Malware-Capture-34-1")],
        baseline: BaselineSource::Files(vec![baseline]),
    };
    let config = DetectConfig { window_secs: 300.0, ..DetectConfig::default() };
    let output = detect_files(config, &input, &mut |_| {}).unwrap();
    assert_eq!(output.read.flows, 23_145);

    let bad_windows: BTreeSet<i64> =
        malicious.iter().map(|ts| (ts / 300.0).floor() as i64).collect();
    let alerts: Vec<&Finding> = output.detection.at_least(Severity::High).collect();
    let hits = alerts
        .iter()
        .filter(|f| {
            let (start, end) = span(&f.window_start, &f.window_end);
            malicious.iter().any(|ts| (start..end).contains(ts))
        })
        .count();
    // Precision and recall over windows that hold malicious flows.
    assert!(hits * 100 >= alerts.len() * 95, "{hits} of {} alerts are malicious", alerts.len());
    assert!(hits * 100 >= bad_windows.len() * 90, "{hits} of {} windows", bad_windows.len());
    // The bot calls its C&C server again and again: command and control.
    let c2 = alerts.iter().filter(|f| f.techniques.iter().any(|t| t == "T0869")).count();
    assert!(c2 * 2 > alerts.len(), "{c2} of {} alerts name T0869", alerts.len());
}

#[test]
fn a_benign_hue_bridge_raises_no_alert() {
    // CTU-Honeypot-Capture-4-1: a Philips Hue bridge with no infection. The first half
    // by time is the baseline; the second half is scored.
    let path = capture("CTU-Honeypot-Capture-4-1");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut times: Vec<f64> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.split('\t').next().unwrap().parse().unwrap())
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let input =
        DetectInput { inventory: None, flows: vec![path], baseline: BaselineSource::Until(median) };
    let output = detect_files(DetectConfig::default(), &input, &mut |_| {}).unwrap();
    assert!(!output.detection.findings.is_empty());
    let alerts: Vec<&Finding> = output.detection.at_least(Severity::High).collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
}

// ---- The command line ---------------------------------------------------------------

fn pivotwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pivotwatch")).args(args).output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn detect_json_prints_one_finding_per_line_in_the_documented_shape() {
    let run = sim_run();
    let inventory = run.dir.path().join(INVENTORY_FILE);
    let flows = run.dir.path().join(CONN_LOG_FILE);
    let until = run.summary.baseline_until.to_string();
    let output = pivotwatch(&[
        "detect",
        "--inventory",
        inventory.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--baseline-until",
        &until,
        "--min-severity",
        "medium",
        "--json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.ends_with('\n'));
    let lines: Vec<Value> =
        stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let expected = run.output.detection.at_least(Severity::Medium).count();
    assert_eq!(lines.len(), expected);

    let keys: BTreeSet<&str> = [
        "device_id",
        "ip",
        "peer_group",
        "window_start",
        "window_end",
        "score",
        "peer_percentile",
        "risk",
        "severity",
        "reasons",
        "techniques",
        "evidence",
    ]
    .into();
    for line in &lines {
        let object = line.as_object().unwrap();
        assert_eq!(object.keys().map(String::as_str).collect::<BTreeSet<_>>(), keys);
        let score = line["score"].as_f64().unwrap();
        let percentile = line["peer_percentile"].as_f64().unwrap();
        let risk = line["risk"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score) && (0.0..=100.0).contains(&percentile));
        // Severity follows risk: medium from 40, high from 60, critical from 80.
        let severity = line["severity"].as_str().unwrap();
        let expected = match risk {
            r if r >= 80.0 => "critical",
            r if r >= 60.0 => "high",
            r if r >= 40.0 => "medium",
            r if r >= 20.0 => "low",
            _ => "info",
        };
        assert_eq!(severity, expected, "{line}");
        parse_time(line["window_start"].as_str().unwrap()).unwrap();
        for reason in line["reasons"].as_array().unwrap() {
            for key in ["feature", "observed", "baseline", "detail"] {
                assert!(reason.get(key).is_some(), "{key} missing from {reason}");
            }
        }
        let evidence = &line["evidence"];
        assert!(evidence["flows"].as_u64().is_some() && evidence["examples"].is_array());
        assert!(!line["peer_group"].as_str().unwrap().is_empty(), "{line}");
    }
}

#[test]
fn detect_refuses_a_run_without_a_baseline_or_with_a_bad_window() {
    let flows = capture("CTU-Honeypot-Capture-4-1");
    let flows = flows.to_str().unwrap();

    let output = pivotwatch(&["detect", "--flows", flows]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("--baseline-until"), "{}", stderr(&output));

    let output = pivotwatch(&[
        "detect",
        "--flows",
        flows,
        "--baseline-until",
        "2018-10-26",
        "--window",
        "1x",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--window"), "{}", stderr(&output));

    let output = pivotwatch(&["detect", "--flows", flows, "--baseline-until", "yesterday-ish"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--baseline-until"), "{}", stderr(&output));

    let output =
        pivotwatch(&["detect", "--flows", "/nonexistent/conn.log", "--baseline-until", "0"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("/nonexistent/conn.log"), "{}", stderr(&output));
}

#[test]
fn features_export_has_one_row_per_window_marking_the_baseline() {
    let run = sim_run();
    let mut csv = Vec::new();
    run.output.detection.write_features_csv(&mut csv).unwrap();
    let text = String::from_utf8(csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&header[..3], ["device_id", "window_start", "window_end"]);
    assert!(header.len() > 10);
    assert_eq!(header.last(), Some(&"is_baseline"));
    let rows: Vec<Vec<&str>> = lines.map(|row| row.split(',').collect()).collect();
    let scored = rows.iter().filter(|fields| fields.last() == Some(&"0")).count();
    let learned = rows.iter().filter(|fields| fields.last() == Some(&"1")).count();
    assert_eq!(scored, run.output.detection.findings.len());
    assert_eq!(scored + learned, rows.len());
    assert!(learned > 0);
    for fields in rows.iter().step_by(97) {
        assert_eq!(fields.len(), header.len(), "{fields:?}");
        assert!(fields[3..].iter().all(|v| v.parse::<f64>().is_ok()), "{fields:?}");
    }
}
