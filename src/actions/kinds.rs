//! The side effects pivotwatch can propose, each with typed parameters and a risk
//! class. An action is data: building one does nothing; only an executor handed an
//! `Approved` action by the gate acts on it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::model::Criticality;

/// How much harm a wrong execution can do; policy decides who may approve each class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskClass {
    /// Writes a record somewhere (a ticket, a comment): easy to undo, affects no device.
    Low,
    /// Starts automation or changes what others see (a playbook, a custom alert).
    Medium,
    /// Changes what a device may reach (quarantine, isolation, firewall policy).
    High,
}

/// Where a PAN-OS change goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PanosTarget {
    Firewall,
    /// Panorama, into a device group, then pushed to its firewalls with a commit-all.
    Panorama {
        device_group: String,
    },
}

/// One `action=set` of the PAN-OS XML API: an element placed at an xpath.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSet {
    pub xpath: String,
    pub element: String,
    /// After the set, move the entry (one security rule) to the top or bottom of its
    /// rulebase: a set appends a new rule at the bottom.
    #[serde(default, rename = "move", skip_serializing_if = "Option::is_none")]
    pub move_to: Option<RulePlace>,
}

/// Where `action=move` puts a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RulePlace {
    Top,
    Bottom,
}

impl RulePlace {
    pub fn as_str(self) -> &'static str {
        match self {
            RulePlace::Top => "top",
            RulePlace::Bottom => "bottom",
        }
    }
}

/// A proposed side effect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// A ServiceNow incident through the Table API.
    ServicenowIncident {
        short_description: String,
        description: String,
        /// 1 (high) to 3 (low), as ServiceNow counts.
        urgency: u8,
        impact: u8,
        #[serde(default)]
        assignment_group: Option<String>,
    },
    /// An XSOAR incident that runs a playbook.
    XsoarIncident {
        name: String,
        /// XSOAR's incident type, e.g. `IoT Device Anomaly`.
        incident_type: String,
        /// 0 (unknown) to 4 (critical), as XSOAR counts.
        severity: u8,
        details: String,
        playbook: String,
    },
    /// A note in the war room of an XSOAR incident (its investigation), in Markdown.
    XsoarWarRoomEntry { incident_id: String, entry: String },
    /// Tags a device's address so a dynamic address group puts it in quarantine, for
    /// `timeout_secs` (PAN-OS User-ID `register` with a timeout).
    QuarantineDevice {
        device_id: String,
        ip: IpAddr,
        tag: String,
        timeout_secs: u32,
        criticality: Criticality,
    },
    /// Removes the quarantine tag.
    ReleaseDevice { device_id: String, ip: IpAddr, tag: String },
    /// Adds a comment to a Cortex XDR case.
    XdrCaseComment { incident_id: String, comment: String },
    /// Inserts a custom alert into Cortex XDR.
    XdrCustomAlert {
        alert_name: String,
        severity: String,
        local_ip: IpAddr,
        remote_ip: IpAddr,
        #[serde(default)]
        remote_port: Option<u16>,
        description: String,
    },
    XdrIsolateEndpoint {
        endpoint_id: String,
        #[serde(default)]
        incident_id: Option<String>,
    },
    XdrUnisolateEndpoint {
        endpoint_id: String,
        #[serde(default)]
        incident_id: Option<String>,
    },
    /// Address objects, groups, tags or rules set through the XML API, then committed.
    PanosConfigChange { target: PanosTarget, sets: Vec<ConfigSet> },
}

/// The name of each kind, as policy files and the command line spell it.
pub const KINDS: [&str; 10] = [
    "servicenow_incident",
    "xsoar_incident",
    "xsoar_war_room_entry",
    "quarantine_device",
    "release_device",
    "xdr_case_comment",
    "xdr_custom_alert",
    "xdr_isolate_endpoint",
    "xdr_unisolate_endpoint",
    "panos_config_change",
];

/// The risk class of a kind, by name.
pub fn risk_of(kind: &str) -> Option<RiskClass> {
    Some(match kind {
        "servicenow_incident" | "xdr_case_comment" | "xsoar_war_room_entry" => RiskClass::Low,
        "xsoar_incident" | "xdr_custom_alert" | "release_device" => RiskClass::Medium,
        "quarantine_device"
        | "xdr_isolate_endpoint"
        | "xdr_unisolate_endpoint"
        | "panos_config_change" => RiskClass::High,
        _ => return None,
    })
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::ServicenowIncident { .. } => KINDS[0],
            Action::XsoarIncident { .. } => KINDS[1],
            Action::XsoarWarRoomEntry { .. } => KINDS[2],
            Action::QuarantineDevice { .. } => KINDS[3],
            Action::ReleaseDevice { .. } => KINDS[4],
            Action::XdrCaseComment { .. } => KINDS[5],
            Action::XdrCustomAlert { .. } => KINDS[6],
            Action::XdrIsolateEndpoint { .. } => KINDS[7],
            Action::XdrUnisolateEndpoint { .. } => KINDS[8],
            Action::PanosConfigChange { .. } => KINDS[9],
        }
    }

    pub fn risk(&self) -> RiskClass {
        risk_of(self.kind()).unwrap_or(RiskClass::High)
    }

    /// The criticality of the device the action touches, where the action names one.
    pub fn criticality(&self) -> Option<Criticality> {
        match self {
            Action::QuarantineDevice { criticality, .. } => Some(*criticality),
            _ => None,
        }
    }

    /// The device or endpoint the action acts on, where it names one.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Action::QuarantineDevice { device_id, .. }
            | Action::ReleaseDevice { device_id, .. } => Some(device_id),
            Action::XdrIsolateEndpoint { endpoint_id, .. }
            | Action::XdrUnisolateEndpoint { endpoint_id, .. } => Some(endpoint_id),
            _ => None,
        }
    }

    /// Builds an action from its kind name and JSON parameters, as the command line
    /// and the API receive them, and checks it.
    pub fn from_parts(kind: &str, params: serde_json::Value) -> Result<Action, String> {
        if !KINDS.contains(&kind) {
            return Err(format!("unknown action kind `{kind}`; one of {}", KINDS.join(", ")));
        }
        let action: Action =
            serde_json::from_value(serde_json::json!({ "kind": kind, "params": params }))
                .map_err(|err| format!("{kind} parameters: {err}"))?;
        action.validate()?;
        Ok(action)
    }

    /// The parameters alone, as stored beside the kind.
    pub fn params(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.remove("params").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// Checks what the types cannot: non-empty text, ranges, PAN-OS names.
    pub fn validate(&self) -> Result<(), String> {
        let text = |field: &str, value: &str, max: usize| {
            if value.trim().is_empty() {
                Err(format!("{field} is empty"))
            } else if value.chars().count() > max {
                Err(format!("{field} is longer than {max} characters"))
            } else {
                Ok(())
            }
        };
        match self {
            Action::ServicenowIncident { short_description, urgency, impact, .. } => {
                text("short_description", short_description, 160)?;
                for (name, value) in [("urgency", urgency), ("impact", impact)] {
                    if !(1..=3).contains(value) {
                        return Err(format!("{name} must be 1, 2 or 3"));
                    }
                }
            }
            Action::XsoarIncident { name, severity, playbook, .. } => {
                text("name", name, 500)?;
                text("playbook", playbook, 500)?;
                if *severity > 4 {
                    return Err("severity must be 0 to 4".into());
                }
            }
            Action::XsoarWarRoomEntry { incident_id, entry } => {
                text("incident_id", incident_id, 64)?;
                text("entry", entry, 50_000)?;
            }
            Action::QuarantineDevice { tag, timeout_secs, device_id, .. } => {
                text("device_id", device_id, 200)?;
                panos_name("tag", tag)?;
                // PAN-OS registered-IP timeouts run from 1 second to 30 days.
                if *timeout_secs == 0 || *timeout_secs > 2_592_000 {
                    return Err("timeout_secs must be 1 to 2592000 (30 days)".into());
                }
            }
            Action::ReleaseDevice { tag, device_id, .. } => {
                text("device_id", device_id, 200)?;
                panos_name("tag", tag)?;
            }
            Action::XdrCaseComment { incident_id, comment } => {
                text("incident_id", incident_id, 64)?;
                text("comment", comment, 10_000)?;
            }
            Action::XdrCustomAlert { alert_name, severity, .. } => {
                text("alert_name", alert_name, 255)?;
                if !["informational", "low", "medium", "high", "critical"]
                    .contains(&severity.to_ascii_lowercase().as_str())
                {
                    return Err(
                        "severity must be Informational, Low, Medium, High or Critical".into()
                    );
                }
            }
            Action::XdrIsolateEndpoint { endpoint_id, .. }
            | Action::XdrUnisolateEndpoint { endpoint_id, .. } => {
                text("endpoint_id", endpoint_id, 64)?;
            }
            Action::PanosConfigChange { target, sets } => {
                if sets.is_empty() {
                    return Err("sets is empty: nothing to change".into());
                }
                if let PanosTarget::Panorama { device_group } = target {
                    panos_name("device_group", device_group)?;
                }
                for (i, set) in sets.iter().enumerate() {
                    if !set.xpath.starts_with("/config/") {
                        return Err(format!("sets[{i}].xpath must start with /config/"));
                    }
                    text(&format!("sets[{i}].element"), &set.element, 100_000)?;
                    if set.move_to.is_some() && !set.xpath.contains("/rules/entry[@name=") {
                        return Err(format!(
                            "sets[{i}].move needs the xpath of one rule (…/rules/entry[@name='…'])"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// PAN-OS object names: at most 63 characters of letters, digits, `.`, `_`, `-` and
/// spaces, starting with a letter, digit or underscore.
fn panos_name(field: &str, name: &str) -> Result<(), String> {
    let ok_start = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok_chars =
        name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ' '));
    if name.is_empty() || name.chars().count() > 63 || !ok_start || !ok_chars {
        return Err(format!(
            "{field} {name:?} is not a PAN-OS name (1-63 letters, digits, '.', '_', '-', spaces; \
             starting with a letter, digit or '_')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_round_trip_through_kind_and_params() {
        let action = Action::from_parts(
            "quarantine_device",
            json!({"device_id": "pump-0007", "ip": "10.20.1.17", "tag": "pw-quarantine",
                   "timeout_secs": 3600, "criticality": "critical"}),
        )
        .unwrap();
        assert_eq!(action.kind(), "quarantine_device");
        assert_eq!(action.risk(), RiskClass::High);
        assert_eq!(action.criticality(), Some(Criticality::Critical));
        assert_eq!(Action::from_parts(action.kind(), action.params()).unwrap(), action);
    }

    #[test]
    fn bad_parameters_are_named() {
        let err = Action::from_parts("xdr_case_comment", json!({"incident_id": "7"})).unwrap_err();
        assert!(err.contains("comment"), "{err}");
        let err = Action::from_parts(
            "xdr_case_comment",
            json!({"incident_id": "7", "comment": "x", "extra": 1}),
        )
        .unwrap_err();
        assert!(err.contains("extra"), "{err}");
        let err = Action::from_parts("launch_missiles", json!({})).unwrap_err();
        assert!(err.contains("unknown action kind"), "{err}");
        let err = Action::from_parts(
            "quarantine_device",
            json!({"device_id": "d", "ip": "10.0.0.1", "tag": "bad/tag", "timeout_secs": 60,
                   "criticality": "low"}),
        )
        .unwrap_err();
        assert!(err.contains("PAN-OS name"), "{err}");
        let err = Action::from_parts(
            "panos_config_change",
            json!({"target": {"type": "firewall"}, "sets": [{"xpath": "/etc/passwd", "element": "<x/>"}]}),
        )
        .unwrap_err();
        assert!(err.contains("/config/"), "{err}");
    }
}
