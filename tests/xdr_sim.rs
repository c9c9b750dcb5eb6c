//! `CortexXdr` against `xdr-sim`, the replay tenant served over the public API on
//! 127.0.0.1: the client must get from HTTP exactly what `Replay` answers in process,
//! through pending queries, streams, both key types and the tenant's refusals.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use pivotwatch::ingest::sim::{CONN_LOG_FILE, INVENTORY_FILE, SimConfig, simulate};
use pivotwatch::xdr::replay::Replay;
use pivotwatch::xdr::sim::{SimConfig as TenantConfig, XdrSim};
use pivotwatch::xdr::{
    ApiKey, CortexConfig, CortexXdr, IncidentQuery, IncidentUpdate, KeyType, ParsedAlert,
    RetryPolicy, Xdr, XdrError, XqlPolling, XqlRequest, rows::normalize_row,
};

const KEY_ID: &str = "17";
const KEY: &str = "replay-key-for-tests-0123456789";

/// One simulated fleet loaded into a replay data directory, shared by every test; each
/// test opens its own `Replay` on it (and its own server) so state does not leak
/// between tests that write.
fn data_dir() -> &'static TempDir {
    static DIR: OnceLock<TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = TempDir::new().unwrap();
        let sim = dir.path().join("sim");
        let cfg = SimConfig { devices: 16, days: 2, seed: 5, start: SimConfig::DEFAULT_START };
        simulate(&cfg, &sim).unwrap();
        Replay::load(dir.path(), Some(&sim.join(INVENTORY_FILE)), &[sim.join(CONN_LOG_FILE)])
            .unwrap();
        dir
    })
}

/// A private copy of the tenant, so tests that write (alerts, updates) stay apart.
fn private_tenant() -> (TempDir, Replay) {
    let dir = TempDir::new().unwrap();
    let from = data_dir().path().join("replay");
    let to = dir.path().join("replay");
    copy_dir(&from, &to);
    let replay = Replay::open(dir.path()).unwrap();
    (dir, replay)
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

struct Served {
    _dir: TempDir,
    base_url: String,
    replay: Replay,
}

async fn serve(key_type: KeyType, latency: Duration) -> Served {
    let (dir, replay) = private_tenant();
    let config = TenantConfig {
        key_id: KEY_ID.into(),
        key: ApiKey::new(KEY),
        key_type,
        query_latency: latency,
    };
    let sim = Arc::new(XdrSim::new(Replay::open(dir.path()).unwrap(), config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sim.router()).await.unwrap() });
    Served { _dir: dir, base_url: format!("http://{addr}"), replay }
}

fn client(base_url: &str, key_type: KeyType, key: &str) -> CortexXdr {
    let mut config = CortexConfig::new(base_url, KEY_ID, ApiKey::new(key), key_type);
    config.timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: 2,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    config.xql = XqlPolling {
        first_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_wait: Duration::from_secs(20),
        max_in_flight: 4,
    };
    CortexXdr::new(config).unwrap()
}

fn sorted(mut rows: Vec<serde_json::Map<String, Value>>) -> Vec<String> {
    rows.iter_mut().for_each(normalize_row);
    let mut text: Vec<String> = rows.iter().map(|r| Value::Object(r.clone()).to_string()).collect();
    text.sort();
    text
}

/// The rows `Replay` gives in process, as the client would see them after
/// normalisation (`"NULL"` → null and so on).
fn in_process(replay: &Replay, query: &str) -> Vec<String> {
    sorted(replay.query(query, None).unwrap().to_rows())
}

#[tokio::test]
async fn inline_results_over_http_equal_the_tenant_in_process() {
    let served = serve(KeyType::Advanced, Duration::from_millis(60)).await;
    let xdr = client(&served.base_url, KeyType::Advanced, KEY);
    let query = "dataset = xdr_data | filter action_remote_port = 443 \
                 | comp count() as n, sum(action_total_upload) as up by action_local_ip";
    let result = xdr.run_xql(&XqlRequest::new(query)).await.unwrap();
    assert!(result.rows.len() > 3, "several devices speak HTTPS: {}", result.rows.len());
    assert!(result.rows.len() <= 1000);
    assert_eq!(sorted(result.rows), in_process(&served.replay, query));
    assert!(result.query_cost.unwrap() > 0.0);
}

#[tokio::test]
async fn results_above_a_thousand_rows_arrive_as_a_stream_with_the_same_rows() {
    let served = serve(KeyType::Standard, Duration::from_millis(10)).await;
    let xdr = client(&served.base_url, KeyType::Standard, KEY);
    let query = "dataset = xdr_data | fields _time, action_local_ip, action_remote_ip, \
                 action_remote_port | limit 2500";
    let result = xdr.run_xql(&XqlRequest::new(query)).await.unwrap();
    assert_eq!(result.rows.len(), 2500);
    // `_time` travelled as "YYYY-MM-DD HH:MM:SS UTC" text and came back as milliseconds.
    assert!(result.rows[0]["_time"].is_i64(), "{:?}", result.rows[0]);
    assert_eq!(sorted(result.rows), in_process(&served.replay, query));
}

/// A raw caller of the wire, to see what the tenant says before a client interprets it.
async fn post(base_url: &str, call: &str, headers: &[(&str, String)], body: Value) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut request = http.post(format!("{base_url}/public_api/v1/{call}")).json(&body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn standard_headers(key: &str) -> Vec<(&'static str, String)> {
    vec![("x-xdr-auth-id", KEY_ID.into()), ("authorization", key.into())]
}

fn advanced_headers(nonce: &str, timestamp_ms: i64) -> Vec<(&'static str, String)> {
    let mut hasher = Sha256::new();
    hasher.update(format!("{KEY}{nonce}{timestamp_ms}").as_bytes());
    let signature: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
    vec![
        ("x-xdr-auth-id", KEY_ID.into()),
        ("x-xdr-nonce", nonce.into()),
        ("x-xdr-timestamp", timestamp_ms.to_string()),
        ("authorization", signature),
    ]
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test]
async fn a_query_is_pending_until_its_latency_has_passed() {
    let served = serve(KeyType::Standard, Duration::from_millis(300)).await;
    let headers = standard_headers(KEY);
    let start = json!({"request_data": {"query": "dataset = asset_inventory | limit 3"}});
    let (status, started) = post(&served.base_url, "xql/start_xql_query", &headers, start).await;
    assert_eq!(status, 200, "{started}");
    let query_id = started["reply"].as_str().unwrap().to_string();
    assert!(query_id.ends_with("_inv"), "{query_id}");

    let poll = json!({"request_data": {"query_id": query_id, "pending_flag": true, "limit": 100}});
    let (_, first) = post(&served.base_url, "xql/get_query_results", &headers, poll.clone()).await;
    assert_eq!(first["reply"]["status"], "PENDING", "{first}");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let (_, done) = post(&served.base_url, "xql/get_query_results/", &headers, poll).await;
    assert_eq!(done["reply"]["status"], "SUCCESS", "{done}");
    assert_eq!(done["reply"]["number_of_results"], 3);
    assert_eq!(done["reply"]["results"]["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_tenant_checks_both_key_types() {
    let standard = serve(KeyType::Standard, Duration::ZERO).await;
    let quota = json!({"request_data": {}});
    let (ok, _) =
        post(&standard.base_url, "xql/get_quota", &standard_headers(KEY), quota.clone()).await;
    assert_eq!(ok, 200);
    let (status, body) =
        post(&standard.base_url, "xql/get_quota", &standard_headers("wrong"), quota.clone()).await;
    assert_eq!(status, 401, "{body}");
    let wrong = client(&standard.base_url, KeyType::Standard, "wrong");
    assert!(matches!(wrong.xql_quota().await, Err(XdrError::Unauthorized { .. })));

    let advanced = serve(KeyType::Advanced, Duration::ZERO).await;
    let nonce = "n".repeat(64);
    let fresh = advanced_headers(&nonce, now_ms());
    let (ok, body) = post(&advanced.base_url, "xql/get_quota", &fresh, quota.clone()).await;
    assert_eq!(ok, 200, "{body}");
    // The same nonce again is a replay.
    let (replayed, body) = post(&advanced.base_url, "xql/get_quota", &fresh, quota.clone()).await;
    assert_eq!(replayed, 401);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("nonce"), "{body}");
    // A signature made ten minutes ago is outside the clock window.
    let stale = advanced_headers(&"s".repeat(64), now_ms() - 600_000);
    let (status, body) = post(&advanced.base_url, "xql/get_quota", &stale, quota.clone()).await;
    assert_eq!(status, 401);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("clock"), "{body}");
    // A standard key sent to a tenant that expects an advanced one.
    let (status, _) =
        post(&advanced.base_url, "xql/get_quota", &standard_headers(KEY), quota).await;
    assert_eq!(status, 401);
    // And the client signs correctly, request after request.
    let xdr = client(&advanced.base_url, KeyType::Advanced, KEY);
    for _ in 0..3 {
        assert_eq!(xdr.xql_quota().await.unwrap().license_quota, Some(5.0));
    }
}

#[tokio::test]
async fn no_more_than_four_queries_run_at_once() {
    let served = serve(KeyType::Standard, Duration::from_secs(30)).await;
    let headers = standard_headers(KEY);
    let start = json!({"request_data": {"query": "dataset = asset_inventory | limit 1"}});
    for _ in 0..4 {
        let (status, _) =
            post(&served.base_url, "xql/start_xql_query", &headers, start.clone()).await;
        assert_eq!(status, 200);
    }
    let (status, body) = post(&served.base_url, "xql/start_xql_query", &headers, start).await;
    assert_eq!(status, 500);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("concurrent"), "{body}");
}

#[tokio::test]
async fn bad_queries_and_bad_requests_are_refused_with_the_reason() {
    let served = serve(KeyType::Standard, Duration::ZERO).await;
    let xdr = client(&served.base_url, KeyType::Standard, KEY);

    let syntax = xdr.run_xql(&XqlRequest::new("dataset = xdr_data | fitler x = 1")).await;
    match syntax {
        Err(XdrError::XqlParse { message }) => assert!(message.contains("filter"), "{message}"),
        other => panic!("expected a parse error, got {other:?}"),
    }
    let unknown = xdr
        .run_xql(&XqlRequest::new("dataset = xdr_data | filter action_remot_ip = \"1.2.3.4\""))
        .await;
    match unknown {
        Err(XdrError::XqlParse { message }) => {
            assert!(message.contains("action_remote_ip"), "{message}");
        }
        other => panic!("expected a schema error, got {other:?}"),
    }

    let headers = standard_headers(KEY);
    let writes = json!({"request_data": {"query": "dataset = xdr_data | target type=dataset x"}});
    let (status, body) = post(&served.base_url, "xql/start_xql_query", &headers, writes).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("refused"), "{body}");

    let (status, body) =
        post(&served.base_url, "xql/start_xql_query", &headers, json!({"query": "x"})).await;
    assert_eq!(status, 400);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("request_data"), "{body}");

    let unknown_field = json!({"request_data": {"query": "dataset = xdr_data", "tiemframe": {}}});
    let (status, body) =
        post(&served.base_url, "xql/start_xql_query", &headers, unknown_field).await;
    assert_eq!(status, 400);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("tiemframe"), "{body}");

    let (status, _) =
        post(&served.base_url, "incidents/get_nothing", &headers, json!({"request_data": {}}))
            .await;
    assert_eq!(status, 404);

    let big_page = json!({"request_data": {"search_from": 0, "search_to": 500}});
    let (status, body) =
        post(&served.base_url, "incidents/get_incidents", &headers, big_page).await;
    assert_eq!(status, 400);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("100"), "{body}");
}

#[tokio::test]
async fn alerts_become_incidents_that_the_client_lists_and_updates() {
    let served = serve(KeyType::Advanced, Duration::ZERO).await;
    let xdr = client(&served.base_url, KeyType::Advanced, KEY);
    let device = served.replay.inventory().devices()[0].clone();
    let alert = ParsedAlert {
        product: "pivotwatch".into(),
        vendor: "pivotwatch".into(),
        local_ip: Some(device.ip.to_string()),
        local_port: Some(50_000),
        remote_ip: Some("203.0.113.9".into()),
        remote_port: Some(22),
        event_timestamp: Some(served.replay.now_ms()),
        severity: "High".into(),
        alert_name: "outbound SSH from a medical device".into(),
        alert_description: Some("new conversation tcp/22 to external".into()),
        action_status: None,
        local_ip_v6: None,
        remote_ip_v6: None,
        extra: serde_json::Map::new(),
    };
    xdr.insert_parsed_alerts(std::slice::from_ref(&alert)).await.unwrap();

    let page = xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    assert_eq!(page.total_count, Some(1), "{page:?}");
    let incident = &page.items[0];
    let update =
        IncidentUpdate { comment: Some("looked at by an analyst".into()), ..Default::default() };
    xdr.update_incident(&incident.incident_id, &update).await.unwrap();

    // The update is kept by the tenant, on disk, as the in-process view shows.
    let reopened = Replay::open(served._dir.path()).unwrap();
    let listed = reopened
        .list_wire(
            pivotwatch::xdr::replay::records::ListKind::Incidents,
            &IncidentQuery::new().to_request(),
        )
        .unwrap();
    assert_eq!(listed.0, 1);
    let comments = listed.1[0]["comments"].as_array().unwrap();
    assert_eq!(comments[0]["comment"], "looked at by an analyst");
    let extra = xdr.incident_extra_data(&incident.incident_id, 10).await.unwrap();
    assert_eq!(extra.alerts.data.len(), 1);
}

#[tokio::test]
async fn the_per_minute_alert_budget_is_enforced() {
    let served = serve(KeyType::Standard, Duration::ZERO).await;
    let headers = standard_headers(KEY);
    let line = "CEF:0|pivotwatch|pivotwatch|0.1|1|new conversation|8|src=10.1.1.1 dhost=cam-1";
    let batch: Vec<&str> = vec![line; 300];
    for _ in 0..2 {
        let (status, body) = post(
            &served.base_url,
            "alerts/insert_cef_alerts",
            &headers,
            json!({"request_data": {"alerts": batch}}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = post(
        &served.base_url,
        "alerts/insert_cef_alerts",
        &headers,
        json!({"request_data": {"alerts": [line]}}),
    )
    .await;
    assert_eq!(status, 429);
    assert!(body["reply"]["err_msg"].as_str().unwrap().contains("Rate limit exceeded"));
}
