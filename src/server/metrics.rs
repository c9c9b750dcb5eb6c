//! `/metrics` in the Prometheus text format: requests by route and status, request
//! latency as a histogram, the job queue by state, write-ups by state, proposals by
//! state, and the model tokens this process spent. Queue, write-up and proposal counts
//! come from the database, so every replica reports the shared truth.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use sqlx::Row;

use super::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Bucket counts, count and sum of one route's latencies.
type Histogram = ([u64; BUCKETS.len()], u64, f64);

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    pub input_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    pub triages_run: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, took: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route.to_string(), status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            let seconds = took.as_secs_f64();
            let entry = latency.entry(route.to_string()).or_insert(([0; BUCKETS.len()], 0, 0.0));
            for (idx, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    entry.0[idx] += 1;
                }
            }
            entry.1 += 1;
            entry.2 += seconds;
        }
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub async fn render(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    let m = &state.metrics;
    out.push_str("# HELP pivotwatch_http_requests_total HTTP requests by route and status.\n");
    out.push_str("# TYPE pivotwatch_http_requests_total counter\n");
    if let Ok(requests) = m.requests.lock() {
        for ((route, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "pivotwatch_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape(route)
            );
        }
    }
    out.push_str("# HELP pivotwatch_http_request_duration_seconds Request latency.\n");
    out.push_str("# TYPE pivotwatch_http_request_duration_seconds histogram\n");
    if let Ok(latency) = m.latency.lock() {
        for (route, (buckets, count, sum)) in latency.iter() {
            let route = escape(route);
            for (bound, n) in BUCKETS.iter().zip(buckets) {
                let _ = writeln!(
                    out,
                    "pivotwatch_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "pivotwatch_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "pivotwatch_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "pivotwatch_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
    }
    out.push_str("# HELP pivotwatch_jobs Jobs in the queue by state (all replicas).\n");
    out.push_str("# TYPE pivotwatch_jobs gauge\n");
    if let Ok(jobs) = state.store.job_counts().await {
        for (name, n) in [
            ("queued", jobs.queued),
            ("running", jobs.running),
            ("done", jobs.done),
            ("failed", jobs.failed),
        ] {
            let _ = writeln!(out, "pivotwatch_jobs{{state=\"{name}\"}} {n}");
        }
    }
    out.push_str("# HELP pivotwatch_triages Write-ups by state (all replicas).\n");
    out.push_str("# TYPE pivotwatch_triages gauge\n");
    if let Ok(counts) = state.store.triage_counts().await {
        for (name, n) in counts {
            let _ = writeln!(out, "pivotwatch_triages{{state=\"{}\"}} {n}", escape(&name));
        }
    }
    out.push_str("# HELP pivotwatch_proposals Proposals by state (all replicas).\n");
    out.push_str("# TYPE pivotwatch_proposals gauge\n");
    if let Ok(rows) = sqlx::query("SELECT state, COUNT(*) FROM proposals GROUP BY state")
        .fetch_all(state.store.pool())
        .await
    {
        for row in rows {
            let (Ok(name), Ok(n)) = (row.try_get::<String, _>(0), row.try_get::<i64, _>(1)) else {
                continue;
            };
            let _ = writeln!(out, "pivotwatch_proposals{{state=\"{}\"}} {n}", escape(&name));
        }
    }
    out.push_str("# HELP pivotwatch_model_tokens_total Model tokens spent by this process.\n");
    out.push_str("# TYPE pivotwatch_model_tokens_total counter\n");
    let _ = writeln!(
        out,
        "pivotwatch_model_tokens_total{{direction=\"input\"}} {}",
        m.input_tokens.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "pivotwatch_model_tokens_total{{direction=\"output\"}} {}",
        m.output_tokens.load(Ordering::Relaxed)
    );
    out.push_str("# HELP pivotwatch_triages_run_total Triages this process ran.\n");
    out.push_str("# TYPE pivotwatch_triages_run_total counter\n");
    let _ = writeln!(out, "pivotwatch_triages_run_total {}", m.triages_run.load(Ordering::Relaxed));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
