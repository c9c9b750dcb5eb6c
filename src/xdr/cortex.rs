//! `CortexXdr`: the `Xdr` trait over the Cortex XDR public REST API.
//!
//! Every call is a `POST` of `{"request_data": {...}}` to
//! `<base>/public_api/v1/<api>/<call>`, answered by `{"reply": ...}` (the XQL result
//! stream excepted, which is NDJSON). A call is one `tracing` span named `xdr.call`
//! with the API path, the number of attempts and the last HTTP status; bodies are never
//! logged, and the API key exists only inside `ApiKey`, whose `Debug` and `Display`
//! print `***`.
//!
//! Retrying, with jittered exponential back-off up to `RetryPolicy::max_attempts`:
//! rate limits (429, or a "Rate limit exceeded" message) are retried for every call,
//! honouring `Retry-After`, because the tenant turned the request away unprocessed.
//! 5xx answers, timeouts and broken connections are retried only for calls that are
//! safe to repeat (reads): a write (isolating an endpoint, inserting alerts, updating an
//! incident, starting a query) may have taken effect before the failure, so it is
//! reported rather than repeated. Nothing else is retried: XQL syntax errors, quota,
//! credentials, licence and permission errors, and an endpoint action that names no
//! known endpoint stay wrong.
//!
//! Queries are checked before they are sent: one that does not parse is
//! `XdrError::XqlParse`, and one that could write (a `target` stage, a `call` of a
//! saved query not on `CortexConfig::call_allow_list`) is `XdrError::QueryRefused`;
//! neither reaches the tenant.
//!
//! Tenant limits kept on this side: at most `XqlPolling::max_in_flight` XQL queries at
//! once (the tenant runs four API queries in parallel and rejects more), and custom
//! alerts in batches of at most 60 and 600 a rolling minute, waiting when over.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use flate2::read::MultiGzDecoder;
use rand::Rng;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;

use super::error::{ErrorBody, classify};
use super::query::{AlertQuery, AuditQuery, EndpointQuery, IncidentQuery, IncidentUpdate};
use super::rows::normalize_row;
use super::types::{
    ActionStatus, ActionStatusRequest, Alert, AlertsReply, AuditLog, AuditLogsReply, Endpoint,
    EndpointAction, EndpointsReply, Envelope, Incident, IncidentExtraData,
    IncidentExtraDataRequest, IncidentsReply, IsolateRequest, Page, ParsedAlert, QueryResultsReply,
    QueryResultsRequest, QueryStatus, QueryStreamRequest, Quota, RequestData,
    UpdateIncidentRequest,
};
use super::{Row, Xdr, XdrError, XqlRequest, XqlResult};
use crate::xql::validate::{ValidationOptions, check};

/// The most rows `get_query_results` returns inline; bigger results come as a stream.
const INLINE_ROW_LIMIT: u32 = 1000;

/// An API key. It is only ever written into a request header; `Debug` and `Display`
/// print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How requests are signed. A standard key is sent as it is; an advanced key signs
/// each request with a fresh nonce and the current time, which the tenant checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    Standard,
    Advanced,
}

impl FromStr for KeyType {
    type Err = XdrError;

    fn from_str(text: &str) -> Result<KeyType, XdrError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(KeyType::Standard),
            "advanced" => Ok(KeyType::Advanced),
            _ => Err(XdrError::InvalidConfig {
                setting: "xdr.key_type",
                reason: format!("{text:?} is neither \"standard\" nor \"advanced\""),
            }),
        }
    }
}

/// Back-off for retryable failures: attempt `n` (from 1) waits a random time between
/// half and all of `min(base_delay * 2^(n-1), max_delay)`. A `Retry-After` longer than
/// `max_delay` ends the retries, since the tenant asked for a longer pause than the
/// caller is prepared to wait.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 disables retrying.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// How XQL results are waited for.
#[derive(Clone, Debug, PartialEq)]
pub struct XqlPolling {
    /// The pause after the first `PENDING`; it doubles up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Give up (with `XdrError::Timeout`) when a query is still pending after this.
    pub max_wait: Duration,
    /// Queries this client runs at once; the tenant allows four.
    pub max_in_flight: usize,
}

impl Default for XqlPolling {
    fn default() -> Self {
        XqlPolling {
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            max_wait: Duration::from_secs(600),
            max_in_flight: 4,
        }
    }
}

/// The custom alert ingestion limits: `batch_size` alerts per request and `per_window`
/// alerts per rolling `window`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRate {
    pub batch_size: usize,
    pub per_window: usize,
    pub window: Duration,
}

impl Default for AlertRate {
    fn default() -> Self {
        AlertRate { batch_size: 60, per_window: 600, window: Duration::from_secs(60) }
    }
}

/// Everything a `CortexXdr` needs; `CortexXdr::new` checks it.
#[derive(Clone, Debug)]
pub struct CortexConfig {
    /// `https://api-<tenant fqdn>`, with or without a trailing `/public_api/v1`.
    pub base_url: String,
    pub key_id: String,
    pub key: ApiKey,
    pub key_type: KeyType,
    /// For each HTTP request, from sending to the last byte of the answer.
    pub timeout: Duration,
    pub retry: RetryPolicy,
    pub xql: XqlPolling,
    pub alert_rate: AlertRate,
    /// Saved queries an XQL `call` stage may run; a `call` of any other is refused.
    pub call_allow_list: Vec<String>,
}

impl CortexConfig {
    /// A configuration with the default timeout (30 s), retry, polling and rate limits,
    /// and no saved query allowed to `call`.
    pub fn new(
        base_url: impl Into<String>,
        key_id: impl Into<String>,
        key: ApiKey,
        key_type: KeyType,
    ) -> CortexConfig {
        CortexConfig {
            base_url: base_url.into(),
            key_id: key_id.into(),
            key,
            key_type,
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            xql: XqlPolling::default(),
            alert_rate: AlertRate::default(),
            call_allow_list: Vec::new(),
        }
    }
}

/// A Cortex XDR tenant reached over its public REST API.
#[derive(Debug)]
pub struct CortexXdr {
    http: reqwest::Client,
    /// `<base>/public_api/v1/`.
    api_root: String,
    key_id: String,
    key: ApiKey,
    key_type: KeyType,
    timeout: Duration,
    retry: RetryPolicy,
    xql: XqlPolling,
    call_allow_list: Vec<String>,
    batch_size: usize,
    xql_slots: Semaphore,
    parsed_alert_budget: SlidingWindow,
    cef_alert_budget: SlidingWindow,
}

/// One API call: its path below `/public_api/v1/`, whether repeating it after a server
/// error or a lost answer is harmless, and whether the answer is a JSON `reply`.
struct Call {
    path: &'static str,
    safe_to_repeat: bool,
    json_reply: bool,
}

const fn read(path: &'static str) -> Call {
    Call { path, safe_to_repeat: true, json_reply: true }
}

const fn write(path: &'static str) -> Call {
    Call { path, safe_to_repeat: false, json_reply: true }
}

const START_XQL: Call = write("xql/start_xql_query");
const QUERY_RESULTS: Call = read("xql/get_query_results");
const QUERY_STREAM: Call =
    Call { path: "xql/get_query_results_stream", safe_to_repeat: true, json_reply: false };
const XQL_QUOTA: Call = read("xql/get_quota");
const GET_INCIDENTS: Call = read("incidents/get_incidents/");
const INCIDENT_EXTRA_DATA: Call = read("incidents/get_incident_extra_data/");
const UPDATE_INCIDENT: Call = write("incidents/update_incident/");
const ALERTS_MULTI_EVENTS: Call = read("alerts/get_alerts_multi_events");
const INSERT_PARSED_ALERTS: Call = write("alerts/insert_parsed_alerts/");
const INSERT_CEF_ALERTS: Call = write("alerts/insert_cef_alerts/");
const GET_ENDPOINT: Call = read("endpoints/get_endpoint/");
const ISOLATE: Call = write("endpoints/isolate");
const UNISOLATE: Call = write("endpoints/unisolate");
const ACTION_STATUS: Call = read("actions/get_action_status/");
const AUDIT_MANAGEMENT_LOGS: Call = read("audits/management_logs/");

impl CortexXdr {
    /// Checks the configuration and builds the client; no request is sent.
    pub fn new(config: CortexConfig) -> Result<CortexXdr, XdrError> {
        let api_root = api_root(&config.base_url)?;
        if config.key_id.trim().is_empty() {
            return Err(invalid("xdr.api_key_id", "is empty"));
        }
        if config.key.expose().is_empty() {
            return Err(invalid("xdr.api_key", "is empty"));
        }
        if config.timeout.is_zero() {
            return Err(invalid("xdr.timeout", "must be more than zero"));
        }
        if config.retry.max_attempts == 0 {
            return Err(invalid("xdr.retry.max_attempts", "must be at least 1"));
        }
        if config.xql.max_in_flight == 0 {
            return Err(invalid("xdr.xql.max_in_flight", "must be at least 1"));
        }
        let rate = &config.alert_rate;
        if rate.batch_size == 0 || rate.batch_size > rate.per_window {
            return Err(invalid(
                "xdr.alert_rate.batch_size",
                "must be at least 1 and at most the alerts allowed per window",
            ));
        }

        let http = reqwest::Client::builder()
            .user_agent(concat!("pivotwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| invalid("xdr.url", &error_chain(&err)))?;
        let client = CortexXdr {
            http,
            api_root,
            key_id: config.key_id,
            key: config.key,
            key_type: config.key_type,
            timeout: config.timeout,
            retry: config.retry,
            batch_size: rate.batch_size,
            xql_slots: Semaphore::new(config.xql.max_in_flight),
            parsed_alert_budget: SlidingWindow::new(rate.per_window, rate.window),
            cef_alert_budget: SlidingWindow::new(rate.per_window, rate.window),
            xql: config.xql,
            call_allow_list: config.call_allow_list,
        };
        // Fails now, not on the first call, when the id or key cannot be a header.
        client.auth_headers()?;
        Ok(client)
    }

    /// `<base>/public_api/v1/`, where every call goes.
    pub fn api_root(&self) -> &str {
        &self.api_root
    }

    /// Sends one call, retrying as the policy allows, and returns the answer's body.
    async fn send<B: Serialize + ?Sized>(
        &self,
        call: &Call,
        body: &B,
    ) -> Result<Vec<u8>, XdrError> {
        let span = tracing::info_span!(
            "xdr.call",
            api.path = call.path,
            attempts = tracing::field::Empty,
            http.status = tracing::field::Empty,
        );
        let payload = serde_json::to_vec(&RequestData { request_data: body }).map_err(|err| {
            XdrError::Decode { call: call.path.to_string(), detail: format!("request: {err}") }
        })?;

        async {
            let mut attempt = 1;
            loop {
                tracing::Span::current().record("attempts", attempt);
                let err = match self.attempt(call, &payload).await {
                    Ok(answer) => return Ok(answer),
                    Err(err) => err,
                };
                let Some(delay) = self.retry_delay(call, &err, attempt) else {
                    tracing::debug!(error = %err, "XDR call failed");
                    return Err(err);
                };
                tracing::debug!(
                    attempt,
                    delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %err,
                    "retrying XDR call"
                );
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt(&self, call: &Call, payload: &[u8]) -> Result<Vec<u8>, XdrError> {
        let url = format!("{}{}", self.api_root, call.path);
        let response = self
            .http
            .post(url)
            .timeout(self.timeout)
            .headers(self.auth_headers()?)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(payload.to_vec())
            .send()
            .await
            .map_err(|err| self.transport_error(call, &err))?;

        let status = response.status().as_u16();
        tracing::Span::current().record("http.status", status);
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.map_err(|err| self.transport_error(call, &err))?;

        if !(200..300).contains(&status) {
            return Err(classify(status, &body, call.path, retry_after));
        }
        // Some endpoints report failure inside a 200 reply.
        if call.json_reply && contains(&body, b"\"err_code\"") {
            let reply = ErrorBody::parse(&body);
            if reply.is_error() {
                let code = reply.code.unwrap_or(500);
                return Err(classify(code, &body, call.path, retry_after));
            }
        }
        Ok(body.to_vec())
    }

    /// The pause before the next attempt, or `None` when the error is final.
    ///
    /// A rate limit means the tenant did not process the request, so any call may be
    /// sent again. After a server error, a timeout or a broken connection the tenant
    /// may have acted on it, so only calls that are safe to repeat are.
    fn retry_delay(&self, call: &Call, err: &XdrError, attempt: u32) -> Option<Duration> {
        if attempt >= self.retry.max_attempts {
            return None;
        }
        match err {
            XdrError::RateLimited { retry_after: Some(after) } => {
                (*after <= self.retry.max_delay).then_some(*after)
            }
            XdrError::RateLimited { retry_after: None } => Some(self.backoff(attempt)),
            XdrError::Server { .. } | XdrError::Timeout { .. } | XdrError::Transport { .. }
                if call.safe_to_repeat =>
            {
                Some(self.backoff(attempt))
            }
            _ => None,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let ceiling = self.retry.base_delay.saturating_mul(factor).min(self.retry.max_delay);
        let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let floor_ms = ceiling_ms / 2;
        Duration::from_millis(rand::thread_rng().gen_range(floor_ms..=ceiling_ms))
    }

    fn transport_error(&self, call: &Call, err: &reqwest::Error) -> XdrError {
        if err.is_timeout() {
            XdrError::Timeout { call: call.path.to_string(), after: self.timeout }
        } else {
            XdrError::Transport { message: error_chain(err) }
        }
    }

    /// Sends a call and reads `{"reply": R}`.
    async fn call<B, R>(&self, call: &Call, body: &B) -> Result<R, XdrError>
    where
        B: Serialize + Sync + ?Sized,
        R: DeserializeOwned,
    {
        let answer = self.send(call, body).await?;
        serde_json::from_slice::<Envelope<R>>(&answer).map(|envelope| envelope.reply).map_err(
            |err| XdrError::Decode { call: call.path.to_string(), detail: err.to_string() },
        )
    }

    fn auth_headers(&self) -> Result<HeaderMap, XdrError> {
        let mut headers = HeaderMap::new();
        let key_id = HeaderValue::from_str(self.key_id.trim())
            .map_err(|_| invalid("xdr.api_key_id", "is not valid in an HTTP header"))?;
        headers.insert("x-xdr-auth-id", key_id);

        let authorization = match self.key_type {
            KeyType::Standard => self.key.expose().to_string(),
            KeyType::Advanced => {
                let nonce = nonce();
                let timestamp = crate::timefmt::now_ms().to_string();
                let signature = advanced_signature(self.key.expose(), &nonce, &timestamp);
                // Both are ASCII letters and digits, always valid header values.
                headers.insert("x-xdr-nonce", header_text(&nonce)?);
                headers.insert("x-xdr-timestamp", header_text(&timestamp)?);
                signature
            }
        };
        let mut authorization = HeaderValue::from_str(&authorization)
            .map_err(|_| invalid("xdr.api_key", "is not valid in an HTTP header"))?;
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        Ok(headers)
    }

    /// Parses and validates a query as `xql check` does without a schema, and refuses
    /// it if it does not parse or could write. Other findings (a stage order or option
    /// the validator doubts) are left for the tenant to judge.
    fn check_query(&self, request: &XqlRequest) -> Result<(), XdrError> {
        let options = ValidationOptions {
            schema: None,
            caller_timeframe: request.timeframe.is_some(),
            require_timeframe: false,
            call_allow_list: &self.call_allow_list,
        };
        let (query, validation) = check(&request.query, &options);
        if !validation.read_only {
            let reasons = validation.refusals.iter().map(ToString::to_string).collect();
            return Err(XdrError::QueryRefused { reasons });
        }
        if query.is_none() {
            let messages: Vec<String> = validation.errors.iter().map(ToString::to_string).collect();
            return Err(XdrError::XqlParse { message: messages.join("; ") });
        }
        Ok(())
    }

    async fn wait_for_results(&self, query_id: &str) -> Result<QueryResultsReply, XdrError> {
        let started = Instant::now();
        let mut delay = self.xql.first_delay;
        let request = QueryResultsRequest {
            query_id: query_id.to_string(),
            pending_flag: true,
            limit: INLINE_ROW_LIMIT,
            format: "json".to_string(),
        };
        loop {
            let reply: QueryResultsReply = self.call(&QUERY_RESULTS, &request).await?;
            match reply.status {
                QueryStatus::Pending => {}
                QueryStatus::Success | QueryStatus::PartialSuccess => return Ok(reply),
                QueryStatus::Fail => {
                    return Err(XdrError::QueryFailed {
                        query_id: query_id.to_string(),
                        message: failure_message(&reply),
                    });
                }
            }
            if started.elapsed() + delay > self.xql.max_wait {
                return Err(XdrError::Timeout {
                    call: QUERY_RESULTS.path.to_string(),
                    after: self.xql.max_wait,
                });
            }
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(self.xql.max_delay);
        }
    }

    async fn stream_rows(&self, stream_id: &str) -> Result<Vec<Row>, XdrError> {
        let request =
            QueryStreamRequest { stream_id: stream_id.to_string(), is_gzip_compressed: true };
        let body = self.send(&QUERY_STREAM, &request).await?;
        parse_ndjson(&body)
            .map_err(|detail| XdrError::Decode { call: QUERY_STREAM.path.to_string(), detail })
    }

    async fn insert_batches<T: Serialize + Sync>(
        &self,
        call: &Call,
        budget: &SlidingWindow,
        alerts: &[T],
    ) -> Result<(), XdrError> {
        #[derive(Serialize)]
        struct Alerts<'a, T> {
            alerts: &'a [T],
        }

        // A failure stops here; the batches before it stay inserted.
        for batch in alerts.chunks(self.batch_size) {
            budget.reserve(batch.len()).await;
            let _: serde_json::Value = self.call(call, &Alerts { alerts: batch }).await?;
        }
        Ok(())
    }

    async fn endpoint_action(
        &self,
        call: &Call,
        endpoint_id: &str,
        incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError> {
        let request = IsolateRequest {
            endpoint_id: endpoint_id.to_string(),
            incident_id: incident_id.map(str::to_string),
        };
        self.call(call, &request).await
    }
}

#[async_trait]
impl Xdr for CortexXdr {
    async fn run_xql(&self, request: &XqlRequest) -> Result<XqlResult, XdrError> {
        self.check_query(request)?;
        let _slot = self.xql_slots.acquire().await.map_err(|_| XdrError::Transport {
            message: "the XQL query limiter is closed".to_string(),
        })?;

        let query_id: String = self.call(&START_XQL, request).await?;
        let reply = self.wait_for_results(&query_id).await?;
        let results = reply.results.clone().unwrap_or_default();
        let mut rows = match (results.data, results.stream_id) {
            (_, Some(stream_id)) => self.stream_rows(&stream_id).await?,
            (Some(rows), None) => rows,
            (None, None) => Vec::new(),
        };
        rows.iter_mut().for_each(normalize_row);

        Ok(XqlResult {
            rows,
            status: reply.status,
            query_cost: reply.total_cost(),
            remaining_quota: reply.remaining_quota,
        })
    }

    async fn xql_quota(&self) -> Result<Quota, XdrError> {
        self.call(&XQL_QUOTA, &serde_json::Map::new()).await
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Page<Incident>, XdrError> {
        let reply: IncidentsReply = self.call(&GET_INCIDENTS, &query.to_request()).await?;
        Ok(page(reply.total_count, reply.result_count, reply.incidents))
    }

    async fn incident_extra_data(
        &self,
        incident_id: &str,
        alerts_limit: u32,
    ) -> Result<IncidentExtraData, XdrError> {
        let request =
            IncidentExtraDataRequest { incident_id: incident_id.to_string(), alerts_limit };
        self.call(&INCIDENT_EXTRA_DATA, &request).await
    }

    async fn update_incident(
        &self,
        incident_id: &str,
        update: &IncidentUpdate,
    ) -> Result<(), XdrError> {
        let update_data = update.to_update_data();
        if update_data.as_object().is_some_and(serde_json::Map::is_empty) {
            return Ok(());
        }
        let request = UpdateIncidentRequest { incident_id: incident_id.to_string(), update_data };
        let _: serde_json::Value = self.call(&UPDATE_INCIDENT, &request).await?;
        Ok(())
    }

    async fn alerts_multi_events(&self, query: &AlertQuery) -> Result<Page<Alert>, XdrError> {
        let reply: AlertsReply = self.call(&ALERTS_MULTI_EVENTS, &query.to_request()).await?;
        Ok(page(reply.total_count, reply.result_count, reply.alerts))
    }

    async fn insert_parsed_alerts(&self, alerts: &[ParsedAlert]) -> Result<(), XdrError> {
        self.insert_batches(&INSERT_PARSED_ALERTS, &self.parsed_alert_budget, alerts).await
    }

    async fn insert_cef_alerts(&self, alerts: &[String]) -> Result<(), XdrError> {
        // TODO: the documentation gives 600 CEF alerts a minute but no per-request cap;
        // the parsed-alert batch size is used until a tenant shows what it accepts.
        self.insert_batches(&INSERT_CEF_ALERTS, &self.cef_alert_budget, alerts).await
    }

    async fn get_endpoints(&self, query: &EndpointQuery) -> Result<Page<Endpoint>, XdrError> {
        let reply: EndpointsReply = self.call(&GET_ENDPOINT, &query.to_request()).await?;
        Ok(page(reply.total_count, reply.result_count, reply.endpoints))
    }

    async fn isolate_endpoint(
        &self,
        endpoint_id: &str,
        incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError> {
        self.endpoint_action(&ISOLATE, endpoint_id, incident_id).await
    }

    async fn unisolate_endpoint(
        &self,
        endpoint_id: &str,
        incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError> {
        self.endpoint_action(&UNISOLATE, endpoint_id, incident_id).await
    }

    async fn action_status(&self, group_action_id: &str) -> Result<ActionStatus, XdrError> {
        let request = ActionStatusRequest { group_action_id: group_action_id.to_string() };
        self.call(&ACTION_STATUS, &request).await
    }

    async fn audit_management_logs(&self, query: &AuditQuery) -> Result<Page<AuditLog>, XdrError> {
        let reply: AuditLogsReply = self.call(&AUDIT_MANAGEMENT_LOGS, &query.to_request()).await?;
        Ok(page(reply.total_count, reply.result_count, reply.data))
    }
}

fn page<T>(total_count: Option<u64>, result_count: Option<u64>, items: Vec<T>) -> Page<T> {
    let result_count = result_count.unwrap_or(items.len() as u64);
    Page { total_count, result_count, items }
}

/// A rolling-window budget: `reserve(n)` waits until `n` more fit into the last
/// `window`, then counts them.
#[derive(Debug)]
struct SlidingWindow {
    limit: usize,
    window: Duration,
    sent: Mutex<VecDeque<(Instant, usize)>>,
}

impl SlidingWindow {
    fn new(limit: usize, window: Duration) -> SlidingWindow {
        SlidingWindow { limit, window, sent: Mutex::new(VecDeque::new()) }
    }

    async fn reserve(&self, count: usize) {
        let count = count.min(self.limit);
        // Holding the lock while waiting queues concurrent callers in arrival order.
        let mut sent = self.sent.lock().await;
        loop {
            let now = Instant::now();
            while sent.front().is_some_and(|(at, _)| now.duration_since(*at) >= self.window) {
                sent.pop_front();
            }
            let used: usize = sent.iter().map(|(_, n)| n).sum();
            if used + count <= self.limit {
                sent.push_back((now, count));
                return;
            }
            match sent.front() {
                Some((oldest, _)) => tokio::time::sleep_until(*oldest + self.window).await,
                None => return,
            }
        }
    }
}

/// `lowercase hex(sha256(key + nonce + timestamp))`, the advanced key's signature.
pub(crate) fn advanced_signature(key: &str, nonce: &str, timestamp: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.as_bytes());
    hasher.update(nonce.as_bytes());
    hasher.update(timestamp.as_bytes());
    hasher.finalize().iter().map(|byte| format!("{byte:02x}")).collect()
}

/// 64 characters from `[A-Za-z0-9]`.
fn nonce() -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(64)
        .map(char::from)
        .collect()
}

fn header_text(text: &str) -> Result<HeaderValue, XdrError> {
    HeaderValue::from_str(text).map_err(|_| invalid("xdr.api_key", "produced an invalid header"))
}

/// `<base>/public_api/v1/` from a configured base URL.
fn api_root(base_url: &str) -> Result<String, XdrError> {
    let url = reqwest::Url::parse(base_url.trim())
        .map_err(|err| invalid("xdr.url", &format!("{base_url:?} is not a URL: {err}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(invalid("xdr.url", "must be https://api-<tenant fqdn>"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("xdr.url", "must not carry a query or fragment"));
    }
    let base = url.as_str().trim_end_matches('/');
    let base = base.strip_suffix("/public_api/v1").unwrap_or(base);
    Ok(format!("{base}/public_api/v1/"))
}

fn invalid(setting: &'static str, reason: &str) -> XdrError {
    XdrError::InvalidConfig { setting, reason: reason.to_string() }
}

/// `Retry-After` in seconds; the HTTP-date form is not used by the tenant.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// An error and its causes on one line, without the URL.
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

fn failure_message(reply: &QueryResultsReply) -> String {
    ["error", "err_msg", "error_message"]
        .iter()
        .find_map(|key| reply.extra.get(*key).and_then(serde_json::Value::as_str))
        .unwrap_or("the tenant reported status FAIL")
        .to_string()
}

/// Rows of an NDJSON body, gzip-compressed or not.
fn parse_ndjson(body: &[u8]) -> Result<Vec<Row>, String> {
    let reader: Box<dyn Read + '_> = if body.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(body))
    } else {
        Box::new(body)
    };
    let mut rows = Vec::new();
    for (index, line) in BufReader::new(reader).lines().enumerate() {
        let line = line.map_err(|err| format!("line {}: {err}", index + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let row: Row =
            serde_json::from_str(&line).map_err(|err| format!("line {}: {err}", index + 1))?;
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn config() -> CortexConfig {
        CortexConfig::new(
            "https://api-tenant.xdr.eu.paloaltonetworks.com",
            "62",
            ApiKey::new("s3cr3t-key-value"),
            KeyType::Advanced,
        )
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let config = config();
        let client = CortexXdr::new(config.clone()).unwrap();
        for text in [format!("{config:?}"), format!("{client:?}"), config.key.to_string()] {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
        assert!(format!("{config:?}").contains("***"));
    }

    #[test]
    fn the_api_root_is_appended_once() {
        for base in [
            "https://api-t.xdr.us.paloaltonetworks.com",
            "https://api-t.xdr.us.paloaltonetworks.com/",
            "https://api-t.xdr.us.paloaltonetworks.com/public_api/v1",
            "https://api-t.xdr.us.paloaltonetworks.com/public_api/v1/",
        ] {
            assert_eq!(
                api_root(base).unwrap(),
                "https://api-t.xdr.us.paloaltonetworks.com/public_api/v1/"
            );
        }
        assert!(api_root("api-t.xdr.us.paloaltonetworks.com").is_err());
        assert!(api_root("ftp://api-t.example").is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let mut empty_key = config();
        empty_key.key = ApiKey::new("");
        let err = CortexXdr::new(empty_key).unwrap_err();
        assert!(matches!(err, XdrError::InvalidConfig { setting: "xdr.api_key", .. }));

        let mut big_batch = config();
        big_batch.alert_rate.batch_size = 700;
        let err = CortexXdr::new(big_batch).unwrap_err();
        assert!(matches!(
            err,
            XdrError::InvalidConfig { setting: "xdr.alert_rate.batch_size", .. }
        ));

        assert!(matches!("Advanced".parse::<KeyType>(), Ok(KeyType::Advanced)));
        assert!("hmac".parse::<KeyType>().is_err());
    }

    #[test]
    fn the_advanced_signature_is_hex_sha256_of_key_nonce_and_time() {
        // sha256("abc") is a published test vector.
        assert_eq!(
            advanced_signature("a", "b", "c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let nonce = nonce();
        assert_eq!(nonce.len(), 64);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn advanced_headers_are_fresh_per_request_and_the_key_is_not_sent() {
        let client = CortexXdr::new(config()).unwrap();
        let first = client.auth_headers().unwrap();
        let second = client.auth_headers().unwrap();
        assert_ne!(first["x-xdr-nonce"], second["x-xdr-nonce"]);
        assert_eq!(first["x-xdr-auth-id"], "62");
        assert!(first[AUTHORIZATION].is_sensitive());
        assert_ne!(first[AUTHORIZATION], "s3cr3t-key-value");
        assert!(format!("{first:?}").find("s3cr3t").is_none());
    }

    #[test]
    fn back_off_grows_and_stays_under_the_ceiling() {
        let mut config = config();
        config.retry = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        let client = CortexXdr::new(config).unwrap();
        for _ in 0..50 {
            let first = client.backoff(1);
            assert!((50..=100).contains(&first.as_millis()), "{first:?}");
            let late = client.backoff(9);
            assert!((500..=1000).contains(&late.as_millis()), "{late:?}");
        }
    }

    #[test]
    fn only_transient_failures_of_safe_calls_are_retried() {
        let client = CortexXdr::new(config()).unwrap();
        let timeout = XdrError::Timeout { call: "x".into(), after: Duration::from_secs(1) };
        assert!(client.retry_delay(&QUERY_RESULTS, &timeout, 1).is_some());
        assert!(client.retry_delay(&START_XQL, &timeout, 1).is_none());

        let server = XdrError::Server { status: 502, message: String::new() };
        assert!(client.retry_delay(&QUERY_RESULTS, &server, 1).is_some());
        assert!(client.retry_delay(&QUERY_RESULTS, &server, 4).is_none(), "attempts are bounded");
        for write in [&START_XQL, &ISOLATE, &UNISOLATE, &INSERT_PARSED_ALERTS, &UPDATE_INCIDENT] {
            assert!(client.retry_delay(write, &server, 1).is_none(), "{}", write.path);
        }

        let unprocessed = XdrError::RateLimited { retry_after: None };
        assert!(client.retry_delay(&ISOLATE, &unprocessed, 1).is_some());

        let no_endpoint = XdrError::NoEndpointFound { message: String::new() };
        assert!(client.retry_delay(&GET_ENDPOINT, &no_endpoint, 1).is_none());

        let long_wait = XdrError::RateLimited { retry_after: Some(Duration::from_secs(3600)) };
        assert!(client.retry_delay(&QUERY_RESULTS, &long_wait, 1).is_none());
        let short_wait = XdrError::RateLimited { retry_after: Some(Duration::from_secs(2)) };
        assert_eq!(
            client.retry_delay(&QUERY_RESULTS, &short_wait, 1),
            Some(Duration::from_secs(2))
        );

        let parse = XdrError::XqlParse { message: String::new() };
        assert!(client.retry_delay(&START_XQL, &parse, 1).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn the_alert_budget_waits_for_the_window_to_roll() {
        let budget = SlidingWindow::new(600, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..10 {
            budget.reserve(60).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "600 alerts fit in the first minute");

        tokio::time::advance(Duration::from_secs(20)).await;
        budget.reserve(60).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60), "the 601st waits for the window");

        budget.reserve(10).await;
        assert_eq!(start.elapsed(), Duration::from_secs(60), "the first batch left room");
    }

    #[test]
    fn ndjson_is_read_plain_or_gzipped() {
        let text = "{\"a\":1}\n\n{\"a\":2}\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gzipped = gz.finish().unwrap();
        for body in [text.as_bytes(), &gzipped[..]] {
            let rows = parse_ndjson(body).unwrap();
            assert_eq!(rows.len(), 2);
            assert_eq!(rows[1]["a"], 2);
        }
        let err = parse_ndjson(b"{\"a\":1}\nnot json\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
    }
}
