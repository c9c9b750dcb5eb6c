//! `pivotwatch demo`, the front door: it must find every injected attack, stay quiet on
//! the benign changes, and its hunts must surface the devices the simulator made
//! misbehave. What it should show is read from the simulator's own truth, not assumed.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::HashMap;
use std::process::Command;

use pivotwatch::ingest::read_inventory;
use pivotwatch::ingest::sim::{Role, read_truth};
use tempfile::TempDir;

#[test]
fn the_demo_finds_the_attacks_and_its_hunts_name_the_culprits() {
    let dir = TempDir::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_pivotwatch"))
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));

    let truth = read_truth(&dir.path().join("truth.json")).unwrap();
    let attacks: Vec<_> = truth.iter().filter(|t| !t.benign && t.role == Role::Subject).collect();
    let scenarios: std::collections::BTreeSet<&str> =
        attacks.iter().map(|t| t.scenario.as_str()).collect();
    let found = format!(
        "injected attacks found at high or critical inside their window: {n} of {n}",
        n = scenarios.len()
    );
    assert!(stdout.contains(&found), "{stdout}");
    assert!(
        stdout.contains("benign changes and look-alikes that raised an alert: 0 of"),
        "{stdout}"
    );

    // The approval gate: nothing runs before the approval, the proposer cannot approve,
    // one action runs after it, and the audit chain holds.
    assert!(stdout.contains("before any approval, 0 actions run"), "{stdout}");
    assert!(stdout.contains("herself: refused"), "{stdout}");
    assert!(stdout.contains("1 action ran, succeeded"), "{stdout}");
    assert!(stdout.contains("chain holds"), "{stdout}");
    assert!(
        stdout.contains("least-privilege rules for ")
            && stdout.contains("baseline conversations and"),
        "{stdout}"
    );
    let blocked_baseline = stdout
        .lines()
        .find(|l| l.contains("baseline conversations and"))
        .and_then(|l| l.split(" they block ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .unwrap();
    assert_eq!(blocked_baseline, "0", "{stdout}");
    assert!(
        stdout.contains("planted instructions (44 cases of evals/injection, offline router)")
            && stdout.contains("the attacker's call made in 0 of 44"),
        "{stdout}"
    );
    // Detection's technique IDs are resolved to names and tactics, and behaviour in an
    // analyst's words is mapped to techniques with the terms that matched.
    assert!(
        stdout.contains("T0886 Remote Services (Initial Access, Lateral Movement)"),
        "{stdout}"
    );
    let mapped = stdout.split("from an analyst's words").nth(1).unwrap_or_default();
    assert!(mapped.contains("T0832 Manipulation of View"), "{mapped}");
    assert!(mapped.contains("T0843 Program Download"), "{mapped}");
    assert!(mapped.contains("matched terms:"), "{mapped}");
    // The riskiest finding is written up from its evidence.
    assert!(stdout.contains("every figure found in the evidence"), "{stdout}");
    assert!(stdout.contains("What happened:") && stdout.contains("Next:"), "{stdout}");

    // The hunts run over the replay tenant the demo loaded.
    let inventory = read_inventory(&dir.path().join("inventory.csv")).unwrap();
    let hostname: HashMap<&str, &str> =
        inventory.devices().iter().map(|d| (d.device_id.as_str(), d.hostname.as_str())).collect();
    let subject = |scenario: &str| {
        let entry = attacks.iter().find(|t| t.scenario == scenario).unwrap();
        hostname[entry.device_id.as_str()]
    };
    let section = |question: &str| {
        let start = stdout.find(question).unwrap_or_else(|| panic!("no hunt {question:?}"));
        let rest = &stdout[start..];
        let end = rest[1..].find("\nhunt: ").map_or(rest.len(), |i| i + 1);
        rest[..end].to_string()
    };
    let cameras = section("Which cameras talk to external addresses at night?");
    assert!(cameras.contains(subject("https_beacon")), "{cameras}");
    let uploads = section("Which devices sent the most bytes to the Internet?");
    // The table follows the query: its header starts with the grouping field.
    let first_row =
        uploads.lines().skip_while(|l| !l.trim_start().starts_with("agent_hostname")).nth(1);
    assert!(first_row.unwrap().trim_start().starts_with(subject("night_bulk_upload")), "{uploads}");
}
