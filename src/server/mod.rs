//! `pivotwatch serve`: the HTTP server. Cortex XDR case webhooks (signed, answered as
//! soon as the job is stored), the HTTP API (bearer tokens mapped to roles), health,
//! readiness and Prometheus metrics, and the workers that run queued triages. Everything
//! that must survive a restart (write-ups, jobs, proposals, the audit trail) is in the
//! database, so several replicas can share PostgreSQL and a killed process loses nothing
//! it acknowledged.

pub mod api;
pub mod auth;
pub mod config;
pub mod metrics;
pub mod slack;
pub mod teams;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, State};
use axum::http::{HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::watch;
use tracing::Instrument;

use crate::actions::{Gate, Users};
use crate::agent::llm::Llm;
use crate::knowledge::Knowledge;
use crate::store::Store;
use crate::xdr::Xdr;

pub use config::{RawSettings, ServerConfig};

/// What every handler and worker shares.
pub struct AppState {
    pub config: ServerConfig,
    pub store: Store,
    pub gate: Gate,
    pub users: Users,
    pub xdr: Arc<dyn Xdr>,
    pub llm: Option<Arc<Llm>>,
    pub knowledge: Arc<Knowledge>,
    /// The model's base URL, for the readiness check.
    pub llm_base_url: Option<String>,
    pub metrics: metrics::Metrics,
    pub limiter: auth::RateLimiter,
    /// Where write-ups and containment notices are posted (`slack.*`, `teams.*`).
    pub channels: Vec<Box<dyn crate::actions::Channel>>,
    /// The Teams bot (`teams.app_id`), when configured.
    pub teams: Option<teams::Teams>,
}

/// A refusal or failure, always as `{"error": "..."}` with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn bad(message: impl Into<String>) -> ApiError {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
    pub fn internal(err: impl std::fmt::Display) -> ApiError {
        tracing::error!("request failed: {err}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the server log".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({"error": self.1, "status": self.0.as_u16()}))).into_response()
    }
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/healthz", get(api::healthz))
        .route("/readyz", get(api::readyz))
        .route("/metrics", get(metrics::render))
        .route("/v1/openapi.json", get(api::openapi))
        .route("/v1/webhooks/xdr", post(api::xdr_webhook))
        .route("/v1/slack/events", post(slack::events))
        .route("/v1/slack/commands", post(slack::commands))
        .route("/v1/slack/interactions", post(slack::interactions))
        .route("/v1/teams/messages", post(teams::messages))
        .route("/v1/hunt", post(api::hunt))
        .route("/v1/triage", post(api::triage))
        .route("/v1/triage/{id}", get(api::get_triage))
        .route("/v1/devices/{id}/profile", get(api::device_profile))
        .route("/v1/proposals", get(api::proposals))
        .route("/v1/proposals/{id}/approve", post(api::approve))
        .route("/v1/proposals/{id}/reject", post(api::reject))
        .route("/v1/verdicts", post(api::verdict))
        .route("/v1/audit", get(api::audit))
        .route("/v1/audit/verify", get(api::audit_verify))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such route".into()) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), around))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Around every request: a request id (the caller's `X-Request-Id` or a new one), one
/// span, the per-client rate limit, and the request's metrics.
async fn around(
    State(state): State<Arc<AppState>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(new_request_id, str::to_string);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().clone();
    let client = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(v.as_bytes());
            format!("token:{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3])
        })
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| format!("ip:{}", c.0.ip()))
        })
        .unwrap_or_else(|| "anonymous".into());
    // Named and described after OpenTelemetry's HTTP server conventions, for export.
    let span = tracing::info_span!("request", otel.name = %format!("{method} {route}"),
                                   otel.kind = "server", request_id = %id,
                                   http.request.method = %method, http.route = %route,
                                   http.response.status_code = tracing::field::Empty);
    let limited = !route.starts_with("/healthz") && !route.starts_with("/readyz");
    let mut response = match state.limiter.take(&client) {
        Err(retry) if limited => {
            let mut response = ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "rate limit of {} requests a minute reached",
                    state.config.rate_limit_per_minute
                ),
            )
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&retry.to_string()) {
                response.headers_mut().insert("retry-after", value);
            }
            response
        }
        _ => next.run(request).instrument(span.clone()).await,
    };
    span.record("http.response.status_code", i64::from(response.status().as_u16()));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    state.metrics.observe(&route, response.status().as_u16(), started.elapsed());
    response
}

fn new_request_id() -> String {
    use rand::Rng as _;
    format!("{:016x}", rand::thread_rng().r#gen::<u64>())
}

/// Serves on `listener` until `shutdown` turns true: in-flight requests finish, workers
/// stop claiming, and queued jobs stay in the database for the next start.
pub async fn serve(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut tasks = Vec::new();
    for n in 0..state.config.workers {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker::run(state, n, stop).await }));
    }
    {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker::notify(state, stop).await }));
    }
    if state.config.slack_signing_secret.is_some() {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { slack::worker(state, stop).await }));
    }
    if state.teams.is_some() {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { teams::worker(state, stop).await }));
    }
    if !state.config.poll_interval.is_zero() {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move { worker::poll(state, stop).await }));
    }
    let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    for task in tasks {
        let _ = task.await;
    }
    served
}

/// Builds the shared state from validated settings: the database (migrated), the users
/// and policy files, the tenant, the model and the knowledge index with past cases.
pub async fn build_state(config: ServerConfig, raw: &RawSettings) -> anyhow::Result<Arc<AppState>> {
    let get = |setting: &str| raw.get(setting);
    std::fs::create_dir_all(&config.data_dir)?;
    let store = Store::open_default(config.database_url.as_deref(), &config.data_dir).await?;
    let users = if config.users_file.exists() {
        Users::load(&config.users_file).map_err(anyhow::Error::msg)?
    } else {
        tracing::warn!(
            "no users file at {}: every API call will be refused",
            config.users_file.display()
        );
        Users::default()
    };
    let policy = match raw.get("policy.file") {
        Some(path) => crate::actions::policy::Policy::load(std::path::Path::new(&path))
            .map_err(anyhow::Error::msg)?,
        None => crate::actions::policy::Policy::default(),
    };
    let gate = Gate::new(store.clone(), policy, users.clone());
    let tenant = crate::xdr::connect::TenantSettings {
        url: raw.get("xdr.url"),
        api_key_id: raw.get("xdr.api_key_id"),
        api_key: raw.get("xdr.api_key").map(crate::xdr::cortex::ApiKey::new),
        key_type: raw.get("xdr.key_type"),
    }
    .open(&config.data_dir)?;
    let llm = Llm::from_settings(&get)?.map(Arc::new);
    let knowledge = crate::knowledge::from_settings(
        &get,
        crate::knowledge::devices::DeviceKnowledge::shipped(),
    )
    .await?;
    let docs: Vec<_> = crate::knowledge::cases::all(&store)
        .await?
        .iter()
        .map(crate::knowledge::cases::Case::doc)
        .collect();
    knowledge.add(&docs).await?;
    let limiter = auth::RateLimiter::new(config.rate_limit_per_minute);
    let channels = crate::actions::notify::channels(&get, std::time::Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    let teams = teams::from_settings(&get).map_err(anyhow::Error::msg)?;
    Ok(Arc::new(AppState {
        channels,
        teams,
        llm_base_url: raw.get("llm.base_url"),
        config,
        store,
        gate,
        users,
        xdr: tenant.xdr(),
        llm,
        knowledge: Arc::new(knowledge),
        metrics: metrics::Metrics::default(),
        limiter,
    }))
}
