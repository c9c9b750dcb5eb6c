//! Knowledge base benchmarks: building the embedded index at start-up (ATT&CK for ICS,
//! the device knowledge and 10,000 past cases), query latency at p50/p99 for sparse and
//! hybrid search, and retrieval quality (recall@5, MRR) on the evaluation sets.
//!
//! `cargo bench --bench knowledge`. Dense and hybrid quality need an embeddings endpoint:
//! set `PIVOTWATCH_EMBEDDINGS_URL` and `PIVOTWATCH_EMBEDDINGS_MODEL` (any OpenAI-compatible
//! server); without one only the lexical half is scored. The latency of the dense half is
//! measured either way, with seeded random 384-dimension vectors standing in for a
//! model's. The peer for the latency figures is the same search over ATT&CK alone.

#![allow(clippy::unwrap_used, reason = "a benchmark stops at the first unexpected error")]

use std::time::Instant;

use pivotwatch::knowledge::cases::{Case, Verdict};
use pivotwatch::knowledge::devices::DeviceKnowledge;
use pivotwatch::knowledge::embed::normalised;
use pivotwatch::knowledge::sparse::query_vector;
use pivotwatch::knowledge::{
    Attack, Doc, EmbeddedIndex, Filter, Knowledge, KnowledgeIndex, Mode, Query, attack_docs,
    read_mapping_cases, score_mapping,
};
use rand::{Rng, SeedableRng};

const CASES: usize = 10_000;
const DIM: usize = 384;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[rank]
}

/// Past cases in the words triage writes, from seeded templates.
fn past_cases(n: usize) -> Vec<Doc> {
    let devices = ["pump", "monitor", "ct", "mr", "hvac", "bms", "camera", "badge", "plc"];
    let behaviours = [
        "outbound SSH to an external address on port 22",
        "periodic HTTPS beacon to an unknown cloud host every 60 seconds",
        "sweep of the subnet on TCP 502 and 102",
        "bulk upload of 4 GB to a storage provider at night",
        "new peer speaking S7comm to the line controller",
        "firmware update from the vendor's update server after a maintenance window",
        "DNS queries to resolvers outside the hospital",
        "RDP session from a vendor laptop on the clinical VLAN",
    ];
    let verdicts = [Verdict::TruePositive, Verdict::FalsePositive, Verdict::BenignChange];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            let device = devices[rng.gen_range(0..devices.len())];
            let behaviour = behaviours[rng.gen_range(0..behaviours.len())];
            let verdict = verdicts[rng.gen_range(0..verdicts.len())];
            Case {
                id: format!("{i}"),
                device_id: format!("{device}-{:04}", rng.gen_range(0..2000)),
                vendor: None,
                model: None,
                summary: format!("{device} showed {behaviour}; risk {}", rng.gen_range(10..99)),
                techniques: vec!["T0886".into()],
                verdict: Some(verdict),
                verdict_reason: Some(format!("analyst judged it {}", verdict.as_str())),
                created_at_ms: i as i64,
            }
            .doc()
        })
        .collect()
}

fn random_unit(rng: &mut impl Rng) -> Vec<f32> {
    normalised((0..DIM).map(|_| rng.gen_range(-1.0..1.0)).collect())
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let bundle = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/knowledge/attack-ics/ics-attack.json"
    ))
    .unwrap();
    let cases = past_cases(CASES);

    // Start-up: parse ATT&CK, make its documents, index them with the device
    // knowledge and the past cases.
    let mut builds = Vec::new();
    let mut index = None;
    for _ in 0..5 {
        let started = Instant::now();
        let attack = Attack::from_json(&bundle).unwrap();
        let mut docs = attack_docs(&attack);
        docs.extend(DeviceKnowledge::shipped().docs());
        docs.extend(cases.iter().cloned());
        let built = EmbeddedIndex::default();
        runtime.block_on(built.upsert(&docs, &[])).unwrap();
        builds.push(started.elapsed().as_secs_f64());
        index = Some((built, docs));
    }
    let (index, docs) = index.unwrap();
    println!(
        "build: ATT&CK for ICS + device knowledge + {CASES} past cases = {} documents, median {:.1} ms",
        docs.len(),
        median(builds) * 1e3
    );

    let eval = read_mapping_cases(include_str!("../evals/attack_mapping.jsonl")).unwrap();
    let queries: Vec<String> = eval.iter().map(|c| c.query.clone()).collect();
    let attack_only = EmbeddedIndex::default();
    runtime.block_on(attack_only.upsert(&attack_docs(Attack::shipped()), &[])).unwrap();

    let latency = |index: &EmbeddedIndex, mode: Mode, dense: bool| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let mut samples = Vec::new();
        for round in 0..10 {
            for text in &queries {
                let query = Query {
                    sparse: query_vector(text),
                    dense: dense.then(|| random_unit(&mut rng)),
                    mode,
                    filter: if round % 2 == 0 {
                        Filter::default()
                    } else {
                        Filter::kind("technique")
                    },
                    limit: 5,
                };
                let started = Instant::now();
                let hits = runtime.block_on(index.search(&query)).unwrap();
                samples.push(started.elapsed().as_secs_f64() * 1e3);
                std::hint::black_box(hits);
            }
        }
        (percentile(&mut samples, 0.5), percentile(&mut samples, 0.99))
    };
    let (peer50, peer99) = latency(&attack_only, Mode::Sparse, false);
    let (p50, p99) = latency(&index, Mode::Sparse, false);
    println!(
        "sparse query, {} queries: p50 {p50:.3} ms, p99 {p99:.3} ms (ATT&CK alone: p50 {peer50:.3} ms, p99 {peer99:.3} ms; ratio at p99 {:.1}x)",
        queries.len() * 10,
        p99 / peer99
    );

    // The dense half: give every document a vector and search both halves.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let vectors: Vec<Vec<f32>> = docs.iter().map(|_| random_unit(&mut rng)).collect();
    let dense_index = EmbeddedIndex::default();
    let started = Instant::now();
    runtime.block_on(dense_index.upsert(&docs, &vectors)).unwrap();
    let dense_build = started.elapsed().as_secs_f64();
    let (h50, h99) = latency(&dense_index, Mode::Hybrid, true);
    println!(
        "hybrid query ({DIM}-dimension vectors on all {} documents): p50 {h50:.3} ms, p99 {h99:.3} ms; index with vectors built in {:.1} ms",
        docs.len(),
        dense_build * 1e3
    );

    // Quality on the evaluation sets.
    let knowledge = runtime.block_on(Knowledge::embedded_default()).unwrap();
    let holdout_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/evals/attack_mapping_holdout.jsonl"
    ))
    .ok();
    let mut sets = vec![("attack_mapping", eval.clone())];
    if let Some(text) = holdout_text {
        sets.push(("attack_mapping_holdout", read_mapping_cases(&text).unwrap()));
    }
    for (name, set) in &sets {
        let score = runtime.block_on(score_mapping(&knowledge, set, Mode::Sparse)).unwrap();
        println!(
            "{name} ({} cases), sparse: recall@5 {:.3}, MRR {:.3}",
            score.cases, score.recall_at_5, score.mrr
        );
    }
    let settings = |key: &str| pivotwatch::actions::settings::from_env(key);
    if settings("embeddings.url").is_some() {
        let with_dense = runtime
            .block_on(pivotwatch::knowledge::from_settings(&settings, DeviceKnowledge::shipped()))
            .unwrap();
        for (name, set) in &sets {
            for mode in [Mode::Dense, Mode::Hybrid] {
                let score = runtime.block_on(score_mapping(&with_dense, set, mode)).unwrap();
                println!(
                    "{name}, {mode:?}: recall@5 {:.3}, MRR {:.3}",
                    score.recall_at_5, score.mrr
                );
            }
        }
    } else {
        println!("dense and hybrid quality: not measured (no PIVOTWATCH_EMBEDDINGS_URL)");
    }
}
