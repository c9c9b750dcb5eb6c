//! Slack: the Events API (`url_verification`, `app_mention`, `message.im`), the
//! `/pivotwatch` slash command and interactivity (`block_actions` approve / reject).
//! Every request is checked against the signing secret over the raw body within five
//! minutes, acknowledged at once (Slack waits three seconds), and answered later by a
//! worker through `chat.postMessage` (in the thread the conversation started) or the
//! request's `response_url`. An event is handled once however often Slack retries it
//! (`event_id` is the job's key). People are matched by their Slack user id to the
//! users file; approvals go through the gate and its policy like any other.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::auth;
use super::{ApiError, AppState};
use crate::actions::GateError;
use crate::actions::policy::{Role, User};
use crate::store::now_ms;

/// The job kind of Slack work done after the acknowledgement.
pub const SLACK_JOB: &str = "slack";

fn verified(state: &AppState, headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
    let Some(secret) = &state.config.slack_signing_secret else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Slack is not configured (slack.signing_secret)".into(),
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    auth::verify(
        &auth::SLACK_V0,
        secret,
        (header(auth::SLACK_V0.timestamp_header), header(auth::SLACK_V0.signature_header)),
        body,
        now_ms() / 1000,
        Duration::from_secs(300),
    )
    .map_err(|err| ApiError(StatusCode::UNAUTHORIZED, err.to_string()))
}

fn person<'s>(state: &'s AppState, slack_user: &str) -> Option<&'s User> {
    state.users.users.iter().find(|u| u.slack_user_id.as_deref() == Some(slack_user))
}

fn form(body: &Bytes) -> std::collections::BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// `POST /v1/slack/events`.
#[utoipa::path(post, path = "/v1/slack/events", tag = "slack", request_body(content = Object, description = "An Events API envelope"), params(("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds"), ("X-Slack-Signature" = String, Header, description = "v0=<hex HMAC-SHA256 of \"v0:<timestamp>:<raw body>\"> with the signing secret")), responses((status = 200, description = "Acknowledged (url_verification answers the challenge)"), (status = 400, description = "Unhandled envelope or event type", body = super::api::ErrorBody), (status = 401, description = "Missing, forged or stale signature", body = super::api::ErrorBody)))]
pub async fn events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    verified(&state, &headers, &body)?;
    let envelope: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad(format!("the event is not JSON: {err}")))?;
    match envelope["type"].as_str() {
        Some("url_verification") => {
            let challenge = envelope["challenge"]
                .as_str()
                .ok_or_else(|| ApiError::bad("url_verification without a challenge"))?;
            Ok(Json(json!({"challenge": challenge})))
        }
        Some("event_callback") => {
            let event = &envelope["event"];
            let kind = event["type"].as_str().unwrap_or_default();
            if !matches!(kind, "app_mention" | "message") {
                return Err(ApiError::bad(format!(
                    "event type {kind:?} is not handled (app_mention, message.im)"
                )));
            }
            // Our own messages, edits and other bots' posts are not questions.
            if event.get("bot_id").is_some() || event.get("subtype").is_some() {
                return Ok(Json(json!({"ok": true, "ignored": "bot message or edit"})));
            }
            if kind == "message" && event["channel_type"] != "im" {
                return Ok(Json(json!({"ok": true, "ignored": "not a direct message"})));
            }
            let event_id = envelope["event_id"]
                .as_str()
                .ok_or_else(|| ApiError::bad("event_callback without an event_id"))?;
            state
                .store
                .enqueue(
                    SLACK_JOB,
                    &json!({"event": event}),
                    Some(&format!("slack-event:{event_id}")),
                    now_ms(),
                )
                .await
                .map_err(ApiError::internal)?;
            Ok(Json(json!({"ok": true})))
        }
        other => Err(ApiError::bad(format!("envelope type {other:?} is not handled"))),
    }
}

/// `POST /v1/slack/commands`: `/pivotwatch hunt QUESTION`, `/pivotwatch triage CASE`,
/// `/pivotwatch device ID`. Answers at once (ephemeral), then in the channel through
/// the `response_url`.
#[utoipa::path(post, path = "/v1/slack/commands", tag = "slack", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "A slash command"), params(("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds"), ("X-Slack-Signature" = String, Header, description = "v0=<hex HMAC-SHA256 of \"v0:<timestamp>:<raw body>\"> with the signing secret")), responses((status = 200, description = "An ephemeral acknowledgement; the answer follows through response_url"), (status = 401, description = "Missing, forged or stale signature", body = super::api::ErrorBody)))]
pub async fn commands(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    verified(&state, &headers, &body)?;
    let fields = form(&body);
    let (Some(user), Some(response_url)) = (fields.get("user_id"), fields.get("response_url"))
    else {
        return Err(ApiError::bad("a slash command needs user_id and response_url"));
    };
    let text = fields.get("text").map_or("", String::as_str).trim();
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let needs: &[Role] = match verb {
        "hunt" | "ask" => &[Role::Hunter, Role::Analyst],
        "triage" => &[Role::Analyst],
        "device" => &[Role::Viewer, Role::Hunter, Role::Analyst, Role::Approver],
        _ => {
            return Ok(ephemeral(
                "Usage: `/pivotwatch ask REQUEST`, `/pivotwatch hunt QUESTION`, `/pivotwatch triage CASE_ID`, `/pivotwatch device IP_OR_NAME`",
            ));
        }
    };
    let Some(who) = person(&state, user) else {
        return Ok(ephemeral(
            "You are not in pivotwatch's users file; ask an admin to add your Slack id.",
        ));
    };
    if !auth::has_role(who, needs) {
        return Ok(ephemeral(&format!("{} lacks the role `{verb}` needs.", who.name)));
    }
    if rest.trim().is_empty() {
        return Ok(ephemeral(&format!("`/pivotwatch {verb}` needs an argument.")));
    }
    let job = json!({"command": verb, "argument": rest.trim(), "response_url": response_url,
                     "user": who.name});
    state.store.enqueue(SLACK_JOB, &job, None, now_ms()).await.map_err(ApiError::internal)?;
    Ok(ephemeral(&format!("Working on `{verb} {}`…", rest.trim())))
}

fn ephemeral(text: &str) -> Json<Value> {
    Json(json!({"response_type": "ephemeral", "text": text}))
}

/// `POST /v1/slack/interactions`: approve / reject buttons (`block_actions` whose
/// `action_id` is `approve` or `reject` and whose value is the proposal id).
#[utoipa::path(post, path = "/v1/slack/interactions", tag = "slack", request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "payload=<block_actions JSON>"), params(("X-Slack-Request-Timestamp" = String, Header, description = "Unix seconds"), ("X-Slack-Signature" = String, Header, description = "v0=<hex HMAC-SHA256 of \"v0:<timestamp>:<raw body>\"> with the signing secret")), responses((status = 200, description = "Decided; the outcome follows through response_url"), (status = 400, description = "Unhandled interaction", body = super::api::ErrorBody), (status = 401, description = "Missing, forged or stale signature", body = super::api::ErrorBody)))]
pub async fn interactions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    verified(&state, &headers, &body)?;
    let payload = form(&body)
        .remove("payload")
        .ok_or_else(|| ApiError::bad("an interaction needs a `payload` field"))?;
    let payload: Value = serde_json::from_str(&payload)
        .map_err(|err| ApiError::bad(format!("the interaction payload is not JSON: {err}")))?;
    if payload["type"] != "block_actions" {
        return Err(ApiError::bad(format!("interaction type {} is not handled", payload["type"])));
    }
    let action = &payload["actions"][0];
    let approve = match action["action_id"].as_str() {
        Some("approve") => true,
        Some("reject") => false,
        other => return Err(ApiError::bad(format!("action {other:?} is not handled"))),
    };
    let proposal =
        action["value"].as_str().ok_or_else(|| ApiError::bad("the action has no value"))?;
    let slack_user = payload["user"]["id"].as_str().unwrap_or_default();
    let response_url = payload["response_url"].as_str().map(str::to_string);
    let text = match person(&state, slack_user) {
        None => format!("<@{slack_user}> is not in pivotwatch's users file; nothing was decided."),
        Some(who) => {
            let reason = format!("decided in Slack by {}", who.name);
            let outcome = if approve {
                state.gate.approve(proposal, &who.name, &reason).await
            } else {
                state.gate.reject(proposal, &who.name, &reason).await
            };
            match outcome {
                Ok(p) => format!(
                    "{} {} by {} at {}: now {}.",
                    p.action.kind(),
                    if approve { "approved" } else { "rejected" },
                    who.name,
                    crate::timefmt::rfc3339(now_ms() as f64 / 1000.0),
                    p.state.as_str()
                ),
                Err(
                    err @ (GateError::NotAllowed { .. }
                    | GateError::OwnProposal(_)
                    | GateError::AlreadyDecided { .. }
                    | GateError::NotPending { .. }
                    | GateError::NotFound(_)),
                ) => format!("Not decided: {err}."),
                Err(err) => return Err(ApiError::internal(err)),
            }
        }
    };
    if let Some(url) = response_url {
        let job = json!({"respond": url, "message": {"replace_original": false, "response_type": "ephemeral", "text": text}});
        state.store.enqueue(SLACK_JOB, &job, None, now_ms()).await.map_err(ApiError::internal)?;
    }
    Ok(Json(json!({"ok": true})))
}

/// Runs queued Slack work until `stop` turns true.
pub async fn worker(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let worker = format!("{}-slack", std::process::id());
    let http =
        reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
    let (shared, http) = (&*state, &http);
    super::worker::claim_loop(shared, SLACK_JOB, &worker, 3, &mut stop, |job| async move {
        handle(shared, http, &job.payload).await
    })
    .await;
}

async fn handle(state: &AppState, http: &reqwest::Client, job: &Value) -> Result<(), String> {
    if let Some(url) = job["respond"].as_str() {
        return post(http, url, None, &job["message"]).await;
    }
    if let Some(verb) = job["command"].as_str() {
        let answer = answer(state, verb, job["argument"].as_str().unwrap_or_default()).await;
        let message = json!({"response_type": "in_channel", "text": answer});
        return post(http, job["response_url"].as_str().unwrap_or_default(), None, &message).await;
    }
    let event = &job["event"];
    let Some(who) = person(state, event["user"].as_str().unwrap_or_default()) else {
        return reply(
            state,
            http,
            event,
            "You are not in pivotwatch's users file; ask an admin to add your Slack id.",
        )
        .await;
    };
    // The mention itself (`<@U…>`) is not part of the question.
    let text: String = event["text"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .filter(|w| !(w.starts_with("<@") && w.ends_with('>')))
        .collect::<Vec<_>>()
        .join(" ");
    let (verb, argument) = match text.split_once(' ') {
        Some((verb @ ("triage" | "device"), argument)) => (verb, argument),
        _ => ("ask", text.as_str()),
    };
    let needs: &[Role] =
        if verb == "ask" { &[Role::Hunter, Role::Analyst] } else { &[Role::Analyst, Role::Viewer] };
    let answer = if auth::has_role(who, needs) {
        answer(state, verb, argument).await
    } else {
        format!("{} lacks the role `{verb}` needs.", who.name)
    };
    reply(state, http, event, &answer).await
}

/// What pivotwatch says to a command (Slack and Teams alike).
pub(crate) async fn answer(state: &AppState, verb: &str, argument: &str) -> String {
    match verb {
        "ask" => {
            // A hunt the planner reads goes the hunt's way (query, rows, next hunts);
            // anything else (a case, a device, an action) to the agent with its tools.
            let reading = crate::agent::ask::read(argument);
            if reading.hunt.is_some()
                && reading.case_id.is_none()
                && reading.ips.is_empty()
                && reading.actions.is_empty()
            {
                return hunt_answer(state, argument).await;
            }
            let options = crate::agent::ask::AskOptions {
                llm: state.llm.as_deref(),
                knowledge: Some(&state.knowledge),
                store: Some(&state.store),
                gate: Some(&state.gate),
                proposer: crate::audit::Actor::Agent,
                limits: crate::agent::run::Limits::default(),
            };
            let result = crate::agent::ask::ask(&*state.xdr, argument, &options).await;
            let mut text = result.answer;
            for proposed in &result.proposed {
                if let Some(id) = &proposed.id {
                    text.push_str(&format!(
                        "\nProposed {} as {id}; it waits for a person's approval.",
                        proposed.kind
                    ));
                }
            }
            if let Some(why) = &result.fallback {
                text.push_str(&format!("\n(answered by the offline router: {why})"));
            }
            text
        }
        "hunt" => hunt_answer(state, argument).await,
        "device" => match crate::agent::tools::device_profile(&*state.xdr, argument).await {
            Ok(profile) => profile.summary,
            Err(err) => format!("No profile for {argument}: {err}"),
        },
        "triage" => match state
            .store
            .accept_triage(&json!({"incident_id": argument, "requested_by": "slack"}))
            .await
        {
            Ok(id) => format!(
                "Triage of case {argument} queued as {id}; the write-up will follow in the channel."
            ),
            Err(err) => format!("The triage could not be queued: {err}"),
        },
        other => format!("`{other}` is not a command."),
    }
}

/// A hunt's answer for chat: the query, the summary and the next hunts.
async fn hunt_answer(state: &AppState, argument: &str) -> String {
    let result =
        crate::agent::hunt(&*state.xdr, state.llm.as_deref(), argument, Some(&state.store)).await;
    match &result.xql {
        Some(xql) => {
            let follow: Vec<String> =
                result.follow_ups.iter().map(|f| format!("• {}", f.question)).collect();
            format!(
                "*{argument}*\n```{xql}```\n{}\n{}",
                result.summary,
                if follow.is_empty() {
                    String::new()
                } else {
                    format!("Next hunts:\n{}", follow.join("\n"))
                }
            )
        }
        None => result.summary,
    }
}

/// Answers an event in its thread (a thread keeps the conversation).
async fn reply(
    state: &AppState,
    http: &reqwest::Client,
    event: &Value,
    text: &str,
) -> Result<(), String> {
    let Some(token) = &state.config.slack_bot_token else {
        return Err("slack.bot_token is not set, so events cannot be answered".into());
    };
    let thread = event["thread_ts"].as_str().or_else(|| event["ts"].as_str());
    let message = json!({"channel": event["channel"], "thread_ts": thread, "text": text});
    let url = format!("{}/chat.postMessage", state.config.slack_api_url.trim_end_matches('/'));
    post(http, &url, Some(token.expose()), &message).await
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &Value,
) -> Result<(), String> {
    let mut request = http.post(url).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|err| format!("{url}: {err}"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() || answer["ok"] == false {
        return Err(format!("{url}: {status} {answer}"));
    }
    Ok(())
}
