//! Opens Cortex XSOAR incidents that run a playbook (`POST /incident` with
//! `createInvestigation`) and writes war-room entries (`POST /entry`), on XSOAR 6
//! (`https://<host>`, `Authorization: <key>`) and XSOAR 8 (`https://api-<fqdn>`, under
//! `/xsoar/public/v1` for the public incident API and `/xsoar` for the rest, with
//! `x-xdr-auth-id` as well).
//!
//! An incident's name ends with the proposal id, and every attempt first searches for
//! that name (`POST /incidents/search`), so a retry after a lost answer finds the
//! incident the first attempt opened. The search query syntax is XSOAR's incident
//! query language as its public clients use it; it was not checked against a server.
//!
//! An entry takes no idempotency key, so it carries a marker with the proposal id, and
//! a retry reads the investigation's latest entries (`POST /investigation/{id}`) for
//! that marker before writing again.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Executor;
use super::gate::{Approved, Outcome};
use super::http::{Secret, exchange, status_outcome};
use super::kinds::Action;

#[derive(Clone, Debug)]
pub struct XsoarConfig {
    /// XSOAR 6: `https://<host>`; XSOAR 8: `https://api-<fqdn>`.
    pub base_url: String,
    pub api_key: Secret,
    /// XSOAR 8's key id (`x-xdr-auth-id`); `None` means XSOAR 6.
    pub key_id: Option<String>,
    pub timeout: Duration,
}

pub struct XsoarExecutor {
    http: reqwest::Client,
    config: XsoarConfig,
}

const TARGET: &str = "XSOAR";

impl XsoarExecutor {
    pub fn new(config: XsoarConfig) -> Result<XsoarExecutor, String> {
        reqwest::Url::parse(&config.base_url)
            .map_err(|err| format!("xsoar.url {:?}: {err}", config.base_url))?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|err| format!("xsoar: {err}"))?;
        Ok(XsoarExecutor { http, config })
    }

    /// The URL of a path of the public incident API (`/incident`, `/incidents/search`).
    fn url(&self, path: &str) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match self.config.key_id {
            Some(_) => format!("{base}/xsoar/public/v1{path}"),
            None => format!("{base}{path}"),
        }
    }

    /// The URL of a path outside XSOAR 8's `public/v1` set (`/entry`, `/investigation`),
    /// which XSOAR 8 serves under `/xsoar` alone.
    // TODO: confirm the XSOAR 8 prefix for `/entry` and `/investigation/{id}` against a
    // live tenant; public clients use `/xsoar/<path>`, the vendor page was not read.
    fn url_outside_public(&self, path: &str) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match self.config.key_id {
            Some(_) => format!("{base}/xsoar{path}"),
            None => format!("{base}{path}"),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Outcome> {
        self.post_url(self.url(path), body).await
    }

    async fn post_url(&self, url: String, body: &Value) -> Result<Value, Outcome> {
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, self.config.api_key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        if let Some(key_id) = &self.config.key_id {
            request = request.header("x-xdr-auth-id", key_id);
        }
        let answer = exchange(TARGET, request).await?;
        if !answer.is_success() {
            let message = answer.body["error"]
                .as_str()
                .or_else(|| answer.body["detail"].as_str())
                .unwrap_or(answer.text.trim())
                .chars()
                .take(300)
                .collect::<String>();
            return Err(status_outcome(TARGET, answer.status, answer.retry_after, &message));
        }
        Ok(answer.body)
    }
}

#[async_trait]
impl Executor for XsoarExecutor {
    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::XsoarIncident { .. } | Action::XsoarWarRoomEntry { .. })
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        match approved.action() {
            Action::XsoarIncident { .. } => self.open_incident(approved).await,
            Action::XsoarWarRoomEntry { incident_id, entry } => {
                self.write_entry(approved, incident_id, entry).await
            }
            other => Outcome::Failed(format!("{} is not an XSOAR action", other.kind())),
        }
    }
}

/// The marker an entry carries, so a retry can tell it was already written.
fn entry_marker(key: &str) -> String {
    format!("[pivotwatch {key}]")
}

/// How many of an investigation's latest entries a retry reads for its marker. An
/// entry written by a lost attempt is at most a few minutes old, so it is among them
/// unless the war room is extraordinarily busy.
const ENTRY_LOOKBACK: u32 = 200;

impl XsoarExecutor {
    async fn write_entry(&self, approved: &Approved, incident_id: &str, entry: &str) -> Outcome {
        let marker = entry_marker(approved.key());
        if approved.attempt() > 1 {
            let path = format!("/investigation/{incident_id}");
            let filter = json!({"pageSize": ENTRY_LOOKBACK});
            match self.post_url(self.url_outside_public(&path), &filter).await {
                Ok(investigation) => {
                    let written = investigation["entries"].as_array().is_some_and(|entries| {
                        entries
                            .iter()
                            .any(|e| e["contents"].as_str().is_some_and(|c| c.contains(&marker)))
                    });
                    if written {
                        return Outcome::Succeeded(
                            json!({"investigationId": incident_id, "already_written": true}),
                        );
                    }
                }
                Err(outcome) => return outcome,
            }
        }
        let body = json!({
            "investigationId": incident_id,
            "data": format!("{entry}\n\n{marker}"),
            "markdown": true,
        });
        match self.post_url(self.url_outside_public("/entry"), &body).await {
            Ok(created) => {
                Outcome::Succeeded(json!({"investigationId": incident_id, "entry": created["id"]}))
            }
            Err(outcome) => outcome,
        }
    }

    async fn open_incident(&self, approved: &Approved) -> Outcome {
        let Action::XsoarIncident { name, incident_type, severity, details, playbook } =
            approved.action()
        else {
            return Outcome::Failed("not an XSOAR incident".into());
        };
        let name = format!("{name} [{}]", approved.key());
        let search =
            json!({"filter": {"query": format!("name:\"{}\"", name.replace('"', "\\\""))}});
        match self.post("/incidents/search", &search).await {
            Ok(found) if found["total"].as_u64().unwrap_or(0) > 0 => {
                let first = &found["data"][0];
                return Outcome::Succeeded(
                    json!({"id": first["id"], "investigationId": first["investigationId"],
                           "already_open": true}),
                );
            }
            Ok(_) => {}
            Err(outcome) => return outcome,
        }
        let body = json!({
            "name": name,
            "type": incident_type,
            "severity": severity,
            "details": format!("{details}\n\nApproved by {}.", approved.approvers().join(", ")),
            "labels": [{"type": "source", "value": "pivotwatch"},
                       {"type": "pivotwatch_proposal", "value": approved.key()}],
            "playbookId": playbook,
            "createInvestigation": true,
        });
        match self.post("/incident", &body).await {
            Ok(created) => Outcome::Succeeded(json!({"id": created["id"],
                "investigationId": created["investigationId"], "playbookId": created["playbookId"]})),
            Err(outcome) => outcome,
        }
    }
}
