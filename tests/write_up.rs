//! The triage write-up as people see it, compared with reviewed snapshots: the Slack
//! Block Kit message and the Teams Adaptive Card, before and after a decision.
//!
//! A change to the layout fails here until the snapshots in `tests/snapshots/` are
//! reviewed and rewritten: run the test with `PIVOTWATCH_TEST_UPDATE_SNAPSHOTS=1`, read
//! the diff, commit it.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::path::PathBuf;

use serde_json::Value;

use pivotwatch::actions::notify::{Decision, describe, slack_message, teams_card};
use pivotwatch::agent::TriageResult;
use pivotwatch::server::worker::write_up;
use pivotwatch::store::writeups::DecisionTrail;

fn triage() -> TriageResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/write_up/triage.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Compares `actual` with the snapshot `name`, or rewrites it when asked to.
fn snapshot(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(name);
    let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var_os("PIVOTWATCH_TEST_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &pretty).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == pretty,
        "{} differs from the snapshot; if the change is meant, rerun with \
         PIVOTWATCH_TEST_UPDATE_SNAPSHOTS=1 and review the diff.\n--- snapshot\n{expected}\n--- now\n{pretty}",
        path.display()
    );
}

fn pending() -> pivotwatch::actions::Notice {
    let result = triage();
    let mut notice = write_up(Some("4711"), &result);
    for (proposal, label) in
        [("p-ticket0001", "servicenow incident"), ("p-comment0002", "xdr case comment")]
    {
        notice.decisions.push(Decision {
            proposal: proposal.into(),
            label: label.into(),
            open: true,
            status: None,
        });
    }
    notice
}

/// 2026-12-04T09:30:00Z.
const DECIDED_AT_MS: i64 = 1_796_376_600_000;

#[test]
fn the_slack_write_up_matches_its_snapshot_before_and_after_a_decision() {
    let notice = pending();
    let message = slack_message(&notice);
    snapshot("slack_write_up.json", &message);

    let text = message.to_string();
    // The device and its criticality, the risk and the severity.
    assert!(text.contains("mx800-0003 (10.21.1.12), Philips IntelliVue MX800 Patient Monitor"));
    assert!(text.contains("*Criticality*\\ncritical") && text.contains("*Risk*\\n98 / 100"));
    assert!(text.contains("*Severity*\\ncritical"));
    // At most five sentences of narrative, and at most five evidence lines.
    let narrative = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert_eq!(narrative.matches(". ").count() + 1, 5, "{narrative}");
    assert!(!narrative.contains("Next: open a ticket"));
    let evidence = message["blocks"][3]["text"]["text"].as_str().unwrap();
    assert_eq!(evidence.lines().filter(|l| l.starts_with("• ")).count(), 5, "{evidence}");
    // Text from telemetry cannot mention the channel.
    assert!(evidence.contains("&lt;!channel&gt;") && !text.contains("<!channel>"), "{evidence}");
    // The techniques are links.
    assert!(text.contains(
        "<https://attack.mitre.org/techniques/T0869|T0869 Standard Application Layer Protocol>"
    ));
    // One approve/reject pair per proposal.
    let pairs: Vec<Vec<&str>> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .map(|b| {
            b["elements"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["action_id"].as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(pairs, [["approve", "reject"], ["approve", "reject"]]);

    // After abe approves the ticket, the same message shows who and when instead of its
    // buttons; the comment keeps its pair.
    let mut decided = notice.clone();
    let trail = DecisionTrail {
        state: "approved".into(),
        expires_at_ms: DECIDED_AT_MS + 3_600_000,
        decisions: vec![("abe".into(), "approve".into(), DECIDED_AT_MS)],
    };
    (decided.decisions[0].open, decided.decisions[0].status) = describe(&trail);
    let message = slack_message(&decided);
    snapshot("slack_write_up_decided.json", &message);
    let text = message.to_string();
    assert!(text.contains("Approved by abe at 2026-12-04T09:30:00Z."), "{text}");
    let buttons: Vec<&str> = message["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "actions")
        .map(|b| b["block_id"].as_str().unwrap())
        .collect();
    assert_eq!(buttons, ["decide:p-comment0002"]);
}

#[test]
fn the_teams_card_matches_its_snapshot_and_offers_both_button_forms() {
    let notice = pending();
    let card = teams_card(&notice);
    snapshot("teams_write_up.json", &card);
    let sets: Vec<&Value> =
        card["body"].as_array().unwrap().iter().filter(|b| b["type"] == "ActionSet").collect();
    assert_eq!(sets.len(), 2);
    let approve = &sets[0]["actions"][0];
    assert_eq!(approve["type"], "Action.Execute");
    assert_eq!(approve["verb"], "approve");
    assert_eq!(approve["data"]["actionId"], "p-ticket0001");
    assert_eq!(approve["fallback"]["type"], "Action.Submit");
    assert_eq!(approve["fallback"]["data"]["decision"], "approve");
    assert!(card.to_string().contains(
        "[T0869 Standard Application Layer Protocol](https://attack.mitre.org/techniques/T0869)"
    ));

    let mut decided = notice.clone();
    let trail = DecisionTrail {
        state: "rejected".into(),
        expires_at_ms: DECIDED_AT_MS + 3_600_000,
        decisions: vec![("abe".into(), "reject".into(), DECIDED_AT_MS)],
    };
    (decided.decisions[1].open, decided.decisions[1].status) = describe(&trail);
    let card = teams_card(&decided);
    snapshot("teams_write_up_decided.json", &card);
    assert!(card.to_string().contains("Rejected by abe at 2026-12-04T09:30:00Z."));
    let sets = card["body"].as_array().unwrap().iter().filter(|b| b["type"] == "ActionSet").count();
    assert_eq!(sets, 1);
}

#[test]
fn a_proposal_that_needs_two_approvers_keeps_its_buttons_after_the_first() {
    let trail = DecisionTrail {
        state: "proposed".into(),
        expires_at_ms: DECIDED_AT_MS + 3_600_000,
        decisions: vec![("abe".into(), "approve".into(), DECIDED_AT_MS)],
    };
    let (open, status) = describe(&trail);
    assert!(open);
    assert!(status.unwrap().contains("another approval is needed"));
    let expired = DecisionTrail { state: "expired".into(), ..trail };
    let (open, status) = describe(&expired);
    assert!(!open);
    assert_eq!(status.as_deref(), Some("Expired at 2026-12-04T10:30:00Z without a decision."));
}
