//! Notices to people: when a standing approval lets a containment run without anyone
//! pressing a button, the people who granted it hear about it at once, in Slack
//! (`chat.postMessage` to a channel) and/or Teams (a Bot Framework message with an
//! Adaptive Card posted to a conversation).
//!
//! A notice is a job (`notify`) queued in the same transaction as the approval that
//! causes it, so it survives a crash and is sent by whichever replica claims it. The
//! first attempt tries every channel; a channel that fails gets a job of its own, so a
//! retry never repeats a message that already went out on another channel.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gate::Outcome;
use super::http::{Answer, Secret, exchange, status_outcome};
use super::settings::Lookup;
use crate::audit::{self, Actor, Kind};
use crate::store::{Store, StoreError};

/// The job kind of a notice.
pub const NOTIFY_JOB: &str = "notify";

/// How often one channel is tried before the notice is given up on it (about an hour
/// and a half of retries); the audit trail keeps every attempt.
const NOTICE_ATTEMPTS: i64 = 20;

/// What people are told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The proposal the notice is about.
    pub proposal: String,
    pub title: String,
    pub text: String,
    /// Short label/value pairs shown beside the text.
    #[serde(default)]
    pub facts: Vec<(String, String)>,
    /// Proposals a reader may decide on from the message, with a label each: Slack
    /// shows an approve / reject pair per proposal (at most five).
    #[serde(default)]
    pub decisions: Vec<(String, String)>,
}

/// Somewhere a notice can be posted.
#[async_trait]
pub trait Channel: Send + Sync {
    /// A stable name, used to retry this channel alone: `slack`, `teams`.
    fn name(&self) -> &str;

    /// Posts the notice. `Succeeded` carries what identifies the message.
    async fn send(&self, notice: &Notice) -> Outcome;
}

/// Sends due notices until none is ready. Returns how many jobs were handled.
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
        let notice: Notice = match serde_json::from_value(job.payload["notice"].clone()) {
            Ok(notice) => notice,
            Err(err) => {
                store.fail(job.id, worker, &format!("not a notice: {err}"), None).await?;
                continue;
            }
        };
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
            let outcome = channel.send(&notice).await;
            let (state, detail, retry) = match outcome {
                Outcome::Succeeded(detail) => ("sent", detail, None),
                Outcome::Retry(why) => ("retrying", json!({"error": why}), Some(Duration::ZERO)),
                Outcome::Throttled(why, after) => ("retrying", json!({"error": why}), Some(after)),
                Outcome::Failed(why) => ("failed", json!({"error": why}), None),
            };
            record(
                store,
                &notice,
                json!({"channel": channel.name(), "state": state, "attempt": job.attempts,
                       "detail": detail}),
            )
            .await?;
            let Some(pause) = retry else { continue };
            if only.is_some() {
                again = Some((detail["error"].as_str().unwrap_or_default().to_string(), pause));
            } else {
                // This channel alone is tried again, by a job of its own.
                let payload = json!({"notice": notice, "channel": channel.name()});
                let key = format!("notify:{}:{}", notice.proposal, channel.name());
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
        let mut blocks = vec![
            json!({"type": "header", "text": {"type": "plain_text", "text": clip(&notice.title, 150)}}),
            json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&notice.text, 3000)}}),
        ];
        if !notice.facts.is_empty() {
            // A section holds at most ten fields.
            let fields: Vec<Value> = notice
                .facts
                .iter()
                .take(10)
                .map(|(k, v)| json!({"type": "mrkdwn", "text": clip(&format!("*{k}*\n{v}"), 2000)}))
                .collect();
            blocks.push(json!({"type": "section", "fields": fields}));
        }
        for (proposal, label) in notice.decisions.iter().take(5) {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn",
                "text": clip(&format!("*Proposed:* {label} (`{proposal}`)"), 3000)}}));
            blocks.push(
                json!({"type": "actions", "block_id": format!("decide:{proposal}"), "elements": [
                {"type": "button", "action_id": "approve", "value": proposal, "style": "primary",
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "reject", "value": proposal, "style": "danger",
                 "text": {"type": "plain_text", "text": "Reject"}}]}),
            );
        }
        blocks.push(json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("proposal `{}`", notice.proposal)}]}));
        json!({
            "channel": self.channel,
            // The fallback shown in notifications and by clients without blocks.
            "text": clip(&format!("{}: {}", notice.title, notice.text), 3000),
            "blocks": blocks,
            "unfurl_links": false,
        })
    }
}

#[async_trait]
impl Channel for SlackChannel {
    fn name(&self) -> &str {
        "slack"
    }

    async fn send(&self, notice: &Notice) -> Outcome {
        let url = format!("{}/chat.postMessage", self.api_url.trim_end_matches('/'));
        let request =
            self.http.post(url).bearer_auth(self.token.expose()).json(&self.message(notice));
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

/// Posts notices into one Teams conversation as the bot.
pub struct TeamsChannel {
    http: reqwest::Client,
    config: TeamsConfig,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl TeamsChannel {
    pub fn new(config: TeamsConfig) -> Result<TeamsChannel, String> {
        for (name, url) in
            [("teams.service_url", &config.service_url), ("teams.token_url", &config.token_url)]
        {
            reqwest::Url::parse(url).map_err(|err| format!("{name} {url:?}: {err}"))?;
        }
        Ok(TeamsChannel {
            http: client(config.timeout, "teams")?,
            config,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// A Bot Framework access token (client credentials), kept until a minute before
    /// it expires.
    async fn access_token(&self) -> Result<Secret, Outcome> {
        let mut held = self.token.lock().await;
        if let Some((token, until)) = held.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.config.app_id.as_str()),
            ("client_secret", self.config.app_password.expose()),
            ("scope", "https://api.botframework.com/.default"),
        ];
        let request = self.http.post(&self.config.token_url).form(&form);
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

    fn activity(notice: &Notice) -> Value {
        let mut body = vec![
            json!({"type": "TextBlock", "text": notice.title, "weight": "Bolder",
                   "size": "Medium", "wrap": true}),
            json!({"type": "TextBlock", "text": notice.text, "wrap": true}),
        ];
        if !notice.facts.is_empty() {
            let facts: Vec<Value> =
                notice.facts.iter().map(|(k, v)| json!({"title": k, "value": v})).collect();
            body.push(json!({"type": "FactSet", "facts": facts}));
        }
        body.push(json!({"type": "TextBlock", "text": format!("proposal {}", notice.proposal),
                         "isSubtle": true, "size": "Small"}));
        json!({
            "type": "message",
            "summary": notice.title,
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "version": "1.5",
                    "body": body,
                },
            }],
        })
    }
}

#[async_trait]
impl Channel for TeamsChannel {
    fn name(&self) -> &str {
        "teams"
    }

    async fn send(&self, notice: &Notice) -> Outcome {
        let token = match self.access_token().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let url = format!(
            "{}/v3/conversations/{}/activities",
            self.config.service_url.trim_end_matches('/'),
            self.config.conversation
        );
        let request = self.http.post(url).bearer_auth(token.expose()).json(&Self::activity(notice));
        let Answer { status, retry_after: pause, body, .. } = match exchange("Teams", request).await
        {
            Ok(answer) => answer,
            Err(outcome) => return outcome,
        };
        if (200..300).contains(&status) {
            return Outcome::Succeeded(json!({"activity": body["id"]}));
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
