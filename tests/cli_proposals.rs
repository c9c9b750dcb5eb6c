//! `pivotwatch proposals` end to end: an analyst proposes a case comment, an approver
//! approves it, `proposals run` posts it to the replay tenant's case once, and the
//! audit trail verifies.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::path::Path;
use std::process::{Command, Output};

use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::xdr::replay::Replay;
use pivotwatch::xdr::replay::records::ListKind;
use serde_json::json;
use tempfile::TempDir;

fn pw(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pivotwatch"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PIVOTWATCH_XDR_URL")
        .env_remove("PIVOTWATCH_DATABASE_URL")
        .output()
        .unwrap()
}

fn ok(output: Output) -> String {
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{text}{}", String::from_utf8_lossy(&output.stderr));
    text
}

fn incidents(dir: &Path) -> Vec<serde_json::Value> {
    let replay = Replay::open(dir).unwrap();
    let request = pivotwatch::xdr::IncidentQuery::new().to_request();
    replay.list_wire(ListKind::Incidents, &request).unwrap().1
}

#[test]
fn a_comment_is_proposed_approved_and_posted_once() {
    let dir = TempDir::new().unwrap();
    let sim = dir.path().join("sim");
    let cfg = SimConfig { devices: 10, days: 2, seed: 9, start: SimConfig::DEFAULT_START };
    simulate(&cfg, &sim).unwrap();
    Replay::load(dir.path(), Some(&sim.join(INVENTORY_FILE)), &[sim.join(CONN_LOG_FILE)]).unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    let ip = replay.inventory().devices()[0].ip.to_string();
    replay
        .insert_parsed_alerts_wire(&[json!({"product": "pivotwatch", "vendor": "pivotwatch",
            "local_ip": ip, "remote_ip": "203.0.113.5", "severity": "High",
            "alert_name": "new outbound SSH"})])
        .unwrap();
    drop(replay);
    let incident_id = incidents(dir.path())[0]["incident_id"].as_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("users.toml"),
        "[[user]]\nname = \"ana\"\nroles = [\"analyst\"]\n\n[[user]]\nname = \"bea\"\nroles = [\"approver\"]\n",
    )
    .unwrap();

    let params =
        json!({"incident_id": incident_id, "comment": "pump-0001 opened SSH to 203.0.113.5"});
    let proposed = ok(pw(
        dir.path(),
        &[
            "proposals",
            "propose",
            "xdr_case_comment",
            "--params",
            &params.to_string(),
            "--as",
            "ana",
        ],
    ));
    let id = proposed.split_whitespace().next().unwrap().to_string();
    assert!(proposed.contains("proposed") && proposed.contains("approvals 0/1"), "{proposed}");

    // Nothing runs before the approval; the proposer cannot approve her own proposal.
    assert!(ok(pw(dir.path(), &["proposals", "run"])).starts_with("0 approved"));
    let own = pw(dir.path(), &["proposals", "approve", &id, "--as", "ana"]);
    assert!(!own.status.success());
    assert!(String::from_utf8_lossy(&own.stderr).contains("cannot decide"));

    let approved =
        ok(pw(dir.path(), &["proposals", "approve", &id, "--as", "bea", "--reason", "ok"]));
    assert!(approved.contains("approved") && approved.contains("(bea)"), "{approved}");
    assert!(ok(pw(dir.path(), &["proposals", "run"])).starts_with("1 approved"));
    assert!(ok(pw(dir.path(), &["proposals", "run"])).starts_with("0 approved"));

    let comments = incidents(dir.path())[0]["comments"].clone();
    let comments = comments.as_array().unwrap();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0]["comment"].as_str().unwrap().contains("opened SSH"));
    let listed = ok(pw(dir.path(), &["proposals", "list", "--state", "succeeded"]));
    assert!(listed.contains(&id), "{listed}");
    assert!(ok(pw(dir.path(), &["proposals", "phase"])).starts_with("recommend"));
    let refused = pw(dir.path(), &["proposals", "phase", "contain", "--as", "bea"]);
    assert!(!refused.status.success(), "only an admin changes the phase");
    assert!(ok(pw(dir.path(), &["audit", "verify"])).contains("holds"));
}
