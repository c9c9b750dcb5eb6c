//! Opens Cortex XSOAR incidents that run a playbook (`POST /incident` with
//! `createInvestigation`), on XSOAR 6 (`https://<host>`, `Authorization: <key>`) and
//! XSOAR 8 (`https://api-<fqdn>/xsoar/public/v1`, with `x-xdr-auth-id` as well).
//!
//! The incident's name ends with the proposal id, and every attempt first searches for
//! that name (`POST /incidents/search`), so a retry after a lost answer finds the
//! incident the first attempt opened. The search query syntax is XSOAR's incident
//! query language as its public clients use it; it was not checked against a server.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Executor;
use super::gate::{Approved, Outcome};
use super::http::{Secret, retry_after, status_outcome, transport_outcome};
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

    fn url(&self, path: &str) -> String {
        let base = self.config.base_url.trim_end_matches('/');
        match self.config.key_id {
            Some(_) => format!("{base}/xsoar/public/v1{path}"),
            None => format!("{base}{path}"),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Outcome> {
        let mut request = self
            .http
            .post(self.url(path))
            .header(reqwest::header::AUTHORIZATION, self.config.api_key.expose())
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        if let Some(key_id) = &self.config.key_id {
            request = request.header("x-xdr-auth-id", key_id);
        }
        let response = request.send().await.map_err(|err| transport_outcome(TARGET, err))?;
        let status = response.status().as_u16();
        let pause = retry_after(response.headers());
        let text = response.text().await.map_err(|err| transport_outcome(TARGET, err))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = body["error"]
                .as_str()
                .or_else(|| body["detail"].as_str())
                .unwrap_or(text.trim())
                .chars()
                .take(300)
                .collect::<String>();
            return Err(status_outcome(TARGET, status, pause, &message));
        }
        Ok(body)
    }
}

#[async_trait]
impl Executor for XsoarExecutor {
    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::XsoarIncident { .. })
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
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
