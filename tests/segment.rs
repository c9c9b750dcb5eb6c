//! Segmentation drafted from the simulator's traffic: no baseline conversation blocked,
//! every injected attack that crosses a group boundary blocked; PAN-OS output in the
//! shape of the samples; the shadowed rule planted in the example export found.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use pivotwatch::actions::kinds::PanosTarget;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, read_truth, simulate};
use pivotwatch::segment::{self, Conversation, RuleAction, Subject, panos};
use pivotwatch::timefmt::rfc3339;
use pivotwatch::xdr::replay::Replay;
use tempfile::TempDir;

struct Tenant {
    dir: TempDir,
    replay: Replay,
    until: f64,
}

fn tenant() -> Tenant {
    let dir = TempDir::new().unwrap();
    let config = SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() };
    let summary = simulate(&config, dir.path()).unwrap();
    Replay::load(
        dir.path(),
        Some(&dir.path().join(INVENTORY_FILE)),
        &[dir.path().join(CONN_LOG_FILE)],
    )
    .unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    Tenant { dir, replay, until: summary.baseline_until }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn every_group_keeps_its_baseline_and_blocks_the_attacks_that_cross_it() {
    let t = tenant();
    let rt = runtime();
    let fleet = rt.block_on(segment::fleet(&t.replay)).unwrap();
    let mut drafts = BTreeMap::new();
    let mut baseline: Vec<Conversation> = Vec::new();
    for key in fleet.groups().keys() {
        let (report, seen) = rt
            .block_on(segment::draft_from_tenant(
                &t.replay,
                &Subject::Group(key.clone()),
                Some(t.until),
            ))
            .unwrap();
        assert!(
            report.impact.baseline_blocked.is_empty(),
            "{key}: the draft blocks baseline traffic: {:?}",
            report.impact.baseline_blocked
        );
        assert!(report.baseline_conversations > 0, "{key}");
        panos::check_names(&report.draft).unwrap();
        baseline = seen;
        drafts.insert(key.clone(), report.draft);
    }
    assert!(drafts.len() >= 10, "{} groups", drafts.len());

    // Each injected attack's new conversations that cross a group boundary, taken
    // from the simulator's ground truth, against the draft of the device's group.
    let seen: BTreeSet<(IpAddr, IpAddr, String, u16)> =
        baseline.iter().map(|c| (c.src, c.dst, c.proto.clone(), c.port)).collect();
    let truth = read_truth(&t.dir.path().join("truth.json")).unwrap();
    let mut checked: BTreeMap<String, usize> = BTreeMap::new();
    for entry in truth.iter().filter(|e| !e.benign) {
        let Some(host) = fleet.hosts.values().find(|h| h.id == entry.device_id) else { continue };
        let group = host.group();
        let draft = &drafts[&group];
        let window =
            rt.block_on(segment::conversations(&t.replay, &entry.start, &entry.end)).unwrap();
        for conv in window.iter().filter(|c| c.src == host.ip || c.dst == host.ip) {
            if seen.contains(&(conv.src, conv.dst, conv.proto.clone(), conv.port)) {
                continue;
            }
            let other = if conv.src == host.ip { conv.dst } else { conv.src };
            if fleet.hosts.get(&other).is_some_and(|h| h.group() == group) {
                continue;
            }
            let rule = segment::first_match(draft, conv);
            assert!(
                rule.is_none_or(|r| r.action == RuleAction::Deny),
                "{} ({}): {conv:?} passes {:?}",
                entry.scenario,
                group,
                rule.map(|r| &r.name)
            );
            *checked.entry(entry.scenario.clone()).or_default() += 1;
        }
    }
    eprintln!("attack conversations checked per scenario: {checked:?}");
    let attacks: BTreeSet<&str> =
        truth.iter().filter(|e| !e.benign).map(|e| e.scenario.as_str()).collect();
    assert!(checked.len() + 1 >= attacks.len(), "attacks checked: {checked:?} of {attacks:?}");
    assert!(checked.values().sum::<usize>() >= 10, "{checked:?}");
}

fn children(node: roxmltree::Node<'_, '_>) -> BTreeSet<String> {
    node.children().filter(|c| c.is_element()).map(|c| c.tag_name().name().to_string()).collect()
}

#[test]
fn xml_and_set_commands_have_the_shape_of_the_samples() {
    let t = tenant();
    let rt = runtime();
    let group = Subject::Group("Infusion Pump / clinical-devices".into());
    let (report, _) =
        rt.block_on(segment::draft_from_tenant(&t.replay, &group, Some(t.until))).unwrap();
    let draft = &report.draft;

    let sample_text = std::fs::read_to_string(
        "tests/data/integrations/panos/security_rule_element.synthetic.xml",
    )
    .unwrap();
    let sample = roxmltree::Document::parse(&sample_text).unwrap();
    let mut allowed = children(sample.root_element());
    allowed.extend(["negate-source".to_string(), "negate-destination".to_string()]);
    let lists =
        ["from", "to", "source", "destination", "source-user", "application", "service", "tag"];

    for target in
        [PanosTarget::Firewall, PanosTarget::Panorama { device_group: "hospital-dg".into() }]
    {
        let text = panos::xml(draft, &target);
        let doc = roxmltree::Document::parse(&text).unwrap();
        let rules: Vec<_> = doc
            .descendants()
            .filter(|n| {
                n.has_tag_name("entry") && n.parent().is_some_and(|p| p.has_tag_name("rules"))
            })
            .collect();
        assert_eq!(rules.len(), draft.rules.len());
        for rule in &rules {
            let tags = children(*rule);
            assert!(
                tags.is_subset(&allowed),
                "{:?} not in the sample's fields",
                tags.difference(&allowed)
            );
            for list in lists {
                let node = rule.children().find(|c| c.has_tag_name(list)).unwrap();
                assert!(children(node).iter().all(|t| t == "member"), "{list}");
                assert!(node.children().filter(|c| c.is_element()).count() >= 1, "{list}");
            }
            assert!(matches!(
                rule.children().find(|c| c.has_tag_name("action")).and_then(|a| a.text()),
                Some("allow" | "deny")
            ));
        }
        let in_rulebase = |name: &str| doc.descendants().any(|n| n.has_tag_name(name));
        let set = panos::set_commands(draft, &target);
        match &target {
            PanosTarget::Firewall => {
                assert!(
                    in_rulebase("rulebase") && in_rulebase("vsys") && !in_rulebase("pre-rulebase")
                );
                assert!(
                    set.lines()
                        .all(|l| l.starts_with("set ") && !l.starts_with("set device-group"))
                );
                assert!(set.contains("set rulebase security rules pw-infusion-pump-clinical-devices-deny-out from any to any source pw-g-infusion-pump-clinical-devices destination any"));
            }
            PanosTarget::Panorama { .. } => {
                assert!(in_rulebase("pre-rulebase") && in_rulebase("device-group"));
                assert!(set.lines().all(|l| l.starts_with("set device-group hospital-dg ")));
                let (objects, rules) = panos::config_sets(draft, &target);
                assert!(rules.iter().all(|r| r.xpath.contains("/device-group/entry[@name='hospital-dg']/pre-rulebase/security/rules/entry[@name='")));
                assert!(objects.iter().any(|o| o.xpath.ends_with(
                    "/address-group/entry[@name='pw-g-infusion-pump-clinical-devices']"
                )));
                for set in objects.iter().chain(&rules) {
                    roxmltree::Document::parse(&format!("<entry>{}</entry>", set.element)).unwrap();
                }
            }
        }
    }

    // The quarantine group has the sample's dynamic group shape, and its rules are
    // moved to the top.
    let (quarantine, _) = rt
        .block_on(segment::draft_from_tenant(
            &t.replay,
            &Subject::Quarantine("10.20.1.17".into()),
            Some(t.until),
        ))
        .unwrap();
    let dag_sample = std::fs::read_to_string(
        "tests/data/integrations/panos/dynamic_address_group.synthetic.xml",
    )
    .unwrap();
    let dag_sample = roxmltree::Document::parse(&dag_sample).unwrap();
    let text = panos::xml(&quarantine.draft, &PanosTarget::Firewall);
    let doc = roxmltree::Document::parse(&text).unwrap();
    let dag = doc
        .descendants()
        .find(|n| {
            n.has_tag_name("entry") && n.parent().is_some_and(|p| p.has_tag_name("address-group"))
        })
        .unwrap();
    let shape = |n: roxmltree::Node<'_, '_>| {
        let dynamic = n.children().find(|c| c.has_tag_name("dynamic")).unwrap();
        children(dynamic)
    };
    assert_eq!(shape(dag), shape(dag_sample.root_element()));
    let filter =
        dag.descendants().find(|n| n.has_tag_name("filter")).and_then(|f| f.text()).unwrap();
    assert_eq!(filter, format!("'{}'", segment::QUARANTINE_TAG));
    // Sent to a firewall, a quarantine's rules go last first, each moved to the top,
    // so they end above every existing allow in draft order; a group's are appended.
    let (_, rules) = panos::config_sets(&quarantine.draft, &PanosTarget::Firewall);
    assert!(rules.iter().all(|r| r.move_to == Some(pivotwatch::actions::kinds::RulePlace::Top)));
    let last = quarantine.draft.rules.last().unwrap();
    assert!(rules[0].xpath.ends_with(&format!("[@name='{}']", last.name)));
    let (_, group_rules) = panos::config_sets(draft, &PanosTarget::Firewall);
    assert!(group_rules.iter().all(|r| r.move_to.is_none()));
    let set = panos::set_commands(&quarantine.draft, &PanosTarget::Firewall);
    assert_eq!(
        set.lines()
            .filter(|l| l.starts_with("move rulebase security rules ") && l.ends_with(" top"))
            .count(),
        quarantine.draft.rules.len()
    );
}

#[test]
fn a_quarantine_keeps_a_pumps_clinical_server_and_nothing_else() {
    let t = tenant();
    let rt = runtime();
    let (report, _) = rt
        .block_on(segment::draft_from_tenant(
            &t.replay,
            &Subject::Quarantine("spectrum-0008".into()),
            Some(t.until),
        ))
        .unwrap();
    let draft = &report.draft;
    assert!(
        draft.warnings.iter().any(|w| w.contains("critical care equipment")),
        "{:?}",
        draft.warnings
    );
    let allows: Vec<_> = draft.rules.iter().filter(|r| r.action == RuleAction::Allow).collect();
    assert_eq!(allows.len(), 1);
    let kept = &allows[0];
    assert!(kept.destination.members[0].starts_with("pw-h-pumpsrv"), "{kept:?}");
    // In the baseline, only the kept server's traffic passes; everything else the pump
    // did (DNS, NTP, its vendor cloud) would have been blocked.
    assert!(!report.impact.baseline_blocked.is_empty());
    for conv in &report.impact.baseline_blocked {
        assert!(conv.src.to_string() == "10.20.1.17" || conv.dst.to_string() == "10.20.1.17");
    }
    let passed = report.impact.rules.iter().find(|r| r.rule == kept.name).unwrap();
    assert!(passed.baseline_sessions > 0);

    // A camera is not critical care: nothing is kept, and nothing is warned about.
    let (camera, _) = rt
        .block_on(segment::draft_from_tenant(
            &t.replay,
            &Subject::Quarantine("10.41.1.11".into()),
            Some(t.until),
        ))
        .unwrap();
    assert!(camera.draft.rules.iter().all(|r| r.action == RuleAction::Deny));
    assert!(camera.draft.warnings.is_empty(), "{:?}", camera.draft.warnings);
    assert!(
        rt.block_on(segment::draft_from_tenant(
            &t.replay,
            &Subject::Quarantine("nope-9".into()),
            None
        ))
        .unwrap_err()
        .contains("not in the inventory")
    );
}

#[test]
fn the_example_export_has_its_shadowed_rule_found() {
    let t = tenant();
    let rt = runtime();
    let group = Subject::Group("Infusion Pump / clinical-devices".into());
    let (report, baseline) =
        rt.block_on(segment::draft_from_tenant(&t.replay, &group, Some(t.until))).unwrap();
    let export =
        std::fs::read_to_string("tests/data/integrations/panos/rulebase_export.synthetic.xml")
            .unwrap();
    let existing = panos::read_rulebase(&export, None).unwrap();
    assert_eq!(existing.len(), 4);
    let diff = panos::diff(&report.draft, &existing, &baseline);
    assert_eq!(
        diff.shadowed,
        vec![("pumps-to-pumpsrv01-https".to_string(), "clinical-to-anywhere".to_string())]
    );
    let wide: BTreeMap<String, String> = diff.wider_than_observed.into_iter().collect();
    assert!(wide["clinical-to-anywhere"].contains("any destination"), "{wide:?}");
    assert!(wide["clinical-to-anywhere"].contains("any service where only"), "{wide:?}");
    assert!(
        diff.to_add.is_empty(),
        "the broad rule allows everything the pumps do: {:?}",
        diff.to_add
    );

    // Without the broad rule, what the rest does not allow is to be added: not the
    // pump server's HTTPS or the infrastructure, but the second pump server and the
    // vendor cloud.
    let narrower = export.replacen(
        "<action>allow</action>",
        "<action>allow</action><disabled>yes</disabled>",
        1,
    );
    let existing = panos::read_rulebase(&narrower, None).unwrap();
    let diff = panos::diff(&report.draft, &existing, &baseline);
    assert!(diff.shadowed.is_empty(), "{:?}", diff.shadowed);
    let add: BTreeSet<&str> = diff.to_add.iter().map(String::as_str).collect();
    assert!(add.contains("pw-infusion-pump-clinical-devices-to-pumpsrv02-ssl"), "{add:?}");
    assert!(add.iter().any(|r| r.contains("198-51-100")), "{add:?}");
    assert!(!add.contains("pw-infusion-pump-clinical-devices-to-pumpsrv01-ssl"), "{add:?}");
    assert!(!add.contains("pw-infusion-pump-clinical-devices-to-dns01-dns"), "{add:?}");

    let broken = export.replace("<member>pumpsrv01</member>", "<member>pumpsrv09</member>");
    let err = panos::read_rulebase(&broken, None).unwrap_err();
    assert!(err.contains("pumps-to-pumpsrv01-https") && err.contains("pumpsrv09"), "{err}");
    assert!(
        panos::read_rulebase("<config><unclosed></config>", None).unwrap_err().contains("not XML")
    );
}

fn pivotwatch(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pivotwatch"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("PIVOTWATCH_XDR_URL")
        .env_remove("PIVOTWATCH_DATABASE_URL")
        .output()
        .unwrap()
}

#[test]
fn the_command_prints_every_format_and_proposes_the_deploy_steps() {
    let t = tenant();
    let dir = t.dir.path();
    let until = rfc3339(t.until);
    let json = pivotwatch(
        dir,
        &[
            "segment",
            "--group",
            "ip camera / cameras",
            "--baseline-until",
            &until,
            "--format",
            "json",
        ],
    );
    assert!(json.status.success(), "{}", String::from_utf8_lossy(&json.stderr));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["draft"]["subject"], "IP Camera / cameras");
    assert_eq!(report["impact"]["baseline_blocked"].as_array().unwrap().len(), 0);
    assert!(
        !report["impact"]["later_blocked"].as_array().unwrap().is_empty(),
        "the beacon is blocked"
    );

    let text = pivotwatch(
        dir,
        &[
            "segment",
            "--group",
            "IP Camera / cameras",
            "--baseline-until",
            &until,
            "--rulebase",
            "tests/data/integrations/panos/rulebase_export.synthetic.xml",
        ],
    );
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(
        out.contains("baseline: 0 of") && out.contains("is shadowed by clinical-to-anywhere"),
        "{out}"
    );

    let unknown = pivotwatch(dir, &["segment", "--group", "toasters"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("the groups are"));
    let format =
        pivotwatch(dir, &["segment", "--group", "IP Camera / cameras", "--format", "yaml"]);
    assert!(String::from_utf8_lossy(&format.stderr).contains("--format yaml"));

    // The deploy steps become proposals: objects, rules, and the tag for a quarantine.
    let proposed = pivotwatch(
        dir,
        &[
            "segment",
            "--device",
            "10.20.1.17",
            "--baseline-until",
            &until,
            "--format",
            "panos-set",
            "--propose",
        ],
    );
    assert!(proposed.status.success(), "{}", String::from_utf8_lossy(&proposed.stderr));
    let listed = pivotwatch(dir, &["proposals", "list", "--json"]);
    let kinds: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "panos_config_change").count(), 2, "{kinds:?}");
    assert_eq!(kinds.iter().filter(|k| *k == "quarantine_device").count(), 1, "{kinds:?}");
}
