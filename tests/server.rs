//! The server over real HTTP: signed Cortex XDR case webhooks (accepted once, updated in
//! place, refused when forged, stale or malformed, with nothing stored), the worker that
//! triages them and proposes the case comment, the API's bearer tokens and roles, body
//! and rate limits, health, readiness and metrics.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;

use pivotwatch::ingest::sim::SimConfig;
use pivotwatch::server::auth::sign;
use pivotwatch::server::{AppState, RawSettings, ServerConfig, build_state, serve};
use pivotwatch::xdr::IncidentQuery;

mod common;

const SECRET: &str = "a-shared-secret-of-some-length";

struct Running {
    base: String,
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
    http: reqwest::Client,
}

fn digest(token: &str) -> String {
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A replay tenant whose critical findings are filed as cases, a users file, and the
/// server on a free port with `extra` settings.
async fn start(extra: &[(&str, &str)]) -> Running {
    let dir = tempfile::TempDir::new().unwrap();
    let data = dir.path().to_path_buf();
    let sim = data.join("sim");
    let config = SimConfig { devices: 30, days: 6, seed: 5, ..SimConfig::default() };
    let (replay, findings) = common::fleet::tenant(&config, &sim, &data);
    let critical = common::fleet::critical(findings);
    replay.import_findings(&critical[..2.min(critical.len())]).unwrap();
    let users = format!(
        "[[user]]\nname = \"vera\"\nroles = [\"viewer\"]\nslack_user_id = \"U0VERA\"\napi_token_sha256 = \"{}\"\n\n\
         [[user]]\nname = \"hank\"\nroles = [\"hunter\"]\nslack_user_id = \"U0HANK\"\napi_token_sha256 = \"{}\"\n\n\
         [[user]]\nname = \"ana\"\nroles = [\"analyst\"]\napi_token_sha256 = \"{}\"\n\n\
         [[user]]\nname = \"abe\"\nroles = [\"approver\"]\nslack_user_id = \"U0ABE\"\napi_token_sha256 = \"{}\"\n",
        digest("viewer-token"),
        digest("hunter-token"),
        digest("analyst-token"),
        digest("approver-token")
    );
    std::fs::write(data.join("users.toml"), users).unwrap();
    let data_text = data.display().to_string();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("data_dir", data_text.as_str()),
        ("server.listen", "127.0.0.1:0"),
        ("webhooks.xdr_secret", SECRET),
    ];
    pairs.extend_from_slice(extra);
    let raw = RawSettings::from_pairs(&pairs);
    let config = ServerConfig::validate(&raw).unwrap();
    let state = build_state(config, &raw).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served = Arc::clone(&state);
    tokio::spawn(async move { serve(served, listener, stopped).await.unwrap() });
    Running { base, state, stop, _dir: dir, http: reqwest::Client::new() }
}

impl Running {
    async fn deliver(&self, body: &str, timestamp: i64, signature: Option<String>) -> (u16, Value) {
        let ts = timestamp.to_string();
        let signature = signature
            .unwrap_or_else(|| format!("v1={}", sign(SECRET.as_bytes(), &ts, body.as_bytes())));
        let response = self
            .http
            .post(format!("{}/v1/webhooks/xdr", self.base))
            .header("X-Pivotwatch-Timestamp", ts)
            .header("X-Pivotwatch-Signature", signature)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A case comment proposed by the system, waiting for a decision.
    async fn propose_comment(&self) -> pivotwatch::actions::Proposal {
        let action = pivotwatch::actions::Action::XdrCaseComment {
            incident_id: "1".into(),
            comment: "c".into(),
        };
        let proposer = pivotwatch::audit::Actor::System;
        self.state.gate.propose(action, &proposer, "test").await.unwrap().unwrap()
    }

    async fn triages(&self) -> i64 {
        self.state.store.triage_counts().await.unwrap().iter().map(|(_, n)| n).sum()
    }
}

fn now() -> i64 {
    pivotwatch::store::now_ms() / 1000
}

/// A Slack Web API (and `response_url` host) that records every POST body, by path,
/// and answers `ok`.
async fn fake_slack() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
        let recorded = Arc::clone(&recorded);
        async move {
            let mut value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            value["_path"] = json!(uri.path());
            recorded.lock().unwrap().push(value);
            axum::Json(json!({"ok": true, "channel": "C0SOC", "ts": "1733300000.000100"}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_case_is_triaged_once_and_updated_in_place() {
    let (slack_url, slack) = fake_slack().await;
    let server = start(&[
        ("slack.api_url", slack_url.as_str()),
        ("slack.bot_token", "xoxb-test-token"),
        ("slack.notify_channel", "C0SOC"),
    ])
    .await;
    let cases = server.state.xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    let case = serde_json::to_value(&cases.items[0]).unwrap();
    let id = case["incident_id"].as_str().unwrap().to_string();
    let modified = case["modification_time"].as_i64().unwrap();
    let body = json!({"reply": {"incident": case}}).to_string();

    // Refused, and nothing stored: forged, stale, unsigned, not JSON, not a case.
    let forged =
        format!("v1={}", sign(b"not-the-secret-at-all", &now().to_string(), body.as_bytes()));
    let (status, error) = server.deliver(&body, now(), Some(forged)).await;
    assert_eq!(status, 401);
    assert!(error["error"].as_str().unwrap().contains("does not match"), "{error}");
    let (status, error) = server.deliver(&body, now() - 301, None).await;
    assert_eq!(status, 401);
    assert!(error["error"].as_str().unwrap().contains("at most 300 s"), "{error}");
    let (status, _) = server.deliver(&body, now(), Some(String::new())).await;
    assert_eq!(status, 401);
    let (status, error) = server.deliver("{\"reply\": {", now(), None).await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("line 1"), "{error}");
    let (status, error) = server.deliver("{\"alerts\": []}", now(), None).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(server.triages().await, 0);

    // Accepted once; the same delivery again adds nothing.
    let (status, first) = server.deliver(&body, now(), None).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["status"], "queued");
    let (status, again) = server.deliver(&body, now(), None).await;
    assert_eq!((status, again["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(again["triage_id"], first["triage_id"]);

    // The worker writes it up.
    let triage_id = first["triage_id"].as_str().unwrap().to_string();
    let done = wait_done(&server, &triage_id, 1).await;
    assert_eq!(done["incident_id"], id.as_str());
    assert!(done["result"]["narrative"].as_str().unwrap().contains("What happened"));

    // A newer modification updates the same write-up.
    let mut newer = case.clone();
    newer["modification_time"] = json!(modified + 60_000);
    let (status, updated) =
        server.deliver(&json!({"reply": {"incident": newer}}).to_string(), now(), None).await;
    assert_eq!((status, updated["status"].as_str()), (202, Some("updated")));
    assert_eq!(updated["triage_id"], first["triage_id"]);
    let done = wait_done(&server, &triage_id, 2).await;
    assert_eq!(done["revision"], 2);
    assert_eq!(server.triages().await, 1);

    // One case comment proposed for the case, waiting for approval.
    let (_, proposals) =
        server.call("GET", "/v1/proposals?state=proposed", Some("viewer-token"), None).await;
    let comments: Vec<&Value> = proposals
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"]["kind"] == "xdr_case_comment")
        .collect();
    assert_eq!(comments.len(), 1, "{proposals}");
    assert_eq!(comments[0]["action"]["params"]["incident_id"], id.as_str());

    // The write-up reached the Slack channel once, and the newer revision edited that
    // message in place.
    let posted = wait_for(&slack, "/api/chat.postMessage", 1).await;
    let edits = wait_for(&slack, "/api/chat.update", 1).await;
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0]["channel"], "C0SOC");
    assert_eq!(
        (edits[0]["channel"].as_str(), edits[0]["ts"].as_str()),
        (Some("C0SOC"), Some("1733300000.000100"))
    );
    let text = posted[0].to_string();
    assert!(text.contains(&format!("Case {id}")) && text.contains("What happened"), "{text}");
    assert!(text.contains("criticality") || text.contains("Criticality"), "{text}");
    // The comment proposal can be decided from the message: one approve/reject pair.
    let comment_id = comments[0]["id"].as_str().unwrap();
    let buttons = |message: &Value| -> Vec<String> {
        message["blocks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["type"] == "actions")
            .flat_map(|b| b["elements"].as_array().unwrap())
            .filter(|e| e["value"] == comment_id)
            .map(|e| e["action_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(buttons(&posted[0]), ["approve", "reject"], "{text}");

    // A decision through the API edits the same message again: the buttons give way
    // to who decided and when.
    let (status, decided) = server
        .call("POST", &format!("/v1/proposals/{comment_id}/approve"), Some("approver-token"), None)
        .await;
    assert_eq!(status, 200, "{decided}");
    let edits = wait_for(&slack, "/api/chat.update", 2).await;
    let last = edits.last().unwrap();
    assert_eq!(last["ts"], "1733300000.000100");
    assert!(buttons(last).is_empty(), "{last}");
    assert!(last.to_string().contains("Approved by abe at 20"), "{last}");
    let all = slack.lock().unwrap().clone();
    let posts = all.iter().filter(|v| v["_path"] == "/api/chat.postMessage").count();
    assert_eq!(posts, 1, "one message per case: {all:?}");

    // An analyst's verdict on the case is recorded; a stranger's or a viewer's is not.
    let verdict = json!({"case": id, "verdict": "true_positive", "reason": "pump talked to C2"});
    let (status, _) =
        server.call("POST", "/v1/verdicts", Some("viewer-token"), Some(verdict.clone())).await;
    assert_eq!(status, 403);
    let (status, error) = server
        .call(
            "POST",
            "/v1/verdicts",
            Some("analyst-token"),
            Some(json!({"case": id, "verdict": "maybe"})),
        )
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, error) = server
        .call(
            "POST",
            "/v1/verdicts",
            Some("analyst-token"),
            Some(json!({"case": "no-such-case", "verdict": "false_positive"})),
        )
        .await;
    assert_eq!(status, 404, "{error}");
    let (status, recorded) =
        server.call("POST", "/v1/verdicts", Some("analyst-token"), Some(verdict)).await;
    assert_eq!(status, 200, "{recorded}");
    assert_eq!(
        (recorded["verdict"].as_str(), recorded["by"].as_str()),
        (Some("true_positive"), Some("ana"))
    );
    let cases = pivotwatch::knowledge::cases::all(&server.state.store).await.unwrap();
    let case = cases.iter().find(|c| c.id == id).unwrap();
    assert_eq!(case.verdict.map(|v| v.as_str()), Some("true_positive"));
    let _ = server.stop.send(true);
}

async fn wait_done(server: &Running, id: &str, revision: i64) -> Value {
    for _ in 0..300 {
        let (status, record) =
            server.call("GET", &format!("/v1/triage/{id}"), Some("viewer-token"), None).await;
        assert_eq!(status, 200, "{record}");
        if record["state"] == "done" && record["revision"] == revision {
            return record;
        }
        assert_ne!(record["state"], "failed", "{record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("triage {id} revision {revision} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_is_401_or_403_with_a_json_body() {
    let server = start(&[("server.workers", "0")]).await;
    let question = json!({"question": "which cameras talk to external IPs at night?"});
    let (status, body) = server.call("POST", "/v1/hunt", None, Some(question.clone())).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("bearer token is required"));
    let (status, body) =
        server.call("POST", "/v1/hunt", Some("made-up"), Some(question.clone())).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) =
        server.call("POST", "/v1/hunt", Some("viewer-token"), Some(question.clone())).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("vera lacks the role"), "{body}");
    let (status, body) =
        server.call("POST", "/v1/hunt", Some("hunter-token"), Some(question)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["xql"].as_str().unwrap().contains("dataset = xdr_data"));
    let (status, body) = server
        .call(
            "POST",
            "/v1/hunt",
            Some("hunter-token"),
            Some(json!({"question": "x", "verbose": true})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("unknown field `verbose`"), "{body}");
    let (status, body) = server.call("GET", "/v1/audit", Some("viewer-token"), None).await;
    assert_eq!((status, body["status"].as_u64()), (403, Some(403)));

    // A triage asked for through the API is queued; the approval of what it proposes
    // follows the policy, not the caller's wishes.
    let cases = server.state.xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    let (status, body) = server
        .call(
            "POST",
            "/v1/triage",
            Some("analyst-token"),
            Some(json!({"incident_id": cases.items[0].incident_id})),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, record) = server
        .call(
            "GET",
            &format!("/v1/triage/{}", body["id"].as_str().unwrap()),
            Some("viewer-token"),
            None,
        )
        .await;
    assert_eq!((status, record["state"].as_str()), (200, Some("queued")));
    let (status, _) = server.call("GET", "/v1/triage/tr-nope", Some("viewer-token"), None).await;
    assert_eq!(status, 404);

    let proposal = server.propose_comment().await;
    let path = format!("/v1/proposals/{}/approve", proposal.id);
    let (status, body) =
        server.call("POST", &path, Some("viewer-token"), Some(json!({"reason": "ok"}))).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) =
        server.call("POST", &path, Some("approver-token"), Some(json!({"reason": "ok"}))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.call("POST", &path, Some("approver-token"), None).await;
    assert_eq!(status, 409);
    let (status, body) = server.call("GET", "/v1/audit/verify", Some("approver-token"), None).await;
    assert_eq!((status, body["ok"].as_bool()), (200, Some(true)));
    let _ = server.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_health_readiness_and_metrics() {
    let server = start(&[
        ("server.workers", "0"),
        ("server.body_limit_bytes", "4096"),
        ("server.rate_limit_per_minute", "30"),
    ])
    .await;
    let (status, body) = server.call("GET", "/healthz", None, None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = server.call("GET", "/readyz", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    // Too big: refused before it is read, nothing stored.
    let big = format!(
        "{{\"incident\": {{\"incident_id\": \"1\", \"pad\": \"{}\"}}}}",
        "x".repeat(10_000)
    );
    let (status, _) = server.deliver(&big, now(), None).await;
    assert_eq!(status, 413);
    assert_eq!(server.triages().await, 0);
    // The rate limit answers 429 with Retry-After, per client.
    let mut limited = None;
    for _ in 0..40 {
        let response = server
            .http
            .get(format!("{}/v1/proposals", server.base))
            .bearer_auth("viewer-token")
            .send()
            .await
            .unwrap();
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
    }
    let limited = limited.expect("the rate limit never applied");
    assert!(limited.headers().get("retry-after").is_some());
    let (status, _) = server.call("GET", "/v1/proposals", Some("approver-token"), None).await;
    assert_eq!(status, 200);
    // Request ids come back; metrics count requests and the queue.
    let response = server
        .http
        .get(format!("{}/healthz", server.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let text = server
        .http
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("pivotwatch_http_requests_total{route=\"/v1/proposals\",status=\"429\"}"),
        "{text}"
    );
    assert!(text.contains(
        "pivotwatch_http_request_duration_seconds_bucket{route=\"/healthz\",le=\"+Inf\"}"
    ));
    assert!(text.contains("pivotwatch_jobs{state=\"queued\"} 0"));

    // The OpenAPI document lists the routes, their bearer security and body schemas.
    let (status, doc) = server.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let mut paths: Vec<&str> =
        doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/readyz",
            "/v1/audit",
            "/v1/audit/verify",
            "/v1/devices/{id}/profile",
            "/v1/hunt",
            "/v1/proposals",
            "/v1/proposals/{id}/approve",
            "/v1/proposals/{id}/reject",
            "/v1/slack/commands",
            "/v1/slack/events",
            "/v1/slack/interactions",
            "/v1/teams/messages",
            "/v1/triage",
            "/v1/triage/{id}",
            "/v1/verdicts",
            "/v1/webhooks/xdr",
        ]
    );
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["paths"]["/v1/hunt"]["post"]["security"][0]["bearer"], json!([]));
    assert_eq!(doc["components"]["schemas"]["HuntBody"]["required"], json!(["question"]));
    assert!(doc["paths"]["/v1/webhooks/xdr"]["post"]["responses"].get("401").is_some());
    let _ = server.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_accepts_modified_cases_once_like_a_webhook() {
    let server = start(&[("server.workers", "0")]).await;
    let cases = server.state.xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    assert!(!cases.items.is_empty());
    // A webhook already delivered the first case; the poll adds the others only.
    let first = serde_json::to_value(&cases.items[0]).unwrap();
    let (status, _) = server.deliver(&json!({"incident": first}).to_string(), now(), None).await;
    assert_eq!(status, 202);
    let accepted = pivotwatch::server::worker::poll_once(&server.state).await.unwrap();
    assert_eq!(accepted, cases.items.len() - 1);
    assert_eq!(server.triages().await as usize, cases.items.len());
    // Nothing changed since: the next poll accepts nothing.
    assert_eq!(pivotwatch::server::worker::poll_once(&server.state).await.unwrap(), 0);
    let _ = server.stop.send(true);
}

const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

fn slack_signature(ts: &str, body: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SLACK_SECRET.as_bytes()).unwrap();
    mac.update(format!("v0:{ts}:{body}").as_bytes());
    let bytes = mac.finalize().into_bytes();
    format!("v0={}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Running {
    async fn slack(
        &self,
        path: &str,
        body: &str,
        form: bool,
        signed_at: i64,
        good: bool,
    ) -> (u16, Value, Duration) {
        let ts = signed_at.to_string();
        let signature =
            if good { slack_signature(&ts, body) } else { slack_signature(&ts, "tampered") };
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header("X-Slack-Request-Timestamp", ts)
            .header("X-Slack-Signature", signature)
            .header(
                "content-type",
                if form { "application/x-www-form-urlencoded" } else { "application/json" },
            )
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let took = started.elapsed();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null), took)
    }
}

async fn wait_for(seen: &Arc<std::sync::Mutex<Vec<Value>>>, path: &str, n: usize) -> Vec<Value> {
    for _ in 0..150 {
        let found: Vec<Value> =
            seen.lock().unwrap().iter().filter(|v| v["_path"] == path).cloned().collect();
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing posted to {path}");
}

fn form_body(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_events_commands_and_buttons() {
    let (slack_url, slack) = fake_slack().await;
    // The model is down: Slack still gets its acknowledgement in time, and the answer
    // comes from the offline planner, saying so.
    let dead = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/v1", probe.local_addr().unwrap())
    };
    let server = start(&[
        ("slack.signing_secret", SLACK_SECRET),
        ("slack.bot_token", "xoxb-test-token"),
        ("slack.api_url", slack_url.as_str()),
        ("llm.base_url", dead.as_str()),
        ("llm.model", "gpt-4o-mini"),
    ])
    .await;

    // The URL check, and refusals of a forged or stale request with nothing queued.
    let verification = json!({"type": "url_verification", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "token": "x"}).to_string();
    let (status, body, _) =
        server.slack("/v1/slack/events", &verification, false, now(), true).await;
    assert_eq!(
        (status, body["challenge"].as_str()),
        (200, Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"))
    );
    let (status, _, _) = server.slack("/v1/slack/events", &verification, false, now(), false).await;
    assert_eq!(status, 401);
    let (status, body, _) =
        server.slack("/v1/slack/events", &verification, false, now() - 600, true).await;
    assert_eq!(status, 401, "{body}");
    let reaction =
        json!({"type": "event_callback", "event_id": "Ev0", "event": {"type": "reaction_added"}})
            .to_string();
    let (status, _, _) = server.slack("/v1/slack/events", &reaction, false, now(), true).await;
    assert_eq!(status, 400);

    // A mention is answered once, in its thread, however often Slack retries it.
    let mention = json!({"type": "event_callback", "event_id": "Ev08MFMKH6", "team_id": "T0",
        "event": {"type": "app_mention", "user": "U0HANK", "channel": "C0SOC", "ts": "1733300111.000200",
                  "text": "<@U0PIVOT> which cameras talk to external IPs at night?"}})
    .to_string();
    for _ in 0..3 {
        let (status, _, took) =
            server.slack("/v1/slack/events", &mention, false, now(), true).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let posted = wait_for(&slack, "/api/chat.postMessage", 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let posted_again: Vec<Value> = slack
        .lock()
        .unwrap()
        .iter()
        .filter(|v| v["_path"] == "/api/chat.postMessage")
        .cloned()
        .collect();
    assert_eq!(posted_again.len(), 1, "answered once: {posted_again:?}");
    assert_eq!(posted[0]["thread_ts"], "1733300111.000200");
    let text = posted[0]["text"].as_str().unwrap();
    assert!(text.contains("dataset = xdr_data") && text.contains("offline planner"), "{text}");

    // A request about one device goes to the agent's tools (offline, the model being
    // down), and it proposes nothing it was not asked for.
    let inventory = server
        .state
        .xdr
        .run_xql(&pivotwatch::xdr::XqlRequest::new(
            "dataset = asset_inventory | filter xdm.asset.type.name = \"Patient Monitor\" \
             | fields xdm.asset.name, xdm.asset.ipv4_addresses | limit 1",
        ))
        .await
        .unwrap();
    let row = &inventory.rows[0];
    let name = row["xdm.asset.name"].as_str().unwrap().to_string();
    let ip = match &row["xdm.asset.ipv4_addresses"] {
        Value::Array(items) => items[0].as_str().unwrap().to_string(),
        other => other.as_str().unwrap().to_string(),
    };
    let request = json!({"type": "event_callback", "event_id": "Ev08ASK", "team_id": "T0",
        "event": {"type": "app_mention", "user": "U0HANK", "channel": "C0SOC", "ts": "1733300222.000300",
                  "text": format!("<@U0PIVOT> what is {ip}, and is it odd next to its peers?")}})
    .to_string();
    let (status, _, _) = server.slack("/v1/slack/events", &request, false, now(), true).await;
    assert_eq!(status, 200);
    let posted = wait_for(&slack, "/api/chat.postMessage", 2).await;
    let answer = posted
        .iter()
        .find(|p| p["thread_ts"] == "1733300222.000300")
        .and_then(|p| p["text"].as_str())
        .unwrap()
        .to_string();
    assert!(answer.contains(&name) && answer.contains("peer"), "{answer}");
    assert!(answer.contains("answered by the offline router"), "{answer}");
    assert!(!answer.contains("Proposed"), "{answer}");

    // The slash command: acknowledged at once, answered in the channel.
    let command = form_body(&[
        ("command", "/pivotwatch"),
        ("text", "hunt top 5 devices by bytes sent to the internet this week"),
        ("user_id", "U0HANK"),
        ("channel_id", "C0SOC"),
        ("response_url", &format!("{}/hooks/commands/T0/1", slack_url.trim_end_matches("/api"))),
    ]);
    let (status, body, took) =
        server.slack("/v1/slack/commands", &command, true, now(), true).await;
    assert_eq!((status, body["response_type"].as_str()), (200, Some("ephemeral")), "{body}");
    assert!(took < Duration::from_secs(3));
    let answered = wait_for(&slack, "/hooks/commands/T0/1", 1).await;
    assert_eq!(answered[0]["response_type"], "in_channel");
    assert!(
        answered[0]["text"].as_str().unwrap().contains("sort desc bytes_up"),
        "{}",
        answered[0]
    );
    // Someone not in the users file, or without the role, is told so and nothing runs.
    let stranger = form_body(&[
        ("text", "hunt anything"),
        ("user_id", "U0NOBODY"),
        ("response_url", "http://127.0.0.1:9/x"),
    ]);
    let (_, body, _) = server.slack("/v1/slack/commands", &stranger, true, now(), true).await;
    assert!(body["text"].as_str().unwrap().contains("not in pivotwatch's users file"));
    let viewer = form_body(&[
        ("text", "hunt anything"),
        ("user_id", "U0VERA"),
        ("response_url", "http://127.0.0.1:9/x"),
    ]);
    let (_, body, _) = server.slack("/v1/slack/commands", &viewer, true, now(), true).await;
    assert!(body["text"].as_str().unwrap().contains("vera lacks the role"), "{body}");

    // The approve button, pressed by an approver mapped from their Slack id.
    let proposal = server.propose_comment().await;
    let payload = json!({"type": "block_actions", "user": {"id": "U0ABE"},
        "response_url": format!("{}/hooks/actions/T0/2", slack_url.trim_end_matches("/api")),
        "actions": [{"action_id": "approve", "value": proposal.id, "type": "button"}]});
    let (status, _, _) = server
        .slack(
            "/v1/slack/interactions",
            &form_body(&[("payload", &payload.to_string())]),
            true,
            now(),
            true,
        )
        .await;
    assert_eq!(status, 200);
    let updated = wait_for(&slack, "/hooks/actions/T0/2", 1).await;
    assert!(updated[0]["text"].as_str().unwrap().contains("approved by abe"), "{}", updated[0]);
    let after = server.state.gate.get(&proposal.id).await.unwrap();
    assert_ne!(after.state.as_str(), "proposed");
    let _ = server.stop.send(true);
}
