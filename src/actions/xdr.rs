//! Executes the Cortex XDR actions through the `Xdr` trait: a case comment, a custom
//! alert, endpoint isolation and its reversal.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use super::Executor;
use super::gate::{Approved, Outcome};
use super::kinds::Action;
use crate::xdr::{IncidentUpdate, ParsedAlert, Xdr, XdrError};

pub struct XdrExecutor {
    xdr: Arc<dyn Xdr>,
}

impl XdrExecutor {
    pub fn new(xdr: Arc<dyn Xdr>) -> XdrExecutor {
        XdrExecutor { xdr }
    }
}

/// The marker a case comment carries, so a retry can tell it was already posted.
fn comment_marker(key: &str) -> String {
    format!("[pivotwatch {key}]")
}

fn outcome(err: XdrError) -> Outcome {
    match err {
        XdrError::RateLimited { retry_after: Some(after) } => {
            Outcome::Throttled(err.to_string(), after)
        }
        err if err.is_retryable() => Outcome::Retry(err.to_string()),
        err => Outcome::Failed(err.to_string()),
    }
}

#[async_trait]
impl Executor for XdrExecutor {
    fn handles(&self, action: &Action) -> bool {
        matches!(
            action,
            Action::XdrCaseComment { .. }
                | Action::XdrCustomAlert { .. }
                | Action::XdrIsolateEndpoint { .. }
                | Action::XdrUnisolateEndpoint { .. }
        )
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        let key = approved.key();
        match approved.action() {
            Action::XdrCaseComment { incident_id, comment } => {
                let marker = comment_marker(key);
                // The API takes no idempotency key for comments: on a retry, look for
                // the comment an earlier attempt may have posted before posting again.
                if approved.attempt() > 1 {
                    match self.xdr.incident_extra_data(incident_id, 0).await {
                        Ok(data)
                            if serde_json::to_string(&data.incident.extra)
                                .unwrap_or_default()
                                .contains(&marker) =>
                        {
                            return Outcome::Succeeded(
                                json!({"incident_id": incident_id, "already_posted": true}),
                            );
                        }
                        Ok(_) => {}
                        Err(err) => return outcome(err),
                    }
                }
                let update = IncidentUpdate {
                    comment: Some(format!("{comment}\n\n{marker}")),
                    ..IncidentUpdate::default()
                };
                match self.xdr.update_incident(incident_id, &update).await {
                    Ok(()) => Outcome::Succeeded(json!({"incident_id": incident_id})),
                    Err(err) => outcome(err),
                }
            }
            Action::XdrCustomAlert {
                alert_name,
                severity,
                local_ip,
                remote_ip,
                remote_port,
                description,
            } => {
                let alert = ParsedAlert {
                    product: "pivotwatch".into(),
                    vendor: "pivotwatch".into(),
                    local_ip: Some(local_ip.to_string()),
                    local_port: None,
                    remote_ip: Some(remote_ip.to_string()),
                    remote_port: *remote_port,
                    event_timestamp: Some(crate::store::now_ms()),
                    severity: severity.clone(),
                    alert_name: alert_name.clone(),
                    alert_description: Some(format!("{description} {}", comment_marker(key))),
                    action_status: None,
                    local_ip_v6: None,
                    remote_ip_v6: None,
                    extra: serde_json::Map::new(),
                };
                match self.xdr.insert_parsed_alerts(std::slice::from_ref(&alert)).await {
                    Ok(()) => Outcome::Succeeded(json!({"alert_name": alert_name})),
                    Err(err) => outcome(err),
                }
            }
            Action::XdrIsolateEndpoint { endpoint_id, incident_id }
            | Action::XdrUnisolateEndpoint { endpoint_id, incident_id } => {
                let isolate = matches!(approved.action(), Action::XdrIsolateEndpoint { .. });
                // Isolating an isolated endpoint changes nothing, so a retry is harmless.
                let result = if isolate {
                    self.xdr.isolate_endpoint(endpoint_id, incident_id.as_deref()).await
                } else {
                    self.xdr.unisolate_endpoint(endpoint_id, incident_id.as_deref()).await
                };
                match result {
                    Ok(action) => Outcome::Succeeded(json!({"endpoint_id": endpoint_id,
                                                            "action": format!("{action:?}")})),
                    Err(err) => outcome(err),
                }
            }
            other => {
                Outcome::Failed(format!("the XDR executor does not carry out {}", other.kind()))
            }
        }
    }
}
