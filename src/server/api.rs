//! The handlers. Bodies are read as bytes and parsed here, so a malformed or unknown
//! field is a 400 with a JSON body naming it; every refusal of a caller is 401 (no or
//! unknown token, bad signature) or 403 (a role or the policy says no), also JSON.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::auth::{self, SignatureError};
use super::{ApiError, AppState};
use crate::actions::policy::{Role, User};
use crate::actions::{GateError, State as ProposalState};
use crate::store::triages::Delivery;

/// The headers of a signed Cortex XDR delivery.
pub const TIMESTAMP_HEADER: &str = auth::PIVOTWATCH_V1.timestamp_header;
pub const SIGNATURE_HEADER: &str = auth::PIVOTWATCH_V1.signature_header;

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The person behind the bearer token, if they hold one of `roles`.
fn caller<'s>(
    state: &'s AppState,
    headers: &HeaderMap,
    roles: &[Role],
) -> Result<&'s User, ApiError> {
    let authorization = header(headers, "authorization");
    let Some(user) = auth::bearer_user(&state.users, authorization) else {
        let why = if authorization.is_some() {
            "the bearer token is not one this server knows"
        } else {
            "a bearer token is required (Authorization: Bearer <token>)"
        };
        return Err(ApiError(StatusCode::UNAUTHORIZED, why.into()));
    };
    if !roles.is_empty() && !auth::has_role(user, roles) {
        let names: Vec<&str> = roles.iter().map(|r| role_name(*r)).collect();
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{} lacks the role this needs (one of {})", user.name, names.join(", ")),
        ));
    }
    Ok(user)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Hunter => "hunter",
        Role::Analyst => "analyst",
        Role::Approver => "approver",
        Role::Admin => "admin",
    }
}

/// Every role reads.
const READERS: [Role; 5] = [Role::Viewer, Role::Hunter, Role::Analyst, Role::Approver, Role::Admin];

/// Every refusal and failure.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What was wrong, in words.
    pub error: String,
    /// The HTTP status again.
    pub status: u16,
}

/// The OpenAPI document of the HTTP surface.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "pivotwatch", description = "Behavioural baselines, triage and approvals for IoT/OT fleets under Cortex XDR"),
    paths(healthz, readyz, xdr_webhook, hunt, triage, get_triage, device_profile, proposals,
          approve, reject, audit, audit_verify, super::slack::events, super::slack::commands,
          super::slack::interactions, super::teams::messages, verdict),
    components(schemas(HuntBody, TriageBody, Decision, VerdictBody, ErrorBody)),
    modifiers(&BearerScheme)
)]
pub struct ApiDoc;

/// Declares the bearer token scheme the operations name.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /v1/openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(<ApiDoc as utoipa::OpenApi>::openapi())
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| {
        ApiError::bad(format!(
            "the body is not the expected JSON (line {}, column {}): {err}",
            err.line(),
            err.column()
        ))
    })
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the database answers, the knowledge index holds documents, and the model
/// endpoint (when one is configured) answers at all.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Database, knowledge index and model endpoint answer"), (status = 503, description = "Names what is not ready")))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let database = sqlx::query("SELECT 1").execute(state.store.pool()).await.map(|_| ());
    let knowledge = match state.knowledge.index().count().await {
        Ok(0) => Err("the index is empty".to_string()),
        Ok(_) => Ok(()),
        Err(err) => Err(err.to_string()),
    };
    let model = match &state.llm_base_url {
        None => Ok(()),
        Some(base) => reqwest::Client::new()
            .get(format!("{}/models", base.trim_end_matches('/')))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map(|_| ())
            .map_err(|err| format!("unreachable: {err}")),
    };
    let show = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(err) => json!(err),
    };
    let database = database.map_err(|err| err.to_string());
    let ready = database.is_ok() && knowledge.is_ok() && model.is_ok();
    let body = json!({"ready": ready, "checks": {"database": show(&database),
        "knowledge": show(&knowledge),
        "model": if state.llm_base_url.is_some() { show(&model) } else { json!("not configured") }}});
    (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}

/// Finds the case object in a delivery: under the configured dotted path, else at the
/// top, under `incident`, `case`, `reply.incident` or `reply`.
fn find_case<'v>(body: &'v Value, wrapper: Option<&str>) -> Option<&'v Value> {
    let has_id = |v: &&Value| v.get("incident_id").is_some() || v.get("case_id").is_some();
    if let Some(path) = wrapper {
        return path.split('.').try_fold(body, |at, key| at.get(key)).filter(has_id);
    }
    [
        Some(body),
        body.get("incident"),
        body.get("case"),
        body.get("reply").and_then(|r| r.get("incident")),
        body.get("reply"),
    ]
    .into_iter()
    .flatten()
    .find(has_id)
}

fn text_or_number(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `POST /v1/webhooks/xdr`: a signed case delivery. 202 once the job is stored; 200
/// for a delivery already seen; 401 for a missing, forged or stale signature; 400 for a
/// body that is not a case. Nothing is stored unless the delivery is accepted.
#[utoipa::path(post, path = "/v1/webhooks/xdr", tag = "webhooks", request_body(content = Object, description = "The case as the Cortex XDR API returns it"), params(("X-Pivotwatch-Timestamp" = String, Header, description = "Unix seconds"), ("X-Pivotwatch-Signature" = String, Header, description = "v1=<hex HMAC-SHA256 of \"<timestamp>.<raw body>\">")), responses((status = 202, description = "Stored and queued (new or updated)"), (status = 200, description = "Already seen"), (status = 400, description = "Malformed body or unknown field", body = ErrorBody), (status = 401, description = "Missing, forged or stale signature", body = ErrorBody), (status = 413, description = "Body over the limit")))]
pub async fn xdr_webhook(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(secret) = &state.config.xdr_webhook_secret else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the Cortex XDR webhook is not configured (webhooks.xdr_secret)".into(),
        ));
    };
    let now = crate::store::now_ms() / 1000;
    auth::verify(
        &auth::PIVOTWATCH_V1,
        secret,
        (header(&headers, TIMESTAMP_HEADER), header(&headers, SIGNATURE_HEADER)),
        &body,
        now,
        state.config.signature_window,
    )
    .map_err(|err: SignatureError| ApiError(StatusCode::UNAUTHORIZED, err.to_string()))?;
    let value: Value = parse(&body)?;
    let case = find_case(&value, state.config.xdr_webhook_wrapper.as_deref()).ok_or_else(|| {
        ApiError::bad("no case in the body: expected an object with `incident_id` (or `case_id`)")
    })?;
    let id = text_or_number(case.get("incident_id").or_else(|| case.get("case_id")))
        .filter(|id| {
            id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c))
        })
        .ok_or_else(|| {
            ApiError::bad("`incident_id` must be a short id of letters, digits, - _ :")
        })?;
    let modified = case
        .get("modification_time")
        .or_else(|| case.get("last_update_time"))
        .and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
        .ok_or_else(|| ApiError::bad("`modification_time` (epoch milliseconds) is missing"))?;
    let delivery = state
        .store
        .accept_case(&id, modified, &json!({"incident": case}))
        .await
        .map_err(ApiError::internal)?;
    Ok(match delivery {
        Delivery::New(triage) => {
            (StatusCode::ACCEPTED, Json(json!({"triage_id": triage, "status": "queued"})))
        }
        Delivery::Updated(triage) => {
            (StatusCode::ACCEPTED, Json(json!({"triage_id": triage, "status": "updated"})))
        }
        Delivery::Seen(triage) => {
            (StatusCode::OK, Json(json!({"triage_id": triage, "status": "duplicate"})))
        }
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HuntBody {
    /// The question in plain language.
    question: String,
}

/// `POST /v1/hunt` `{"question"}` (hunters, analysts).
#[utoipa::path(post, path = "/v1/hunt", tag = "api", request_body = HuntBody, security(("bearer" = [])), responses((status = 200, description = "{question, xql, valid, rows, row_count, summary, follow_ups, planner}"), (status = 400, description = "Malformed body or unknown field", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody), (status = 403, description = "The caller lacks the role", body = ErrorBody)))]
pub async fn hunt(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &[Role::Hunter, Role::Analyst])?;
    let request: HuntBody = parse(&body)?;
    if request.question.trim().is_empty() || request.question.len() > 2_000 {
        return Err(ApiError::bad("`question` must hold 1 to 2,000 characters"));
    }
    let result = crate::agent::hunt(
        &*state.xdr,
        state.llm.as_deref(),
        &request.question,
        Some(&state.store),
    )
    .await;
    Ok(Json(serde_json::to_value(result).map_err(ApiError::internal)?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriageBody {
    /// A Cortex XDR case id.
    #[serde(default)]
    incident_id: Option<String>,
    /// Instead: one object of the detection output.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    finding: Option<crate::model::Finding>,
}

/// `POST /v1/triage` `{"incident_id"} | {"finding": {...}}` (analysts) → 202 `{"id"}`.
#[utoipa::path(post, path = "/v1/triage", tag = "api", request_body = TriageBody, security(("bearer" = [])), responses((status = 202, description = "{id}: queued"), (status = 400, description = "Malformed body or unknown field", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody), (status = 403, description = "The caller lacks the role", body = ErrorBody)))]
pub async fn triage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let user = caller(&state, &headers, &[Role::Analyst])?;
    let request: TriageBody = parse(&body)?;
    let request = match (request.incident_id, request.finding) {
        (Some(id), None) => json!({"incident_id": id, "requested_by": user.name}),
        (None, Some(finding)) => json!({"finding": finding, "requested_by": user.name}),
        _ => return Err(ApiError::bad("give exactly one of `incident_id` and `finding`")),
    };
    let id = state.store.accept_triage(&request).await.map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id}))))
}

/// `GET /v1/triage/{id}`.
#[utoipa::path(get, path = "/v1/triage/{id}", tag = "api", params(("id" = String, Path, description = "The triage id")), security(("bearer" = [])), responses((status = 200, description = "The write-up and its state"), (status = 404, description = "No such triage", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody)))]
pub async fn get_triage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &READERS)?;
    let record = state.store.triage(&id).await.map_err(ApiError::internal)?;
    let record =
        record.ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no triage {id}")))?;
    Ok(Json(serde_json::to_value(record).map_err(ApiError::internal)?))
}

/// `GET /v1/devices/{id}/profile`: the inventory entry and model knowledge.
#[utoipa::path(get, path = "/v1/devices/{id}/profile", tag = "api", params(("id" = String, Path, description = "IP address, asset name or id")), security(("bearer" = [])), responses((status = 200, description = "Inventory entry and model knowledge"), (status = 400, description = "Malformed body or unknown field", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody)))]
pub async fn device_profile(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &READERS)?;
    match crate::agent::tools::device_profile(&*state.xdr, &id).await {
        Ok(out) => Ok(Json(json!({"summary": out.summary, "profile": out.data}))),
        Err(crate::agent::tools::ToolFailure::Arguments(why)) => Err(ApiError::bad(why)),
        Err(err) => Err(ApiError(StatusCode::BAD_GATEWAY, err.to_string())),
    }
}

#[derive(Deserialize)]
pub struct ProposalFilter {
    #[serde(default)]
    state: Option<String>,
}

const STATES: [ProposalState; 7] = [
    ProposalState::Proposed,
    ProposalState::Approved,
    ProposalState::Rejected,
    ProposalState::Expired,
    ProposalState::Executing,
    ProposalState::Succeeded,
    ProposalState::Failed,
];

/// `GET /v1/proposals[?state=proposed]`.
#[utoipa::path(get, path = "/v1/proposals", tag = "approvals", params(("state" = Option<String>, Query, description = "proposed, approved, rejected, expired, executing, succeeded or failed")), security(("bearer" = [])), responses((status = 200, description = "Proposals, newest first"), (status = 400, description = "Malformed body or unknown field", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody)))]
pub async fn proposals(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(filter): Query<ProposalFilter>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &READERS)?;
    let wanted = match filter.state.as_deref() {
        None => None,
        Some(name) => Some(STATES.into_iter().find(|s| s.as_str() == name).ok_or_else(|| {
            let names: Vec<&str> = STATES.iter().map(|s| s.as_str()).collect();
            ApiError::bad(format!("state {name:?} is not one of {}", names.join(", ")))
        })?),
    };
    let list = state.gate.list(wanted).await.map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(list).map_err(ApiError::internal)?))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Why, for the audit trail.
    #[serde(default)]
    reason: Option<String>,
}

async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    id: &str,
    body: &Bytes,
    approve: bool,
) -> Result<Json<Value>, ApiError> {
    // Any known person may ask; the policy decides who may approve which kind.
    let user = caller(state, headers, &[])?;
    let decision: Decision = if body.is_empty() { Decision::default() } else { parse(body)? };
    let reason = decision.reason.unwrap_or_else(|| "decided through the API".into());
    let outcome = if approve {
        state.gate.approve(id, &user.name, &reason).await
    } else {
        state.gate.reject(id, &user.name, &reason).await
    };
    match outcome {
        Ok(proposal) => Ok(Json(serde_json::to_value(proposal).map_err(ApiError::internal)?)),
        Err(
            err @ (GateError::NotAllowed { .. }
            | GateError::OwnProposal(_)
            | GateError::UnknownUser(_)),
        ) => Err(ApiError(StatusCode::FORBIDDEN, err.to_string())),
        Err(err @ GateError::NotFound(_)) => Err(ApiError(StatusCode::NOT_FOUND, err.to_string())),
        Err(err @ (GateError::AlreadyDecided { .. } | GateError::NotPending { .. })) => {
            Err(ApiError(StatusCode::CONFLICT, err.to_string()))
        }
        Err(err) => Err(ApiError::internal(err)),
    }
}

/// `POST /v1/proposals/{id}/approve` `{"reason"}`.
#[utoipa::path(post, path = "/v1/proposals/{id}/approve", tag = "approvals", params(("id" = String, Path, description = "The proposal id")), request_body(content = Decision, description = "Optional reason"), security(("bearer" = [])), responses((status = 200, description = "The proposal after the decision"), (status = 403, description = "The policy does not let this person approve it", body = ErrorBody), (status = 404, description = "No such proposal", body = ErrorBody), (status = 409, description = "Already decided", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody)))]
pub async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &headers, &id, &body, true).await
}

/// `POST /v1/proposals/{id}/reject` `{"reason"}`.
#[utoipa::path(post, path = "/v1/proposals/{id}/reject", tag = "approvals", params(("id" = String, Path, description = "The proposal id")), request_body(content = Decision, description = "Optional reason"), security(("bearer" = [])), responses((status = 200, description = "The proposal after the decision"), (status = 403, description = "The policy does not let this person decide it", body = ErrorBody), (status = 404, description = "No such proposal", body = ErrorBody), (status = 409, description = "Already decided", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody)))]
pub async fn reject(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(&state, &headers, &id, &body, false).await
}

#[derive(Deserialize)]
pub struct AuditFilter {
    #[serde(default)]
    since_ms: Option<i64>,
}

/// `GET /v1/audit[?since_ms=]` (analysts, approvers, admins).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(("since_ms" = Option<i64>, Query, description = "Records from this time on")), security(("bearer" = [])), responses((status = 200, description = "Audit records"), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody), (status = 403, description = "The caller lacks the role", body = ErrorBody)))]
pub async fn audit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(filter): Query<AuditFilter>,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &[Role::Analyst, Role::Approver])?;
    let records = crate::audit::export(&state.store, filter.since_ms.unwrap_or(0))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(records).map_err(ApiError::internal)?))
}

/// `GET /v1/audit/verify`: `{"ok", "records", "first_broken"}`.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", security(("bearer" = [])), responses((status = 200, description = "{ok, records, first_broken}"), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody), (status = 403, description = "The caller lacks the role", body = ErrorBody)))]
pub async fn audit_verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    caller(&state, &headers, &[Role::Analyst, Role::Approver])?;
    let verification = crate::audit::verify(&state.store).await.map_err(ApiError::internal)?;
    Ok(Json(serde_json::to_value(verification).map_err(ApiError::internal)?))
}

/// An analyst's verdict on a triaged case.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerdictBody {
    /// The case id (the Cortex XDR incident id, or the id `GET /v1/triage/{id}` shows).
    pub case: String,
    /// `true_positive`, `false_positive` or `benign_change`.
    pub verdict: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/verdicts` (analysts): records the verdict, audited, and feeds it to the
/// past-cases knowledge that later triages search.
#[utoipa::path(post, path = "/v1/verdicts", tag = "cases", request_body = VerdictBody, security(("bearer" = [])), responses((status = 200, description = "Recorded"), (status = 400, description = "Malformed body or unknown verdict", body = ErrorBody), (status = 401, description = "No bearer token, or one this server does not know", body = ErrorBody), (status = 403, description = "The caller is not an analyst", body = ErrorBody), (status = 404, description = "No such case", body = ErrorBody)))]
pub async fn verdict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    use crate::knowledge::cases::{self, Verdict};
    let user = caller(&state, &headers, &[Role::Analyst, Role::Admin])?;
    let request: VerdictBody = parse(&body)?;
    let verdict = Verdict::parse(&request.verdict).map_err(ApiError::bad)?;
    let Some(mut case) = cases::all(&state.store)
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|c| c.id == request.case)
    else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no case {} was triaged", request.case),
        ));
    };
    let reason = request.reason.unwrap_or_else(|| "recorded through the API".into());
    cases::record_verdict(&state.store, &case.id, verdict, &user.name, &reason)
        .await
        .map_err(ApiError::internal)?;
    case.verdict = Some(verdict);
    case.verdict_reason = Some(reason);
    if let Err(err) = state.knowledge.add(&[case.doc()]).await {
        tracing::warn!("the verdict could not be indexed: {err}");
    }
    Ok(Json(json!({"case": case.id, "verdict": verdict.as_str(), "by": user.name})))
}
