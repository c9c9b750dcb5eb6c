//! Which tenant pivotwatch talks to: a real Cortex XDR tenant when its URL and API key
//! are configured, otherwise the replay tenant in the data directory.
//!
//! The settings are `xdr.url`, `xdr.api_key_id`, `xdr.api_key` and `xdr.key_type`
//! (`PIVOTWATCH_XDR_URL`, `PIVOTWATCH_XDR_API_KEY_ID`, `PIVOTWATCH_XDR_API_KEY`,
//! `PIVOTWATCH_XDR_KEY_TYPE`). A URL without a key, or a key type that is neither
//! `standard` nor `advanced`, is a configuration error naming the setting; the key
//! itself never appears in an error or a log.

use std::path::Path;
use std::sync::Arc;

use super::cortex::{ApiKey, CortexConfig, CortexXdr, KeyType};
use super::replay::{Replay, ReplayError};
use super::{Xdr, XdrError};

/// The raw tenant settings, as read from the environment or a file.
#[derive(Clone, Debug, Default)]
pub struct TenantSettings {
    pub url: Option<String>,
    pub api_key_id: Option<String>,
    pub api_key: Option<ApiKey>,
    pub key_type: Option<String>,
}

/// Where a caller's queries go.
pub enum Tenant {
    Replay(Arc<Replay>),
    Cortex(Arc<CortexXdr>),
}

impl Tenant {
    pub fn xdr(&self) -> Arc<dyn Xdr> {
        match self {
            Tenant::Replay(replay) => Arc::clone(replay) as Arc<dyn Xdr>,
            Tenant::Cortex(cortex) => Arc::clone(cortex) as Arc<dyn Xdr>,
        }
    }

    /// A short description for people: which tenant, never a credential.
    pub fn describe(&self) -> String {
        match self {
            Tenant::Replay(replay) => format!("replay tenant in {}", replay.root().display()),
            Tenant::Cortex(cortex) => format!("Cortex XDR tenant at {}", cortex.api_root()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Config(#[from] XdrError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

impl TenantSettings {
    /// Reads the `PIVOTWATCH_XDR_*` variables; empty values count as unset.
    pub fn from_env() -> TenantSettings {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        TenantSettings {
            url: var("PIVOTWATCH_XDR_URL"),
            api_key_id: var("PIVOTWATCH_XDR_API_KEY_ID"),
            api_key: var("PIVOTWATCH_XDR_API_KEY").map(ApiKey::new),
            key_type: var("PIVOTWATCH_XDR_KEY_TYPE"),
        }
    }

    /// The configured tenant: Cortex XDR when `url` is set, else the replay tenant in
    /// `data_dir`.
    pub fn open(self, data_dir: &Path) -> Result<Tenant, ConnectError> {
        let Some(url) = self.url else {
            return Ok(Tenant::Replay(Arc::new(Replay::open(data_dir)?)));
        };
        let missing = |setting: &'static str, variable: &str| XdrError::InvalidConfig {
            setting,
            reason: format!("is required when xdr.url is set (set {variable})"),
        };
        let key_id = self
            .api_key_id
            .ok_or_else(|| missing("xdr.api_key_id", "PIVOTWATCH_XDR_API_KEY_ID"))?;
        let key = self.api_key.ok_or_else(|| missing("xdr.api_key", "PIVOTWATCH_XDR_API_KEY"))?;
        let key_type: KeyType = self.key_type.as_deref().unwrap_or("advanced").parse()?;
        let client = CortexXdr::new(CortexConfig::new(url, key_id, key, key_type))?;
        Ok(Tenant::Cortex(Arc::new(client)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_url_the_replay_tenant_is_used_and_its_absence_is_explained() {
        let dir = tempfile::TempDir::new().expect("dir");
        let err = TenantSettings::default().open(dir.path()).err().expect("no tenant there");
        assert!(err.to_string().contains("replay load"), "{err}");
    }

    #[test]
    fn a_url_without_a_key_names_the_missing_setting_and_never_the_key() {
        let dir = tempfile::TempDir::new().expect("dir");
        let settings = TenantSettings {
            url: Some("https://api-example.xdr.us.paloaltonetworks.com".into()),
            api_key_id: Some("7".into()),
            ..TenantSettings::default()
        };
        let err = settings.open(dir.path()).err().expect("a key is missing");
        assert!(err.to_string().contains("xdr.api_key"), "{err}");

        let settings = TenantSettings {
            url: Some("https://api-example.xdr.us.paloaltonetworks.com".into()),
            api_key_id: Some("7".into()),
            api_key: Some(ApiKey::new("s3cret-value")),
            key_type: Some("fancy".into()),
        };
        let err = settings.open(dir.path()).err().expect("bad key type");
        let text = err.to_string();
        assert!(text.contains("xdr.key_type") && !text.contains("s3cret"), "{text}");

        let settings = TenantSettings {
            url: Some("https://api-example.xdr.us.paloaltonetworks.com/".into()),
            api_key_id: Some("7".into()),
            api_key: Some(ApiKey::new("s3cret-value")),
            key_type: Some("standard".into()),
        };
        let Ok(tenant) = settings.open(dir.path()) else { panic!("a valid configuration") };
        let described = tenant.describe();
        assert!(described.contains("api-example") && !described.contains("s3cret"));
    }
}
