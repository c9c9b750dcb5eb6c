//! The offline hunt planner on the simulator's data: forty questions in hunters' words,
//! each answered through the replay tenant and compared with the same answer computed
//! directly from the flows and the inventory by the plain loops below. The test states
//! what each question means; the planner must both read it that way and produce XQL
//! whose rows match.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use pivotwatch::agent::hunt_offline;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::ingest::{read_flows, read_inventory};
use pivotwatch::model::{Flow, Inventory};
use pivotwatch::xdr::replay::Replay;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tod {
    Night,
    Business,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Want {
    /// The devices (originators) with any matching flow.
    Devices,
    /// Originators reaching at least 20 hosts or 20 ports.
    Scans,
    /// Originators with one peer and port seen at least once per hour, small each time.
    Beacons,
    /// Originators with a conversation first seen within the window.
    NewPeers,
    /// The number of distinct originators.
    Count,
    /// The top N originators by bytes sent.
    TopUpload(usize),
}

#[derive(Clone, Copy, Debug)]
struct Meaning {
    kinds: &'static [&'static str],
    /// The kinds are the responders (who reaches them), not the originators.
    targets: bool,
    /// Some(true) external peers only, Some(false) internal only.
    external: Option<bool>,
    ports: &'static [u16],
    tod: Option<Tod>,
    hours: u64,
    want: Want,
}

const ANY: Meaning = Meaning {
    kinds: &[],
    targets: false,
    external: None,
    ports: &[],
    tod: None,
    hours: 24,
    want: Want::Devices,
};

const CAM: &[&str] = &["IP Camera"];
const PUMP: &[&str] = &["Infusion Pump"];
const MON: &[&str] = &["Patient Monitor"];
const IMG: &[&str] = &["Imaging Modality"];
const HVAC: &[&str] = &["HVAC Controller"];
const BADGE: &[&str] = &["Badge Reader"];
const PRINTER: &[&str] = &["Printer"];
const PLC: &[&str] = &["PLC"];

fn questions() -> Vec<(&'static str, Meaning)> {
    let w = 168;
    vec![
        (
            "Which cameras talk to external IPs at night?",
            Meaning { kinds: CAM, external: Some(true), tod: Some(Tod::Night), ..ANY },
        ),
        (
            "cameras talking to the internet in the last 7 days",
            Meaning { kinds: CAM, external: Some(true), hours: w, ..ANY },
        ),
        (
            "Any infusion pumps using SSH in the last week?",
            Meaning { kinds: PUMP, ports: &[22], hours: w, ..ANY },
        ),
        (
            "pumps with external peers this week",
            Meaning { kinds: PUMP, external: Some(true), hours: w, ..ANY },
        ),
        (
            "Which patient monitors send DNS outside the hospital in the last 7 days?",
            Meaning { kinds: MON, ports: &[53], external: Some(true), hours: w, ..ANY },
        ),
        (
            "monitors talking to external hosts overnight in the past 7 days",
            Meaning { kinds: MON, external: Some(true), tod: Some(Tod::Night), hours: w, ..ANY },
        ),
        (
            "Which imaging devices uploaded to the internet in the last 7 days?",
            Meaning { kinds: IMG, external: Some(true), hours: w, ..ANY },
        ),
        (
            "CT or MRI scanners using SMB in the last 48 hours",
            Meaning { kinds: IMG, ports: &[445], hours: 48, ..ANY },
        ),
        (
            "HVAC controllers reached over SSH in the last 7 days",
            Meaning { kinds: HVAC, ports: &[22], targets: true, hours: w, ..ANY },
        ),
        (
            "who talks BACnet to the HVAC controllers today",
            Meaning { kinds: HVAC, ports: &[47808], targets: true, ..ANY },
        ),
        (
            "Who talks Modbus or S7 to the PLCs in the last 7 days?",
            Meaning { kinds: PLC, ports: &[102, 502], targets: true, hours: w, ..ANY },
        ),
        (
            "hosts reaching the PLCs on port 44818 this week",
            Meaning { kinds: PLC, ports: &[44818], targets: true, hours: w, ..ANY },
        ),
        (
            "Which PLCs talk to internal hosts in the last 24 hours?",
            Meaning { kinds: PLC, external: Some(false), ..ANY },
        ),
        (
            "badge readers with external traffic in the last 7 days",
            Meaning { kinds: BADGE, external: Some(true), hours: w, ..ANY },
        ),
        (
            "badge readers talking to internal hosts on port 4070 today",
            Meaning { kinds: BADGE, external: Some(false), ports: &[4070], ..ANY },
        ),
        (
            "printers talking to the internet this week",
            Meaning { kinds: PRINTER, external: Some(true), hours: w, ..ANY },
        ),
        (
            "Which devices used Telnet in the last 7 days?",
            Meaning { ports: &[23], hours: w, ..ANY },
        ),
        ("anything on RDP in the last 7 days", Meaning { ports: &[3389], hours: w, ..ANY }),
        (
            "devices talking HTTPS to external addresses at night in the last 7 days",
            Meaning { ports: &[443], external: Some(true), tod: Some(Tod::Night), hours: w, ..ANY },
        ),
        (
            "devices that use NTP outside the network this week",
            Meaning { ports: &[123], external: Some(true), hours: w, ..ANY },
        ),
        (
            "cameras during business hours talking to external hosts in the last 7 days",
            Meaning { kinds: CAM, external: Some(true), tod: Some(Tod::Business), hours: w, ..ANY },
        ),
        (
            "monitors on tcp/22 in the past 7 days",
            Meaning { kinds: MON, ports: &[22], hours: w, ..ANY },
        ),
        ("Any scans in the last 7 days?", Meaning { want: Want::Scans, hours: w, ..ANY }),
        (
            "which badge readers were scanning this week",
            Meaning { kinds: BADGE, want: Want::Scans, hours: w, ..ANY },
        ),
        (
            "devices sweeping the network in the last 48 hours",
            Meaning { want: Want::Scans, hours: 48, ..ANY },
        ),
        (
            "beaconing cameras this week",
            Meaning { kinds: CAM, external: Some(true), want: Want::Beacons, hours: w, ..ANY },
        ),
        (
            "devices beaconing to the internet in the last 24 hours",
            Meaning { external: Some(true), want: Want::Beacons, ..ANY },
        ),
        (
            "monitors calling home every minute in the last 7 days",
            Meaning { kinds: MON, external: Some(true), want: Want::Beacons, hours: w, ..ANY },
        ),
        (
            "pumps that started talking to a new external peer in the last 7 days",
            Meaning { kinds: PUMP, external: Some(true), want: Want::NewPeers, hours: w, ..ANY },
        ),
        (
            "devices with new external peers in the last 24 hours",
            Meaning { external: Some(true), want: Want::NewPeers, ..ANY },
        ),
        (
            "cameras talking to a new destination in the last 48 hours",
            Meaning { kinds: CAM, want: Want::NewPeers, hours: 48, ..ANY },
        ),
        (
            "How many devices used SSH in the last week?",
            Meaning { ports: &[22], want: Want::Count, hours: w, ..ANY },
        ),
        (
            "how many cameras talk to the internet this week",
            Meaning { kinds: CAM, external: Some(true), want: Want::Count, hours: w, ..ANY },
        ),
        (
            "number of devices talking Modbus today",
            Meaning { ports: &[502], want: Want::Count, ..ANY },
        ),
        (
            "top 5 devices by bytes sent to the internet this week",
            Meaning { external: Some(true), want: Want::TopUpload(5), hours: w, ..ANY },
        ),
        (
            "top 3 imaging devices by bytes uploaded in the last 7 days",
            Meaning { kinds: IMG, want: Want::TopUpload(3), hours: w, ..ANY },
        ),
        (
            "Top 10 devices by data sent outside at night in the last 7 days",
            Meaning {
                external: Some(true),
                tod: Some(Tod::Night),
                want: Want::TopUpload(10),
                hours: w,
                ..ANY
            },
        ),
        (
            "which devices sent the most data to the internet in the last 48 hours",
            Meaning { external: Some(true), want: Want::TopUpload(10), hours: 48, ..ANY },
        ),
        (
            "HVAC or PLC devices using SSH or Telnet in the past 7 days",
            Meaning { kinds: &["HVAC Controller", "PLC"], ports: &[22, 23], hours: w, ..ANY },
        ),
        ("printers on port 9100 today", Meaning { kinds: PRINTER, ports: &[9100], ..ANY }),
    ]
}

fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(_) => false,
    }
}

/// The answer computed from the flows directly: the originators it names, or for a
/// count their number.
fn expected(
    m: &Meaning,
    flows: &[Flow],
    inventory: &Inventory,
    now_ms: i64,
) -> (BTreeSet<String>, usize) {
    let lookback = if m.want == Want::NewPeers { m.hours + 168 } else { m.hours };
    let from_ms = now_ms - i64::try_from(lookback * 3_600_000).unwrap();
    let kind_of = |ip: &IpAddr| inventory.by_ip(ip).map(|d| d.device_type.as_str());
    let matching = flows.iter().filter(|f| {
        let t = (f.ts * 1000.0).round() as i64;
        let hour = (t.div_euclid(3_600_000)).rem_euclid(24);
        t >= from_ms
            && t < now_ms + 1
            && m.external.is_none_or(|ext| ext != is_private(&f.resp_h))
            && (m.ports.is_empty() || m.ports.contains(&f.resp_p))
            && match m.tod {
                Some(Tod::Night) => !(6..22).contains(&hour),
                Some(Tod::Business) => (8..18).contains(&hour),
                None => true,
            }
            && (m.kinds.is_empty() || {
                let side = if m.targets { &f.resp_h } else { &f.orig_h };
                kind_of(side).is_some_and(|k| m.kinds.contains(&k))
            })
    });
    let mut devices = BTreeSet::new();
    match m.want {
        Want::Devices | Want::Count => {
            for f in matching {
                devices.insert(f.orig_h.to_string());
            }
        }
        Want::Scans => {
            let mut reach: HashMap<IpAddr, (BTreeSet<IpAddr>, BTreeSet<u16>)> = HashMap::new();
            for f in matching {
                let e = reach.entry(f.orig_h).or_default();
                e.0.insert(f.resp_h);
                e.1.insert(f.resp_p);
            }
            for (ip, (hosts, ports)) in reach {
                if hosts.len() >= 20 || ports.len() >= 20 {
                    devices.insert(ip.to_string());
                }
            }
        }
        Want::Beacons => {
            let mut talks: HashMap<(IpAddr, IpAddr, u16), (u64, u64)> = HashMap::new();
            for f in matching {
                let e = talks.entry((f.orig_h, f.resp_h, f.resp_p)).or_default();
                e.0 += 1;
                e.1 += f.orig_bytes;
            }
            for ((ip, _, _), (n, bytes)) in talks {
                if n >= m.hours && (bytes as f64 / n as f64) < 100_000.0 {
                    devices.insert(ip.to_string());
                }
            }
        }
        Want::NewPeers => {
            let mut first: HashMap<(IpAddr, IpAddr, u16), i64> = HashMap::new();
            for f in matching {
                let t = (f.ts * 1000.0).round() as i64;
                let e = first.entry((f.orig_h, f.resp_h, f.resp_p)).or_insert(t);
                *e = (*e).min(t);
            }
            for ((ip, _, _), t) in first {
                if (now_ms - t) / 3_600_000 <= i64::try_from(m.hours).unwrap() {
                    devices.insert(ip.to_string());
                }
            }
        }
        Want::TopUpload(n) => {
            let mut sent: HashMap<IpAddr, u64> = HashMap::new();
            for f in matching {
                *sent.entry(f.orig_h).or_default() += f.orig_bytes;
            }
            let mut ranked: Vec<(IpAddr, u64)> = sent.into_iter().collect();
            ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
            devices.extend(ranked.into_iter().take(n).map(|(ip, _)| ip.to_string()));
        }
    }
    let count = devices.len();
    (devices, count)
}

#[tokio::test]
async fn forty_questions_answer_as_the_flows_do() {
    let dir = tempfile::TempDir::new().unwrap();
    simulate(&SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() }, dir.path())
        .unwrap();
    let inventory_file = dir.path().join(INVENTORY_FILE);
    let conn_log = dir.path().join(CONN_LOG_FILE);
    Replay::load(dir.path(), Some(&inventory_file), std::slice::from_ref(&conn_log)).unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    let inventory = read_inventory(&inventory_file).unwrap();
    let mut flows = Vec::new();
    read_flows(&conn_log, &mut |f| flows.push(*f)).unwrap();

    let questions = questions();
    assert_eq!(questions.len(), 40);
    let mut non_empty = 0;
    for (question, meaning) in &questions {
        let result = hunt_offline(&replay, question).await;
        assert!(result.valid, "{question}: {}", result.summary);
        assert_eq!(result.planner, "offline");
        let (want, count) = expected(meaning, &flows, &inventory, replay.now_ms());
        if meaning.want == Want::Count {
            let got = result.rows[0]["devices"].as_u64().unwrap() as usize;
            assert_eq!(got, count, "{question}\n{}", result.xql.unwrap());
            non_empty += usize::from(count > 0);
            continue;
        }
        assert!(result.row_count < 100, "{question}: the answer was cut at the limit");
        let got: BTreeSet<String> = result
            .rows
            .iter()
            .filter_map(|r| r["action_local_ip"].as_str().map(str::to_string))
            .collect();
        assert_eq!(got, want, "{question}\n{}", result.xql.unwrap());
        non_empty += usize::from(!want.is_empty());
        assert!(!result.follow_ups.is_empty() && result.follow_ups.len() <= 3, "{question}");
    }
    // Most questions find something on this fleet; a hunt that finds nothing must be
    // right about it too, but should not be the rule.
    assert!(non_empty >= 30, "only {non_empty} of 40 questions found anything");
}

#[tokio::test]
async fn every_follow_up_is_itself_a_hunt_the_planner_answers() {
    let dir = tempfile::TempDir::new().unwrap();
    simulate(&SimConfig { devices: 20, days: 3, seed: 2, ..SimConfig::default() }, dir.path())
        .unwrap();
    let conn_log = dir.path().join(CONN_LOG_FILE);
    Replay::load(dir.path(), Some(&dir.path().join(INVENTORY_FILE)), &[conn_log]).unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    for (question, _) in questions() {
        for follow_up in hunt_offline(&replay, question).await.follow_ups {
            let answer = hunt_offline(&replay, &follow_up.question).await;
            assert!(answer.valid, "{} (from {question}): {}", follow_up.question, answer.summary);
            assert!(follow_up.technique.starts_with('T') && !follow_up.technique_name.is_empty());
        }
    }
}

#[test]
fn the_hunt_command_prints_json_and_refuses_what_it_cannot_translate() {
    let bin = env!("CARGO_BIN_EXE_pivotwatch");
    let dir = tempfile::TempDir::new().unwrap();
    simulate(&SimConfig { devices: 20, days: 3, seed: 2, ..SimConfig::default() }, dir.path())
        .unwrap();
    let conn_log = dir.path().join(CONN_LOG_FILE);
    Replay::load(dir.path(), Some(&dir.path().join(INVENTORY_FILE)), &[conn_log]).unwrap();
    let run = |question: &str| {
        std::process::Command::new(bin)
            .args(["hunt", question, "--json", "--data-dir"])
            .arg(dir.path())
            .env_remove("PIVOTWATCH_XDR_URL")
            .output()
            .unwrap()
    };
    let out = run("Which cameras talk to external IPs at night?");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for field in
        ["question", "xql", "valid", "rows", "row_count", "summary", "follow_ups", "planner"]
    {
        assert!(json.get(field).is_some(), "{field} missing: {json}");
    }
    assert_eq!(json["planner"], "offline");
    assert!(json["xql"].as_str().unwrap().contains("IP Camera"));
    let out = run("which users logged in to the historian?");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["xql"], serde_json::Value::Null);
    assert!(json["summary"].as_str().unwrap().starts_with("I can't translate that offline"));
}

/// The held-out questions (`evals/hunt/holdout.jsonl`), written before the planner's
/// grammar and never used to tune it: the share it translates, and the share whose
/// answer names the same key values as the reference query's.
#[tokio::test]
async fn the_held_out_questions_are_scored() {
    use pivotwatch::xdr::{Xdr, XqlRequest};
    let dir = tempfile::TempDir::new().unwrap();
    simulate(&SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() }, dir.path())
        .unwrap();
    let conn_log = dir.path().join(CONN_LOG_FILE);
    Replay::load(dir.path(), Some(&dir.path().join(INVENTORY_FILE)), &[conn_log]).unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    let cases: Vec<serde_json::Value> = include_str!("../evals/hunt/holdout.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(cases.len(), 30);
    let keys_of = |rows: &[pivotwatch::xdr::Row], key: &[String]| -> Option<BTreeSet<String>> {
        rows.iter()
            .map(|row| {
                key.iter()
                    .map(|k| row.get(k).map(|v| v.to_string()))
                    .collect::<Option<Vec<String>>>()
                    .map(|values| values.join("|"))
            })
            .collect()
    };
    let (mut translated, mut matched) = (0, 0);
    let mut report = Vec::new();
    for case in &cases {
        let question = case["question"].as_str().unwrap();
        let key: Vec<String> = case["key"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        let reference = replay
            .run_xql(&XqlRequest::new(case["xql"].as_str().unwrap()))
            .await
            .unwrap_or_else(|err| panic!("{}: the reference does not run: {err}", case["id"]));
        let want = keys_of(&reference.rows, &key).unwrap();
        let answer = hunt_offline(&replay, question).await;
        if answer.xql.is_none() {
            report.push(format!("{} not translated: {}", case["id"], answer.summary));
            continue;
        }
        translated += 1;
        let got = keys_of(&answer.rows, &key);
        if got.as_ref() == Some(&want) {
            matched += 1;
        } else {
            report.push(format!("{} translated, answer differs", case["id"]));
        }
    }
    eprintln!(
        "held-out hunts: {translated} of 30 translated, {matched} of 30 match the reference\n{}",
        report.join("\n")
    );
    // A floor against regressions, set at the measured figure; docs/benchmarks.md
    // reports it.
    assert!(translated >= 27 && matched >= 10, "{translated} translated, {matched} matched");
}
