//! Notices to people: when a standing approval lets a containment run without anyone
//! pressing a button, the people who granted it hear about it at once, in Slack
//! (`chat.postMessage` to a channel) and/or Teams (a Bot Framework message with an
//! Adaptive Card posted to a conversation).
//!
//! A notice is a job (`notify`) queued in the same transaction as the approval that
//! causes it, so it survives a crash and is sent by whichever replica claims it. The
//! first attempt tries every channel; a channel that fails gets a job of its own, so a
//! retry never repeats a message that already went out on another channel.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gate::Outcome;
use super::http::{Answer, Secret, exchange, status_outcome};
use super::settings::Lookup;
use crate::audit::{self, Actor, Kind};
use crate::store::writeups::DecisionTrail;
use crate::store::{Store, StoreError};

/// The job kind of a notice.
pub const NOTIFY_JOB: &str = "notify";

/// How often one channel is tried before the notice is given up on it (about an hour
/// and a half of retries); the audit trail keeps every attempt.
const NOTICE_ATTEMPTS: i64 = 20;

/// What people are told.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The proposal (or write-up) the notice is about.
    pub proposal: String,
    pub title: String,
    pub text: String,
    /// Short label/value pairs shown beside the text.
    #[serde(default)]
    pub facts: Vec<(String, String)>,
    /// Lines of evidence, shown as a list (at most five).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// ATT&CK techniques as (label, address) pairs, shown as links.
    #[serde(default)]
    pub techniques: Vec<(String, String)>,
    /// Proposals a reader may decide on from the message: an approve / reject pair
    /// each (at most five), replaced by who decided and when once they have.
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// A last line in small print (who wrote it).
    #[serde(default)]
    pub footer: Option<String>,
}

/// One proposal offered for a decision in a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub proposal: String,
    /// What the proposal would do, in a few words.
    pub label: String,
    /// Whether the buttons are still offered.
    #[serde(default)]
    pub open: bool,
    /// What has been decided so far ("Approved by alice at ...").
    #[serde(default)]
    pub status: Option<String>,
}

/// Somewhere a notice can be posted.
#[async_trait]
pub trait Channel: Send + Sync {
    /// A stable name, used to retry this channel alone: `slack`, `teams`.
    fn name(&self) -> &str;

    /// Posts the notice, or edits the message `posted` identifies (what an earlier
    /// `Succeeded` carried). `Succeeded` carries what identifies the message.
    async fn send(&self, notice: &Notice, posted: Option<&Value>) -> Outcome;
}

/// Sends due notices until none is ready. Returns how many jobs were handled.
///
/// A job carries either a notice (`{"notice"}`, posted once) or names a write-up
/// (`{"write_up"}`): the write-up's current notice is read from the store, its
/// decisions brought up to date, and each channel's message edited in place. Only the
/// write-up's own job (`"post": true`) posts a message a channel does not have yet; a
/// refresh after a decision edits what exists.
pub async fn deliver_notices(
    store: &Store,
    channels: &[&dyn Channel],
    worker: &str,
    lease: Duration,
) -> Result<usize, StoreError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut handled = 0;
    while let Some(job) = store.claim(NOTIFY_JOB, worker, lease_ms, crate::store::now_ms()).await? {
        handled += 1;
        let write_up = job.payload["write_up"].as_str().map(str::to_string);
        let loaded = match &write_up {
            Some(id) => load_write_up(store, id).await?,
            None => serde_json::from_value::<Notice>(job.payload["notice"].clone())
                .map(|notice| (notice, BTreeMap::new()))
                .map_err(|err| format!("not a notice: {err}")),
        };
        let (notice, posted) = match loaded {
            Ok(loaded) => loaded,
            Err(why) => {
                store.fail(job.id, worker, &why, None).await?;
                continue;
            }
        };
        let may_post = write_up.is_none() || job.payload["post"].as_bool() == Some(true);
        // A job names one channel when it retries that channel alone.
        let only = job.payload["channel"].as_str();
        let targets: Vec<&dyn Channel> =
            channels.iter().copied().filter(|c| only.is_none_or(|name| c.name() == name)).collect();
        if targets.is_empty() {
            let why = match only {
                Some(name) => format!("the {name} channel is no longer configured"),
                None => "no chat channel is configured; the notice is in the audit trail only"
                    .to_string(),
            };
            tracing::warn!(proposal = %notice.proposal, "{why}");
            record(store, &notice, json!({"delivered": false, "why": why})).await?;
            store.complete(job.id, worker).await?;
            continue;
        }
        let mut again: Option<(String, Duration)> = None;
        for channel in targets {
            let existing = posted.get(channel.name());
            if existing.is_none() && !may_post {
                // Nothing to edit: the write-up's own job posts the current state.
                continue;
            }
            let outcome = channel.send(&notice, existing).await;
            let (state, detail, retry) = match outcome {
                Outcome::Succeeded(detail) => ("sent", detail, None),
                Outcome::Retry(why) => ("retrying", json!({"error": why}), Some(Duration::ZERO)),
                Outcome::Throttled(why, after) => ("retrying", json!({"error": why}), Some(after)),
                Outcome::Failed(why) => ("failed", json!({"error": why}), None),
            };
            if let (Some(id), "sent") = (&write_up, state) {
                store.set_write_up_message(id, channel.name(), &detail).await?;
            }
            record(
                store,
                &notice,
                json!({"channel": channel.name(), "state": state, "attempt": job.attempts,
                       "edited": existing.is_some(), "detail": detail}),
            )
            .await?;
            let Some(pause) = retry else { continue };
            if only.is_some() {
                again = Some((detail["error"].as_str().unwrap_or_default().to_string(), pause));
            } else {
                // This channel alone is tried again, by a job of its own.
                let (payload, key) = match &write_up {
                    Some(id) => (
                        json!({"write_up": id, "post": may_post, "channel": channel.name()}),
                        format!("notify:{id}:{}:{}", channel.name(), job.id),
                    ),
                    None => (
                        json!({"notice": notice, "channel": channel.name()}),
                        format!("notify:{}:{}", notice.proposal, channel.name()),
                    ),
                };
                store.enqueue(NOTIFY_JOB, &payload, Some(&key), retry_at(1, pause)).await?;
            }
        }
        match again {
            Some((why, _)) if job.attempts >= NOTICE_ATTEMPTS => {
                tracing::error!(proposal = %notice.proposal, "notice given up: {why}");
                store.fail(job.id, worker, &why, None).await?
            }
            Some((why, pause)) => {
                store.fail(job.id, worker, &why, Some(retry_at(job.attempts, pause))).await?
            }
            None => store.complete(job.id, worker).await?,
        };
    }
    Ok(handled)
}

/// A write-up's notice with its decisions as they stand now, and where it was posted.
/// The outer error is the database's; the inner one says why the job cannot run.
async fn load_write_up(
    store: &Store,
    id: &str,
) -> Result<Result<(Notice, BTreeMap<String, Value>), String>, StoreError> {
    let Some(value) = store.write_up(id).await? else {
        return Ok(Err(format!("there is no write-up {id}")));
    };
    let mut notice: Notice = match serde_json::from_value(value) {
        Ok(notice) => notice,
        Err(err) => return Ok(Err(format!("write-up {id} is not a notice: {err}"))),
    };
    settle(store, &mut notice).await?;
    Ok(Ok((notice, store.write_up_messages(id).await?)))
}

/// Brings each decision offered in `notice` up to date with the database.
pub async fn settle(store: &Store, notice: &mut Notice) -> Result<(), StoreError> {
    for decision in &mut notice.decisions {
        match store.decision_trail(&decision.proposal).await? {
            Some(trail) => (decision.open, decision.status) = describe(&trail),
            None => {
                decision.open = false;
                decision.status = Some("This proposal no longer exists.".into());
            }
        }
    }
    Ok(())
}

/// Whether a proposal still takes decisions, and what was decided on it so far.
pub fn describe(trail: &DecisionTrail) -> (bool, Option<String>) {
    let at = |ms: i64| crate::timefmt::rfc3339((ms / 1000) as f64);
    let said: Vec<String> = trail
        .decisions
        .iter()
        .map(|(who, what, when)| {
            let verb = if what == "approve" { "Approved" } else { "Rejected" };
            format!("{verb} by {who} at {}", at(*when))
        })
        .collect();
    match trail.state.as_str() {
        "proposed" if said.is_empty() => (true, None),
        "proposed" => (true, Some(format!("{}; another approval is needed.", said.join("; ")))),
        "expired" => {
            (false, Some(format!("Expired at {} without a decision.", at(trail.expires_at_ms))))
        }
        "approved" | "rejected" => (false, Some(format!("{}.", said.join("; ")))),
        state => (false, Some(format!("{}; now {state}.", said.join("; ")))),
    }
}

/// When a notice is tried again: soon, since it is meant to be immediate (5 s doubling
/// to at most 5 min), never before the pause the channel asked for.
fn retry_at(attempt: i64, pause: Duration) -> i64 {
    let shift = u32::try_from(attempt.clamp(1, 7) - 1).unwrap_or(0);
    let backoff = (5_000_i64 << shift).min(300_000);
    crate::store::now_ms() + backoff.max(i64::try_from(pause.as_millis()).unwrap_or(i64::MAX))
}

async fn record(store: &Store, notice: &Notice, mut detail: Value) -> Result<(), StoreError> {
    detail["notice"] = json!(notice.proposal);
    audit::append(store, &Actor::System, Kind::Notification, detail).await?;
    Ok(())
}

/// The channels the settings configure (`slack.*`, `teams.*`); none is an empty list.
pub fn channels(get: Lookup<'_>, timeout: Duration) -> Result<Vec<Box<dyn Channel>>, String> {
    let mut channels: Vec<Box<dyn Channel>> = Vec::new();
    if let Some(channel) = get("slack.notify_channel") {
        let token = get("slack.bot_token").ok_or(
            "slack.bot_token (PIVOTWATCH_SLACK_BOT_TOKEN) is required when \
             slack.notify_channel is set",
        )?;
        channels.push(Box::new(SlackChannel::new(
            get("slack.api_url").unwrap_or_else(|| "https://slack.com/api".into()),
            Secret::new(token),
            channel,
            timeout,
        )?));
    }
    if let Some(conversation) = get("teams.notify_conversation") {
        let need = |setting: &str| {
            get(setting).ok_or_else(|| {
                format!(
                    "{setting} (PIVOTWATCH_{}) is required when teams.notify_conversation is set",
                    setting.replace('.', "_").to_ascii_uppercase()
                )
            })
        };
        channels.push(Box::new(TeamsChannel::new(TeamsConfig {
            service_url: need("teams.service_url")?,
            conversation,
            app_id: need("teams.app_id")?,
            app_password: Secret::new(need("teams.app_password")?),
            token_url: get("teams.token_url").unwrap_or_else(|| BOT_FRAMEWORK_TOKEN_URL.into()),
            timeout,
        })?));
    }
    Ok(channels)
}

fn client(timeout: Duration, what: &str) -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(timeout).build().map_err(|err| format!("{what}: {err}"))
}

/// Posts notices to one Slack channel with a bot token (`chat:write`).
pub struct SlackChannel {
    http: reqwest::Client,
    api_url: String,
    token: Secret,
    channel: String,
}

impl SlackChannel {
    /// `api_url` is `https://slack.com/api` outside tests.
    pub fn new(
        api_url: String,
        token: Secret,
        channel: String,
        timeout: Duration,
    ) -> Result<SlackChannel, String> {
        reqwest::Url::parse(&api_url).map_err(|err| format!("slack.api_url {api_url:?}: {err}"))?;
        Ok(SlackChannel { http: client(timeout, "slack")?, api_url, token, channel })
    }

    fn message(&self, notice: &Notice) -> Value {
        let mut message = slack_message(notice);
        message["channel"] = json!(self.channel);
        message
    }

    async fn call(&self, method: &str, body: &Value) -> Outcome {
        let url = format!("{}/{method}", self.api_url.trim_end_matches('/'));
        let request = self.http.post(url).bearer_auth(self.token.expose()).json(body);
        let Answer { status, retry_after: pause, body, .. } = match exchange("Slack", request).await
        {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        // Slack answers 200 with `ok: false` for most refusals; only 429 and 5xx are
        // worth another try.
        let error = body["error"].as_str().unwrap_or("no error named");
        match (status, body["ok"].as_bool()) {
            (200, Some(true)) => {
                Outcome::Succeeded(json!({"channel": body["channel"], "ts": body["ts"]}))
            }
            (200, _) if error == "ratelimited" => {
                Outcome::Throttled(format!("Slack: {error}"), pause.unwrap_or(Duration::ZERO))
            }
            (200, _) => Outcome::Failed(format!("Slack refused the message: {error}")),
            (status, _) => status_outcome("Slack", status, pause, error),
        }
    }
}

/// Slack's mrkdwn gives `&`, `<` and `>` meaning (`<!channel>`, `<url|text>`): text
/// that comes from telemetry or a model is escaped so it can neither mention people
/// nor plant links.
fn mrkdwn(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Block Kit message for a notice: a header, the facts as fields, the text, the
/// evidence as a list, the ATT&CK techniques as links, then per proposal an approve /
/// reject pair, or who decided and when.
pub fn slack_message(notice: &Notice) -> Value {
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": clip(&notice.title, 150)}}),
    ];
    if !notice.facts.is_empty() {
        // A section holds at most ten fields.
        let fields: Vec<Value> = notice
            .facts
            .iter()
            .take(10)
            .map(|(k, v)| {
                json!({"type": "mrkdwn", "text": clip(&format!("*{}*\n{}", mrkdwn(k), mrkdwn(v)), 2000)})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    blocks.push(
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&mrkdwn(&notice.text), 3000)}}),
    );
    if !notice.evidence.is_empty() {
        let lines: Vec<String> =
            notice.evidence.iter().take(5).map(|line| format!("• {}", mrkdwn(line))).collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*Evidence*\n{}", lines.join("\n")), 3000)}}));
    }
    if !notice.techniques.is_empty() {
        let links: Vec<String> = notice
            .techniques
            .iter()
            .map(|(label, url)| format!("<{}|{}>", mrkdwn(url), mrkdwn(label)))
            .collect();
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*ATT&amp;CK for ICS:* {}", links.join(", ")), 3000)}}));
    }
    for decision in notice.decisions.iter().take(5) {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
            "text": clip(&format!("*Proposed:* {} (`{}`)", mrkdwn(&decision.label),
                                  mrkdwn(&decision.proposal)), 3000)}}));
        if let Some(status) = &decision.status {
            blocks.push(json!({"type": "context", "elements": [
                {"type": "mrkdwn", "text": clip(&mrkdwn(status), 3000)}]}));
        }
        if decision.open {
            blocks.push(json!({"type": "actions", "block_id": format!("decide:{}", decision.proposal),
                "elements": [
                {"type": "button", "action_id": "approve", "value": decision.proposal, "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "reject", "value": decision.proposal, "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject"}}]}));
        }
    }
    let footer = notice.footer.clone().unwrap_or_else(|| format!("proposal `{}`", notice.proposal));
    blocks.push(
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": mrkdwn(&footer)}]}),
    );
    json!({
        // The fallback shown in notifications and by clients without blocks.
        "text": clip(&mrkdwn(&format!("{}: {}", notice.title, notice.text)), 3000),
        "blocks": blocks,
        "unfurl_links": false,
    })
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        "slack"
    }

    async fn send(&self, notice: &Notice, posted: Option<&Value>) -> Outcome {
        let mut message = self.message(notice);
        if let Some((channel, ts)) =
            posted.and_then(|p| Some((p["channel"].as_str()?, p["ts"].as_str()?)))
        {
            message["channel"] = json!(channel);
            message["ts"] = json!(ts);
            let outcome = self.call("chat.update", &message).await;
            // A message deleted in Slack is posted again rather than lost.
            match &outcome {
                Outcome::Failed(why) if why.ends_with("message_not_found") => {
                    message.as_object_mut().map(|m| m.remove("ts"));
                    message["channel"] = json!(self.channel);
                }
                _ => return outcome,
            }
        }
        self.call("chat.postMessage", &message).await
    }
}

/// Where Bot Framework issues tokens for multi-tenant bots.
pub const BOT_FRAMEWORK_TOKEN_URL: &str =
    "https://login.microsoftonline.com/botframework.com/oauth2/v2.0/token";

#[derive(Clone, Debug)]
pub struct TeamsConfig {
    /// The Bot Framework service URL of the tenant, e.g.
    /// `https://smba.trafficmanager.net/emea/`.
    pub service_url: String,
    /// The conversation (a channel or chat, `19:...`) notices go to.
    pub conversation: String,
    /// The bot's Microsoft App ID and password (client secret).
    pub app_id: String,
    pub app_password: Secret,
    pub token_url: String,
    pub timeout: Duration,
}

/// The bot's side of the Bot Framework connector: a client-credentials token, kept
/// until a minute before it expires, and activities sent with it. The same connector
/// posts notices and answers people who write to the bot.
pub struct Connector {
    http: reqwest::Client,
    app_id: String,
    app_password: Secret,
    token_url: String,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl Connector {
    pub fn new(
        app_id: String,
        app_password: Secret,
        token_url: String,
        timeout: Duration,
    ) -> Result<Connector, String> {
        reqwest::Url::parse(&token_url)
            .map_err(|err| format!("teams.token_url {token_url:?}: {err}"))?;
        Ok(Connector {
            http: client(timeout, "teams")?,
            app_id,
            app_password,
            token_url,
            token: tokio::sync::Mutex::new(None),
        })
    }

    async fn access_token(&self) -> Result<Secret, Outcome> {
        let mut held = self.token.lock().await;
        if let Some((token, until)) = held.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.app_id.as_str()),
            ("client_secret", self.app_password.expose()),
            ("scope", "https://api.botframework.com/.default"),
        ];
        let request = self.http.post(&self.token_url).form(&form);
        let Answer { status, retry_after: pause, body, .. } =
            exchange("Bot Framework login", request).await?;
        let Some(access) = body["access_token"].as_str().filter(|_| status == 200) else {
            let why = body["error_description"]
                .as_str()
                .or_else(|| body["error"].as_str())
                .unwrap_or("no access_token in the answer");
            return Err(status_outcome("Bot Framework login", status.max(400), pause, why));
        };
        let lifetime = body["expires_in"].as_u64().unwrap_or(3600).saturating_sub(60);
        let token = Secret::new(access);
        *held = Some((token.clone(), Instant::now() + Duration::from_secs(lifetime)));
        Ok(token)
    }

    /// Sends `activity` to `{service_url}/v3/conversations/{conversation}/activities`
    /// plus `path` (empty to post, `/{id}` to reply to or, with PUT, replace an
    /// activity). `Succeeded` carries the conversation and the activity id.
    pub async fn send(
        &self,
        method: reqwest::Method,
        service_url: &str,
        conversation: &str,
        path: &str,
        activity: &Value,
    ) -> Outcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let url = format!(
            "{}/v3/conversations/{conversation}/activities{path}",
            service_url.trim_end_matches('/')
        );
        let request = self.http.request(method, url).bearer_auth(token.expose()).json(activity);
        let Answer { status, retry_after: pause, body, .. } = match exchange("Teams", request).await
        {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        if (200..300).contains(&status) {
            return Outcome::Succeeded(
                json!({"conversation": conversation, "activity": body["id"]}),
            );
        }
        if status == 401 {
            // The token was refused before its time: ask for a new one next attempt.
            *self.token.lock().await = None;
            return Outcome::Retry("Teams answered HTTP 401: the bot token was refused".into());
        }
        let message = body["error"]["message"].as_str().unwrap_or("no error message");
        status_outcome("Teams", status, pause, message)
    }
}

/// A Bot Framework message activity carrying one Adaptive Card.
pub fn card_activity(summary: &str, card: Value) -> Value {
    json!({
        "type": "message",
        "summary": summary,
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}],
    })
}

/// Posts notices into one Teams conversation as the bot.
pub struct TeamsChannel {
    connector: Connector,
    service_url: String,
    conversation: String,
}

impl TeamsChannel {
    pub fn new(config: TeamsConfig) -> Result<TeamsChannel, String> {
        reqwest::Url::parse(&config.service_url)
            .map_err(|err| format!("teams.service_url {:?}: {err}", config.service_url))?;
        Ok(TeamsChannel {
            connector: Connector::new(
                config.app_id,
                config.app_password,
                config.token_url,
                config.timeout,
            )?,
            service_url: config.service_url,
            conversation: config.conversation,
        })
    }
}

/// Text for an Adaptive Card `TextBlock`, whose markdown would otherwise turn planted
/// `[text](address)` into a link with hidden text: the pair is broken apart.
fn card_text(text: &str) -> String {
    text.replace("](", "] (")
}

/// The Adaptive Card for a notice, laid out like the Slack message. Open decisions
/// are `Action.Execute` buttons (with an `Action.Submit` fallback for older clients)
/// whose data names the proposal.
pub fn teams_card(notice: &Notice) -> Value {
    let mut body = vec![json!({"type": "TextBlock", "text": card_text(&notice.title),
                               "weight": "Bolder", "size": "Medium", "wrap": true})];
    if !notice.facts.is_empty() {
        let facts: Vec<Value> = notice
            .facts
            .iter()
            .map(|(k, v)| json!({"title": card_text(k), "value": card_text(v)}))
            .collect();
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    body.push(json!({"type": "TextBlock", "text": card_text(&notice.text), "wrap": true}));
    if !notice.evidence.is_empty() {
        let lines: Vec<String> =
            notice.evidence.iter().take(5).map(|line| format!("- {}", card_text(line))).collect();
        body.push(
            json!({"type": "TextBlock", "text": format!("**Evidence**\n\n{}", lines.join("\n")),
                         "wrap": true}),
        );
    }
    if !notice.techniques.is_empty() {
        let links: Vec<String> = notice
            .techniques
            .iter()
            .map(|(label, url)| format!("[{}]({url})", card_text(label)))
            .collect();
        body.push(
            json!({"type": "TextBlock", "text": format!("**ATT&CK for ICS:** {}", links.join(", ")),
                         "wrap": true}),
        );
    }
    for decision in notice.decisions.iter().take(5) {
        body.push(json!({"type": "TextBlock", "wrap": true, "separator": true,
            "text": format!("**Proposed:** {} ({})", card_text(&decision.label), decision.proposal)}));
        if let Some(status) = &decision.status {
            body.push(json!({"type": "TextBlock", "text": card_text(status), "isSubtle": true, "wrap": true}));
        }
        if decision.open {
            let button = |verb: &str, title: &str| {
                json!({"type": "Action.Execute", "title": title, "verb": verb,
                       "data": {"actionId": decision.proposal},
                       "fallback": {"type": "Action.Submit", "title": title,
                                    "data": {"decision": verb, "actionId": decision.proposal}}})
            };
            body.push(json!({"type": "ActionSet",
                             "actions": [button("approve", "Approve"), button("reject", "Reject")]}));
        }
    }
    let footer = notice.footer.clone().unwrap_or_else(|| format!("proposal {}", notice.proposal));
    body.push(
        json!({"type": "TextBlock", "text": card_text(&footer), "isSubtle": true, "size": "Small",
                     "wrap": true}),
    );
    json!({
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": body,
    })
}

#[async_trait]
impl Channel for TeamsChannel {
    fn name(&self) -> &str {
        "teams"
    }

    async fn send(&self, notice: &Notice, posted: Option<&Value>) -> Outcome {
        let mut activity = card_activity(&notice.title, teams_card(notice));
        let (url, conversation) = (self.service_url.as_str(), self.conversation.as_str());
        if let Some(id) = posted.and_then(|p| p["activity"].as_str()) {
            activity["id"] = json!(id);
            let outcome = self
                .connector
                .send(reqwest::Method::PUT, url, conversation, &format!("/{id}"), &activity)
                .await;
            // A message deleted in Teams is posted again rather than lost.
            match &outcome {
                Outcome::Failed(why) if why.contains("HTTP 404") => {
                    activity.as_object_mut().map(|a| a.remove("id"));
                }
                _ => return outcome,
            }
        }
        self.connector.send(reqwest::Method::POST, url, conversation, "", &activity).await
    }
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_to_what_slack_accepts() {
        assert_eq!(clip("short", 10), "short");
        let cut = clip(&"x".repeat(5000), 3000);
        assert_eq!(cut.chars().count(), 3000);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn a_half_configured_channel_is_named() {
        let only_channel = |key: &str| (key == "slack.notify_channel").then(|| "C1".to_string());
        let err = channels(&only_channel, Duration::from_secs(1)).err().unwrap_or_default();
        assert!(err.contains("PIVOTWATCH_SLACK_BOT_TOKEN"), "{err}");
        let teams = |key: &str| (key == "teams.notify_conversation").then(|| "19:x".to_string());
        let err = channels(&teams, Duration::from_secs(1)).err().unwrap_or_default();
        assert!(err.contains("teams.service_url"), "{err}");
        let none = |_: &str| None;
        assert!(channels(&none, Duration::from_secs(1)).is_ok_and(|c| c.is_empty()));
    }
}
