//! Microsoft Teams, as a Bot Framework bot on `POST /v1/teams/messages`.
//!
//! Every activity carries `Authorization: Bearer <JWT>` signed by the Bot Framework
//! connector. The token is checked before anything in the body is acted on: RS256
//! only, a key from the configured OpenID metadata (`jwks_uri`), the issuer, the
//! audience (the bot's app id), expiry with five minutes of clock skew, the
//! `serviceUrl` claim equal to the activity's, and the key endorsed for the activity's
//! channel. A missing token is 401, any other failure 403; nothing is stored either way.
//!
//! What arrives:
//! - `invoke` `adaptiveCard/action` (`Action.Execute`, verb `approve` / `reject`,
//!   `data.actionId` the proposal): decided at once as the person whose AAD object id
//!   the users file names, answered with the refreshed card;
//! - a `message` whose `value` holds `decision` and `actionId` (`Action.Submit` from
//!   older clients): decided the same way; the card is refreshed in place by the
//!   write-up's update, and the person gets a reply;
//! - a `message` with text: a question (`hunt ...`, `triage CASE`, `device IP`),
//!   queued under the activity id (so a redelivery is answered once) and answered in
//!   the conversation through the connector;
//! - `conversationUpdate`, `installationUpdate`, `typing`, `messageReaction`: accepted
//!   and ignored. Anything else is 400.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{ApiError, AppState, auth};
use crate::actions::notify::{Notice, settle, teams_card};
use crate::actions::policy::{Role, User};
use crate::actions::{Connector, GateError, Outcome};
use crate::store::now_ms;

/// The job kind of Teams work done after the HTTP answer.
pub const TEAMS_JOB: &str = "teams";

/// Where the Bot Framework publishes its signing keys (multi-tenant bots).
pub const BOT_FRAMEWORK_METADATA: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The issuer of the connector's tokens.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";

/// Keys are fetched again after this long, and at most this often when a token names
/// a key the cache does not hold (the connector rotates keys with notice).
const KEYS_FRESH_FOR: Duration = Duration::from_secs(24 * 3600);
const KEYS_REFETCH_AFTER: Duration = Duration::from_secs(60);

/// Why an activity was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token at all (401).
    Missing,
    /// A token that does not hold (403), and why.
    Invalid(String),
    /// The keys could not be fetched (503): refused, never let through.
    Unavailable(String),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Missing => ApiError(
                StatusCode::UNAUTHORIZED,
                "a Bot Framework bearer token is required".into(),
            ),
            Refusal::Invalid(why) => ApiError(
                StatusCode::FORBIDDEN,
                format!("the Bot Framework token is refused: {why}"),
            ),
            Refusal::Unavailable(why) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the Bot Framework signing keys could not be read: {why}"),
            ),
        }
    }
}

#[derive(Clone, Debug)]
struct SigningKey {
    kid: String,
    n: String,
    e: String,
    /// Channels the key is endorsed for; `None` when the key lists none.
    endorsements: Option<Vec<String>>,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<SigningKey>,
    fetched: Option<Instant>,
}

/// Checks the connector's tokens against the configured metadata.
pub struct BotAuth {
    http: reqwest::Client,
    metadata_url: String,
    issuer: String,
    audience: String,
    cache: tokio::sync::Mutex<KeyCache>,
}

impl BotAuth {
    pub fn new(metadata_url: String, issuer: String, audience: String) -> Result<BotAuth, String> {
        reqwest::Url::parse(&metadata_url)
            .map_err(|err| format!("teams.openid_metadata {metadata_url:?}: {err}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| err.to_string())?;
        Ok(BotAuth { http, metadata_url, issuer, audience, cache: Default::default() })
    }

    /// The claims of a token that holds for an activity from `service_url` on
    /// `channel_id`.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        service_url: &str,
        channel_id: &str,
    ) -> Result<Value, Refusal> {
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(Refusal::Missing)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|err| Refusal::Invalid(format!("not a JWT ({err})")))?;
        if header.alg != Algorithm::RS256 {
            return Err(Refusal::Invalid(format!("algorithm {:?} is not RS256", header.alg)));
        }
        let kid = header.kid.ok_or_else(|| Refusal::Invalid("the token names no key".into()))?;
        let key = self.key(&kid).await?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 300;
        let decoding = DecodingKey::from_rsa_components(&key.n, &key.e)
            .map_err(|err| Refusal::Invalid(format!("key {kid} is not an RSA key: {err}")))?;
        let claims = jsonwebtoken::decode::<Value>(token, &decoding, &validation)
            .map_err(|err| Refusal::Invalid(err.to_string()))?
            .claims;
        let claimed = claims["serviceUrl"].as_str().unwrap_or_default();
        if claimed.trim_end_matches('/') != service_url.trim_end_matches('/') {
            return Err(Refusal::Invalid(format!(
                "the token is for service URL {claimed:?}, the activity names {service_url:?}"
            )));
        }
        if let Some(endorsed) = &key.endorsements
            && !endorsed.iter().any(|c| c == channel_id)
        {
            return Err(Refusal::Invalid(format!(
                "key {kid} is not endorsed for channel {channel_id:?}"
            )));
        }
        Ok(claims)
    }

    async fn key(&self, kid: &str) -> Result<SigningKey, Refusal> {
        let mut cache = self.cache.lock().await;
        let age = cache.fetched.map(|at| at.elapsed());
        let find = |cache: &KeyCache| cache.keys.iter().find(|k| k.kid == kid).cloned();
        if let (Some(key), Some(age)) = (find(&cache), age)
            && age < KEYS_FRESH_FOR
        {
            return Ok(key);
        }
        if age.is_none_or(|age| age >= KEYS_REFETCH_AFTER) {
            cache.keys = self.fetch().await?;
            cache.fetched = Some(Instant::now());
        }
        find(&cache).ok_or_else(|| Refusal::Invalid(format!("no signing key {kid:?}")))
    }

    async fn fetch(&self) -> Result<Vec<SigningKey>, Refusal> {
        let get = |url: String| async move {
            let response = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|err| Refusal::Unavailable(format!("{url}: {err}")))?;
            if !response.status().is_success() {
                return Err(Refusal::Unavailable(format!("{url}: HTTP {}", response.status())));
            }
            response
                .json::<Value>()
                .await
                .map_err(|err| Refusal::Unavailable(format!("{url}: {err}")))
        };
        let metadata = get(self.metadata_url.clone()).await?;
        let jwks = metadata["jwks_uri"].as_str().ok_or_else(|| {
            Refusal::Unavailable(format!("{} names no jwks_uri", self.metadata_url))
        })?;
        let set = get(jwks.to_string()).await?;
        let keys = set["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter(|k| k["kty"] == "RSA")
                    .filter_map(|k| {
                        Some(SigningKey {
                            kid: k["kid"].as_str()?.to_string(),
                            n: k["n"].as_str()?.to_string(),
                            e: k["e"].as_str()?.to_string(),
                            endorsements: k["endorsements"].as_array().map(|list| {
                                list.iter().filter_map(Value::as_str).map(str::to_string).collect()
                            }),
                        })
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if keys.is_empty() {
            return Err(Refusal::Unavailable(format!("{jwks} lists no RSA keys")));
        }
        Ok(keys)
    }
}

/// Teams as configured: the token check, and the connector for answers (when the bot's
/// password is set).
pub struct Teams {
    pub auth: BotAuth,
    pub connector: Option<Connector>,
}

fn person<'s>(state: &'s AppState, activity: &Value) -> Option<&'s User> {
    let aad = activity["from"]["aadObjectId"].as_str()?;
    state.users.users.iter().find(|u| u.teams_aad_object_id.as_deref() == Some(aad))
}

/// `POST /v1/teams/messages`.
#[utoipa::path(post, path = "/v1/teams/messages", tag = "teams", request_body(content = Object, description = "A Bot Framework activity"), params(("Authorization" = String, Header, description = "Bearer <JWT> signed by the Bot Framework connector")), responses((status = 200, description = "Handled; an Action.Execute invoke is answered with the refreshed card"), (status = 400, description = "Malformed or unhandled activity", body = super::api::ErrorBody), (status = 401, description = "No bearer token", body = super::api::ErrorBody), (status = 403, description = "The token does not hold", body = super::api::ErrorBody)))]
pub async fn messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(teams) = &state.teams else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "Teams is not configured (teams.app_id)".into(),
        ));
    };
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
    if authorization.is_none() {
        return Err(Refusal::Missing.into());
    }
    let activity: Value = serde_json::from_slice(&body)
        .map_err(|err| ApiError::bad(format!("the activity is not JSON: {err}")))?;
    let (Some(service_url), Some(channel_id)) =
        (activity["serviceUrl"].as_str(), activity["channelId"].as_str())
    else {
        return Err(ApiError::bad("an activity needs serviceUrl and channelId"));
    };
    teams.auth.verify(authorization, service_url, channel_id).await?;
    let kind = activity["type"].as_str().unwrap_or_default();
    match kind {
        "invoke" if activity["name"] == "adaptiveCard/action" => {
            let action = &activity["value"]["action"];
            let verb = action["verb"].as_str().unwrap_or_default();
            let proposal = action["data"]["actionId"].as_str().unwrap_or_default();
            Ok(Json(match decide(&state, &activity, verb, proposal).await? {
                Ok(card) => json!({"statusCode": 200,
                                   "type": "application/vnd.microsoft.card.adaptive",
                                   "value": card}),
                Err(why) => json!({"statusCode": 200,
                                   "type": "application/vnd.microsoft.activity.message",
                                   "value": why}),
            }))
        }
        "invoke" => Err(ApiError::bad(format!(
            "invoke {} is not handled (adaptiveCard/action)",
            activity["name"]
        ))),
        "message" if activity["value"]["decision"].is_string() => {
            let verb = activity["value"]["decision"].as_str().unwrap_or_default();
            let proposal = activity["value"]["actionId"].as_str().unwrap_or_default();
            let said = match decide(&state, &activity, verb, proposal).await? {
                Ok(_) => format!("Recorded: {verb} on {proposal}."),
                Err(why) => why,
            };
            queue_reply(&state, &activity, &said).await?;
            Ok(Json(json!({})))
        }
        "message" => {
            let id = activity["id"]
                .as_str()
                .ok_or_else(|| ApiError::bad("a message activity needs an id"))?;
            state
                .store
                .enqueue(
                    TEAMS_JOB,
                    &json!({"activity": activity}),
                    Some(&format!("teams-activity:{id}")),
                    now_ms(),
                )
                .await
                .map_err(ApiError::internal)?;
            Ok(Json(json!({})))
        }
        "conversationUpdate" | "installationUpdate" | "typing" | "messageReaction" => {
            Ok(Json(json!({"ignored": kind})))
        }
        other => Err(ApiError::bad(format!("activity type {other:?} is not handled"))),
    }
}

/// Decides on a proposal as the person behind the activity. `Ok(Ok(card))` is the
/// refreshed card; `Ok(Err(text))` says why nothing was decided.
async fn decide(
    state: &AppState,
    activity: &Value,
    verb: &str,
    proposal: &str,
) -> Result<Result<Value, String>, ApiError> {
    let approve = match verb {
        "approve" => true,
        "reject" => false,
        other => return Err(ApiError::bad(format!("verb {other:?} is not approve or reject"))),
    };
    if proposal.is_empty() {
        return Err(ApiError::bad("the card action names no proposal (actionId)"));
    }
    let Some(who) = person(state, activity) else {
        return Ok(Err(
            "You are not in pivotwatch's users file (by your Teams AAD object id); nothing was decided."
                .into(),
        ));
    };
    let reason = format!("decided in Teams by {}", who.name);
    let outcome = if approve {
        state.gate.approve(proposal, &who.name, &reason).await
    } else {
        state.gate.reject(proposal, &who.name, &reason).await
    };
    let decided = match outcome {
        Ok(p) => p,
        Err(
            err @ (GateError::NotAllowed { .. }
            | GateError::OwnProposal(_)
            | GateError::AlreadyDecided { .. }
            | GateError::NotPending { .. }
            | GateError::NotFound(_)
            | GateError::UnknownUser(_)),
        ) => return Ok(Err(format!("Not decided: {err}."))),
        Err(err) => return Err(ApiError::internal(err)),
    };
    Ok(Ok(refreshed_card(state, proposal, &decided).await.map_err(ApiError::internal)?))
}

/// The card that replaces the one a button was pressed on: the write-up showing the
/// proposal, brought up to date, or a short card for a proposal shown nowhere else.
async fn refreshed_card(
    state: &AppState,
    proposal: &str,
    decided: &crate::actions::Proposal,
) -> Result<Value, crate::store::StoreError> {
    if let Some(write_up) = state.store.write_ups_showing(proposal).await?.first()
        && let Some(value) = state.store.write_up(write_up).await?
        && let Ok(mut notice) = serde_json::from_value::<Notice>(value)
    {
        settle(&state.store, &mut notice).await?;
        return Ok(teams_card(&notice));
    }
    let mut notice = Notice {
        proposal: proposal.to_string(),
        title: format!("{} ({proposal})", decided.action.kind().replace('_', " ")),
        text: decided.reason.clone(),
        decisions: vec![crate::actions::notify::Decision {
            proposal: proposal.to_string(),
            label: decided.action.kind().replace('_', " "),
            ..Default::default()
        }],
        ..Notice::default()
    };
    settle(&state.store, &mut notice).await?;
    Ok(teams_card(&notice))
}

async fn queue_reply(state: &AppState, activity: &Value, text: &str) -> Result<(), ApiError> {
    let job = json!({"reply_to": reply_target(activity), "text": text});
    state.store.enqueue(TEAMS_JOB, &job, None, now_ms()).await.map_err(ApiError::internal)?;
    Ok(())
}

/// Where an answer to `activity` goes: its service URL, conversation and id.
fn reply_target(activity: &Value) -> Value {
    json!({"serviceUrl": activity["serviceUrl"], "conversation": activity["conversation"]["id"],
           "id": activity["id"], "from": activity["recipient"], "recipient": activity["from"]})
}

/// Runs queued Teams work until `stop` turns true.
pub async fn worker(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let worker = format!("{}-teams", std::process::id());
    let shared = &*state;
    super::worker::claim_loop(shared, TEAMS_JOB, &worker, 3, &mut stop, |job| async move {
        handle(shared, &job.payload).await
    })
    .await;
}

async fn handle(state: &AppState, job: &Value) -> Result<(), String> {
    let (target, text) = match (&job["reply_to"], &job["activity"]) {
        (target, _) if target.is_object() => {
            (target.clone(), job["text"].as_str().unwrap_or_default().to_string())
        }
        (_, activity) if activity.is_object() => {
            (reply_target(activity), answer_message(state, activity).await)
        }
        _ => return Err(format!("not a Teams job: {job}")),
    };
    let Some(connector) = state.teams.as_ref().and_then(|t| t.connector.as_ref()) else {
        return Err("teams.app_password is not set, so Teams messages cannot be answered".into());
    };
    let reply = json!({"type": "message", "text": text, "textFormat": "markdown",
                       "from": target["from"], "recipient": target["recipient"],
                       "conversation": {"id": target["conversation"]},
                       "replyToId": target["id"]});
    let path = format!("/{}", target["id"].as_str().unwrap_or_default());
    match connector
        .send(
            reqwest::Method::POST,
            target["serviceUrl"].as_str().unwrap_or_default(),
            target["conversation"].as_str().unwrap_or_default(),
            &path,
            &reply,
        )
        .await
    {
        Outcome::Succeeded(_) => Ok(()),
        Outcome::Retry(why) | Outcome::Throttled(why, _) | Outcome::Failed(why) => Err(why),
    }
}

/// What pivotwatch says to a message: the bot's mention is dropped, and the first word
/// picks the command (`triage CASE`, `device IP`; anything else is a request for the
/// agent, which answers hunts with the hunt).
async fn answer_message(state: &AppState, activity: &Value) -> String {
    let Some(who) = person(state, activity) else {
        return "You are not in pivotwatch's users file; ask an admin to add your Teams AAD object id."
            .into();
    };
    let raw = activity["text"].as_str().unwrap_or_default();
    let text = strip_mentions(raw);
    let (verb, argument) = match text.split_once(' ') {
        Some((verb @ ("triage" | "device"), argument)) => (verb, argument.trim()),
        _ => ("ask", text.as_str()),
    };
    if argument.is_empty() {
        return "Ask a question, `triage CASE_ID` or `device IP_OR_NAME`.".into();
    }
    let needs: &[Role] =
        if verb == "ask" { &[Role::Hunter, Role::Analyst] } else { &[Role::Analyst, Role::Viewer] };
    if !auth::has_role(who, needs) {
        return format!("{} lacks the role `{verb}` needs.", who.name);
    }
    super::slack::answer(state, verb, argument).await
}

/// The text without `<at>...</at>` mentions, on one line.
fn strip_mentions(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("<at>") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("</at>") {
            Some(end) => &rest[start + end + "</at>".len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Teams as the settings configure it (`teams.app_id` and, for answers,
/// `teams.app_password`), or none.
pub fn from_settings(get: crate::actions::settings::Lookup<'_>) -> Result<Option<Teams>, String> {
    let Some(app_id) = get("teams.app_id") else { return Ok(None) };
    let auth = BotAuth::new(
        get("teams.openid_metadata").unwrap_or_else(|| BOT_FRAMEWORK_METADATA.into()),
        get("teams.issuer").unwrap_or_else(|| BOT_FRAMEWORK_ISSUER.into()),
        app_id.clone(),
    )?;
    let connector = match get("teams.app_password") {
        Some(password) => Some(Connector::new(
            app_id,
            crate::actions::Secret::new(password),
            get("teams.token_url")
                .unwrap_or_else(|| crate::actions::notify::BOT_FRAMEWORK_TOKEN_URL.into()),
            Duration::from_secs(30),
        )?),
        None => None,
    };
    Ok(Some(Teams { auth, connector }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_dropped_from_the_question() {
        assert_eq!(
            strip_mentions("<at>pivotwatch</at>  which cameras talk\nat night?"),
            "which cameras talk at night?"
        );
        assert_eq!(strip_mentions("device 10.1.2.3 <at>pw"), "device 10.1.2.3");
    }
}
