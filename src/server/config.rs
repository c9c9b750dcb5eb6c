//! The server's configuration, in two stages. First the raw settings: the optional
//! `pivotwatch.toml` (its `[section] key = value` read as `section.key`), overridden by
//! `PIVOTWATCH_SECTION_KEY` variables. Then the server's own settings are validated all
//! at once, so start-up names every problem, not just the first. Other parts (the model,
//! the knowledge index, the executors) read the same merged settings through a `Lookup`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::actions::Secret;

/// Raw settings: `section.key` to text.
#[derive(Clone, Debug, Default)]
pub struct RawSettings {
    values: BTreeMap<String, String>,
}

impl RawSettings {
    /// The file (when given) under the environment.
    pub fn load(file: Option<&Path>) -> Result<RawSettings, String> {
        let mut values = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|err| format!("{}: {err}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))?;
            flatten("", &toml::Value::Table(table), &mut values);
        }
        for (name, value) in std::env::vars() {
            if let Some(rest) = name.strip_prefix("PIVOTWATCH_")
                && !value.trim().is_empty()
            {
                values.insert(setting_name(rest), value);
            }
        }
        Ok(RawSettings { values })
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> RawSettings {
        RawSettings {
            values: pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
        }
    }

    pub fn set(&mut self, setting: &str, value: &str) {
        self.values.insert(setting.to_string(), value.to_string());
    }

    pub fn get(&self, setting: &str) -> Option<String> {
        self.values.get(setting).cloned()
    }
}

/// `XDR_URL` → `xdr.url`, `DATA_DIR` → `data_dir`, `LLM_BASE_URL` → `llm.base_url`: the
/// first word is the section unless the whole name is a top-level setting.
pub fn setting_name(env: &str) -> String {
    let lower = env.to_ascii_lowercase();
    if TOP_LEVEL.contains(&lower.as_str()) {
        return lower;
    }
    match lower.split_once('_') {
        Some((section, key)) => format!("{section}.{key}"),
        None => lower,
    }
}

const TOP_LEVEL: [&str; 2] = ["data_dir", "config"];

fn flatten(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                flatten(&name, inner, out);
            }
        }
        toml::Value::String(text) => {
            out.insert(prefix.to_string(), text.clone());
        }
        toml::Value::Integer(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        toml::Value::Float(n) => {
            out.insert(prefix.to_string(), n.to_string());
        }
        toml::Value::Boolean(b) => {
            out.insert(prefix.to_string(), b.to_string());
        }
        // Lists and dates are not settings pivotwatch reads; they are kept as JSON.
        other => {
            out.insert(prefix.to_string(), serde_json::to_string(other).unwrap_or_default());
        }
    }
}

/// The server's settings, validated.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// Requests larger than this are refused with 413.
    pub body_limit: usize,
    /// Requests per client (token or address) per minute.
    pub rate_limit_per_minute: u32,
    /// The shared secret of `POST /v1/webhooks/xdr`; without it the route refuses.
    pub xdr_webhook_secret: Option<Secret>,
    /// Where the case sits in a delivery: `incident` (default: also found at the top
    /// level or under `reply`), or a dotted path.
    pub xdr_webhook_wrapper: Option<String>,
    /// Accepted clock difference of signed deliveries.
    pub signature_window: Duration,
    /// Triage workers in this process (0: only accept and queue).
    pub workers: usize,
    /// How long a claimed triage stays this process's without a renewal; workers renew
    /// every third of it, so a killed process's job is taken over after at most this.
    pub job_lease: Duration,
    /// Poll the tenant for modified cases this often (0: never; for tenants that
    /// cannot send webhooks).
    pub poll_interval: Duration,
    pub users_file: PathBuf,
    /// Slack's signing secret; without it the Slack routes refuse.
    pub slack_signing_secret: Option<Secret>,
    /// Where `chat.postMessage` goes (`https://slack.com/api` outside tests).
    pub slack_api_url: String,
    pub slack_bot_token: Option<Secret>,
}

impl ServerConfig {
    /// Validates the server's settings, naming every problem.
    pub fn validate(raw: &RawSettings) -> Result<ServerConfig, Vec<String>> {
        let mut problems = Vec::new();
        let mut number = |setting: &str, default: u64, min: u64, max: u64| -> u64 {
            match raw.get(setting) {
                None => default,
                Some(text) => match text.trim().parse::<u64>() {
                    Ok(n) if (min..=max).contains(&n) => n,
                    _ => {
                        problems.push(format!(
                            "{setting} (PIVOTWATCH_{}): {text:?} is not a whole number from {min} to {max}",
                            setting.replace('.', "_").to_ascii_uppercase()
                        ));
                        default
                    }
                },
            }
        };
        let body_limit = number("server.body_limit_bytes", 1_048_576, 1_024, 64 * 1_048_576);
        let rate = number("server.rate_limit_per_minute", 600, 1, 1_000_000);
        let window = number("webhooks.signature_window_secs", 300, 1, 3_600);
        let workers = number("server.workers", 1, 0, 64);
        let poll = number("xdr.poll_interval_secs", 0, 0, 86_400);
        let lease = number("server.job_lease_secs", 30, 1, 3_600);
        let listen_text = raw.get("server.listen").unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!(
                    "server.listen (PIVOTWATCH_SERVER_LISTEN): {listen_text:?} is not an address and port like 0.0.0.0:8080"
                ));
                None
            }
        };
        let secret = raw.get("webhooks.xdr_secret");
        if let Some(secret) = &secret
            && secret.len() < 16
        {
            problems.push(
                "webhooks.xdr_secret (PIVOTWATCH_WEBHOOKS_XDR_SECRET): at least 16 characters"
                    .into(),
            );
        }
        let database_url = raw.get("database.url");
        if let Some(url) = &database_url
            && !(url.starts_with("postgres://")
                || url.starts_with("postgresql://")
                || url.starts_with("sqlite:"))
        {
            problems.push(format!(
                "database.url (PIVOTWATCH_DATABASE_URL): {} is neither postgres:// nor sqlite:",
                crate::store::redact_url(url)
            ));
        }
        let data_dir =
            PathBuf::from(raw.get("data_dir").unwrap_or_else(|| "pivotwatch-data".into()));
        let users_file =
            raw.get("auth.users_file").map_or_else(|| data_dir.join("users.toml"), PathBuf::from);
        match (problems.is_empty(), listen) {
            (true, Some(listen)) => Ok(ServerConfig {
                listen,
                data_dir,
                database_url,
                body_limit: body_limit as usize,
                rate_limit_per_minute: rate as u32,
                xdr_webhook_secret: secret.map(Secret::new),
                xdr_webhook_wrapper: raw.get("webhooks.xdr_wrapper"),
                signature_window: Duration::from_secs(window),
                workers: workers as usize,
                poll_interval: Duration::from_secs(poll),
                job_lease: Duration::from_secs(lease),
                users_file,
                slack_signing_secret: raw.get("slack.signing_secret").map(Secret::new),
                slack_api_url: raw
                    .get("slack.api_url")
                    .unwrap_or_else(|| "https://slack.com/api".into()),
                slack_bot_token: raw.get("slack.bot_token").map(Secret::new),
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn environment_names_map_to_settings() {
        assert_eq!(setting_name("XDR_URL"), "xdr.url");
        assert_eq!(setting_name("LLM_BASE_URL"), "llm.base_url");
        assert_eq!(setting_name("DATA_DIR"), "data_dir");
        assert_eq!(setting_name("WEBHOOKS_XDR_SECRET"), "webhooks.xdr_secret");
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let raw = RawSettings::from_pairs(&[
            ("server.listen", "localhost"),
            ("server.body_limit_bytes", "12"),
            ("webhooks.xdr_secret", "short"),
            ("database.url", "mysql://root:hunter2@db/pw"),
        ]);
        let problems = ServerConfig::validate(&raw).unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        let text = problems.join("\n");
        assert!(text.contains("server.listen") && text.contains("server.body_limit_bytes"));
        assert!(!text.contains("hunter2"), "a password reached an error: {text}");
        let ok = ServerConfig::validate(&RawSettings::from_pairs(&[])).unwrap();
        assert_eq!(ok.listen.port(), 8080);
        assert_eq!(ok.signature_window, Duration::from_secs(300));
    }

    #[test]
    fn a_file_is_read_as_sections_and_keys() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("pivotwatch.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/pw\"\n[server]\nlisten = \"0.0.0.0:9000\"\nworkers = 2\n",
        )
        .unwrap();
        let raw = RawSettings::load(Some(&path)).unwrap();
        assert_eq!(raw.get("server.listen").as_deref(), Some("0.0.0.0:9000"));
        assert_eq!(raw.get("server.workers").as_deref(), Some("2"));
        assert_eq!(raw.get("data_dir").as_deref(), Some("/srv/pw"));
    }
}
