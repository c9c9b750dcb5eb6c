//! The executors a deployment has, from its settings: each target is configured by its
//! URL and credentials (`servicenow.*`, `xsoar.*`, `panos.*`, read from the
//! `PIVOTWATCH_<SECTION>_<KEY>` variables) and left out when its URL is unset. A
//! half-configured target is an error naming the missing setting, never a silent skip.

use std::sync::Arc;
use std::time::Duration;

use super::Executor;
use super::http::Secret;
use super::panos::{PanosConfig, PanosCredentials, PanosExecutor};
use super::servicenow::{ServiceNowAuth, ServiceNowConfig, ServiceNowExecutor};
use super::xdr::XdrExecutor;
use super::xsoar::{XsoarConfig, XsoarExecutor};
use crate::xdr::Xdr;

/// Every outbound call of an executor gives up after this long.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Reads one setting by its file name (`servicenow.url`) from the environment.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as a `Lookup`: `servicenow.url` is `PIVOTWATCH_SERVICENOW_URL`.
pub fn from_env(setting: &str) -> Option<String> {
    let name = format!("PIVOTWATCH_{}", setting.replace('.', "_").to_ascii_uppercase());
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The executors the settings configure, the Cortex XDR one always (over `xdr`).
pub fn executors(xdr: Arc<dyn Xdr>, get: Lookup<'_>) -> Result<Vec<Box<dyn Executor>>, String> {
    let need = |setting: &str| {
        get(setting).ok_or_else(|| {
            format!(
                "{setting} is required when {}.url is set (PIVOTWATCH_{})",
                setting.split('.').next().unwrap_or(setting),
                setting.replace('.', "_").to_ascii_uppercase()
            )
        })
    };
    let mut executors: Vec<Box<dyn Executor>> = vec![Box::new(XdrExecutor::new(xdr))];
    if let Some(base_url) = get("servicenow.url") {
        let auth = match (get("servicenow.token"), get("servicenow.user")) {
            (Some(token), _) => ServiceNowAuth::Bearer(Secret::new(token)),
            (None, Some(user)) if get("servicenow.client_id").is_some() => ServiceNowAuth::OAuth {
                client_id: need("servicenow.client_id")?,
                client_secret: Secret::new(need("servicenow.client_secret")?),
                user,
                password: Secret::new(need("servicenow.password")?),
            },
            (None, Some(user)) => {
                ServiceNowAuth::Basic { user, password: Secret::new(need("servicenow.password")?) }
            }
            (None, None) => {
                return Err("servicenow.user and servicenow.password, or servicenow.token, are \
                            required when servicenow.url is set"
                    .into());
            }
        };
        let caller_id = get("servicenow.caller_id").unwrap_or_else(|| "pivotwatch".into());
        executors.push(Box::new(ServiceNowExecutor::new(ServiceNowConfig {
            base_url,
            auth,
            caller_id,
            timeout: TIMEOUT,
        })?));
    }
    if let Some(base_url) = get("xsoar.url") {
        executors.push(Box::new(XsoarExecutor::new(XsoarConfig {
            base_url,
            api_key: Secret::new(need("xsoar.api_key")?),
            key_id: get("xsoar.api_key_id"),
            timeout: TIMEOUT,
        })?));
    }
    if let Some(base_url) = get("panos.url") {
        executors.push(Box::new(PanosExecutor::new(PanosConfig {
            base_url,
            credentials: match (get("panos.api_key"), get("panos.user")) {
                (Some(key), _) => PanosCredentials::ApiKey(Secret::new(key)),
                (None, Some(user)) => {
                    PanosCredentials::Login { user, password: Secret::new(need("panos.password")?) }
                }
                (None, None) => {
                    return Err("panos.api_key, or panos.user and panos.password, are required \
                                when panos.url is set"
                        .into());
                }
            },
            vsys: get("panos.vsys"),
            target: get("panos.target"),
            timeout: TIMEOUT,
            poll_interval: Duration::from_secs(5),
            max_wait: Duration::from_secs(900),
        })?));
    }
    Ok(executors)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::actions::Action;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        move |key| map.get(key).cloned()
    }

    fn xdr() -> Arc<dyn Xdr> {
        let dir = tempfile::TempDir::new().expect("dir");
        // A configuration that points at a tenant; nothing is sent while building.
        let settings = crate::xdr::connect::TenantSettings {
            url: Some("https://api-example.xdr.us.paloaltonetworks.com".into()),
            api_key_id: Some("1".into()),
            api_key: Some(crate::xdr::ApiKey::new("k")),
            key_type: Some("standard".into()),
        };
        match settings.open(dir.path()) {
            Ok(tenant) => tenant.xdr(),
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn configured_targets_get_executors_and_half_configured_ones_are_named() {
        let all = executors(
            xdr(),
            &lookup(&[
                ("servicenow.url", "https://dev.service-now.com"),
                ("servicenow.user", "svc"),
                ("servicenow.password", "pw"),
                ("panos.url", "https://fw.example"),
                ("panos.api_key", "k"),
            ]),
        )
        .expect("valid settings");
        assert_eq!(all.len(), 3);
        let quarantine = Action::from_parts(
            "quarantine_device",
            serde_json::json!({"device_id": "d", "ip": "10.0.0.1", "tag": "q",
                               "timeout_secs": 60, "criticality": "low"}),
        )
        .expect("action");
        assert!(all.iter().any(|e| e.handles(&quarantine)));

        let err = executors(xdr(), &lookup(&[("panos.url", "https://fw.example")]))
            .err()
            .expect("no credentials");
        assert!(err.contains("panos.api_key") && err.contains("panos.password"), "{err}");
        let err = executors(xdr(), &lookup(&[("xsoar.url", "https://xsoar.example")]))
            .err()
            .expect("no key");
        assert!(err.contains("xsoar.api_key") && err.contains("PIVOTWATCH_XSOAR_API_KEY"), "{err}");
        let err = executors(
            xdr(),
            &lookup(&[("servicenow.url", "https://x.service-now.com"), ("servicenow.user", "u")]),
        )
        .err()
        .expect("no password");
        assert!(err.contains("servicenow.password"), "{err}");
    }
}
