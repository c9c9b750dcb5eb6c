//! `CortexXdr` against a tenant stand-in on 127.0.0.1 that speaks the Cortex XDR wire
//! format: `POST /public_api/v1/<call>` with `{"request_data": ...}`, answers
//! `{"reply": ...}` taken from the recorded samples in `tests/data/xdr/`, checks both
//! key schemes (it recomputes the advanced signature), and records every request so the
//! tests can check bodies. Tests script answers per call to provoke pending queries,
//! streams, errors, rate limits and silence.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, Uri};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use pivotwatch::xdr::types::{
    AlertsByFilterReply, AlertsReply, AuditLogsReply, EndpointsReply, Envelope, IncidentsReply,
    InsertIndicatorsReply, QueryResultsReply,
};
use pivotwatch::xdr::{
    ActionStatus, AlertQuery, ApiKey, CortexConfig, CortexXdr, Endpoint, EndpointAction,
    EndpointFilter, EndpointQuery, IncidentExtraData, IncidentFilter, IncidentQuery,
    IncidentSeverity, IncidentSort, IncidentStatus, IncidentUpdate, KeyType, ParsedAlert,
    QueryStatus, RetryPolicy, Row, SortOrder, Timeframe, Xdr, XdrError, XqlPolling, XqlRequest,
    collect_pages, rows::normalize_row,
};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/xdr");
const KEY_ID: &str = "62";
const KEY: &str = "k3y-for-tests-only-0123456789abcdef";

// ---- the tenant stand-in ---------------------------------------------------------

#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
    /// Never answer.
    hang: bool,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply { status, body: body.to_string().into_bytes(), headers: Vec::new(), hang: false }
    }

    fn ok(reply: Value) -> Reply {
        Reply::json(200, json!({ "reply": reply }))
    }

    fn sample(name: &str) -> Reply {
        Reply { status: 200, body: sample(name), headers: Vec::new(), hang: false }
    }

    fn error(status: u16, message: &str, extra: Value) -> Reply {
        Reply::json(
            status,
            json!({"reply": {"err_code": status, "err_msg": message, "err_extra": extra}}),
        )
    }

    fn bytes(body: Vec<u8>) -> Reply {
        Reply { status: 200, body, headers: Vec::new(), hang: false }
    }

    fn hang() -> Reply {
        Reply { status: 200, body: Vec::new(), headers: Vec::new(), hang: true }
    }

    fn with_header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }
}

enum Auth {
    Standard,
    /// The tenant's clock runs `clock_offset_ms` ahead of this host's.
    Advanced {
        clock_offset_ms: i64,
    },
}

struct Recorded {
    /// The path below `/public_api/v1/` exactly as sent.
    path: String,
    headers: HeaderMap,
    body: Value,
}

struct Tenant {
    auth: Auth,
    scripted: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: HashMap<&'static str, Reply>,
    requests: Mutex<Vec<Recorded>>,
    seen_nonces: Mutex<HashSet<String>>,
}

impl Tenant {
    fn new(auth: Auth) -> Tenant {
        let defaults = HashMap::from([
            ("xql/start_xql_query", Reply::sample("ebarti_conftest__start_xql_response.json")),
            (
                "xql/get_query_results",
                Reply::sample("ebarti_conftest__get_xql_results_response.json"),
            ),
            (
                "xql/get_query_results_stream",
                Reply::bytes(gzip(&sample(
                    "ebarti_conftest__get_xql_result_stream_response.ndjson",
                ))),
            ),
            (
                "xql/get_quota",
                Reply::ok(
                    json!({"license_quota": 5, "additional_purchased_quota": 0, "used_quota": 0.25, "eval_quota": 0}),
                ),
            ),
            ("incidents/get_incidents", Reply::sample("get_incidents_list.json")),
            ("incidents/get_incident_extra_data", Reply::sample("get_incident_extra_data.json")),
            ("incidents/update_incident", Reply::ok(json!(true))),
            (
                "alerts/get_alerts_multi_events",
                Reply::sample("ebarti_conftest__get_alerts_response.json"),
            ),
            ("alerts/insert_parsed_alerts", Reply::ok(json!(true))),
            ("alerts/insert_cef_alerts", Reply::sample("insert_cef_alerts.json")),
            (
                "endpoints/get_endpoint",
                Reply::sample("ebarti_conftest__get_endpoint_response.json"),
            ),
            (
                "endpoints/isolate",
                Reply::sample("ebarti_conftest__get_isolate_endpoints_response.json"),
            ),
            (
                "endpoints/unisolate",
                Reply::sample("ebarti_conftest__get_isolate_endpoints_response.json"),
            ),
            ("actions/get_action_status", Reply::sample("ebarti_conftest__get_action_status.json")),
            ("audits/management_logs", Reply::sample("get_audit_management_logs.json")),
        ]);
        Tenant {
            auth,
            scripted: Mutex::new(HashMap::new()),
            defaults,
            requests: Mutex::new(Vec::new()),
            seen_nonces: Mutex::new(HashSet::new()),
        }
    }

    /// The next answers to `call` (a path without trailing slash), before the default.
    fn script(&self, call: &str, replies: impl IntoIterator<Item = Reply>) {
        self.scripted.lock().unwrap().entry(call.to_string()).or_default().extend(replies);
    }

    fn requests_to(&self, call: &str) -> Vec<Value> {
        let requests = self.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path.trim_end_matches('/') == call)
            .map(|r| r.body.clone())
            .collect()
    }

    fn paths(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().map(|r| r.path.clone()).collect()
    }

    fn answer(&self, call: &str) -> Option<Reply> {
        let scripted = self.scripted.lock().unwrap().get_mut(call).and_then(VecDeque::pop_front);
        scripted.or_else(|| self.defaults.get(call).cloned())
    }

    fn check_auth(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        if header(headers, "x-xdr-auth-id") != Some(KEY_ID) {
            return Err("Unauthorized");
        }
        let authorization = header(headers, "authorization").unwrap_or_default();
        match self.auth {
            Auth::Standard if authorization == KEY => Ok(()),
            Auth::Standard => Err("Unauthorized"),
            Auth::Advanced { clock_offset_ms } => {
                let refused = "API request Unauthorized";
                let nonce = header(headers, "x-xdr-nonce").ok_or(refused)?;
                let stamp = header(headers, "x-xdr-timestamp").ok_or(refused)?;
                if nonce.len() != 64 || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(refused);
                }
                let sent_ms: i64 = stamp.parse().map_err(|_| refused)?;
                let tenant_now = unix_ms() + clock_offset_ms;
                if (tenant_now - sent_ms).abs() > 5 * 60 * 1000 {
                    return Err(refused);
                }
                let expected: String = Sha256::digest(format!("{KEY}{nonce}{stamp}"))
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if authorization != expected {
                    return Err(refused);
                }
                if !self.seen_nonces.lock().unwrap().insert(nonce.to_string()) {
                    return Err(refused);
                }
                Ok(())
            }
        }
    }
}

async fn handle(
    State(tenant): State<Arc<Tenant>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let Some(path) = uri.path().strip_prefix("/public_api/v1/") else {
        return respond(Reply::json(
            404,
            json!({"reply": {"err_code": 404, "err_msg": "Not Found"}}),
        ));
    };
    let path = path.to_string();
    let call = path.trim_end_matches('/').to_string();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    tenant.requests.lock().unwrap().push(Recorded {
        path,
        headers: headers.clone(),
        body: body.clone(),
    });

    if method != Method::POST {
        return respond(Reply::error(405, "Method Not Allowed", Value::Null));
    }
    if let Err(message) = tenant.check_auth(&headers) {
        return respond(Reply::error(401, message, Value::Null));
    }
    if !body.get("request_data").is_some_and(Value::is_object) {
        return respond(Reply::error(400, "Bad Request", json!("request_data is missing")));
    }
    let Some(reply) = tenant.answer(&call) else {
        return respond(Reply::error(404, "Not Found", Value::Null));
    };
    if reply.hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    respond(reply)
}

fn respond(reply: Reply) -> Response<Body> {
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(*name, value);
    }
    response.body(Body::from(reply.body)).unwrap()
}

/// Serves `tenant` on an ephemeral port of 127.0.0.1 and returns its base URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

async fn start(auth: Auth) -> (Arc<Tenant>, String) {
    let tenant = Arc::new(Tenant::new(auth));
    let router = Router::new().fallback(handle).with_state(tenant.clone());
    (tenant, serve(router).await)
}

/// Quick back-off and polling, so that retries and pending queries take milliseconds.
fn config(base_url: &str, key_type: KeyType, key: &str) -> CortexConfig {
    let mut config = CortexConfig::new(base_url, KEY_ID, ApiKey::new(key), key_type);
    config.timeout = Duration::from_secs(5);
    config.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
    };
    config.xql = XqlPolling {
        first_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        max_wait: Duration::from_secs(20),
        max_in_flight: 4,
    };
    config
}

fn client(base_url: &str, key_type: KeyType) -> CortexXdr {
    CortexXdr::new(config(base_url, key_type, KEY)).unwrap()
}

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!("{DATA}/{name}")).unwrap()
}

fn reply_of<T: DeserializeOwned>(name: &str) -> T {
    let envelope: Envelope<T> = serde_json::from_slice(&sample(name))
        .unwrap_or_else(|err| panic!("{name} does not deserialise: {err}"));
    envelope.reply
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Epoch milliseconds written the way the result stream writes them.
fn stream_stamp(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:03} UTC",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.millisecond()
    )
}

fn parsed_alert(n: usize) -> ParsedAlert {
    serde_json::from_value(json!({
        "product": "pivotwatch", "vendor": "pivotwatch",
        "local_ip": "10.20.0.15", "local_port": "502",
        "remote_ip": "203.0.113.9", "remote_port": 4444,
        "event_timestamp": 1_700_000_000_000_i64 + n as i64,
        "severity": "High", "alert_name": format!("new outbound peer {n}"),
        "alert_description": "PLC reached an external host it never talked to"
    }))
    .unwrap()
}

// ---- samples ---------------------------------------------------------------------

#[test]
fn every_sample_deserialises_into_its_type() {
    let incidents: IncidentsReply = reply_of("get_incidents_list.json");
    assert_eq!(incidents.incidents.len(), 2);
    assert_eq!(incidents.incidents[0].status.as_deref(), Some("under_investigation"));

    let incidents: IncidentsReply = reply_of("ebarti_conftest__get_incidents_response.json");
    assert_eq!(incidents.incidents[0].users, ["test_1", "test_2"]);
    assert_eq!(incidents.incidents[0].rule_based_score, Some(342.0));

    let extra: IncidentExtraData = reply_of("get_incident_extra_data.json");
    assert_eq!(
        extra.file_artifacts.data[0].file_name.as_deref(),
        Some("wildfire-test-pe-file.exe")
    );
    assert_eq!(extra.alerts.data[0].host_ip, ["1.1.1.1."]);
    assert_eq!(extra.alerts.data[0].is_whitelisted, Some(false), "\"No\" is read as false");

    let extra: IncidentExtraData =
        reply_of("ebarti_conftest__get_incident_extra_data_response.json");
    assert_eq!(extra.network_artifacts.total_count, Some(2));
    assert_eq!(extra.network_artifacts.data[1].network_remote_port, Some(80));
    assert_eq!(extra.alerts.data[0].extra["action_local_port"], json!(80));

    let alerts: AlertsReply = reply_of("ebarti_conftest__get_alerts_response.json");
    assert_eq!(alerts.total_count, Some(45));
    let alert = &alerts.alerts[0];
    assert_eq!(alert.events[0].event_type.as_deref(), Some("Process Execution"));
    assert!(alert.extra.contains_key("attempt_counter"), "unknown fields are kept");

    let filtered: AlertsByFilterReply = reply_of("get_alerts_by_filter_results.json");
    assert_eq!(filtered.alerts[0].alert_fields["severity"], json!("SEV_030_MEDIUM"));

    let endpoints: EndpointsReply = reply_of("ebarti_conftest__get_endpoint_response.json");
    assert_eq!(endpoints.endpoints[0].is_isolated.as_deref(), Some("AGENT_UNISOLATED"));

    let legacy: Vec<Endpoint> = reply_of("ebarti_conftest__get_all_endpoints_response.json");
    assert_eq!(legacy.len(), 7);
    assert_eq!(legacy[0].endpoint_name.as_deref(), Some("EX2"));
    assert_eq!(legacy[0].endpoint_status.as_deref(), Some("LOST"));

    for name in [
        "ebarti_conftest__get_isolate_endpoints_response.json",
        "ebarti_conftest__get_scan_endpoints_response.json",
    ] {
        let action: EndpointAction = reply_of(name);
        assert_eq!(action.endpoints_count, Some(673), "{name}");
    }

    let status: ActionStatus = reply_of("ebarti_conftest__get_action_status.json");
    assert_eq!(status.data["<agent ID>"], "COMPLETED_SUCCESSFULLY");

    let audits: AuditLogsReply = reply_of("get_audit_management_logs.json");
    assert_eq!(audits.data[0].audit_owner_email.as_deref(), Some("woo@demisto.com"));
    assert_eq!(audits.data[2].audit_insert_time, Some(1_575_795_537_242));

    let id: String = reply_of("ebarti_conftest__start_xql_response.json");
    assert_eq!(id, "543gdf");
    let results: QueryResultsReply = reply_of("ebarti_conftest__get_xql_results_response.json");
    assert_eq!(results.status, QueryStatus::Success);
    assert_eq!(results.results.unwrap().data.unwrap().len(), 3);

    let inserted: bool = reply_of("insert_cef_alerts.json");
    assert!(inserted);
    let indicators: InsertIndicatorsReply =
        reply_of("ebarti_conftest__post_insert_json_response.json");
    assert_eq!(indicators.validation_errors[0].indicator, "testtest.com");

    let stream =
        String::from_utf8(sample("ebarti_conftest__get_xql_result_stream_response.ndjson"))
            .unwrap();
    for line in stream.lines() {
        let mut row: Row = serde_json::from_str(line).unwrap();
        normalize_row(&mut row);
        assert!(row["_time"].is_i64() && row["insert_timestamp"].is_i64());
        assert!(row["event_sub_type"].is_null());
    }

    // A new sample must be added above, not silently skipped.
    let checked = 17;
    let files = std::fs::read_dir(DATA)
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().file_name() != "SOURCES.md")
        .count();
    assert_eq!(files, checked, "every file in tests/data/xdr is checked here");
}

#[tokio::test]
async fn the_client_reads_every_sample_over_http() {
    let (tenant, base) = start(Auth::Standard).await;
    let xdr: Arc<dyn Xdr> = Arc::new(client(&base, KeyType::Standard));

    let incidents = xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    assert_eq!((incidents.total_count, incidents.result_count), (Some(1), 1));
    assert_eq!(incidents.items[1].incident_id, "2");
    assert_eq!(incidents.items[1].severity.as_deref(), Some("high"));

    let extra = xdr.incident_extra_data("1", 1000).await.unwrap();
    assert_eq!(extra.incident.incident_id, "1");
    assert_eq!(extra.alerts.data[0].name.as_deref(), Some("Local Analysis Malware"));
    assert_eq!(extra.file_artifacts.total_count, Some(1));

    let alerts = xdr.alerts_multi_events(&AlertQuery::new()).await.unwrap();
    assert_eq!(alerts.total_count, Some(45));
    assert_eq!(alerts.items[0].host_ip, ["127.0.0.1"]);
    assert!(!alerts.items[0].events.is_empty());

    let endpoints = xdr.get_endpoints(&EndpointQuery::new()).await.unwrap();
    assert_eq!(endpoints.items[0].endpoint_status.as_deref(), Some("CONNECTED"));
    assert_eq!(endpoints.items[0].ip, ["127.0.0.1"]);

    let action = xdr.isolate_endpoint("<endpoint ID>", None).await.unwrap();
    assert_eq!(action.action_id, "<action ID>");
    let action = xdr.unisolate_endpoint("<endpoint ID>", None).await.unwrap();
    assert_eq!(action.status.as_deref(), Some("1"));
    let status = xdr.action_status(&action.action_id).await.unwrap();
    assert_eq!(status.data.get("<agent ID>").map(String::as_str), Some("COMPLETED_SUCCESSFULLY"));

    let audits = xdr.audit_management_logs(&Default::default()).await.unwrap();
    assert_eq!((audits.total_count, audits.result_count), (None, 3));
    assert_eq!(audits.items[2].audit_entity.as_deref(), Some("DISTRIBUTIONS"));

    let quota = xdr.xql_quota().await.unwrap();
    assert_eq!(quota.used_quota, Some(0.25));

    let result = xdr.run_xql(&XqlRequest::new("dataset = xdr_data | limit 3")).await.unwrap();
    assert_eq!(result.rows.len(), 3);
    assert_eq!(result.rows[0]["_time"], json!(1_621_541_523_000_i64));
    assert!(result.rows[0]["event_sub_type"].is_null(), "\"NULL\" is normalised");
    assert!((result.query_cost.unwrap() - 0.001_596_388_888_888_889).abs() < 1e-12);
    assert_eq!(result.remaining_quota, Some(4.998_403_611_111_111));

    xdr.insert_cef_alerts(&["CEF:0|pivotwatch|pivotwatch|0.1|1|new peer|8|".to_string()])
        .await
        .unwrap();
    xdr.update_incident("1", &IncidentUpdate { comment: Some("x".into()), ..Default::default() })
        .await
        .unwrap();

    let requests = tenant.requests.lock().unwrap();
    assert_eq!(requests.len(), 13);
    for sent in requests.iter() {
        let content_type = header(&sent.headers, "content-type");
        assert_eq!(content_type, Some("application/json"), "{}", sent.path);
    }
}

// ---- authentication --------------------------------------------------------------

#[tokio::test]
async fn a_standard_key_is_sent_as_is_and_a_wrong_one_is_unauthorized() {
    let (tenant, base) = start(Auth::Standard).await;
    client(&base, KeyType::Standard).xql_quota().await.unwrap();
    let sent = tenant.requests.lock().unwrap()[0].headers.clone();
    assert_eq!(header(&sent, "authorization"), Some(KEY));
    assert_eq!(header(&sent, "x-xdr-auth-id"), Some(KEY_ID));
    assert!(sent.get("x-xdr-nonce").is_none());

    let wrong = CortexXdr::new(config(&base, KeyType::Standard, "not-the-key")).unwrap();
    let err = wrong.list_incidents(&IncidentQuery::new()).await.unwrap_err();
    assert!(matches!(err, XdrError::Unauthorized { clock_skew_suspected: false, .. }), "{err:?}");
    assert!(!err.to_string().contains("not-the-key"));
    assert_eq!(tenant.requests_to("incidents/get_incidents").len(), 1, "401 is not retried");
}

#[tokio::test]
async fn an_advanced_key_signs_each_request_and_the_tenant_accepts_it() {
    let (tenant, base) = start(Auth::Advanced { clock_offset_ms: 0 }).await;
    let xdr = client(&base, KeyType::Advanced);
    for _ in 0..3 {
        xdr.xql_quota().await.unwrap();
    }
    xdr.run_xql(&XqlRequest::new("dataset = xdr_data")).await.unwrap();

    let requests = tenant.requests.lock().unwrap();
    let nonces: HashSet<&str> =
        requests.iter().filter_map(|r| header(&r.headers, "x-xdr-nonce")).collect();
    assert_eq!(nonces.len(), requests.len(), "a fresh nonce for every request");
    assert!(requests.iter().all(|r| header(&r.headers, "authorization") != Some(KEY)));
}

#[tokio::test]
async fn a_stale_advanced_timestamp_is_unauthorized_and_points_at_the_clock() {
    let ten_minutes = 10 * 60 * 1000;
    let (tenant, base) = start(Auth::Advanced { clock_offset_ms: ten_minutes }).await;
    let err = client(&base, KeyType::Advanced).xql_quota().await.unwrap_err();
    assert!(matches!(err, XdrError::Unauthorized { clock_skew_suspected: true, .. }), "{err:?}");
    assert!(err.to_string().contains("clock"), "{err}");
    assert_eq!(tenant.requests_to("xql/get_quota").len(), 1);

    let (_, base) = start(Auth::Advanced { clock_offset_ms: 0 }).await;
    let wrong = CortexXdr::new(config(&base, KeyType::Advanced, "other-key")).unwrap();
    let err = wrong.xql_quota().await.unwrap_err();
    assert!(matches!(err, XdrError::Unauthorized { .. }), "{err:?}");
}

// ---- XQL -------------------------------------------------------------------------

fn pending() -> Reply {
    Reply::ok(json!({"status": "PENDING", "number_of_results": 0, "results": null}))
}

#[tokio::test]
async fn xql_waits_out_pending_then_normalises_the_rows() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script("xql/start_xql_query", [Reply::ok(json!("061880b4867446_4356_inv"))]);
    tenant.script(
        "xql/get_query_results",
        [
            pending(),
            pending(),
            Reply::ok(json!({
                "status": "SUCCESS", "number_of_results": 1,
                "query_cost": {"tenant": 0.5}, "remaining_quota": 4.5,
                "results": {"data": [{
                    "action_local_ip": "10.20.0.15", "action_proxy": "FALSE",
                    "is_vdi": "TRUE", "dns_query_name": "NULL",
                    "_time": "2021-10-14 03:59:09.793 UTC"
                }]}
            })),
        ],
    );

    let request = XqlRequest::new("dataset = xdr_data | filter event_type = STORY")
        .with_timeframe(Timeframe::Relative { millis: 3_600_000 });
    let result = client(&base, KeyType::Standard).run_xql(&request).await.unwrap();

    assert_eq!(result.status, QueryStatus::Success);
    assert_eq!(
        Value::Object(result.rows[0].clone()),
        json!({
            "action_local_ip": "10.20.0.15", "action_proxy": false, "is_vdi": true,
            "dns_query_name": null, "_time": 1_634_183_949_793_i64
        })
    );

    let starts = tenant.requests_to("xql/start_xql_query");
    assert_eq!(
        starts,
        [json!({"request_data": {
            "query": "dataset = xdr_data | filter event_type = STORY",
            "timeframe": {"relativeTime": 3_600_000}
        }})]
    );
    let polls = tenant.requests_to("xql/get_query_results");
    assert_eq!(polls.len(), 3, "polled until the status left PENDING");
    assert_eq!(
        polls[0],
        json!({"request_data": {
            "query_id": "061880b4867446_4356_inv", "pending_flag": true,
            "limit": 1000, "format": "json"
        }})
    );
}

#[tokio::test]
async fn a_large_result_is_streamed_gunzipped_and_equals_its_inline_form() {
    let n_rows = 1500;
    let times_ms: Vec<i64> = (0..n_rows).map(|i| 1_621_331_968_000 + i * 1_001).collect();
    let inline: Vec<Value> = times_ms
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            json!({"event_id": format!("e{i}"), "_time": ms, "event_sub_type": "NULL",
                   "action_total_upload": i})
        })
        .collect();
    let streamed: String = times_ms
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            let row = json!({"event_id": format!("e{i}"), "_time": stream_stamp(*ms),
                             "event_sub_type": "NULL", "action_total_upload": i});
            format!("{row}\n")
        })
        .collect();
    assert!(streamed.contains(r#""_time":"2021-05-18 09:59:28.000 UTC""#), "stream text times");

    let (tenant, base) = start(Auth::Standard).await;
    tenant.script(
        "xql/get_query_results",
        [
            Reply::ok(json!({"status": "SUCCESS", "number_of_results": n_rows,
                             "results": {"stream_id": "a1b2-c3"}})),
            Reply::ok(json!({"status": "SUCCESS", "number_of_results": n_rows,
                             "results": {"data": inline}})),
        ],
    );
    tenant.script(
        "xql/get_query_results_stream",
        [Reply::bytes(gzip(streamed.as_bytes()))
            .with_header("content-type", "application/octet-stream")],
    );

    let xdr = client(&base, KeyType::Standard);
    let query = XqlRequest::new("dataset = xdr_data");
    let from_stream = xdr.run_xql(&query).await.unwrap();
    let from_json = xdr.run_xql(&query).await.unwrap();

    assert_eq!(from_stream.rows.len(), n_rows as usize);
    assert_eq!(from_stream.rows[0]["_time"], json!(1_621_331_968_000_i64));
    assert!(from_stream.rows[0]["event_sub_type"].is_null());
    assert_eq!(
        tenant.requests_to("xql/get_query_results_stream"),
        [json!({"request_data": {"stream_id": "a1b2-c3", "is_gzip_compressed": true}})]
    );
    assert_eq!(from_stream.rows, from_json.rows, "stream and inline rows look the same");
}

#[tokio::test]
async fn xql_syntax_and_quota_errors_are_typed_and_not_retried() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script(
        "xql/start_xql_query",
        [
            Reply::error(
                500,
                "Internal server error",
                json!({"parse_err": "unknown function: lowercse"}),
            ),
            Reply::error(500, "Query usage exceeded max daily quota", Value::Null),
        ],
    );
    let xdr = client(&base, KeyType::Standard);
    // The local parser takes any function name, so only the tenant finds this one.
    let query = XqlRequest::new("dataset = xdr_data | alter h = lowercse(agent_hostname)");

    let err = xdr.run_xql(&query).await.unwrap_err();
    assert_eq!(err, XdrError::XqlParse { message: "unknown function: lowercse".into() });
    assert_eq!(tenant.requests_to("xql/start_xql_query").len(), 1);

    let err = xdr.run_xql(&query).await.unwrap_err();
    assert!(matches!(err, XdrError::QuotaExceeded { .. }), "{err:?}");
    assert_eq!(tenant.requests_to("xql/start_xql_query").len(), 2);
    assert!(tenant.requests_to("xql/get_query_results").is_empty());
}

#[tokio::test]
async fn queries_that_could_write_or_do_not_parse_never_reach_the_tenant() {
    let (tenant, base) = start(Auth::Standard).await;
    let mut config = config(&base, KeyType::Standard, KEY);
    config.call_allow_list = vec!["iot_baseline".to_string()];
    let xdr = CortexXdr::new(config).unwrap();

    let err = xdr
        .run_xql(&XqlRequest::new(
            "dataset = xdr_data | fields agent_hostname | target type = dataset copy",
        ))
        .await
        .unwrap_err();
    assert!(matches!(&err, XdrError::QueryRefused { reasons } if reasons.len() == 1), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("query refused: line 1, column 46:") && text.contains("writes"),
        "{text}"
    );

    let err =
        xdr.run_xql(&XqlRequest::new("dataset = xdr_data | call exfil_helper")).await.unwrap_err();
    assert!(matches!(err, XdrError::QueryRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("`call exfil_helper`"), "{err}");

    // A timeframe from the caller does not make a write acceptable.
    let write = XqlRequest::new("dataset = xdr_data | target type = lookup iot_copy")
        .with_timeframe(Timeframe::Relative { millis: 3_600_000 });
    assert!(matches!(xdr.run_xql(&write).await, Err(XdrError::QueryRefused { .. })));

    let err = xdr.run_xql(&XqlRequest::new("dataset = xdr_data | fitler x = 1")).await.unwrap_err();
    assert!(
        matches!(&err, XdrError::XqlParse { message } if message.contains("unknown stage `fitler`")),
        "{err:?}"
    );
    assert!(tenant.paths().is_empty(), "nothing was sent: {:?}", tenant.paths());

    // A call of an allow-listed saved query is read-only and goes out.
    xdr.run_xql(&XqlRequest::new("dataset = xdr_data | call iot_baseline")).await.unwrap();
    assert_eq!(tenant.requests_to("xql/start_xql_query").len(), 1);
}

#[tokio::test]
async fn a_failed_query_is_reported_with_its_id() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script("xql/get_query_results", [Reply::ok(json!({"status": "FAIL"}))]);
    let err = client(&base, KeyType::Standard)
        .run_xql(&XqlRequest::new("dataset = xdr_data"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, XdrError::QueryFailed { query_id, .. } if query_id == "543gdf"),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_more_than_four_xql_queries_run_at_once() {
    #[derive(Default)]
    struct Load {
        started: usize,
        active: usize,
        most_active: usize,
    }

    async fn tenant(State(load): State<Arc<Mutex<Load>>>, uri: Uri) -> Response<Body> {
        let mut load = load.lock().unwrap();
        let reply = match uri.path().trim_end_matches('/') {
            "/public_api/v1/xql/start_xql_query" => {
                load.started += 1;
                load.active += 1;
                load.most_active = load.most_active.max(load.active);
                json!(format!("q{}", load.started))
            }
            // Queries stay pending until as many as allowed run together (or all ten
            // have started), so a missing limit shows up as more than four.
            "/public_api/v1/xql/get_query_results" if load.active < 4 && load.started < 10 => {
                json!({"status": "PENDING"})
            }
            "/public_api/v1/xql/get_query_results" => {
                load.active -= 1;
                json!({"status": "SUCCESS", "results": {"data": []}})
            }
            _ => return respond(Reply::error(404, "Not Found", Value::Null)),
        };
        respond(Reply::ok(reply))
    }

    let load = Arc::new(Mutex::new(Load::default()));
    let base = serve(Router::new().fallback(tenant).with_state(load.clone())).await;
    let xdr: Arc<dyn Xdr> = Arc::new(client(&base, KeyType::Standard));

    let mut queries = tokio::task::JoinSet::new();
    for i in 0..10 {
        let xdr = xdr.clone();
        queries.spawn(async move {
            xdr.run_xql(&XqlRequest::new(format!("dataset = xdr_data | limit {i}"))).await
        });
    }
    let results = tokio::time::timeout(Duration::from_secs(60), queries.join_all())
        .await
        .expect("the ten queries finish");
    assert!(results.iter().all(Result::is_ok));

    let load = load.lock().unwrap();
    assert_eq!(load.started, 10);
    assert_eq!(load.most_active, 4, "four at once, never more");
}

// ---- retries and failures --------------------------------------------------------

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_success() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script(
        "incidents/get_incidents",
        [
            Reply::error(429, "Too many requests", Value::Null).with_header("retry-after", "0"),
            Reply::error(500, "Rate limit exceeded", Value::Null),
            Reply::error(503, "Service Unavailable", Value::Null),
        ],
    );
    tenant.script(
        "alerts/insert_parsed_alerts",
        [Reply::error(429, "Too many requests", Value::Null).with_header("retry-after", "0")],
    );
    tenant.script("endpoints/isolate", [Reply::error(500, "Rate limit exceeded", Value::Null)]);
    let mut config = config(&base, KeyType::Standard, KEY);
    config.retry.max_attempts = 4;
    let xdr = CortexXdr::new(config).unwrap();

    let page = xdr.list_incidents(&IncidentQuery::new()).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(tenant.requests_to("incidents/get_incidents").len(), 4, "a read is repeated");

    // A rate-limited request was not processed, so even a write is sent again.
    xdr.insert_parsed_alerts(&[parsed_alert(0)]).await.unwrap();
    assert_eq!(tenant.requests_to("alerts/insert_parsed_alerts").len(), 2);
    xdr.isolate_endpoint("e1", None).await.unwrap();
    assert_eq!(tenant.requests_to("endpoints/isolate").len(), 2);
}

#[tokio::test]
async fn server_errors_end_calls_that_are_not_safe_to_repeat() {
    let (tenant, base) = start(Auth::Standard).await;
    let calls = [
        "endpoints/isolate",
        "endpoints/unisolate",
        "alerts/insert_parsed_alerts",
        "incidents/update_incident",
        "xql/start_xql_query",
    ];
    for call in calls {
        tenant.script(call, (0..3).map(|_| Reply::error(502, "Bad Gateway", Value::Null)));
    }
    let xdr = client(&base, KeyType::Standard);
    let update = IncidentUpdate { comment: Some("x".into()), ..Default::default() };

    let results = [
        xdr.isolate_endpoint("e1", None).await.map(drop),
        xdr.unisolate_endpoint("e1", None).await.map(drop),
        xdr.insert_parsed_alerts(&[parsed_alert(0)]).await,
        xdr.update_incident("7", &update).await,
        xdr.run_xql(&XqlRequest::new("dataset = xdr_data | limit 1")).await.map(drop),
    ];
    for (call, result) in calls.iter().zip(results) {
        let err = result.unwrap_err();
        assert!(matches!(err, XdrError::Server { status: 502, .. }), "{call}: {err:?}");
        assert_eq!(tenant.requests_to(call).len(), 1, "{call} was sent once");
    }
}

#[tokio::test]
async fn retries_are_bounded() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script(
        "endpoints/get_endpoint",
        (0..5).map(|_| Reply::error(502, "Bad Gateway", Value::Null)),
    );
    let err =
        client(&base, KeyType::Standard).get_endpoints(&EndpointQuery::new()).await.unwrap_err();
    assert!(matches!(err, XdrError::Server { status: 502, .. }), "{err:?}");
    assert_eq!(tenant.requests_to("endpoints/get_endpoint").len(), 3, "max_attempts is 3");
}

#[tokio::test]
async fn licence_and_permission_errors_are_typed_and_not_retried() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script(
        "xql/get_quota",
        [
            Reply::error(
                402,
                "User does not have the required license type to run this API",
                Value::Null,
            ),
            Reply::error(
                403,
                "The provided API Key does not have the required RBAC permissions to run this API",
                Value::Null,
            ),
        ],
    );
    let xdr = client(&base, KeyType::Standard);

    let err = xdr.xql_quota().await.unwrap_err();
    assert!(matches!(err, XdrError::LicenseRequired { .. }), "{err:?}");
    assert_eq!(tenant.requests_to("xql/get_quota").len(), 1);

    let err = xdr.xql_quota().await.unwrap_err();
    assert!(matches!(err, XdrError::Forbidden { .. }), "{err:?}");
    assert_eq!(tenant.requests_to("xql/get_quota").len(), 2);
}

#[tokio::test]
async fn a_silent_tenant_times_out_and_only_reads_are_repeated() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script("incidents/get_incidents", [Reply::hang(), Reply::hang()]);
    tenant.script("incidents/update_incident", [Reply::hang()]);
    let mut config = config(&base, KeyType::Standard, KEY);
    config.timeout = Duration::from_millis(300);
    config.retry.max_attempts = 2;
    let xdr = CortexXdr::new(config).unwrap();

    let started = std::time::Instant::now();
    let err = xdr.list_incidents(&IncidentQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, XdrError::Timeout { call, .. } if call == "incidents/get_incidents/"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(tenant.requests_to("incidents/get_incidents").len(), 2, "a read is repeated");

    let update =
        IncidentUpdate { status: Some(IncidentStatus::UnderInvestigation), ..Default::default() };
    let err = xdr.update_incident("7", &update).await.unwrap_err();
    assert!(matches!(err, XdrError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable(), "the caller may decide to repeat it");
    assert_eq!(tenant.requests_to("incidents/update_incident").len(), 1, "a write is not");
}

#[tokio::test]
async fn malformed_and_disguised_answers_are_errors_that_name_the_call() {
    let (tenant, base) = start(Auth::Standard).await;
    tenant.script("incidents/get_incidents", [Reply::ok(json!({"incidents": "not a list"}))]);
    let no_endpoint = "An error occurred: no endpoint was found for creating the requested action";
    tenant
        .script("endpoints/isolate", [Reply::ok(json!({"err_code": 500, "err_msg": no_endpoint}))]);
    tenant.script(
        "endpoints/get_endpoint",
        (0..3).map(|_| Reply::error(500, no_endpoint, Value::Null)),
    );
    let xdr = client(&base, KeyType::Standard);

    let err = xdr.list_incidents(&IncidentQuery::new()).await.unwrap_err();
    assert!(
        matches!(&err, XdrError::Decode { call, .. } if call == "incidents/get_incidents/"),
        "{err:?}"
    );
    assert!(err.to_string().contains("invalid type"), "{err}");

    let err = xdr.isolate_endpoint("e1", None).await.unwrap_err();
    assert_eq!(err, XdrError::NoEndpointFound { message: no_endpoint.into() });
    assert!(err.to_string().contains("check the endpoint id"), "{err}");
    assert_eq!(tenant.requests_to("endpoints/isolate").len(), 1);
    // The answer is final even for a call that could be repeated safely.
    let err = xdr.get_endpoints(&EndpointQuery::new()).await.unwrap_err();
    assert!(matches!(err, XdrError::NoEndpointFound { .. }), "{err:?}");
    assert_eq!(tenant.requests_to("endpoints/get_endpoint").len(), 1);

    let lost = client(&format!("{base}/somewhere-else"), KeyType::Standard);
    let err = lost.xql_quota().await.unwrap_err();
    assert!(matches!(err, XdrError::NotFound { .. }), "{err:?}");
}

// ---- request bodies --------------------------------------------------------------

#[tokio::test]
async fn request_bodies_follow_the_wire_format() {
    let (tenant, base) = start(Auth::Standard).await;
    // A base URL that already names the API root works the same.
    let xdr = client(&format!("{base}/public_api/v1/"), KeyType::Standard);

    let query = IncidentQuery::new()
        .filter(IncidentFilter::ModifiedFrom(1_700_000_000_000))
        .filter(IncidentFilter::IdIn(vec!["12".into(), "13".into()]))
        .sort(IncidentSort::ModificationTime, SortOrder::Desc)
        .page(0, 50);
    xdr.list_incidents(&query).await.unwrap();
    assert_eq!(
        tenant.requests_to("incidents/get_incidents"),
        [json!({"request_data": {
            "filters": [
                {"field": "modification_time", "operator": "gte", "value": 1_700_000_000_000_i64},
                {"field": "incident_id_list", "operator": "in", "value": ["12", "13"]}
            ],
            "search_from": 0, "search_to": 50,
            "sort": {"field": "modification_time", "keyword": "desc"}
        }})]
    );

    let update = IncidentUpdate {
        status: Some(IncidentStatus::ResolvedTruePositive),
        manual_severity: Some(IncidentSeverity::Critical),
        resolve_comment: Some("PLC beacon confirmed".into()),
        comment: Some("pivotwatch: risk 91, new external peer 203.0.113.9:4444".into()),
        ..Default::default()
    };
    xdr.update_incident("12", &update).await.unwrap();
    xdr.update_incident("12", &IncidentUpdate::default()).await.unwrap();
    assert_eq!(
        tenant.requests_to("incidents/update_incident"),
        [json!({"request_data": {
            "incident_id": "12",
            "update_data": {
                "status": "resolved_true_positive",
                "manual_severity": "critical",
                "resolve_comment": "PLC beacon confirmed",
                "comment": {"comment_action": "add",
                            "value": "pivotwatch: risk 91, new external peer 203.0.113.9:4444"}
            }
        }})],
        "an empty update sends nothing"
    );

    xdr.incident_extra_data("12", 50).await.unwrap();
    assert_eq!(
        tenant.requests_to("incidents/get_incident_extra_data"),
        [json!({"request_data": {"incident_id": "12", "alerts_limit": 50}})]
    );

    xdr.isolate_endpoint("e-9", Some("12")).await.unwrap();
    xdr.unisolate_endpoint("e-9", None).await.unwrap();
    assert_eq!(
        tenant.requests_to("endpoints/isolate"),
        [json!({"request_data": {"endpoint_id": "e-9", "incident_id": "12"}})]
    );
    assert_eq!(
        tenant.requests_to("endpoints/unisolate"),
        [json!({"request_data": {"endpoint_id": "e-9"}})]
    );

    xdr.action_status("2202").await.unwrap();
    assert_eq!(
        tenant.requests_to("actions/get_action_status"),
        [json!({"request_data": {"group_action_id": "2202"}})]
    );

    let endpoints = EndpointQuery::new().filter(EndpointFilter::IpIn(vec!["10.20.0.15".into()]));
    xdr.get_endpoints(&endpoints).await.unwrap();
    assert_eq!(
        tenant.requests_to("endpoints/get_endpoint")[0]["request_data"]["filters"],
        json!([{"field": "ip_list", "operator": "in", "value": ["10.20.0.15"]}])
    );

    xdr.xql_quota().await.unwrap();
    assert_eq!(tenant.requests_to("xql/get_quota"), [json!({"request_data": {}})]);

    let paths = tenant.paths();
    assert!(paths.contains(&"incidents/get_incidents/".to_string()), "{paths:?}");
    assert!(paths.contains(&"xql/get_quota".to_string()), "{paths:?}");
}

#[tokio::test]
async fn parsed_alerts_go_in_batches_of_at_most_sixty() {
    let (tenant, base) = start(Auth::Standard).await;
    let alerts: Vec<ParsedAlert> = (0..130).map(parsed_alert).collect();
    client(&base, KeyType::Standard).insert_parsed_alerts(&alerts).await.unwrap();

    let batches = tenant.requests_to("alerts/insert_parsed_alerts");
    let sizes: Vec<usize> =
        batches.iter().map(|b| b["request_data"]["alerts"].as_array().unwrap().len()).collect();
    assert_eq!(sizes, [60, 60, 10]);

    let first = &batches[0]["request_data"]["alerts"][0];
    assert_eq!(first["local_port"], json!(502), "ports are sent as integers");
    assert_eq!(first["alert_name"], json!("new outbound peer 0"));
    assert_eq!(
        batches[2]["request_data"]["alerts"][9]["alert_name"],
        json!("new outbound peer 129")
    );
}

#[tokio::test]
async fn all_pages_of_a_list_are_collected_through_the_trait() {
    let (tenant, base) = start(Auth::Standard).await;
    let total = 250;
    let pages = [(0, 100), (100, 200), (200, 250)].map(|(from, to)| {
        let incidents: Vec<Value> =
            (from..to).map(|i| json!({"incident_id": i.to_string(), "status": "new"})).collect();
        Reply::ok(json!({"total_count": total, "result_count": to - from, "incidents": incidents}))
    });
    tenant.script("incidents/get_incidents", pages);
    let xdr: Arc<dyn Xdr> = Arc::new(client(&base, KeyType::Standard));

    let query = IncidentQuery::new().filter(IncidentFilter::Status(IncidentStatus::New));
    let all = collect_pages(&query, usize::MAX, |page| {
        let xdr = xdr.clone();
        async move { xdr.list_incidents(&page).await }
    })
    .await
    .unwrap();

    assert_eq!(all.len(), 250);
    assert_eq!(all[249].incident_id, "249");
    let windows: Vec<(Value, Value)> = tenant
        .requests_to("incidents/get_incidents")
        .iter()
        .map(|b| (b["request_data"]["search_from"].clone(), b["request_data"]["search_to"].clone()))
        .collect();
    assert_eq!(
        windows,
        [(json!(0), json!(100)), (json!(100), json!(200)), (json!(200), json!(300))]
    );
}
