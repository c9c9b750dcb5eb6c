//! Hunts with a model: against an OpenAI-compatible HTTP server scripted per test. The
//! model's query is validated before it runs, a refused query goes back for repair, rate
//! limits are retried, and a model that is down or keeps failing leaves the offline
//! planner to answer, saying so. Every call is an inference in the audit trail.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use serde_json::{Value, json};

use pivotwatch::agent::hunt;
use pivotwatch::agent::llm::Llm;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::xdr::replay::Replay;

mod common;

use common::model::{Model, fails, says};

async fn serve(script: Vec<(u16, Value)>) -> (Arc<Model>, Llm) {
    common::model::serve(script, "test-model", Duration::from_secs(5)).await
}

fn tenant(dir: &std::path::Path) -> Replay {
    simulate(&SimConfig { devices: 20, days: 3, seed: 2, ..SimConfig::default() }, dir).unwrap();
    let conn_log = dir.join(CONN_LOG_FILE);
    Replay::load(dir, Some(&dir.join(INVENTORY_FILE)), &[conn_log]).unwrap();
    Replay::open(dir).unwrap()
}

const GOOD: &str = "```xql\nconfig timeframe = 24h | dataset = xdr_data \
    | filter action_remote_port = 443 | comp count() as flows by action_local_ip \
    | sort desc flows | limit 5\n```";

#[tokio::test]
async fn the_models_query_is_validated_run_and_audited() {
    let dir = tempfile::TempDir::new().unwrap();
    let replay = tenant(dir.path());
    let db = common::sqlite().await;
    let (model, llm) = serve(vec![says(GOOD)]).await;
    let result =
        hunt(&replay, Some(&llm), "which devices talk HTTPS the most?", Some(&db.store)).await;
    assert_eq!(result.planner, "llm");
    assert!(result.valid && result.row_count > 0, "{result:?}");
    assert!(result.xql.as_ref().unwrap().starts_with("config timeframe = 24h"));
    let seen = model.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["model"], "test-model");
    let system = seen[0]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("Read-only") && system.contains("xdr_data"), "{system}");
    let user = seen[0]["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("which devices talk HTTPS the most?") && user.contains("Examples:"));
    let records = pivotwatch::audit::export(&db.store, 0).await.unwrap();
    let inference = records.iter().find(|r| r.kind == "inference").unwrap();
    assert_eq!(inference.payload["prompt_id"], "hunt_xql.v2");
    assert_eq!(inference.payload["model"], "test-model");
    assert_eq!(inference.payload["input_tokens"], common::model::PROMPT_TOKENS);
    assert_eq!(inference.payload["prompt_hash"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn a_query_that_writes_goes_back_for_repair_and_never_runs() {
    let dir = tempfile::TempDir::new().unwrap();
    let replay = tenant(dir.path());
    let writing = "config timeframe = 24h | dataset = xdr_data | filter action_remote_port = 22 \
                   | target type = dataset ssh_hits";
    let (model, llm) = serve(vec![says(writing), says(GOOD)]).await;
    let result = hunt(&replay, Some(&llm), "who uses ssh?", None).await;
    assert_eq!(result.planner, "llm");
    assert!(!result.xql.as_ref().unwrap().contains("target"), "{result:?}");
    let seen = model.seen();
    assert_eq!(seen.len(), 2, "one repair");
    let repair =
        seen[1]["messages"].as_array().unwrap().last().unwrap()["content"].as_str().unwrap();
    assert!(repair.contains("refused") && repair.contains("target"), "{repair}");
}

#[tokio::test]
async fn a_question_the_data_cannot_answer_is_declined_not_guessed() {
    let dir = tempfile::TempDir::new().unwrap();
    let replay = tenant(dir.path());
    let (model, llm) =
        serve(vec![says("REFUSE: process command lines are not in these datasets")]).await;
    let result = hunt(&replay, Some(&llm), "which PLCs ran cmd.exe last night?", None).await;
    assert_eq!(
        (result.planner.as_str(), result.xql.as_deref(), result.valid),
        ("llm", None, false)
    );
    assert!(
        result.summary.starts_with("I can't answer that from the tenant's data")
            && result.summary.contains("process command lines"),
        "{}",
        result.summary
    );
    assert_eq!(model.seen().len(), 1, "a refusal is not sent back for repair");
}

#[tokio::test]
async fn a_rate_limit_is_retried_and_a_model_that_keeps_failing_leaves_it_to_the_offline_planner() {
    let dir = tempfile::TempDir::new().unwrap();
    let replay = tenant(dir.path());
    let (model, llm) = serve(vec![fails(429, "rate_limit_exceeded"), says(GOOD)]).await;
    let result = hunt(&replay, Some(&llm), "which devices talk HTTPS the most?", None).await;
    assert_eq!(result.planner, "llm");
    assert_eq!(model.seen().len(), 2);

    // Down for good: the client's own retries (three, backing off), then the offline
    // planner answers and says so.
    let (model, llm) = serve(vec![]).await;
    let result =
        hunt(&replay, Some(&llm), "Which cameras talk to external IPs at night?", None).await;
    assert_eq!(result.planner, "offline");
    assert!(result.valid);
    assert!(result.summary.contains("answered by the offline planner"), "{}", result.summary);
    assert_eq!(model.seen().len(), 4);

    // Garbage every time: two repairs, then the offline planner.
    let (model, llm) =
        serve(vec![says("SELECT * FROM flows"), says("no idea"), says("still no")]).await;
    let result = hunt(&replay, Some(&llm), "any scans in the last 7 days?", None).await;
    assert_eq!(result.planner, "offline");
    assert!(result.summary.contains("after 2 repairs"), "{}", result.summary);
    assert_eq!(model.seen().len(), 3);

    // A refused key is not retried.
    let (model, llm) = serve(vec![fails(401, "invalid_api_key")]).await;
    let result = hunt(&replay, Some(&llm), "any scans in the last 7 days?", None).await;
    assert_eq!(result.planner, "offline");
    assert_eq!(model.seen().len(), 1);
}

#[tokio::test]
async fn a_model_that_hangs_is_given_up_on_at_its_deadline() {
    use axum::routing::post;
    let dir = tempfile::TempDir::new().unwrap();
    let replay = tenant(dir.path());
    // A model that accepts the request and never answers.
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Json(json!({}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let llm =
        Llm::new(&format!("http://{addr}/v1"), None, "slow", Duration::from_millis(300)).unwrap();
    let started = std::time::Instant::now();
    let result = hunt(&replay, Some(&llm), "any scans in the last 7 days?", None).await;
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert_eq!(result.planner, "offline");
    assert!(result.valid);
    assert!(result.summary.contains("did not answer within"), "{}", result.summary);
}
