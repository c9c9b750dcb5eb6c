//! `pivotwatch xdr-sim`: the replay tenant behind the Cortex XDR public API.
//!
//! An HTTP server that answers `POST /public_api/v1/<api>/<call>` (with or without a
//! trailing slash) the way a tenant does: the `{"request_data": ...}` envelope in,
//! `{"reply": ...}` out, `{"reply": {"err_code", "err_msg", "err_extra"}}` with a non-2xx
//! status for errors, standard or advanced key checks, XQL queries that are `PENDING`
//! before they succeed, results above 1,000 rows handed over as an NDJSON stream (gzip
//! when asked), at most four queries running at once, and the 600-a-minute budget for
//! custom alerts. Everything behind the wire is `Replay`, so the client, hunts and
//! triage can be tried and tested against "a tenant" with no network.
//!
//! What the public documentation leaves open is chosen here and marked as such: the
//! accepted clock skew of an advanced key (five minutes either way) and the message of
//! the concurrency refusal.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::cortex::{ApiKey, KeyType, advanced_signature};
use super::query::{ListRequest, Timeframe};
use super::replay::records::ListKind;
use super::replay::{Replay, ReplayQueryError};
use super::rows::format_stream_timestamp;
use crate::timefmt::now_ms;
use crate::xql::exec::{ExecError, Table, Value as Cell};

/// Rows a query may return inline; above this the answer is a stream id.
pub const INLINE_LIMIT: usize = 1000;
/// Queries that may be running at once on one tenant.
pub const MAX_CONCURRENT_QUERIES: usize = 4;
/// Custom alerts (parsed or CEF) the tenant takes per minute.
pub const ALERTS_PER_MINUTE: usize = 600;
/// How far an advanced key's timestamp may be from the tenant's clock. Not documented
/// by the vendor; five minutes is the usual tolerance of signed-request schemes.
pub const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The tenant id under which `query_cost` is reported.
const TENANT_ID: &str = "replay";
/// Quota units a query costs, whatever it does; the daily licence quota is 5 units.
const QUERY_COST: f64 = 0.001;
const LICENSE_QUOTA: f64 = 5.0;
/// How long a finished query's results (and stream) stay available to fetch.
const RESULTS_KEPT: Duration = Duration::from_secs(30 * 60);

/// How the simulated tenant authenticates and paces callers.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub key_id: String,
    pub key: ApiKey,
    pub key_type: KeyType,
    /// How long a query stays `PENDING` after it starts.
    pub query_latency: Duration,
}

/// The simulated tenant's state: the replay data plus what callers started.
pub struct XdrSim {
    replay: Replay,
    config: SimConfig,
    started: Instant,
    next_id: AtomicU64,
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    queries: HashMap<String, QueryRun>,
    streams: HashMap<String, Arc<Table>>,
    /// Nonces of advanced requests seen within the skew window, with when they came.
    nonces: HashMap<String, Instant>,
    /// When each recently accepted custom alert came, oldest first.
    alert_times: Vec<Instant>,
    used_quota: f64,
}

struct QueryRun {
    ready_at: Instant,
    table: Arc<Table>,
}

/// An answer the tenant gives when a call cannot be served.
#[derive(Debug)]
struct WireError {
    status: StatusCode,
    message: String,
    extra: Value,
}

impl WireError {
    fn new(status: StatusCode, message: impl Into<String>) -> WireError {
        WireError { status, message: message.into(), extra: Value::Null }
    }

    fn bad_request(message: impl Into<String>) -> WireError {
        WireError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for WireError {
    fn into_response(self) -> Response {
        let body = json!({"reply": {
            "err_code": self.status.as_u16(),
            "err_msg": self.message,
            "err_extra": self.extra,
        }});
        (self.status, axum::Json(body)).into_response()
    }
}

type Answer = Result<Response, WireError>;

fn reply(value: Value) -> Answer {
    Ok(axum::Json(json!({ "reply": value })).into_response())
}

impl XdrSim {
    pub fn new(replay: Replay, config: SimConfig) -> XdrSim {
        XdrSim {
            replay,
            config,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            state: Mutex::new(SimState::default()),
        }
    }

    /// The routes of the public API, ready to serve.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new().route("/public_api/v1/{*call}", post(handle)).with_state(self)
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<(), WireError> {
        let unauthorized = |why: &str| {
            WireError::new(StatusCode::UNAUTHORIZED, format!("API request Unauthorized: {why}"))
        };
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if text("x-xdr-auth-id").map(str::trim) != Some(self.config.key_id.as_str()) {
            return Err(unauthorized("unknown or missing x-xdr-auth-id"));
        }
        let authorization = text(header::AUTHORIZATION.as_str()).unwrap_or_default();
        match self.config.key_type {
            KeyType::Standard => {
                if !constant_time_eq(authorization.as_bytes(), self.config.key.expose().as_bytes())
                {
                    return Err(unauthorized("the key does not match"));
                }
            }
            KeyType::Advanced => {
                let (Some(nonce), Some(timestamp)) = (text("x-xdr-nonce"), text("x-xdr-timestamp"))
                else {
                    return Err(unauthorized(
                        "an advanced key needs x-xdr-nonce and x-xdr-timestamp",
                    ));
                };
                let sent_ms: i64 = timestamp
                    .parse()
                    .map_err(|_| unauthorized("x-xdr-timestamp is not a number"))?;
                let skew_ms = (sent_ms - now_ms()).unsigned_abs();
                if u128::from(skew_ms) > CLOCK_SKEW.as_millis() {
                    return Err(unauthorized("the timestamp is outside the accepted clock skew"));
                }
                let expected = advanced_signature(self.config.key.expose(), nonce, timestamp);
                if !constant_time_eq(authorization.as_bytes(), expected.as_bytes()) {
                    return Err(unauthorized("the signature does not match"));
                }
                let mut state = self.state();
                state.nonces.retain(|_, seen| seen.elapsed() <= CLOCK_SKEW * 2);
                if state.nonces.insert(nonce.to_string(), Instant::now()).is_some() {
                    return Err(unauthorized("the nonce was already used"));
                }
            }
        }
        Ok(())
    }

    async fn dispatch(self: &Arc<Self>, call: &str, data: Value) -> Answer {
        match call {
            "xql/start_xql_query" => self.start_query(parse(call, data)?).await,
            "xql/get_query_results" => self.query_results(parse(call, data)?).await,
            "xql/get_query_results_stream" => self.query_stream(parse(call, data)?),
            "xql/get_quota" => reply(self.quota()),
            "incidents/get_incidents" => self.list(ListKind::Incidents, "incidents", call, data),
            "incidents/get_incident_extra_data" => {
                let request: ExtraDataRequest = parse(call, data)?;
                let limit = request.alerts_limit.unwrap_or(1000) as usize;
                reply(
                    self.replay
                        .incident_extra_data_wire(&request.incident_id, limit)
                        .map_err(record)?,
                )
            }
            "incidents/update_incident" => {
                let request: UpdateRequest = parse(call, data)?;
                self.replay
                    .update_incident_wire(&request.incident_id, &request.update_data)
                    .map_err(record)?;
                reply(json!(true))
            }
            "alerts/get_alerts_multi_events" => self.list(ListKind::Alerts, "alerts", call, data),
            "alerts/insert_parsed_alerts" => {
                let request: AlertsRequest<Value> = parse(call, data)?;
                self.take_alert_budget(request.alerts.len())?;
                self.replay.insert_parsed_alerts_wire(&request.alerts).map_err(record)?;
                reply(json!(true))
            }
            "alerts/insert_cef_alerts" => {
                let request: AlertsRequest<String> = parse(call, data)?;
                self.take_alert_budget(request.alerts.len())?;
                self.replay.insert_cef_alerts_wire(&request.alerts).map_err(record)?;
                reply(json!(true))
            }
            "endpoints/get_endpoint" => self.list(ListKind::Endpoints, "endpoints", call, data),
            "endpoints/isolate" | "endpoints/unisolate" => {
                let request: EndpointRequest = parse(call, data)?;
                let isolate = call == "endpoints/isolate";
                reply(
                    self.replay
                        .endpoint_action_wire(&request.endpoint_id, isolate)
                        .map_err(record)?,
                )
            }
            "actions/get_action_status" => {
                let request: ActionStatusRequest = parse(call, data)?;
                reply(self.replay.action_status_wire(&request.group_action_id).map_err(record)?)
            }
            "audits/management_logs" => self.list(ListKind::Audit, "data", call, data),
            _ => {
                Err(WireError::new(StatusCode::NOT_FOUND, format!("Not Found: no API call {call}")))
            }
        }
    }

    fn list(&self, kind: ListKind, items: &str, call: &str, data: Value) -> Answer {
        let request: ListRequest = parse(call, data)?;
        if request.search_to < request.search_from {
            return Err(WireError::bad_request("search_to must not be below search_from"));
        }
        if request.search_to - request.search_from > super::query::MAX_PAGE_SIZE {
            return Err(WireError::bad_request(format!(
                "a page holds at most {} items (search_to - search_from)",
                super::query::MAX_PAGE_SIZE
            )));
        }
        let (total, found) = self.replay.list_wire(kind, &request).map_err(record)?;
        let mut body = Map::new();
        body.insert("total_count".into(), json!(total));
        body.insert("result_count".into(), json!(found.len()));
        body.insert(items.into(), Value::Array(found));
        reply(Value::Object(body))
    }

    async fn start_query(self: &Arc<Self>, request: StartRequest) -> Answer {
        if request.query.trim().is_empty() {
            return Err(WireError::bad_request("query is empty"));
        }
        {
            let mut state = self.state();
            let now = Instant::now();
            let expired: Vec<String> = state
                .queries
                .iter()
                .filter(|(_, run)| now.saturating_duration_since(run.ready_at) > RESULTS_KEPT)
                .map(|(id, _)| id.clone())
                .collect();
            for id in expired {
                state.queries.remove(&id);
                state.streams.remove(&stream_id_of(&id));
            }
            let running = state.queries.values().filter(|q| q.ready_at > now).count();
            if running >= MAX_CONCURRENT_QUERIES {
                return Err(WireError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "reached the maximum of {MAX_CONCURRENT_QUERIES} concurrent API queries; \
                         wait for one to finish"
                    ),
                ));
            }
            if state.used_quota + QUERY_COST > LICENSE_QUOTA {
                return Err(WireError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "query usage exceeded max daily quota",
                ));
            }
            state.used_quota += QUERY_COST;
        }
        let sim = Arc::clone(self);
        let timeframe = request.timeframe;
        let table = tokio::task::spawn_blocking(move || {
            sim.replay.query(&request.query, timeframe.as_ref())
        })
        .await
        .map_err(|err| WireError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
        .map_err(query_error)?;

        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let query_id = format!("{:014x}_{n}_inv", self.started.elapsed().as_nanos() as u64 ^ n);
        let run = QueryRun {
            ready_at: Instant::now() + self.config.query_latency,
            table: Arc::new(table),
        };
        self.state().queries.insert(query_id.clone(), run);
        reply(json!(query_id))
    }

    async fn query_results(&self, request: ResultsRequest) -> Answer {
        let limit = request.limit.unwrap_or(INLINE_LIMIT as u64);
        if limit == 0 || limit > INLINE_LIMIT as u64 {
            return Err(WireError::bad_request(format!("limit must be 1 to {INLINE_LIMIT}")));
        }
        if request.format.as_deref().is_some_and(|f| !f.eq_ignore_ascii_case("json")) {
            return Err(WireError::bad_request("format must be \"json\""));
        }
        let (ready_at, table) = {
            let state = self.state();
            let run = state.queries.get(&request.query_id).ok_or_else(|| {
                WireError::bad_request(format!("no query with id {}", request.query_id))
            })?;
            (run.ready_at, Arc::clone(&run.table))
        };
        let now = Instant::now();
        if ready_at > now {
            if request.pending_flag.unwrap_or(true) {
                return reply(json!({
                    "status": "PENDING", "number_of_results": 0,
                    "query_cost": {TENANT_ID: QUERY_COST},
                    "remaining_quota": self.remaining_quota(),
                    "results": {}
                }));
            }
            tokio::time::sleep(ready_at - now).await;
        }
        let total = table.n_rows();
        let results = if total > INLINE_LIMIT {
            let stream_id = stream_id_of(&request.query_id);
            self.state().streams.insert(stream_id.clone(), Arc::clone(&table));
            json!({ "stream_id": stream_id })
        } else {
            let rows: Vec<Value> = table
                .map_rows(inline_cell)
                .into_iter()
                .take(limit as usize)
                .map(Value::Object)
                .collect();
            json!({ "data": rows })
        };
        reply(json!({
            "status": "SUCCESS",
            "number_of_results": total,
            "query_cost": {TENANT_ID: QUERY_COST},
            "remaining_quota": self.remaining_quota(),
            "results": results
        }))
    }

    fn query_stream(&self, request: StreamRequest) -> Answer {
        let table = self.state().streams.get(&request.stream_id).cloned().ok_or_else(|| {
            WireError::bad_request(format!("no stream with id {}", request.stream_id))
        })?;
        let mut body = Vec::new();
        for row in table.map_rows(stream_cell) {
            // Serialising a map of JSON values cannot fail.
            serde_json::to_writer(&mut body, &row).unwrap_or_default();
            body.push(b'\n');
        }
        if request.is_gzip_compressed.unwrap_or(false) {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let gzipped = encoder.write_all(&body).and_then(|()| encoder.finish());
            body = gzipped.map_err(|err| {
                WireError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            })?;
        }
        Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
    }

    fn remaining_quota(&self) -> f64 {
        LICENSE_QUOTA - self.state().used_quota
    }

    fn quota(&self) -> Value {
        let mut quota = self.replay.quota_wire();
        if let Some(fields) = quota.as_object_mut() {
            fields.insert("license_quota".into(), json!(LICENSE_QUOTA));
            fields.insert("used_quota".into(), json!(self.state().used_quota));
        }
        quota
    }

    /// Takes `n` alerts from the per-minute budget, or refuses the whole request.
    fn take_alert_budget(&self, n: usize) -> Result<(), WireError> {
        let mut state = self.state();
        state.alert_times.retain(|at| at.elapsed() < Duration::from_secs(60));
        if state.alert_times.len() + n > ALERTS_PER_MINUTE {
            return Err(WireError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Rate limit exceeded: at most {ALERTS_PER_MINUTE} alerts per minute"),
            ));
        }
        let now = Instant::now();
        state.alert_times.extend(std::iter::repeat_n(now, n));
        Ok(())
    }
}

async fn handle(
    State(sim): State<Arc<XdrSim>>,
    Path(call): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = call.trim_end_matches('/').to_string();
    let answer = async {
        sim.authenticate(&headers)?;
        let envelope: Value = serde_json::from_slice(&body)
            .map_err(|err| WireError::bad_request(format!("the body is not valid JSON: {err}")))?;
        let data = match envelope {
            Value::Object(mut fields) => fields.remove("request_data"),
            _ => None,
        };
        let Some(data @ Value::Object(_)) = data else {
            return Err(WireError::bad_request(
                "the body must be {\"request_data\": {...}} with an object inside",
            ));
        };
        sim.dispatch(&call, data).await
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

fn stream_id_of(query_id: &str) -> String {
    format!("{query_id}-stream")
}

fn parse<T: DeserializeOwned>(call: &str, data: Value) -> Result<T, WireError> {
    serde_json::from_value(data)
        .map_err(|err| WireError::bad_request(format!("{call}: request_data: {err}")))
}

fn record(err: super::replay::records::RecordError) -> WireError {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    WireError::new(status, err.message)
}

/// How a query the replay tenant cannot run is answered: a syntax or schema error as
/// the tenant's `parse_err`, anything else as a request the tenant will not serve.
fn query_error(err: ReplayQueryError) -> WireError {
    match err {
        ReplayQueryError::Invalid(messages) => {
            let message = messages.join("; ");
            WireError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                extra: json!({ "parse_err": message }),
                message: "XQL query parse error".into(),
            }
        }
        ReplayQueryError::Exec(
            err @ (ExecError::UnknownField { .. } | ExecError::UnknownDataset { .. }),
        ) => WireError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            extra: json!({ "parse_err": err.to_string() }),
            message: "XQL query parse error".into(),
        },
        ReplayQueryError::Refused(messages) => {
            WireError::bad_request(format!("query refused: {}", messages.join("; ")))
        }
        ReplayQueryError::Exec(err) => WireError::bad_request(err.to_string()),
    }
}

/// A cell as inline JSON results carry it: times as epoch milliseconds, null and
/// booleans as the strings the tenant uses.
fn inline_cell(cell: &Cell) -> Value {
    match cell {
        Cell::Null => json!("NULL"),
        Cell::Bool(b) => json!(if *b { "TRUE" } else { "FALSE" }),
        other => other.to_json(),
    }
}

/// A cell as the NDJSON stream carries it: like inline results, but times as text.
fn stream_cell(cell: &Cell) -> Value {
    match cell {
        Cell::Time(ms) => json!(format_stream_timestamp(*ms)),
        other => inline_cell(other),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRequest {
    query: String,
    #[serde(default)]
    timeframe: Option<Timeframe>,
    /// Multi-tenant queries name child tenants; the replay tenant is one tenant.
    #[serde(default)]
    #[allow(dead_code, reason = "accepted for wire compatibility")]
    tenants: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultsRequest {
    query_id: String,
    #[serde(default)]
    pending_flag: Option<bool>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    format: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamRequest {
    stream_id: String,
    #[serde(default)]
    is_gzip_compressed: Option<bool>,
}

#[derive(Deserialize)]
struct ExtraDataRequest {
    incident_id: String,
    #[serde(default)]
    alerts_limit: Option<u32>,
}

#[derive(Deserialize)]
struct UpdateRequest {
    incident_id: String,
    update_data: Value,
}

#[derive(Deserialize)]
struct AlertsRequest<T> {
    alerts: Vec<T>,
}

#[derive(Deserialize)]
struct EndpointRequest {
    endpoint_id: String,
    #[serde(default)]
    #[allow(dead_code, reason = "the replay tenant does not link actions to incidents")]
    incident_id: Option<String>,
}

#[derive(Deserialize)]
struct ActionStatusRequest {
    group_action_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_take_the_wire_forms_of_each_answer() {
        assert_eq!(inline_cell(&Cell::Null), json!("NULL"));
        assert_eq!(inline_cell(&Cell::Bool(false)), json!("FALSE"));
        assert_eq!(inline_cell(&Cell::Time(1_621_541_523_000)), json!(1_621_541_523_000_i64));
        assert_eq!(stream_cell(&Cell::Time(1_621_541_523_000)), json!("2021-05-20 20:12:03 UTC"));
        assert_eq!(stream_cell(&Cell::Int(7)), json!(7));
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
