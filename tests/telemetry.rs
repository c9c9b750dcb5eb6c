//! OpenTelemetry export: `pivotwatch serve` with `otlp.endpoint` set sends its request
//! spans to a local OTLP/HTTP receiver, and the spans still queued when it is stopped
//! with SIGTERM arrive before it exits.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;

/// An OTLP/HTTP receiver that keeps every JSON export request to `/v1/traces`.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let kept = Arc::clone(&kept);
            async move {
                let kind = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                assert_eq!(kind, "application/json");
                kept.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap());
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Every exported span as (name, attributes by key), and the resource attributes.
fn spans(exports: &[Value]) -> (Vec<(String, Value)>, Vec<Value>) {
    let mut spans = Vec::new();
    let mut resources = Vec::new();
    for export in exports {
        for resource in export["resourceSpans"].as_array().unwrap() {
            resources.push(resource["resource"].clone());
            for scope in resource["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    let mut attributes = serde_json::Map::new();
                    for kv in span["attributes"].as_array().into_iter().flatten() {
                        attributes.insert(kv["key"].as_str().unwrap().into(), kv["value"].clone());
                    }
                    spans.push((
                        span["name"].as_str().unwrap().to_string(),
                        Value::Object(attributes),
                    ));
                }
            }
        }
    }
    (spans, resources)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_an_otlp_receiver_and_the_last_are_flushed_on_sigterm() {
    let (collector, exports) = receiver().await;
    let dir = tempfile::TempDir::new().unwrap();
    let config =
        pivotwatch::ingest::sim::SimConfig { devices: 30, days: 6, seed: 5, ..Default::default() };
    common::fleet::tenant(&config, &dir.path().join("sim"), dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_pivotwatch"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("PIVOTWATCH_DATA_DIR", dir.path())
        .env("PIVOTWATCH_OTLP_ENDPOINT", &collector)
        .env("PIVOTWATCH_OTLP_PROTOCOL", "http/json")
        .env("PIVOTWATCH_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    common::embedded_defaults(&mut command);
    let mut child = command.spawn().unwrap();

    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the server did not start");
    let refused = http.get(format!("{base}/v1/proposals")).send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let traced = http
        .get(format!("{base}/healthz"))
        .header("x-request-id", "otlp-test-request")
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status().as_u16(), 200);

    // SIGTERM: the server finishes, and the exporter flushes before the process exits
    // (well before the SDK's five-second batch interval).
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = exited.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the server did not exit on SIGTERM");
    });
    assert!(status.success(), "{status:?}");

    let exported = exports.lock().unwrap().clone();
    let (spans, resources) = spans(&exported);
    assert!(
        resources.iter().any(|r| r.to_string().contains("\"service.name\"")
            && r.to_string().contains("\"pivotwatch\"")),
        "{resources:?}"
    );
    let named = |name: &str| spans.iter().filter(|(n, _)| n == name).collect::<Vec<_>>();
    let proposals = named("GET /v1/proposals");
    assert_eq!(proposals.len(), 1, "{spans:?}");
    let attributes = &proposals[0].1;
    assert_eq!(attributes["http.route"]["stringValue"], "/v1/proposals");
    assert_eq!(attributes["http.request.method"]["stringValue"], "GET");
    // OTLP/JSON carries 64-bit integers as strings.
    assert_eq!(attributes["http.response.status_code"]["intValue"], "401", "{attributes}");
    let health = named("GET /healthz");
    assert!(
        health.iter().any(|(_, a)| a["request_id"]["stringValue"] == "otlp-test-request"),
        "{health:?}"
    );
}
