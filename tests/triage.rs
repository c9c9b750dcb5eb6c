//! Offline triage on the simulator's data: a narrative grounded in its evidence, the
//! context gathered through the tenant, proposals that wait for approval, and a checker
//! that catches a figure the evidence does not hold.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use pivotwatch::agent::grounding::{self, Fact};
use pivotwatch::agent::triage_offline;
use pivotwatch::ingest::sim::SimConfig;
use pivotwatch::model::{Finding, Severity};
use pivotwatch::xdr::replay::Replay;

mod common;

/// A simulated fleet loaded as a replay tenant, and its critical findings, riskiest first.
fn fleet(dir: &std::path::Path) -> (Replay, Vec<Finding>) {
    let config = SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() };
    let (replay, findings) = common::fleet::tenant(&config, dir, dir);
    (replay, common::fleet::critical(findings))
}

#[tokio::test]
async fn a_critical_finding_is_written_up_from_its_evidence_only() {
    let dir = tempfile::TempDir::new().unwrap();
    let (replay, critical) = fleet(dir.path());
    assert!(critical.len() >= 3);
    for finding in critical.iter().take(5) {
        let result = triage_offline(finding, &replay, None).await;
        assert!(
            result.grounded,
            "{}: {:?}\n{}",
            finding.device_id, result.unsupported, result.narrative
        );
        let tools: Vec<&str> = result.evidence.iter().map(|e| e.tool.as_str()).collect();
        for tool in ["detection", "get_device_profile", "run_xql"] {
            assert!(tools.contains(&tool), "{tools:?}");
        }
        // The context came from the tenant: the profile names the device, the 24-hour
        // look found its flows.
        assert!(result.narrative.contains(&finding.ip.to_string()));
        assert!(result.narrative.contains("[E1]") && result.narrative.contains("Next:"));
        let day = result.evidence.iter().find(|e| e.summary.starts_with("last 24 hours")).unwrap();
        assert!(day.data["flows"].as_u64().unwrap() > 0, "{day:?}");
        // A ticket for every critical finding; quarantine never for a life-critical
        // device without a person's plan.
        assert!(result.suggestions.iter().any(|s| s.kind == "servicenow_incident"));
        let critical_device = result.evidence[1].data["xdm.asset.criticality"] == "critical";
        let quarantines = result.suggestions.iter().any(|s| s.kind == "quarantine_device");
        assert!(!(critical_device && quarantines), "{}", finding.device_id);
        // Every suggestion is a valid action.
        for s in &result.suggestions {
            pivotwatch::actions::Action::from_parts(&s.kind, s.params.clone()).unwrap();
        }
    }
}

#[tokio::test]
async fn the_checker_catches_a_figure_that_is_not_in_the_evidence() {
    let dir = tempfile::TempDir::new().unwrap();
    let (replay, critical) = fleet(dir.path());
    let result = triage_offline(&critical[0], &replay, None).await;
    let evidence_text = serde_json::to_string(&result.evidence).unwrap();
    let mut known: std::collections::BTreeSet<Fact> = grounding::facts(&evidence_text);
    for item in &result.evidence {
        known.extend(grounding::facts(&item.summary));
    }
    assert!(grounding::unsupported(&result.narrative, &known).is_empty());
    let doctored = format!(
        "{} It also opened SSH to 203.0.113.250 on port 2222 at 04:17, sending 7.5 GB.",
        result.narrative
    );
    let caught: Vec<String> =
        grounding::unsupported(&doctored, &known).iter().map(grounding::describe).collect();
    for figure in ["203.0.113.250", "2222", "04:17"] {
        assert!(caught.contains(&figure.to_string()), "{figure} not caught: {caught:?}");
    }
    assert!(caught.iter().any(|c| c.ends_with("bytes")), "the volume: {caught:?}");
}

#[test]
fn the_triage_command_proposes_for_approval_and_records_the_case() {
    let bin = env!("CARGO_BIN_EXE_pivotwatch");
    let dir = tempfile::TempDir::new().unwrap();
    let (_, critical) = fleet(dir.path());
    let finding_file = dir.path().join("finding.json");
    std::fs::write(&finding_file, serde_json::to_string(&critical[0]).unwrap()).unwrap();
    let run = |args: &[&str]| common::pivotwatch(bin, args, Some(dir.path()));
    let (code, out, err) = run(&["triage", "--finding", finding_file.to_str().unwrap(), "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["grounded"], true);
    let proposals = result["proposals"].as_array().unwrap();
    assert!(!proposals.is_empty());
    // Proposed, not executed: it waits for a person.
    let (_, listed, _) = run(&["proposals", "list", "--state", "proposed"]);
    assert!(listed.contains(proposals[0].as_str().unwrap()), "{listed}");
    let (_, cases, _) = run(&["cases", "list", "--json"]);
    let cases: serde_json::Value = serde_json::from_str(&cases).unwrap();
    assert_eq!(cases[0]["device_id"], critical[0].device_id);
    // A file that is not a finding is named, with where it went wrong.
    std::fs::write(&finding_file, "{\"device_id\": \"x\"}").unwrap();
    let (code, _, err) = run(&["triage", "--finding", finding_file.to_str().unwrap()]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not one finding") && err.contains("line 1"), "{err}");
}

#[tokio::test]
async fn a_case_is_triaged_by_its_id_whether_pivotwatch_filed_it_or_not() {
    use pivotwatch::xdr::{IncidentQuery, ParsedAlert, Xdr};
    let bin = env!("CARGO_BIN_EXE_pivotwatch");
    let dir = tempfile::TempDir::new().unwrap();
    let (replay, critical) = fleet(dir.path());
    // pivotwatch's own findings filed as the tenant's cases: the finding comes back
    // from the case.
    replay.import_findings(&critical[..1]).unwrap();
    let listed = replay.list_incidents(&IncidentQuery::new()).await.unwrap();
    let ours = listed.items[0].incident_id.clone();
    let path = dir.path().to_path_buf();
    let run = move |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::pivotwatch(bin, &args, Some(&path))
    };
    let args =
        |id: &str| ["triage", "--incident", id, "--json", "--dry-run"].map(str::to_string).to_vec();
    let (code, out, err) = tokio::task::spawn_blocking({
        let run = run.clone();
        let args = args(&ours);
        move || run(args)
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{err}");
    let result: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["device_id"], critical[0].device_id);
    assert_eq!(result["risk"], critical[0].risk);
    let case = result["evidence"].as_array().unwrap().iter().find(|e| e["tool"] == "get_case");
    assert_eq!(case.unwrap()["data"]["incident_id"], ours.as_str());
    assert_eq!(result["planner"], "offline");

    // A case another product raised: the device comes from the alert's host address,
    // the risk from the case's severity and the device's peer comparison.
    let device = critical[0].ip.to_string();
    let alert = ParsedAlert {
        product: "NGFW".into(),
        vendor: "PANW".into(),
        local_ip: Some(device.clone()),
        local_port: Some(49_152),
        remote_ip: Some("203.0.113.9".into()),
        remote_port: Some(443),
        event_timestamp: Some(1_733_300_000_000),
        severity: "High".into(),
        alert_name: "Outbound beacon to a known C2 address".into(),
        alert_description: Some("periodic TLS sessions".into()),
        ..serde_json::from_value(serde_json::json!({
            "product": "x", "vendor": "x", "severity": "Low", "alert_name": "x"
        }))
        .unwrap()
    };
    replay.insert_parsed_alerts(&[alert]).await.unwrap();
    let listed = replay.list_incidents(&IncidentQuery::new()).await.unwrap();
    let theirs =
        listed.items.iter().find(|i| i.incident_id != ours).map(|i| i.incident_id.clone()).unwrap();
    let (finding, case_text) =
        pivotwatch::agent::triage::finding_for_incident(&replay, &theirs).await.unwrap();
    assert_eq!(finding.ip, critical[0].ip);
    assert_eq!(finding.severity, Severity::High);
    assert!((65.0..=75.0).contains(&finding.risk), "{}", finding.risk);
    assert!(!finding.peer_group.is_empty());
    assert_eq!(case_text["alerts"][0]["name"], "Outbound beacon to a known C2 address");
    // An id the tenant does not hold is named.
    let (code, _, err) =
        tokio::task::spawn_blocking(move || run(args("no-such-case"))).await.unwrap();
    assert_ne!(code, Some(0));
    assert!(err.contains("no-such-case"), "{err}");
}
