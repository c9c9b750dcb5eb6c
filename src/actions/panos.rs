//! The PAN-OS XML API: quarantine and release through the User-ID request, and
//! configuration changes followed by a commit.
//!
//! Quarantine registers the device's address with a tag (with a timeout) that a dynamic
//! address group matches, and the security policy does the rest; no commit is needed.
//! Registering a tag that is already registered only renews its timeout, and removing
//! one that is gone changes nothing, so a retry after a lost answer is harmless.
//!
//! A configuration change is a series of `action=set` requests (which merge, so setting
//! the same element twice leaves one) and then a commit: on a firewall one commit; on
//! Panorama a commit to Panorama and then a commit-all that pushes the device group to
//! its firewalls. Each commit's job is polled until it finishes. A retry after a crash
//! sets the same elements again and finds "no changes to commit", so it succeeds without
//! a second effect.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::Executor;
use super::gate::{Approved, Outcome};
use super::http::{Secret, retry_after, status_outcome, transport_outcome};
use super::kinds::{Action, ConfigSet, PanosTarget};

#[derive(Clone, Debug)]
pub struct PanosConfig {
    /// `https://<firewall or Panorama>`.
    pub base_url: String,
    pub credentials: PanosCredentials,
    /// The virtual system, when the firewall has several.
    pub vsys: Option<String>,
    /// A firewall's serial number, when the request goes through Panorama.
    pub target: Option<String>,
    pub timeout: Duration,
    /// How often a commit job is polled, and how long it may take in all.
    pub poll_interval: Duration,
    pub max_wait: Duration,
}

/// How the executor authenticates: an API key, or an API administrator's login from
/// which it generates one (`type=keygen`) on first use. The key goes in `X-PAN-KEY`.
#[derive(Clone, Debug)]
pub enum PanosCredentials {
    ApiKey(Secret),
    Login { user: String, password: Secret },
}

pub struct PanosExecutor {
    http: reqwest::Client,
    config: PanosConfig,
    /// The key in use, once known.
    key: tokio::sync::Mutex<Option<Secret>>,
}

const TARGET: &str = "PAN-OS";

/// The `uid-message` that registers (`timeout` set) or unregisters a tag for an address.
pub fn uid_message(ip: IpAddr, tag: &str, timeout_secs: Option<u32>) -> String {
    let (verb, member) = match timeout_secs {
        Some(timeout) => ("register", format!("<member timeout=\"{timeout}\">{tag}</member>")),
        None => ("unregister", format!("<member>{tag}</member>")),
    };
    format!(
        "<uid-message><version>2.0</version><type>update</type><payload><{verb}>\
         <entry ip=\"{ip}\"><tag>{member}</tag></entry></{verb}></payload></uid-message>"
    )
}

impl PanosExecutor {
    pub fn new(config: PanosConfig) -> Result<PanosExecutor, String> {
        reqwest::Url::parse(&config.base_url)
            .map_err(|err| format!("panos.url {:?}: {err}", config.base_url))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|err| format!("panos: {err}"))?;
        let key = match &config.credentials {
            PanosCredentials::ApiKey(key) => Some(key.clone()),
            PanosCredentials::Login { .. } => None,
        };
        Ok(PanosExecutor { http, config, key: tokio::sync::Mutex::new(key) })
    }

    /// The API key, generated from the login the first time it is needed. A new key
    /// for an administrator ends that administrator's other sessions, so it is made
    /// once per executor and kept.
    async fn key(&self) -> Result<Secret, Outcome> {
        let mut key = self.key.lock().await;
        if let Some(key) = key.as_ref() {
            return Ok(key.clone());
        }
        let PanosCredentials::Login { user, password } = &self.config.credentials else {
            return Err(Outcome::Failed("no PAN-OS API key".into()));
        };
        let url = format!("{}/api/", self.config.base_url.trim_end_matches('/'));
        let form = [("user", user.as_str()), ("password", password.expose())];
        let body = send(self.http.post(url).query(&[("type", "keygen")]).form(&form)).await?;
        let Some(text) = tag_text(&body, "key") else {
            return Err(Outcome::Failed(format!("{TARGET} answered keygen without a key")));
        };
        let secret = Secret::new(text);
        *key = Some(secret.clone());
        Ok(secret)
    }

    async fn user_id(&self, cmd: String) -> Outcome {
        let mut form = vec![("type", "user-id".to_string()), ("cmd", cmd)];
        if let Some(vsys) = &self.config.vsys {
            form.push(("vsys", vsys.clone()));
        }
        if let Some(target) = &self.config.target {
            form.push(("target", target.clone()));
        }
        match self.call(form).await {
            Ok(_) => Outcome::Succeeded(json!({"response": "success"})),
            Err(outcome) => outcome,
        }
    }

    /// Sets every element (moving the rules that ask for it), commits, and waits for the
    /// commit jobs to finish.
    async fn config_change(&self, target: &PanosTarget, sets: &[ConfigSet]) -> Outcome {
        for set in sets {
            let form = vec![
                ("type", "config".to_string()),
                ("action", "set".to_string()),
                ("xpath", set.xpath.clone()),
                ("element", set.element.clone()),
            ];
            if let Err(outcome) = self.call(form).await {
                return outcome;
            }
            if let Some(place) = set.move_to {
                let form = vec![
                    ("type", "config".to_string()),
                    ("action", "move".to_string()),
                    ("xpath", set.xpath.clone()),
                    ("where", place.as_str().to_string()),
                ];
                if let Err(outcome) = self.call(form).await {
                    return outcome;
                }
            }
        }
        let mut jobs = Vec::new();
        let commit = vec![("type", "commit".to_string()), ("cmd", "<commit></commit>".to_string())];
        match self.commit(commit).await {
            Ok(job) => jobs.extend(job),
            Err(outcome) => return outcome,
        }
        if let PanosTarget::Panorama { device_group } = target {
            let cmd = format!(
                "<commit-all><shared-policy><device-group><entry name=\"{device_group}\"/>\
                 </device-group></shared-policy></commit-all>"
            );
            let push =
                vec![("type", "commit".to_string()), ("action", "all".to_string()), ("cmd", cmd)];
            match self.commit(push).await {
                Ok(job) => jobs.extend(job),
                Err(outcome) => return outcome,
            }
        }
        Outcome::Succeeded(json!({"sets": sets.len(), "commit_jobs": jobs}))
    }

    /// Starts a commit and waits for its job; `None` when there was nothing to commit.
    async fn commit(&self, form: Vec<(&'static str, String)>) -> Result<Option<String>, Outcome> {
        let body = self.call(form).await?;
        let Some(job) = tag_text(&body, "job") else {
            // "There are no changes to commit." comes without a job.
            return Ok(None);
        };
        let started = std::time::Instant::now();
        loop {
            let show = vec![
                ("type", "op".to_string()),
                ("cmd", format!("<show><jobs><id>{job}</id></jobs></show>")),
            ];
            let status = self.call(show).await?;
            if tag_text(&status, "status").as_deref() == Some("FIN") {
                return match tag_text(&status, "result").as_deref() {
                    Some("OK") => Ok(Some(job)),
                    _ => Err(Outcome::Failed(format!(
                        "{TARGET} commit job {job} failed: {}",
                        message(&status)
                    ))),
                };
            }
            if started.elapsed() + self.config.poll_interval > self.config.max_wait {
                return Err(Outcome::Retry(format!(
                    "{TARGET} commit job {job} had not finished after {} s",
                    self.config.max_wait.as_secs()
                )));
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// One XML API request; the answer's body when it says `status="success"`.
    async fn call(&self, form: Vec<(&'static str, String)>) -> Result<String, Outcome> {
        let key = self.key().await?;
        let url = format!("{}/api/", self.config.base_url.trim_end_matches('/'));
        send(self.http.post(url).header("X-PAN-KEY", key.expose()).form(&form)).await
    }
}

/// Sends one XML API request; the answer's body when it says `status="success"`. An
/// error answer arrives with HTTP 200 and `status="error"`, and is final.
async fn send(request: reqwest::RequestBuilder) -> Result<String, Outcome> {
    let response = request.send().await.map_err(|err| transport_outcome(TARGET, err))?;
    let status = response.status().as_u16();
    let pause = retry_after(response.headers());
    let body = response.text().await.map_err(|err| transport_outcome(TARGET, err))?;
    if status != 200 {
        return Err(status_outcome(TARGET, status, pause, &message(&body)));
    }
    if body.contains("status=\"success\"") {
        Ok(body)
    } else {
        Err(Outcome::Failed(format!("{TARGET} refused the request: {}", message(&body))))
    }
}

/// The text of the first `<tag>` element that holds text only: in a job answer the
/// outer `<result>` wraps the job, whose own `<result>` is the one that says OK.
fn tag_text(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut rest = body;
    while let Some(found) = rest.find(&open) {
        rest = &rest[found + open.len()..];
        let end = rest.find(&close)?;
        let text = rest[..end].trim();
        if !text.is_empty() && !text.contains('<') {
            return Some(text.to_string());
        }
    }
    None
}

/// The text of the first `<msg>` or `<line>` of an XML API answer.
fn message(body: &str) -> String {
    for tag in ["line", "msg"] {
        let open = format!("<{tag}>");
        if let Some(start) = body.find(&open) {
            let rest = &body[start + open.len()..];
            if let Some(end) = rest.find(&format!("</{tag}>")) {
                let text = rest[..end].replace("<![CDATA[", "").replace("]]>", "");
                if !text.trim().is_empty() && !text.contains('<') {
                    return text.trim().to_string();
                }
            }
        }
    }
    body.chars().take(200).collect()
}

#[async_trait]
impl Executor for PanosExecutor {
    fn handles(&self, action: &Action) -> bool {
        matches!(
            action,
            Action::QuarantineDevice { .. }
                | Action::ReleaseDevice { .. }
                | Action::PanosConfigChange { .. }
        )
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        match approved.action() {
            Action::QuarantineDevice { ip, tag, timeout_secs, .. } => {
                self.user_id(uid_message(*ip, tag, Some(*timeout_secs))).await
            }
            Action::ReleaseDevice { ip, tag, .. } => {
                self.user_id(uid_message(*ip, tag, None)).await
            }
            Action::PanosConfigChange { target, sets } => self.config_change(target, sets).await,
            other => {
                Outcome::Failed(format!("the PAN-OS executor does not carry out {}", other.kind()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_read_from_the_xml_answer() {
        let body = "<response status=\"error\" code=\"403\"><result><msg>Invalid credentials.</msg></result></response>";
        assert_eq!(message(body), "Invalid credentials.");
        let body = "<response status=\"error\"><msg><line><![CDATA[ tag too long]]></line></msg></response>";
        assert_eq!(message(body), "tag too long");
    }
}
