//! The flow and inventory readers on real files, and `pivotwatch ingest` as a user runs
//! it: the built binary, its exit code, stdout and stderr.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flate2::Compression;
use flate2::write::GzEncoder;
use pivotwatch::ingest::{self, IngestError, ReadSummary};
use pivotwatch::model::{ConnState, Criticality, Flow, Proto, Service};
use pivotwatch::timefmt::rfc3339;
use serde_json::Value;

/// (scenario, flows, distinct hosts, earliest ts, latest ts), counted with awk.
const CAPTURES: [(&str, u64, u64, f64, f64); 3] = [
    ("CTU-IoT-Malware-Capture-34-1", 23145, 49, 1545403816.8709, 1545490213.942227),
    ("CTU-IoT-Malware-Capture-42-1", 4426, 46, 1547127282.523476, 1547157330.030005),
    ("CTU-Honeypot-Capture-4-1", 452, 16, 1540469197.400159, 1540547904.130404),
];

/// Distinct addresses over all three captures together.
const ALL_HOSTS: u64 = 79;

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(relative)
}

fn capture(scenario: &str) -> PathBuf {
    data(&format!("iot23/{scenario}/conn.log.labeled"))
}

fn read_all(path: &Path) -> Result<(ReadSummary, Vec<Flow>), IngestError> {
    let mut flows = Vec::new();
    let summary = ingest::read_flows(path, &mut |flow| flows.push(*flow))?;
    Ok((summary, flows))
}

fn pivotwatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pivotwatch"))
        .args(args)
        .env("PIVOTWATCH_LOG", "warn")
        .output()
        .expect("the pivotwatch binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `ingest --json`, checks it succeeded with exactly one JSON object on stdout.
fn ingest_json(paths: &[&Path]) -> (Value, String) {
    let mut args = vec!["ingest", "--json"];
    args.extend(paths.iter().map(|path| path.to_str().expect("UTF-8 test path")));
    let output = pivotwatch(&args);
    assert!(output.status.success(), "ingest failed: {}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 1, "one line on stdout: {text}");
    let report: Value = serde_json::from_str(&text).expect("stdout is JSON");
    assert!(report.is_object(), "{report}");
    (report, stderr(&output))
}

fn gzip_to(path: &Path, bytes: &[u8]) {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip in memory");
    let compressed = encoder.finish().expect("gzip in memory");
    std::fs::write(path, compressed).expect("write gzip file");
}

#[test]
fn the_three_iot23_captures_read_completely() {
    for (scenario, flows, _, first, last) in CAPTURES {
        let (summary, delivered) = read_all(&capture(scenario)).expect(scenario);
        assert_eq!(summary.flows, flows, "{scenario}");
        assert_eq!(delivered.len() as u64, flows, "{scenario}");
        assert_eq!(summary.skipped, 0, "{scenario}: {:?}", summary.problems);
        assert_eq!((summary.first_ts, summary.last_ts), (Some(first), Some(last)), "{scenario}");
    }
}

#[test]
fn iot23_lines_become_the_flows_they_describe() {
    // 42-1, line 9: an HTTP download with the label behind spaces and a CRLF ending.
    let (_, flows) = read_all(&capture("CTU-IoT-Malware-Capture-42-1")).unwrap();
    let first = flows[0];
    assert_eq!(first.ts, 1547127288.026074);
    assert_eq!(first.orig_h.to_string(), "192.168.1.197");
    assert_eq!((first.orig_p, first.resp_p), (58312, 80));
    assert_eq!(first.resp_h.to_string(), "104.24.96.120");
    assert_eq!(
        (first.proto, first.service, first.conn_state),
        (Proto::Tcp, Service::Http, ConnState::SF)
    );
    assert_eq!((first.duration, first.orig_bytes, first.resp_bytes), (3.909013, 83, 67212));
    assert_eq!((first.orig_pkts, first.resp_pkts), (54, 50));

    // 34-1, line 10: duration and byte counts unset.
    let (_, flows) = read_all(&capture("CTU-IoT-Malware-Capture-34-1")).unwrap();
    let second = flows[1];
    assert_eq!((second.duration, second.orig_bytes, second.resp_bytes), (0.0, 0, 0));
    assert_eq!(
        (second.orig_pkts, second.conn_state, second.service),
        (1, ConnState::S0, Service::Unknown)
    );
}

#[test]
fn columns_in_any_order_with_unset_values_and_a_bad_port_line() {
    let path = data("zeek/bad_port.log");
    let (summary, flows) = read_all(&path).unwrap();
    assert_eq!((summary.flows, summary.skipped), (2, 1));
    assert_eq!(
        summary.problems[0].to_string(),
        format!("{}:9: id.resp_p \"abc\" is not a port", path.display())
    );

    let modbus = flows[0];
    assert_eq!((modbus.orig_h.to_string(), modbus.orig_p), ("10.40.1.5".to_string(), 49152));
    assert_eq!((modbus.resp_h.to_string(), modbus.resp_p), ("10.40.2.10".to_string(), 502));
    assert_eq!((modbus.service, modbus.ts), (Service::Modbus, 1772323200.25));
    assert_eq!(modbus.duration, 0.5);
    assert_eq!((modbus.orig_bytes, modbus.resp_bytes), (120, 64));
    let dns = flows[1];
    assert_eq!(
        (dns.service, dns.proto, dns.orig_bytes, dns.resp_bytes),
        (Service::Dns, Proto::Udp, 40, 0)
    );
    assert_eq!(dns.duration, 0.0);
}

#[test]
fn json_lines_read_like_tsv() {
    let (summary, flows) = read_all(&data("zeek/conn.json")).unwrap();
    assert_eq!((summary.flows, summary.skipped), (3, 0), "{:?}", summary.problems);
    let (_, tsv) = read_all(&data("zeek/bad_port.log")).unwrap();
    let mut modbus = flows[0];
    assert_eq!((modbus.orig_pkts, modbus.resp_pkts), (3, 2));
    (modbus.orig_pkts, modbus.resp_pkts) = (0, 0);
    assert_eq!(modbus, tsv[0]);
    assert_eq!(flows[1].ts, 1772323201.0, "ISO 8601 ts");
    assert_eq!((flows[1].service, flows[1].conn_state), (Service::Unknown, ConnState::S0));
    assert_eq!(flows[2], tsv[1]);
}

#[test]
fn a_gzipped_capture_gives_the_same_summary_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    let plain = capture("CTU-IoT-Malware-Capture-42-1");
    // No .gz in the name: the content decides.
    let packed = dir.path().join("conn.log.labeled");
    gzip_to(&packed, &std::fs::read(&plain).unwrap());

    let (plain_summary, plain_flows) = read_all(&plain).unwrap();
    let (packed_summary, packed_flows) = read_all(&packed).unwrap();
    assert_eq!(packed_summary, plain_summary);
    assert_eq!(packed_flows, plain_flows);

    let (from_plain, _) = ingest_json(&[&plain]);
    let (from_packed, _) = ingest_json(&[&packed]);
    assert_eq!(from_packed, from_plain);
}

#[test]
fn a_truncated_gzip_is_an_error_naming_the_file_after_the_flows_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("whole.gz");
    gzip_to(&whole, &std::fs::read(capture("CTU-IoT-Malware-Capture-34-1")).unwrap());
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.log.gz");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();

    let mut delivered = 0u64;
    match ingest::read_flows(&cut, &mut |_| delivered += 1) {
        Err(IngestError::TruncatedGzip { path, flows }) => {
            assert_eq!(path, cut);
            assert_eq!(flows, delivered);
            assert!(delivered > 10_000 && delivered < 23145, "{delivered}");
        }
        other => panic!("expected TruncatedGzip, got {other:?}"),
    }

    let output = pivotwatch(&["ingest", "--json", cut.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "", "no summary for a failed run");
    let err = stderr(&output);
    assert!(err.contains(&format!("{}: the gzip data ends early", cut.display())), "{err}");
}

#[test]
fn unreadable_files_fail_with_their_name() {
    let cases = [
        (data("zeek/no_fields.log"), "no #fields header"),
        (data("zeek/empty.log"), "the file is empty"),
        (data("zeek/does-not-exist.log"), "No such file"),
    ];
    for (path, expected) in cases {
        let output = pivotwatch(&["ingest", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", path.display());
        let err = stderr(&output);
        assert!(err.contains(&format!("{}: ", path.display())), "{err}");
        assert!(err.contains(expected), "{err}");
    }
    assert!(matches!(
        read_all(&data("zeek/no_fields.log")),
        Err(IngestError::MissingFieldsHeader { .. })
    ));
    assert!(matches!(read_all(&data("zeek/empty.log")), Err(IngestError::Empty { .. })));
}

#[test]
fn ingest_json_reports_flows_hosts_and_time_span_per_capture_and_together() {
    let mut paths = Vec::new();
    for (scenario, flows, hosts, first, last) in CAPTURES {
        let path = capture(scenario);
        let (report, warnings) = ingest_json(&[&path]);
        assert_eq!(report["flows"], flows, "{scenario}");
        assert_eq!(report["skipped"], 0, "{scenario}");
        assert_eq!(report["hosts"], hosts, "{scenario}");
        assert_eq!(report["first_ts"], rfc3339(first).as_str(), "{scenario}");
        assert_eq!(report["last_ts"], rfc3339(last).as_str(), "{scenario}");
        assert_eq!(warnings, "", "{scenario}");
        paths.push(path);
    }

    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let (report, _) = ingest_json(&refs);
    assert_eq!(report["flows"], 23145 + 4426 + 452);
    assert_eq!(report["hosts"], ALL_HOSTS);
    assert_eq!(report["first_ts"], rfc3339(1540469197.400159).as_str());
    assert_eq!(report["last_ts"], rfc3339(1547157330.030005).as_str());
    let keys: Vec<&str> = report.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
}

#[test]
fn ingest_warns_about_skipped_lines_and_still_succeeds() {
    let path = data("zeek/bad_port.log");
    let (report, warnings) = ingest_json(&[&path]);
    assert_eq!((report["flows"].as_u64(), report["skipped"].as_u64()), (Some(2), Some(1)));
    assert_eq!(report["hosts"], 4);
    let expected = format!("warning: {}:9: id.resp_p \"abc\" is not a port\n", path.display());
    assert!(warnings.starts_with(&expected), "{warnings}");
    assert!(warnings.contains("skipped 1 malformed line in total"), "{warnings}");
}

#[test]
fn ingest_with_no_flows_reports_null_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("header-only.log");
    let header =
        "#separator \\x09\n#fields\tts\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\n";
    std::fs::write(&path, header).unwrap();
    let (report, _) = ingest_json(&[&path]);
    assert_eq!(report["flows"], 0);
    assert_eq!(report["hosts"], 0);
    assert!(report["first_ts"].is_null() && report["last_ts"].is_null(), "{report}");
}

#[test]
fn ingest_without_json_prints_a_short_text_summary() {
    let path = capture("CTU-Honeypot-Capture-4-1");
    let output = pivotwatch(&["ingest", path.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("452 flows, 0 skipped lines, 16 hosts\n"), "{text}");
    let span = format!("from {} to {}", rfc3339(1540469197.400159), rfc3339(1540547904.130404));
    assert!(text.contains(&span), "{text}");
}

#[test]
fn inventory_csv_and_json_hold_the_same_devices_with_extra_columns_as_tags() {
    let from_csv = ingest::read_inventory(&data("inventory/inventory.csv")).unwrap();
    let from_json = ingest::read_inventory(&data("inventory/inventory.json")).unwrap();
    assert_eq!(from_csv.len(), 4);
    assert_eq!(from_json.devices(), from_csv.devices());

    let plc = from_csv.by_ip(&"10.40.1.5".parse().unwrap()).unwrap();
    assert_eq!((plc.device_id.as_str(), plc.criticality), ("plc-01", Criticality::Critical));
    assert_eq!((plc.vendor.as_str(), plc.model.as_str()), ("Siemens", "S7-1500"));
    assert_eq!(plc.tags.get("room").map(String::as_str), Some("Hall B"));
    assert!(!plc.tags.contains_key("owner"), "an empty cell is not a tag");
    let pump = from_csv.by_ip(&"10.20.0.13".parse().unwrap()).unwrap();
    assert_eq!(pump.tags.len(), 2);
    assert_eq!(pump.segment, "clinical-devices");
}

#[test]
fn inventory_errors_name_the_file_and_what_is_wrong() {
    let path = data("inventory/duplicate_ip.csv");
    let err = ingest::read_inventory(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: devices \"plc-01\" and \"plc-09\" both have ip 10.40.1.5", path.display())
    );

    let path = data("inventory/unknown_criticality.csv");
    let err = ingest::read_inventory(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:7: unknown criticality \"urgent\"; expected one of low, medium, high, critical",
            path.display()
        )
    );
}
