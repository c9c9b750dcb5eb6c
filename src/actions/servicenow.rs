//! Opens ServiceNow incidents through the Table API (`/api/now/table/incident`), with
//! Basic or OAuth bearer authentication.
//!
//! The proposal id travels as `correlation_id`, and every attempt first asks whether an
//! incident with that id exists, so a retry after a lost answer finds the incident the
//! first attempt created instead of opening a second one.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};

use super::Executor;
use super::gate::{Approved, Outcome};
use super::http::{Answer, Secret, exchange, status_outcome};
use super::kinds::Action;

#[derive(Clone, Debug)]
pub enum ServiceNowAuth {
    Basic {
        user: String,
        password: Secret,
    },
    /// An OAuth access token obtained elsewhere.
    Bearer(Secret),
    /// OAuth's password grant: the executor asks `/oauth_token.do` for an access token,
    /// and renews it with the refresh token shortly before it expires.
    OAuth {
        client_id: String,
        client_secret: Secret,
        user: String,
        password: Secret,
    },
}

#[derive(Clone, Debug)]
pub struct ServiceNowConfig {
    /// `https://<instance>.service-now.com`.
    pub base_url: String,
    pub auth: ServiceNowAuth,
    /// `caller_id` of the incidents pivotwatch opens.
    pub caller_id: String,
    pub timeout: Duration,
}

pub struct ServiceNowExecutor {
    http: reqwest::Client,
    config: ServiceNowConfig,
    /// The OAuth tokens in use.
    token: tokio::sync::Mutex<Option<Token>>,
}

/// An OAuth access token, when to stop using it, and the refresh token that came with it.
struct Token {
    access: Secret,
    refresh: Option<Secret>,
    until: std::time::Instant,
}

const TARGET: &str = "ServiceNow";

impl ServiceNowExecutor {
    pub fn new(config: ServiceNowConfig) -> Result<ServiceNowExecutor, String> {
        let url = reqwest::Url::parse(&config.base_url)
            .map_err(|err| format!("servicenow.url {:?}: {err}", config.base_url))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("servicenow.url must be https://<instance>.service-now.com".into());
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|err| format!("servicenow: {err}"))?;
        Ok(ServiceNowExecutor { http, config, token: tokio::sync::Mutex::new(None) })
    }

    fn url(&self) -> String {
        format!("{}/api/now/table/incident", self.config.base_url.trim_end_matches('/'))
    }

    async fn request(
        &self,
        builder: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, Outcome> {
        let builder = builder.header(reqwest::header::ACCEPT, "application/json");
        Ok(match &self.config.auth {
            ServiceNowAuth::Basic { user, password } => {
                builder.basic_auth(user, Some(password.expose()))
            }
            ServiceNowAuth::Bearer(token) => builder.bearer_auth(token.expose()),
            ServiceNowAuth::OAuth { .. } => {
                builder.bearer_auth(self.access_token().await?.expose())
            }
        })
    }

    /// A current OAuth access token. When there is none or it expires within a minute,
    /// the refresh token from the last grant is spent first; if the instance refuses it
    /// (expired or revoked), the password grant is made again.
    async fn access_token(&self) -> Result<Secret, Outcome> {
        let ServiceNowAuth::OAuth { client_id, client_secret, user, password } = &self.config.auth
        else {
            return Err(Outcome::Failed("not configured for OAuth".into()));
        };
        let mut token = self.token.lock().await;
        if let Some(held) = token.as_ref()
            && std::time::Instant::now() < held.until
        {
            return Ok(held.access.clone());
        }
        let base = [("client_id", client_id.as_str()), ("client_secret", client_secret.expose())];
        if let Some(refresh) = token.as_ref().and_then(|held| held.refresh.clone()) {
            let mut form = base.to_vec();
            form.extend([("grant_type", "refresh_token"), ("refresh_token", refresh.expose())]);
            match self.grant(&form).await? {
                Ok(fresh) => {
                    let access = fresh.access.clone();
                    *token = Some(fresh);
                    return Ok(access);
                }
                // Refused: fall back to the password grant below.
                Err(_) => *token = None,
            }
        }
        let mut form = base.to_vec();
        form.extend([
            ("grant_type", "password"),
            ("username", user.as_str()),
            ("password", password.expose()),
        ]);
        let fresh = self.grant(&form).await??;
        let access = fresh.access.clone();
        *token = Some(fresh);
        Ok(access)
    }

    /// One request to `/oauth_token.do`. The outer error is a transport failure; the
    /// inner one the instance's refusal.
    async fn grant(&self, form: &[(&str, &str)]) -> Result<Result<Token, Outcome>, Outcome> {
        let url = format!("{}/oauth_token.do", self.config.base_url.trim_end_matches('/'));
        // The token endpoint takes a form body; JSON is refused.
        let answer = exchange(TARGET, self.http.post(url).form(form)).await?;
        if answer.status == 429 || answer.status >= 500 {
            return Err(failure(&answer));
        }
        let access = answer.body["access_token"].as_str().filter(|_| answer.status == 200);
        let Some(access) = access else {
            let why = answer.body["error_description"]
                .as_str()
                .or_else(|| answer.body["error"].as_str())
                .unwrap_or("no access_token in the answer");
            return Ok(Err(status_outcome(
                TARGET,
                answer.status.max(400),
                answer.retry_after,
                why,
            )));
        };
        // ServiceNow's default lifetime is 1,800 s; renew a minute early.
        let lifetime = answer.body["expires_in"].as_u64().unwrap_or(1800).saturating_sub(60);
        Ok(Ok(Token {
            access: Secret::new(access),
            refresh: answer.body["refresh_token"].as_str().map(Secret::new),
            until: std::time::Instant::now() + Duration::from_secs(lifetime),
        }))
    }

    /// After a 401 the access token is of no more use (revoked before its time):
    /// drop it so the next attempt asks for a new one.
    async fn forget_token_after(&self, status: u16) {
        if status == 401
            && matches!(self.config.auth, ServiceNowAuth::OAuth { .. })
            && let Some(held) = self.token.lock().await.as_mut()
        {
            held.until = std::time::Instant::now();
        }
    }

    /// The incident an earlier attempt opened under this key, if any.
    async fn existing(&self, key: &str) -> Result<Option<Value>, Outcome> {
        let query = [
            ("sysparm_query", format!("correlation_id={key}")),
            ("sysparm_fields", "sys_id,number".to_string()),
            ("sysparm_limit", "1".to_string()),
        ];
        let request = self.request(self.http.get(self.url()).query(&query)).await?;
        let answer = exchange(TARGET, request).await?;
        if answer.status != 200 {
            self.forget_token_after(answer.status).await;
            return Err(failure(&answer));
        }
        Ok(answer.body["result"].as_array().and_then(|found| found.first()).cloned())
    }
}

/// A failed Table API answer as an outcome.
fn failure(answer: &Answer) -> Outcome {
    status_outcome(TARGET, answer.status, answer.retry_after, &error_message(&answer.body))
}

/// `{"error": {"message", "detail"}}`, as the Table API reports failures.
fn error_message(body: &Value) -> String {
    let message = body["error"]["message"].as_str().unwrap_or("no error message");
    match body["error"]["detail"].as_str() {
        Some(detail) if !detail.is_empty() => format!("{message} ({detail})"),
        _ => message.to_string(),
    }
}

#[async_trait]
impl Executor for ServiceNowExecutor {
    fn handles(&self, action: &Action) -> bool {
        matches!(action, Action::ServicenowIncident { .. })
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        let Action::ServicenowIncident {
            short_description,
            description,
            urgency,
            impact,
            assignment_group,
        } = approved.action()
        else {
            return Outcome::Failed("not a ServiceNow incident".into());
        };
        let key = approved.key();
        match self.existing(key).await {
            Ok(Some(found)) => {
                return Outcome::Succeeded(json!({"sys_id": found["sys_id"],
                    "number": found["number"], "already_open": true}));
            }
            Ok(None) => {}
            Err(outcome) => return outcome,
        }
        let mut body = json!({
            "short_description": short_description,
            "description": format!("{description}\n\nApproved by {}.", approved.approvers().join(", ")),
            "urgency": urgency.to_string(),
            "impact": impact.to_string(),
            "caller_id": self.config.caller_id,
            "correlation_id": key,
            "category": "network",
        });
        if let Some(group) = assignment_group {
            body["assignment_group"] = json!(group);
        }
        let request = self
            .request(self.http.post(self.url()).query(&[("sysparm_input_display_value", "true")]))
            .await;
        let request = match request {
            Ok(request) => request,
            Err(outcome) => return outcome,
        };
        match exchange(TARGET, request.json(&body)).await {
            Ok(created) if matches!(created.status, 200 | 201) => Outcome::Succeeded(json!({
                "sys_id": created.body["result"]["sys_id"],
                "number": created.body["result"]["number"]})),
            Ok(failed) => {
                self.forget_token_after(failed.status).await;
                failure(&failed)
            }
            Err(outcome) => outcome,
        }
    }
}
