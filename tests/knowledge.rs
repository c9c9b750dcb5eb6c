//! Knowledge retrieval quality on the analysts' evaluation set, and the `attack`
//! commands.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use pivotwatch::knowledge::{self, Mode, read_mapping_cases, score_mapping};

mod common;

const EVAL: &str = include_str!("../evals/attack_mapping.jsonl");
const HOLDOUT: &str = include_str!("../evals/attack_mapping_holdout.jsonl");

#[tokio::test]
async fn sparse_retrieval_finds_the_expected_techniques() {
    let cases = read_mapping_cases(EVAL).unwrap();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let knowledge = knowledge::Knowledge::embedded_default().await.unwrap();
    let score = score_mapping(&knowledge, &cases, Mode::Sparse).await.unwrap();
    eprintln!("sparse: {score:?}");
    assert!(score.recall_at_5 >= 0.9, "{score:?}");
}

/// The held-out set was written apart from the vocabulary that expands analysts'
/// words, so its figure is the honest estimate of how the lexical half generalises.
#[tokio::test]
async fn sparse_retrieval_on_the_held_out_set() {
    let cases = read_mapping_cases(HOLDOUT).unwrap();
    assert_eq!(cases.len(), 50);
    let knowledge = knowledge::Knowledge::embedded_default().await.unwrap();
    let score = score_mapping(&knowledge, &cases, Mode::Sparse).await.unwrap();
    eprintln!("held out, sparse: {score:?}");
    assert!(score.recall_at_5 >= 0.6, "{score:?}");
}

/// The shipped device knowledge describes what the simulator's devices do: every model
/// has an entry, and for the typical device of each model nearly all outbound
/// conversations are among its known-good patterns (the device an attack was injected
/// into is the exception, which is why the median device is checked).
#[test]
fn device_knowledge_agrees_with_the_simulated_fleet() {
    use pivotwatch::ingest::sim::{
        CONN_LOG_FILE, INVENTORY_FILE, SimConfig, field_models, simulate,
    };
    use pivotwatch::ingest::{read_flows, read_inventory};
    use pivotwatch::knowledge::devices::DeviceKnowledge;
    use std::collections::BTreeMap;

    let dir = tempfile::TempDir::new().unwrap();
    simulate(&SimConfig { devices: 120, days: 2, seed: 3, ..SimConfig::default() }, dir.path())
        .unwrap();
    let inventory = read_inventory(&dir.path().join(INVENTORY_FILE)).unwrap();
    let knowledge = DeviceKnowledge::shipped();
    for (vendor, model) in field_models() {
        assert!(knowledge.model(vendor, model).is_some(), "no knowledge of {vendor} {model}");
    }
    let mut seen: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    read_flows(&dir.path().join(CONN_LOG_FILE), &mut |flow| {
        let Some(device) = inventory.by_ip(&flow.orig_h) else { return };
        // Servers are peers, not modelled devices.
        let Some(model) = knowledge.model(&device.vendor, &device.model) else { return };
        let proto = format!("{:?}", flow.proto).to_ascii_lowercase();
        let known = model.known_good.iter().any(|p| {
            p.direction == "outbound" && p.protocol == proto && p.ports.contains(&flow.resp_p)
        });
        let key = (device.vendor.clone(), device.model.clone(), device.device_id.clone());
        let counts = seen.entry(key).or_default();
        counts.0 += 1;
        counts.1 += u64::from(known);
    })
    .unwrap();
    let mut shares: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for ((vendor, model, _), (all, known)) in seen {
        shares.entry((vendor, model)).or_default().push(known as f64 / all as f64);
    }
    assert!(shares.len() >= 12, "{} models seen", shares.len());
    for ((vendor, model), mut devices) in shares {
        devices.sort_by(f64::total_cmp);
        let median = devices[devices.len() / 2];
        assert!(median >= 0.95, "{vendor} {model}: median device has {median:.3} known-good");
    }
}

/// An OpenAI-compatible embeddings server: answers each input with a vector that points
/// along the axis of the first keyword it contains, and records the requests.
async fn embeddings_server() -> (std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>, String) {
    use axum::Json;
    use axum::extract::State;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<Value>>>;
    async fn embed(State(seen): State<Seen>, Json(body): Json<Value>) -> Json<Value> {
        seen.lock().unwrap().push(body.clone());
        let axes = ["ssh", "sweep", "firmware"];
        let data: Vec<Value> = body["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .rev() // out of order on purpose: the client must sort by index
            .map(|(i, text)| {
                let text = text.as_str().unwrap().to_ascii_lowercase();
                let mut v = vec![0.1_f32; 3];
                if let Some(axis) = axes.iter().position(|a| text.contains(a)) {
                    v[axis] = 1.0;
                }
                json!({"object": "embedding", "index": i, "embedding": v})
            })
            .collect();
        Json(json!({"object": "list", "data": data, "model": body["model"],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1}}))
    }
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/v1/embeddings", axum::routing::post(embed))
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, format!("http://{addr}/v1"))
}

#[tokio::test]
async fn dense_vectors_come_from_the_embeddings_endpoint_and_join_the_search() {
    use pivotwatch::knowledge::cases::{self, Case, Verdict};
    use pivotwatch::knowledge::{Doc, EmbeddedIndex, Filter, HttpEmbedder, Knowledge};
    use std::sync::Arc;

    let (seen, url) = embeddings_server().await;
    let embedder = HttpEmbedder::new(
        &url,
        "nomic-embed-text",
        Some("sk-test".into()),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let knowledge = Knowledge::new(Arc::new(EmbeddedIndex::default()), Some(Arc::new(embedder)));
    let case = |id: &str, summary: &str, verdict| Case {
        id: id.into(),
        device_id: format!("dev-{id}"),
        vendor: None,
        model: None,
        summary: summary.into(),
        techniques: vec![],
        verdict: Some(verdict),
        verdict_reason: None,
        created_at_ms: 0,
    };
    let docs: Vec<Doc> = vec![
        case("1", "pump opened SSH to an outside host", Verdict::TruePositive).doc(),
        case("2", "camera sweep of the subnet", Verdict::TruePositive).doc(),
        case("3", "firmware update from the vendor", Verdict::BenignChange).doc(),
    ];
    knowledge.add(&docs).await.unwrap();
    // Dense alone: the wording shares no term with case 1, the vector points its way.
    let hits = knowledge
        .search("remote shell session (ssh)", Mode::Dense, Filter::kind("case"), 1)
        .await
        .unwrap();
    assert_eq!(hits[0].doc.id, "case:1");
    let similar = cases::similar(&knowledge, "new firmware pushed", Some("9"), 2).await.unwrap();
    assert_eq!(similar[0].doc.id, "case:3");
    assert_eq!(similar[0].doc.fields["verdict"], ["benign_change"]);
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests[0]["model"], "nomic-embed-text");
    assert_eq!(requests[0]["input"].as_array().unwrap().len(), 3, "documents embed in one batch");
}

#[tokio::test]
async fn cases_and_verdicts_are_kept_on_both_databases() {
    use pivotwatch::knowledge::cases::{self, Case, Verdict};
    for db in common::backends("cases_and_verdicts_are_kept_on_both_databases").await {
        let case = Case {
            id: "41".into(),
            device_id: "pump-0007".into(),
            vendor: Some("BD".into()),
            model: Some("Alaris 8015".into()),
            summary: "SSH from the pump to 203.0.113.9".into(),
            techniques: vec!["T0886".into()],
            verdict: None,
            verdict_reason: None,
            created_at_ms: 1,
        };
        cases::record_triage(&db.store, &case).await.unwrap();
        cases::record_verdict(&db.store, "41", Verdict::TruePositive, "ana", "confirmed C2")
            .await
            .unwrap();
        // A second triage of the same case keeps the verdict.
        cases::record_triage(&db.store, &Case { summary: "updated".into(), ..case.clone() })
            .await
            .unwrap();
        let all = cases::all(&db.store).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].verdict, Some(Verdict::TruePositive));
        assert_eq!(all[0].summary, "updated");
        assert_eq!(all[0].techniques, ["T0886"]);
        let err = cases::record_verdict(&db.store, "42", Verdict::FalsePositive, "ana", "")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("42"), "{err}");
        let records = pivotwatch::audit::export(&db.store, 0).await.unwrap();
        assert!(records.iter().any(|r| r.payload["case"] == "41" && r.actor == "user:ana"));
        common::drop_schema(&db).await;
    }
}

#[test]
fn attack_show_and_search_at_the_command_line() {
    let bin = env!("CARGO_BIN_EXE_pivotwatch");
    let run = |args: &[&str]| common::pivotwatch(bin, args, None);
    let (code, out, _) = run(&["attack", "show", "T0886"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("T0886 Remote Services"), "{out}");
    assert!(out.contains("Lateral Movement") && out.contains("Mitigations ("), "{out}");
    let (code, _, err) = run(&["attack", "show", "T0841"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("deprecated"), "{err}");
    let (code, out, _) =
        run(&["attack", "search", "pump opened an SSH session", "-k", "3", "--json"]);
    assert_eq!(code, Some(0));
    let hits: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(hits.as_array().unwrap().len(), 3);
    assert!(hits.as_array().unwrap().iter().any(|h| h["doc"]["id"] == "T0886"), "{out}");
    let (code, _, err) = run(&["attack", "search", "x", "--mode", "fuzzy"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("--mode"), "{err}");
}

#[test]
fn cases_are_recorded_judged_and_found_again_at_the_command_line() {
    let bin = env!("CARGO_BIN_EXE_pivotwatch");
    let dir = tempfile::TempDir::new().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["cases"];
        all.extend_from_slice(args);
        common::pivotwatch(bin, &all, Some(dir.path()))
    };
    for (id, device, summary, technique) in [
        ("41", "pump-0007", "pump opened SSH to 203.0.113.9 at night", "T0886"),
        ("42", "cam-0003", "camera HTTPS beacon to a new cloud host every 60 s", "T0869"),
        ("43", "plc-0002", "firmware update from the vendor after maintenance", "T0857"),
    ] {
        let (code, _, err) = run(&[
            "record",
            "--id",
            id,
            "--device",
            device,
            "--summary",
            summary,
            "--technique",
            technique,
        ]);
        assert_eq!(code, Some(0), "{err}");
    }
    let (code, _, err) =
        run(&["record", "--id", "44", "--device", "d", "--summary", "s", "--technique", "T0841"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("T0841"), "{err}");
    let (code, _, err) =
        run(&["verdict", "43", "benign_change", "--as", "ana", "--reason", "planned maintenance"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&["verdict", "43", "maybe", "--as", "ana"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("benign_change"), "{err}");
    let (code, out, _) = run(&["similar", "PLC got a firmware update", "-k", "2"]);
    assert_eq!(code, Some(0));
    let first = out.lines().next().unwrap();
    assert!(first.starts_with("case:43") && first.contains("benign_change"), "{out}");
    let (_, out, _) = run(&["list", "--json"]);
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 3);
}
