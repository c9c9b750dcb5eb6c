//! MITRE ATT&CK for ICS from its STIX 2.1 bundle: techniques, tactics, mitigations,
//! assets, groups, software and campaigns, joined by their relationships (mitigates,
//! targets, uses, attributed-to). Revoked and deprecated objects are left out, and so
//! are relationships that touch one.
//!
//! The bundle ships with the binary (`knowledge/attack-ics/`, MITRE's licence beside it),
//! so nothing is fetched at run time; `Attack::from_json` reads another release.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The bundle shipped with pivotwatch: ATT&CK for ICS v18.1.
const SHIPPED: &str = include_str!("../../knowledge/attack-ics/ics-attack.json");

/// One ATT&CK object of any type, reduced to what pivotwatch shows and searches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The ATT&CK ID: `T0886`, `TA0108`, `M0930`, `A0001`, `G0034`, `S0603`, `C0028`.
    pub id: String,
    pub name: String,
    /// The description with citation markers and Markdown links reduced to text.
    pub description: String,
    pub url: String,
}

/// A technique and everything it is joined to, by ATT&CK ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Technique {
    #[serde(flatten)]
    pub entry: Entry,
    /// Tactic short names, e.g. `lateral-movement`.
    pub tactics: Vec<String>,
    pub mitigations: Vec<String>,
    pub assets: Vec<String>,
    /// Groups, software and campaigns known to use it.
    pub used_by: Vec<String>,
    pub platforms: Vec<String>,
    /// How it shows, from the analytics of the detection strategies that detect it:
    /// observables ("monitor for new connections to ...") in defenders' words.
    #[serde(default)]
    pub detection: String,
}

/// ATT&CK for ICS, loaded and joined.
#[derive(Clone, Debug, Default)]
pub struct Attack {
    pub version: String,
    pub techniques: BTreeMap<String, Technique>,
    /// Tactics by short name (`lateral-movement`), with their TA IDs.
    pub tactics: BTreeMap<String, Entry>,
    /// Everything else by ATT&CK ID: mitigations, assets, groups, software, campaigns.
    pub others: BTreeMap<String, (Kind, Entry)>,
    /// Techniques each mitigation, asset, group, software or campaign is joined to.
    pub related: BTreeMap<String, BTreeSet<String>>,
    /// Revoked or deprecated technique IDs, for a clear answer when one is asked for.
    pub retired: BTreeSet<String>,
}

/// The kinds of ATT&CK object pivotwatch keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Technique,
    Tactic,
    Mitigation,
    Asset,
    Group,
    Software,
    Campaign,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Technique => "technique",
            Kind::Tactic => "tactic",
            Kind::Mitigation => "mitigation",
            Kind::Asset => "asset",
            Kind::Group => "group",
            Kind::Software => "software",
            Kind::Campaign => "campaign",
        }
    }

    fn of(stix_type: &str) -> Option<Kind> {
        Some(match stix_type {
            "attack-pattern" => Kind::Technique,
            "x-mitre-tactic" => Kind::Tactic,
            "course-of-action" => Kind::Mitigation,
            "x-mitre-asset" => Kind::Asset,
            "intrusion-set" => Kind::Group,
            "malware" | "tool" => Kind::Software,
            "campaign" => Kind::Campaign,
            _ => return None,
        })
    }
}

impl Attack {
    /// The shipped ATT&CK for ICS release.
    pub fn shipped() -> &'static Attack {
        static SHIPPED_ATTACK: std::sync::OnceLock<Attack> = std::sync::OnceLock::new();
        SHIPPED_ATTACK.get_or_init(|| {
            Attack::from_json(SHIPPED).unwrap_or_else(|err| {
                // The shipped file is checked by the tests; reaching this means the build
                // embedded a damaged copy.
                tracing::error!("the shipped ATT&CK for ICS bundle does not load: {err}");
                Attack::default()
            })
        })
    }

    /// Loads a STIX 2.1 bundle of ATT&CK for ICS.
    pub fn from_json(text: &str) -> Result<Attack, String> {
        let bundle: Value =
            serde_json::from_str(text).map_err(|err| format!("not a STIX bundle: {err}"))?;
        let objects = bundle["objects"].as_array().ok_or("the bundle has no `objects` array")?;
        let mut attack = Attack::default();
        // STIX id -> (kind, ATT&CK id) of every live object.
        let mut live: HashMap<&str, (Kind, String)> = HashMap::new();
        let mut tactic_of_id: HashMap<String, String> = HashMap::new();
        for object in objects {
            let stix_type = object["type"].as_str().unwrap_or_default();
            if stix_type == "x-mitre-collection" {
                attack.version = object["x_mitre_version"].as_str().unwrap_or_default().into();
                continue;
            }
            let Some(kind) = Kind::of(stix_type) else { continue };
            let Some(entry) = entry(object) else { continue };
            let retired = object["revoked"].as_bool().unwrap_or(false)
                || object["x_mitre_deprecated"].as_bool().unwrap_or(false);
            if retired {
                if kind == Kind::Technique {
                    attack.retired.insert(entry.id);
                }
                continue;
            }
            let stix_id = object["id"].as_str().unwrap_or_default();
            live.insert(stix_id, (kind, entry.id.clone()));
            match kind {
                Kind::Technique => {
                    let tactics = object["kill_chain_phases"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|p| p["kill_chain_name"] == "mitre-ics-attack")
                        .filter_map(|p| p["phase_name"].as_str().map(str::to_string))
                        .collect();
                    let platforms = strings(&object["x_mitre_platforms"]);
                    attack.techniques.insert(
                        entry.id.clone(),
                        Technique {
                            entry,
                            tactics,
                            mitigations: Vec::new(),
                            assets: Vec::new(),
                            used_by: Vec::new(),
                            platforms,
                            detection: String::new(),
                        },
                    );
                }
                Kind::Tactic => {
                    let short = object["x_mitre_shortname"].as_str().unwrap_or_default();
                    tactic_of_id.insert(entry.id.clone(), short.to_string());
                    attack.tactics.insert(short.to_string(), entry);
                }
                _ => {
                    attack.others.insert(entry.id.clone(), (kind, entry));
                }
            }
        }
        for object in objects.iter().filter(|o| o["type"] == "relationship") {
            if object["revoked"].as_bool().unwrap_or(false)
                || object["x_mitre_deprecated"].as_bool().unwrap_or(false)
            {
                continue;
            }
            let ends = (
                live.get(object["source_ref"].as_str().unwrap_or_default()),
                live.get(object["target_ref"].as_str().unwrap_or_default()),
            );
            let (Some((from_kind, from)), Some((to_kind, to))) = ends else { continue };
            let relation = object["relationship_type"].as_str().unwrap_or_default();
            let (technique, other, slot) = match (relation, from_kind, to_kind) {
                ("mitigates", Kind::Mitigation, Kind::Technique) => (to, from, Slot::Mitigation),
                ("targets", Kind::Technique, Kind::Asset) => (from, to, Slot::Asset),
                ("uses", Kind::Group | Kind::Software | Kind::Campaign, Kind::Technique) => {
                    (to, from, Slot::UsedBy)
                }
                _ => continue,
            };
            if let Some(t) = attack.techniques.get_mut(technique) {
                match slot {
                    Slot::Mitigation => t.mitigations.push(other.clone()),
                    Slot::Asset => t.assets.push(other.clone()),
                    Slot::UsedBy => t.used_by.push(other.clone()),
                }
                attack.related.entry(other.clone()).or_default().insert(technique.clone());
            }
        }
        attach_detections(objects, &live, &mut attack);
        for technique in attack.techniques.values_mut() {
            for list in [&mut technique.mitigations, &mut technique.assets, &mut technique.used_by]
            {
                list.sort();
                list.dedup();
            }
        }
        if attack.techniques.is_empty() {
            return Err("the bundle holds no live ATT&CK for ICS technique".into());
        }
        Ok(attack)
    }

    /// The name of any ATT&CK ID this release holds.
    pub fn name(&self, id: &str) -> Option<&str> {
        if let Some(t) = self.techniques.get(id) {
            return Some(&t.entry.name);
        }
        if let Some((_, e)) = self.others.get(id) {
            return Some(&e.name);
        }
        self.tactics.values().find(|t| t.id == id).map(|t| t.name.as_str())
    }

    /// A tactic's display name from its short name (`lateral-movement` → `Lateral Movement`).
    pub fn tactic_name<'a>(&'a self, short: &'a str) -> &'a str {
        self.tactics.get(short).map_or(short, |t| t.name.as_str())
    }

    /// Looks a technique up, explaining a retired or unknown ID.
    pub fn technique(&self, id: &str) -> Result<&Technique, String> {
        let id = id.trim().to_ascii_uppercase();
        if let Some(t) = self.techniques.get(&id) {
            return Ok(t);
        }
        if self.retired.contains(&id) {
            return Err(format!(
                "{id} is revoked or deprecated in ATT&CK for ICS {}",
                self.version
            ));
        }
        Err(format!("{id} is not an ATT&CK for ICS technique"))
    }
}

/// Joins each technique to the analytics of the detection strategies that detect it
/// (`detects` relationships, then `x_mitre_analytic_refs`).
fn attach_detections(objects: &[Value], live: &HashMap<&str, (Kind, String)>, attack: &mut Attack) {
    let analytics: HashMap<&str, &str> = objects
        .iter()
        .filter(|o| o["type"] == "x-mitre-analytic")
        .filter_map(|o| Some((o["id"].as_str()?, o["description"].as_str()?)))
        .collect();
    let strategies: HashMap<&str, &Value> = objects
        .iter()
        .filter(|o| o["type"] == "x-mitre-detection-strategy")
        .filter(|o| !o["x_mitre_deprecated"].as_bool().unwrap_or(false))
        .filter_map(|o| Some((o["id"].as_str()?, o)))
        .collect();
    for relation in objects.iter().filter(|o| o["relationship_type"] == "detects") {
        let Some(strategy) = strategies.get(relation["source_ref"].as_str().unwrap_or_default())
        else {
            continue;
        };
        let Some((Kind::Technique, id)) =
            live.get(relation["target_ref"].as_str().unwrap_or_default())
        else {
            continue;
        };
        let Some(technique) = attack.techniques.get_mut(id) else { continue };
        for analytic in strategy["x_mitre_analytic_refs"].as_array().into_iter().flatten() {
            if let Some(text) = analytic.as_str().and_then(|a| analytics.get(a)) {
                if !technique.detection.is_empty() {
                    technique.detection.push('\n');
                }
                technique.detection.push_str(&readable(text));
            }
        }
    }
}

enum Slot {
    Mitigation,
    Asset,
    UsedBy,
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect()
}

/// The ATT&CK ID, name, readable description and URL of a STIX object.
fn entry(object: &Value) -> Option<Entry> {
    let reference = object["external_references"]
        .as_array()?
        .iter()
        // Live objects name their source `mitre-attack`; some deprecated ones
        // `mitre-ics-attack`.
        .find(|r| r["source_name"] == "mitre-attack" || r["source_name"] == "mitre-ics-attack")?;
    Some(Entry {
        id: reference["external_id"].as_str()?.to_string(),
        name: object["name"].as_str()?.to_string(),
        description: readable(object["description"].as_str().unwrap_or_default()),
        url: reference["url"].as_str().unwrap_or_default().to_string(),
    })
}

/// Drops `(Citation: ...)` markers and turns `[text](url)` links into their text.
pub fn readable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("(Citation:") {
            rest = after.find(')').map_or("", |end| &after[end + 1..]);
            continue;
        }
        if rest.starts_with('[')
            && let Some(close) = rest.find("](")
            && let Some(end) = rest[close..].find(')')
        {
            out.push_str(&rest[1..close]);
            rest = &rest[close + end + 1..];
            continue;
        }
        let ch = rest.chars().next().unwrap_or(' ');
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    let mut squeezed = String::with_capacity(out.len());
    for word in out.split_whitespace() {
        if !squeezed.is_empty() && !matches!(word, "." | "," | ";" | ":") {
            squeezed.push(' ');
        }
        squeezed.push_str(word);
    }
    squeezed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_release_loads_without_retired_objects() {
        let attack = Attack::shipped();
        assert_eq!(attack.version, "18.1");
        // 95 techniques, 12 of them deprecated.
        assert_eq!(attack.techniques.len(), 83);
        assert!(attack.retired.contains("T0841") && !attack.techniques.contains_key("T0841"));
        assert_eq!(attack.retired.len(), 12);
        assert_eq!(attack.tactics.len(), 12);
        let ssh = attack.technique("T0886").expect("Remote Services");
        assert_eq!(ssh.entry.name, "Remote Services");
        assert!(ssh.tactics.contains(&"lateral-movement".to_string()));
        assert!(!ssh.mitigations.is_empty() && !ssh.assets.is_empty() && !ssh.used_by.is_empty());
        assert!(ssh.entry.url.ends_with("/techniques/T0886"));
        assert!(!ssh.entry.description.contains("(Citation"));
        let err = attack.technique("t0841").unwrap_err();
        assert!(err.contains("deprecated"), "{err}");
        // Nothing retired is joined to anything.
        for t in attack.techniques.values() {
            for id in t.mitigations.iter().chain(&t.assets).chain(&t.used_by) {
                assert!(attack.others.contains_key(id), "{} joins retired {id}", t.entry.id);
            }
        }
    }

    #[test]
    fn citations_and_links_become_plain_text() {
        let text = "Uses [Industroyer](https://attack.mitre.org/software/S0604) to send \
                    commands. (Citation: Some Report 2017) More.";
        assert_eq!(readable(text), "Uses Industroyer to send commands. More.");
    }
}
