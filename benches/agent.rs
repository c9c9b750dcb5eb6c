//! Agent benchmarks: the tokens a hunt prompt costs as written (system prompt, the three
//! worked examples chosen for the question, the question), counted with tiktoken-rs's
//! o200k_base; how long the offline planner takes per question; and triage latency
//! excluding model time (every tool call against the replay tenant, the narrative and
//! the grounding check) on the simulator's critical findings.
//!
//! `cargo bench --bench agent`. Questions: `evals/hunt/holdout.jsonl`.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first unexpected error")]

use std::time::Instant;

use pivotwatch::agent::hunt::examples_for;
use pivotwatch::agent::llm::{HUNT_XQL, HUNT_XQL_REPAIR};
use pivotwatch::agent::{planner, triage_offline};
use pivotwatch::baseline::DetectConfig;
use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::model::Severity;
use pivotwatch::pipeline::{BaselineSource, DetectInput, detect_files};
use pivotwatch::xdr::replay::Replay;

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[((samples.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let questions: Vec<String> = include_str!("../evals/hunt/holdout.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["question"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    let bpe = tiktoken_rs::o200k_base().unwrap();
    let system = bpe.encode_with_special_tokens(&HUNT_XQL.text).len();
    let mut tokens: Vec<f64> = questions
        .iter()
        .map(|q| (system + bpe.encode_with_special_tokens(&examples_for(q)).len()) as f64)
        .collect();
    let repair = bpe.encode_with_special_tokens(&HUNT_XQL_REPAIR.text).len();
    println!(
        "hunt prompt, {} questions: system {system} tokens; whole first request median {:.0}, max {:.0} tokens (o200k_base); a repair adds {repair} tokens plus the refusal and the refused query",
        questions.len(),
        percentile(&mut tokens, 0.5),
        percentile(&mut tokens, 1.0)
    );

    let mut planning = Vec::new();
    for _ in 0..200 {
        for q in &questions {
            let started = Instant::now();
            let plan = planner::plan(q);
            planning.push(started.elapsed().as_secs_f64() * 1e6);
            std::hint::black_box(plan.ok());
        }
    }
    println!(
        "offline planner: p50 {:.1} µs, p99 {:.1} µs per question (parse and canonical print included)",
        percentile(&mut planning, 0.5),
        percentile(&mut planning, 0.99)
    );

    let dir = tempfile::TempDir::new().unwrap();
    let config = SimConfig { devices: 60, days: 10, seed: 7, ..SimConfig::default() };
    let summary = simulate(&config, dir.path()).unwrap();
    let inventory = dir.path().join(INVENTORY_FILE);
    let conn_log = dir.path().join(CONN_LOG_FILE);
    Replay::load(dir.path(), Some(&inventory), std::slice::from_ref(&conn_log)).unwrap();
    let replay = Replay::open(dir.path()).unwrap();
    let input = DetectInput {
        inventory: Some(inventory),
        flows: vec![conn_log],
        baseline: BaselineSource::Until(summary.baseline_until),
    };
    let output = detect_files(DetectConfig::default(), &input, &mut |_| {}).unwrap();
    let findings: Vec<_> =
        output.detection.findings.iter().filter(|f| f.severity >= Severity::High).collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    // Tokens of the first triage request as written: the system prompt, the request
    // with the evidence gathered offline (fenced), and the six tools' schemas.
    let registry = pivotwatch::agent::tools::Registry::with_proposals();
    let specs = registry.specs();
    let bpe = tiktoken_rs::o200k_base_singleton();
    let tool_tokens = pivotwatch::agent::run::request_tokens(bpe, &[], &specs);
    let mut triage_tokens: Vec<f64> = findings
        .iter()
        .map(|finding| {
            let offline = runtime.block_on(triage_offline(finding, &replay, None));
            let permits = pivotwatch::agent::triage::permits(finding, &offline, None);
            let messages = pivotwatch::agent::triage::first_messages(
                &pivotwatch::agent::llm::TRIAGE,
                finding,
                &offline,
                &permits,
                "0123456789abcdef",
            );
            pivotwatch::agent::run::request_tokens(bpe, &messages, &specs) as f64
        })
        .collect();
    println!(
        "triage request as written (o200k_base), {} findings: median {:.0} tokens, p90 {:.0}, max {:.0}; of which the tool schemas and descriptions {}",
        findings.len(),
        percentile(&mut triage_tokens, 0.5),
        percentile(&mut triage_tokens, 0.9),
        percentile(&mut triage_tokens, 1.0),
        tool_tokens
    );

    let mut latency = Vec::new();
    let mut grounded = 0;
    for _ in 0..3 {
        for finding in &findings {
            let started = Instant::now();
            let result = runtime.block_on(triage_offline(finding, &replay, None));
            latency.push(started.elapsed().as_secs_f64() * 1e3);
            grounded += usize::from(result.grounded);
        }
    }
    println!(
        "offline triage, {} high or critical findings × 3 on {} flows: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms; grounded {} of {}",
        findings.len(),
        summary.flows,
        percentile(&mut latency, 0.5),
        percentile(&mut latency, 0.9),
        percentile(&mut latency, 1.0),
        grounded,
        findings.len() * 3
    );
}
