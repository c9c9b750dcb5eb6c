//! Quarantines and releases devices through the PAN-OS XML API's User-ID request: the
//! device's address is registered with a tag (with a timeout) that a dynamic address
//! group matches, and the security policy does the rest. No commit is needed.
//!
//! Registering a tag that is already registered only renews its timeout, and removing
//! one that is gone changes nothing, so a retry after a lost answer is harmless.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::Executor;
use super::gate::{Approved, Outcome};
use super::http::{Secret, status_outcome, transport_outcome};
use super::kinds::Action;

#[derive(Clone, Debug)]
pub struct PanosConfig {
    /// `https://<firewall or Panorama>`.
    pub base_url: String,
    /// The API key from `type=keygen`, sent as `X-PAN-KEY`.
    pub api_key: Secret,
    /// The virtual system, when the firewall has several.
    pub vsys: Option<String>,
    /// A firewall's serial number, when the request goes through Panorama.
    pub target: Option<String>,
    pub timeout: Duration,
}

pub struct PanosExecutor {
    http: reqwest::Client,
    config: PanosConfig,
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
        Ok(PanosExecutor { http, config })
    }

    async fn user_id(&self, cmd: String) -> Outcome {
        let mut form = vec![("type", "user-id".to_string()), ("cmd", cmd)];
        if let Some(vsys) = &self.config.vsys {
            form.push(("vsys", vsys.clone()));
        }
        if let Some(target) = &self.config.target {
            form.push(("target", target.clone()));
        }
        let url = format!("{}/api/", self.config.base_url.trim_end_matches('/'));
        let response = match self
            .http
            .post(url)
            .header("X-PAN-KEY", self.config.api_key.expose())
            .form(&form)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => return transport_outcome(TARGET, err),
        };
        let status = response.status().as_u16();
        let body = match response.text().await {
            Ok(body) => body,
            Err(err) => return transport_outcome(TARGET, err),
        };
        if status != 200 {
            return status_outcome(TARGET, status, &message(&body));
        }
        if body.contains("status=\"success\"") {
            Outcome::Succeeded(json!({"response": "success"}))
        } else {
            // An error answer arrives with HTTP 200 and status="error".
            Outcome::Failed(format!("{TARGET} refused the request: {}", message(&body)))
        }
    }
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
        matches!(action, Action::QuarantineDevice { .. } | Action::ReleaseDevice { .. })
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        match approved.action() {
            Action::QuarantineDevice { ip, tag, timeout_secs, .. } => {
                self.user_id(uid_message(*ip, tag, Some(*timeout_secs))).await
            }
            Action::ReleaseDevice { ip, tag, .. } => {
                self.user_id(uid_message(*ip, tag, None)).await
            }
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
