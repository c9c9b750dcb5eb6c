//! Durability: a burst of 2,000 signed case deliveries (each case at two modification
//! times, every delivery repeated) against `pivotwatch serve`, killed with SIGKILL part
//! way and started again, the sender retrying what got no answer as webhook senders do.
//! Afterwards every distinct case has exactly one write-up, at its newest modification,
//! every accepted delivery made exactly one job and every job finished, and each case
//! got exactly one case-comment proposal.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use sqlx::Row;

use pivotwatch::ingest::sim::{INVENTORY_FILE, SimConfig};
use pivotwatch::server::auth::sign;
use pivotwatch::store::Store;
use pivotwatch::xdr::{IncidentQuery, Xdr};

mod common;

const SECRET: &str = "burst-test-secret-0123456789";
const DELIVERIES: usize = 2_000;

fn spawn(data: &std::path::Path, port: u16) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pivotwatch"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PIVOTWATCH_DATA_DIR", data)
        .env("PIVOTWATCH_WEBHOOKS_XDR_SECRET", SECRET)
        .env("PIVOTWATCH_SERVER_JOB_LEASE_SECS", "2")
        .env("PIVOTWATCH_SERVER_RATE_LIMIT_PER_MINUTE", "1000000")
        .env("PIVOTWATCH_SERVER_WORKERS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::embedded_defaults(&mut command);
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_survives_sigkill_and_every_case_is_written_up_once() {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().to_path_buf();
    let sim = data.join("sim");
    let config = SimConfig { devices: 80, days: 3, seed: 9, ..SimConfig::default() };
    let (replay, findings) = common::fleet::tenant(&config, &sim, &data);
    replay.import_findings(&findings).unwrap();
    // A case for every other device too, as another product would raise them.
    let text = std::fs::read_to_string(sim.join(INVENTORY_FILE)).unwrap();
    let alerts: Vec<pivotwatch::xdr::ParsedAlert> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').nth(1))
        .map(|ip| {
            serde_json::from_value(json!({
                "product": "NGFW", "vendor": "PANW", "local_ip": ip, "remote_ip": "203.0.113.9",
                "remote_port": 443, "severity": "Medium", "alert_name": "Unusual outbound session",
                "event_timestamp": 1_733_300_000_000_i64
            }))
            .unwrap()
        })
        .collect();
    for chunk in alerts.chunks(50) {
        replay.insert_parsed_alerts(chunk).await.unwrap();
    }
    let cases: Vec<Value> = replay
        .list_incidents(&IncidentQuery::new())
        .await
        .unwrap()
        .items
        .iter()
        .map(|i| serde_json::to_value(i).unwrap())
        .collect();
    assert!(cases.len() >= 60, "{} cases", cases.len());

    // Each case at its own modification time and a minute later, repeated to 2,000
    // deliveries, in a shuffled order.
    let mut bodies = Vec::new();
    for case in &cases {
        for later in [0, 60_000] {
            let mut case = case.clone();
            case["modification_time"] = json!(case["modification_time"].as_i64().unwrap() + later);
            bodies.push(json!({"reply": {"incident": case}}).to_string());
        }
    }
    let mut deliveries: Vec<String> =
        (0..DELIVERIES).map(|n| bodies[n % bodies.len()].clone()).collect();
    deliveries.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(3));

    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = Arc::new(Mutex::new(spawn(&data, port)));
    let url = format!("http://127.0.0.1:{port}/v1/webhooks/xdr");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(Mutex::new(BTreeMap::<u16, usize>::new()));
    let queue = Arc::new(Mutex::new(deliveries));

    // The killer: SIGKILL once a third has been answered, start again shortly after.
    let killer = {
        let (child, sent, data) = (Arc::clone(&child), Arc::clone(&sent), data.clone());
        tokio::spawn(async move {
            while sent.load(Ordering::SeqCst) < DELIVERIES / 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut guard = child.lock().unwrap();
            guard.kill().unwrap();
            guard.wait().unwrap();
            std::thread::sleep(Duration::from_millis(300));
            *guard = spawn(&data, port);
        })
    };
    let senders: Vec<_> = (0..6)
        .map(|_| {
            let (http, url, queue, sent, statuses) = (
                http.clone(),
                url.clone(),
                Arc::clone(&queue),
                Arc::clone(&sent),
                Arc::clone(&statuses),
            );
            tokio::spawn(async move {
                loop {
                    let Some(body) = queue.lock().unwrap().pop() else { return };
                    let started = Instant::now();
                    loop {
                        assert!(
                            started.elapsed() < Duration::from_secs(60),
                            "no answer for a minute"
                        );
                        let ts = (pivotwatch::store::now_ms() / 1000).to_string();
                        let signature =
                            format!("v1={}", sign(SECRET.as_bytes(), &ts, body.as_bytes()));
                        let answer = http
                            .post(&url)
                            .header("X-Pivotwatch-Timestamp", &ts)
                            .header("X-Pivotwatch-Signature", signature)
                            .body(body.clone())
                            .send()
                            .await;
                        match answer {
                            Ok(response) if response.status().is_success() => {
                                *statuses
                                    .lock()
                                    .unwrap()
                                    .entry(response.status().as_u16())
                                    .or_default() += 1;
                                sent.fetch_add(1, Ordering::SeqCst);
                                break;
                            }
                            Ok(response) => panic!("refused: {}", response.status()),
                            // Down or restarting: try again, as a webhook sender does.
                            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                        }
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    killer.await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), DELIVERIES);

    // Wait for the workers to drain the queue.
    let store = Store::open_default(None, &data).await.unwrap();
    let started = Instant::now();
    loop {
        let pending: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'triage' AND state IN ('queued', 'running')",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if pending == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{pending} triages still pending");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.lock().unwrap().kill().unwrap();

    let statuses = statuses.lock().unwrap().clone();
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    let jobs = sqlx::query("SELECT state, COUNT(*) FROM jobs WHERE kind = 'triage' GROUP BY state")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let jobs: BTreeMap<String, i64> =
        jobs.iter().map(|r| (r.try_get(0).unwrap(), r.try_get(1).unwrap())).collect();
    // Every accepted delivery made one job (a delivery accepted just before the kill
    // whose answer was lost was sent again and counted as a duplicate then), and every
    // job finished.
    let total: i64 = jobs.values().sum();
    assert!(
        total as usize >= accepted && total as usize <= bodies.len(),
        "{jobs:?} vs {statuses:?}"
    );
    assert_eq!(jobs.get("done").copied().unwrap_or(0), total, "{jobs:?}");
    // One write-up per case, at its newest modification, done.
    let rows = sqlx::query("SELECT incident_id, modification_time, state FROM triages")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), cases.len());
    let newest: BTreeMap<String, i64> = cases
        .iter()
        .map(|c| {
            (
                c["incident_id"].as_str().unwrap().to_string(),
                c["modification_time"].as_i64().unwrap() + 60_000,
            )
        })
        .collect();
    for row in &rows {
        let id: String = row.try_get(0).unwrap();
        let modified: i64 = row.try_get(1).unwrap();
        let state: String = row.try_get(2).unwrap();
        assert_eq!((modified, state.as_str()), (newest[&id], "done"), "case {id}");
    }
    // One case comment proposed per case, however often a job ran.
    let comments: Vec<String> =
        sqlx::query_scalar("SELECT params FROM proposals WHERE kind = 'xdr_case_comment'")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let commented: BTreeSet<String> = comments
        .iter()
        .map(|p| {
            serde_json::from_str::<Value>(p).unwrap()["incident_id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!((comments.len(), commented.len()), (cases.len(), cases.len()));
    eprintln!("{} cases, deliveries answered {statuses:?}, triage jobs {jobs:?}", cases.len());
}
