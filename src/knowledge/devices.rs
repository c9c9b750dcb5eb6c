//! What each device model normally does on the network and what is known against it:
//! known-good peers, ports and protocols, things never expected, advisories, and the
//! ATT&CK for ICS techniques that apply when the never-expected happens.
//!
//! The format is documented in `knowledge/README.md`. A file ships for every model the
//! simulator knows; an operator's file merges over it by vendor and model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Doc;

const SHIPPED: &str = include_str!("../../knowledge/devices.json");

/// The document's format version this code reads.
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceKnowledge {
    pub format: u32,
    pub models: Vec<ModelKnowledge>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelKnowledge {
    pub vendor: String,
    pub model: String,
    /// The simulator's device kind, e.g. `infusion_pump`.
    pub kind: String,
    pub description: String,
    #[serde(default)]
    pub known_good: Vec<Pattern>,
    #[serde(default)]
    pub never_expected: Vec<String>,
    #[serde(default)]
    pub advisories: Vec<Advisory>,
    #[serde(default)]
    pub techniques_if_violated: Vec<String>,
}

/// One conversation the model is expected to have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// The role or name of the other end.
    pub peer: String,
    /// `outbound` (the device opens it) or `inbound`.
    pub direction: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub ports: Vec<u16>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub why: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advisory {
    pub id: String,
    pub title: String,
    pub url: String,
    #[serde(default)]
    pub summary: Option<String>,
}

impl DeviceKnowledge {
    /// The shipped knowledge.
    pub fn shipped() -> &'static DeviceKnowledge {
        static KNOWLEDGE: std::sync::OnceLock<DeviceKnowledge> = std::sync::OnceLock::new();
        KNOWLEDGE.get_or_init(|| {
            DeviceKnowledge::parse(SHIPPED).unwrap_or_else(|err| {
                tracing::error!("the shipped device knowledge does not load: {err}");
                DeviceKnowledge { format: FORMAT, models: Vec::new() }
            })
        })
    }

    /// Reads and checks a device knowledge document.
    pub fn parse(text: &str) -> Result<DeviceKnowledge, String> {
        let knowledge: DeviceKnowledge = serde_json::from_str(text).map_err(|err| {
            format!("device knowledge, line {} column {}: {err}", err.line(), err.column())
        })?;
        if knowledge.format != FORMAT {
            return Err(format!(
                "device knowledge format {} is not the supported {FORMAT}",
                knowledge.format
            ));
        }
        let attack = super::Attack::shipped();
        let mut seen = std::collections::BTreeSet::new();
        for m in &knowledge.models {
            let name = format!("{} {}", m.vendor, m.model);
            if !seen.insert((m.vendor.to_ascii_lowercase(), m.model.to_ascii_lowercase())) {
                return Err(format!("{name} appears twice"));
            }
            for id in &m.techniques_if_violated {
                attack.technique(id).map_err(|err| format!("{name}: {err}"))?;
            }
            for p in &m.known_good {
                if !matches!(p.direction.as_str(), "outbound" | "inbound") {
                    return Err(format!(
                        "{name}: direction {:?} is not outbound or inbound",
                        p.direction
                    ));
                }
                if !matches!(p.protocol.as_str(), "tcp" | "udp" | "icmp") {
                    return Err(format!(
                        "{name}: protocol {:?} is not tcp, udp or icmp",
                        p.protocol
                    ));
                }
            }
        }
        Ok(knowledge)
    }

    /// Reads an operator's file.
    pub fn load(path: &Path) -> Result<DeviceKnowledge, String> {
        let text =
            std::fs::read_to_string(path).map_err(|err| format!("{}: {err}", path.display()))?;
        DeviceKnowledge::parse(&text).map_err(|err| format!("{}: {err}", path.display()))
    }

    /// This knowledge with `other`'s models added, replacing those of the same vendor
    /// and model.
    pub fn merged(&self, other: &DeviceKnowledge) -> DeviceKnowledge {
        let key =
            |m: &ModelKnowledge| (m.vendor.to_ascii_lowercase(), m.model.to_ascii_lowercase());
        let mut models: BTreeMap<(String, String), ModelKnowledge> =
            self.models.iter().map(|m| (key(m), m.clone())).collect();
        for m in &other.models {
            models.insert(key(m), m.clone());
        }
        DeviceKnowledge { format: FORMAT, models: models.into_values().collect() }
    }

    /// The entry for a vendor and model, compared without case.
    pub fn model(&self, vendor: &str, model: &str) -> Option<&ModelKnowledge> {
        self.models
            .iter()
            .find(|m| m.vendor.eq_ignore_ascii_case(vendor) && m.model.eq_ignore_ascii_case(model))
    }

    /// Each model as a document for the index.
    pub fn docs(&self) -> Vec<Doc> {
        self.models
            .iter()
            .map(|m| {
                let mut text = m.description.clone();
                for p in &m.known_good {
                    let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
                    text.push_str(&format!(
                        "\nExpected: {} {} {}/{} {}{}",
                        p.direction,
                        p.peer,
                        p.protocol,
                        ports.join(","),
                        p.app.as_deref().unwrap_or(""),
                        p.schedule.as_deref().map(|s| format!(" ({s})")).unwrap_or_default()
                    ));
                }
                for never in &m.never_expected {
                    text.push_str(&format!("\nNever expected: {never}"));
                }
                for a in &m.advisories {
                    text.push_str(&format!("\nAdvisory {}: {}", a.id, a.title));
                }
                let mut fields = BTreeMap::new();
                fields.insert("vendor".to_string(), vec![m.vendor.clone()]);
                fields.insert("model".to_string(), vec![m.model.clone()]);
                fields.insert("device_kind".to_string(), vec![m.kind.clone()]);
                Doc {
                    id: format!("device:{}/{}", m.vendor, m.model),
                    kind: "device".into(),
                    title: format!("{} {}", m.vendor, m.model),
                    text,
                    fields,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_file_merges_over_the_shipped_one_and_bad_input_is_named() {
        let shipped = DeviceKnowledge::shipped();
        assert!(!shipped.models.is_empty());
        let first = &shipped.models[0];
        let mut changed = first.clone();
        changed.description = "site-specific build".into();
        let extra = ModelKnowledge {
            vendor: "Acme".into(),
            model: "Chiller 9".into(),
            kind: "hvac_controller".into(),
            description: "a chiller".into(),
            known_good: Vec::new(),
            never_expected: Vec::new(),
            advisories: Vec::new(),
            techniques_if_violated: vec!["T0886".into()],
        };
        let operator = DeviceKnowledge { format: 1, models: vec![changed, extra] };
        let merged = shipped.merged(&operator);
        assert_eq!(merged.models.len(), shipped.models.len() + 1);
        let replaced = merged.model(&first.vendor, &first.model.to_uppercase()).unwrap();
        assert_eq!(replaced.description, "site-specific build");

        let err = DeviceKnowledge::parse(r#"{"format": 1, "models": [], "extra": 1}"#).unwrap_err();
        assert!(err.contains("extra"), "{err}");
        let err = DeviceKnowledge::parse(r#"{"format": 2, "models": []}"#).unwrap_err();
        assert!(err.contains("format 2"), "{err}");
        let bad = r#"{"format": 1, "models": [{"vendor": "A", "model": "B", "kind": "k",
            "description": "d", "techniques_if_violated": ["T0841"]}]}"#;
        let err = DeviceKnowledge::parse(bad).unwrap_err();
        assert!(err.contains("T0841") && err.contains("deprecated"), "{err}");
    }
}
