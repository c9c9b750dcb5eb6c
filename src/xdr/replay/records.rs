//! The replay tenant's incidents, alerts, endpoints, response actions and audit log,
//! kept as the JSON objects the public API returns and answered at the wire level, so
//! the typed `Xdr` calls and the local API server share one implementation.
//!
//! Records live in `<data_dir>/replay/records.json` and every change is written back
//! (to a temporary file renamed over the old one), so a restart loses nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::xdr::error::NO_ENDPOINT_MESSAGE;
use crate::xdr::query::{Filter, ListRequest, Operator, SortOrder};

pub const RECORDS_FILE: &str = "records.json";

/// Which list call a request is for; each maps its filter names onto record fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    Incidents,
    Alerts,
    Endpoints,
    Audit,
}

impl ListKind {
    /// The record field a filter (or sort) name refers to.
    fn field(self, name: &str) -> Option<&'static str> {
        Some(match (self, name) {
            (ListKind::Incidents, "incident_id_list" | "incident_id") => "incident_id",
            (ListKind::Incidents, "creation_time") => "creation_time",
            (ListKind::Incidents, "modification_time") => "modification_time",
            (ListKind::Incidents, "status") => "status",
            (ListKind::Incidents, "starred") => "starred",
            (ListKind::Incidents, "description") => "description",
            (ListKind::Incidents, "severity") => "severity",
            (ListKind::Alerts, "alert_id_list" | "alert_id") => "alert_id",
            (ListKind::Alerts, "severity") => "severity",
            (ListKind::Alerts, "creation_time" | "server_creation_time") => "detection_timestamp",
            (ListKind::Alerts, "alert_source") => "source",
            (ListKind::Endpoints, "endpoint_id_list" | "endpoint_id") => "endpoint_id",
            (ListKind::Endpoints, "ip_list") => "ip",
            (ListKind::Endpoints, "hostname") => "endpoint_name",
            (ListKind::Endpoints, "endpoint_status") => "endpoint_status",
            (ListKind::Endpoints, "group_name") => "group_name",
            (ListKind::Endpoints, "isolate") => "is_isolated",
            (ListKind::Endpoints, "first_seen") => "first_seen",
            (ListKind::Endpoints, "last_seen") => "last_seen",
            (ListKind::Audit, "email") => "AUDIT_OWNER_EMAIL",
            (ListKind::Audit, "type") => "AUDIT_ENTITY",
            (ListKind::Audit, "sub_type") => "AUDIT_ENTITY_SUBTYPE",
            (ListKind::Audit, "result") => "AUDIT_RESULT",
            (ListKind::Audit, "timestamp") => "AUDIT_INSERT_TIME",
            _ => return None,
        })
    }
}

/// A request the tenant cannot answer, with the message a tenant would give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    pub status: u16,
    pub message: String,
}

impl RecordError {
    fn bad(message: impl Into<String>) -> RecordError {
        RecordError { status: 400, message: message.into() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Records {
    #[serde(default)]
    pub incidents: Vec<Map<String, Value>>,
    /// Alerts with the incident they belong to in `incident_id`.
    #[serde(default)]
    pub alerts: Vec<Map<String, Value>>,
    #[serde(default)]
    pub endpoints: Vec<Map<String, Value>>,
    #[serde(default)]
    pub audit: Vec<Map<String, Value>>,
    /// Response actions by group action id: endpoint id → status.
    #[serde(default)]
    pub actions: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub next_id: u64,
}

impl Records {
    pub fn read(root: &Path) -> Result<Records, String> {
        let path = root.join(RECORDS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|err| format!("{}: {err}", path.display()))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Records::default()),
            Err(err) => Err(format!("{}: {err}", path.display())),
        }
    }

    pub fn write(&self, root: &Path) -> std::io::Result<()> {
        let path = root.join(RECORDS_FILE);
        let staging: PathBuf = root.join(format!("{RECORDS_FILE}.tmp"));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&staging, text)?;
        std::fs::rename(&staging, &path)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn items(&self, kind: ListKind) -> &[Map<String, Value>] {
        match kind {
            ListKind::Incidents => &self.incidents,
            ListKind::Alerts => &self.alerts,
            ListKind::Endpoints => &self.endpoints,
            ListKind::Audit => &self.audit,
        }
    }

    /// One page of a list call: the total that matched and the page's records.
    pub fn list(
        &self,
        kind: ListKind,
        request: &ListRequest,
    ) -> Result<(u64, Vec<Value>), RecordError> {
        let mut filters = Vec::with_capacity(request.filters.len());
        for filter in &request.filters {
            let field = kind.field(&filter.field).ok_or_else(|| {
                RecordError::bad(format!("unknown filter field `{}` for this call", filter.field))
            })?;
            filters.push((field, filter));
        }
        let mut matched: Vec<&Map<String, Value>> = self
            .items(kind)
            .iter()
            .filter(|item| {
                filters.iter().all(|(field, filter)| match (kind, *field) {
                    // The filter says `isolated`/`unisolated`; the record keeps the
                    // agent state the endpoint object reports.
                    (ListKind::Endpoints, "is_isolated") => {
                        let state = item.get(*field).and_then(Value::as_str).unwrap_or_default();
                        let word =
                            if state == "AGENT_ISOLATED" { "isolated" } else { "unisolated" };
                        matches(Some(&json!(word)), filter)
                    }
                    _ => matches(item.get(*field), filter),
                })
            })
            .collect();
        if let Some(sort) = &request.sort {
            let field = kind
                .field(&sort.field)
                .ok_or_else(|| RecordError::bad(format!("cannot sort by `{}`", sort.field)))?;
            matched.sort_by(|a, b| {
                let ordering = compare(a.get(field), b.get(field));
                if sort.keyword == SortOrder::Desc { ordering.reverse() } else { ordering }
            });
        }
        if request.search_to < request.search_from || request.search_to - request.search_from > 100
        {
            return Err(RecordError::bad(
                "search_from and search_to must describe a page of at most 100 records",
            ));
        }
        let total = matched.len() as u64;
        let page = matched
            .into_iter()
            .skip(request.search_from as usize)
            .take((request.search_to - request.search_from) as usize)
            .map(|item| Value::Object(item.clone()))
            .collect();
        Ok((total, page))
    }

    pub fn incident(&self, incident_id: &str) -> Option<&Map<String, Value>> {
        self.incidents
            .iter()
            .find(|i| i.get("incident_id").and_then(Value::as_str) == Some(incident_id))
    }

    /// `incidents/get_incident_extra_data/`.
    pub fn incident_extra_data(
        &self,
        incident_id: &str,
        alerts_limit: usize,
    ) -> Result<Value, RecordError> {
        let incident = self.incident(incident_id).ok_or_else(|| RecordError {
            status: 500,
            message: format!("incident {incident_id} was not found"),
        })?;
        let alerts: Vec<&Map<String, Value>> = self
            .alerts
            .iter()
            .filter(|a| a.get("incident_id").and_then(Value::as_str) == Some(incident_id))
            .collect();
        let mut artifacts: BTreeMap<(String, u64), u64> = BTreeMap::new();
        for alert in &alerts {
            for event in alert.get("events").and_then(Value::as_array).into_iter().flatten() {
                let ip = event.get("action_remote_ip").and_then(Value::as_str);
                let port = event.get("action_remote_port").and_then(Value::as_u64).unwrap_or(0);
                if let Some(ip) = ip {
                    *artifacts.entry((ip.to_string(), port)).or_default() += 1;
                }
            }
        }
        let network: Vec<Value> = artifacts
            .into_iter()
            .map(|((ip, port), count)| {
                json!({"type": "IP", "network_remote_ip": ip, "network_remote_port": port,
                       "alert_count": count, "is_manual": false, "network_domain": null,
                       "network_country": null})
            })
            .collect();
        Ok(json!({
            "incident": incident,
            "alerts": {"total_count": alerts.len(), "data": alerts.iter().take(alerts_limit).collect::<Vec<_>>()},
            "network_artifacts": {"total_count": network.len(), "data": network},
            "file_artifacts": {"total_count": 0, "data": []},
        }))
    }

    /// `incidents/update_incident/`: applies the documented fields and appends a
    /// comment to the incident's `comments`.
    pub fn update_incident(
        &mut self,
        incident_id: &str,
        update: &Value,
        now_ms: i64,
    ) -> Result<(), RecordError> {
        let Some(update) = update.as_object() else {
            return Err(RecordError::bad("update_data must be an object"));
        };
        const FIELDS: [&str; 6] = [
            "assigned_user_mail",
            "assigned_user_pretty_name",
            "status",
            "manual_severity",
            "resolve_comment",
            "comment",
        ];
        if let Some(unknown) = update.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(RecordError::bad(format!("update_data has an unknown field `{unknown}`")));
        }
        let incident = self
            .incidents
            .iter_mut()
            .find(|i| i.get("incident_id").and_then(Value::as_str) == Some(incident_id))
            .ok_or_else(|| RecordError {
                status: 500,
                message: format!("incident {incident_id} was not found"),
            })?;
        for (key, value) in update {
            if key == "comment" {
                let text = value.get("value").and_then(Value::as_str);
                let action = value.get("comment_action").and_then(Value::as_str);
                let (Some(text), Some("add")) = (text, action) else {
                    return Err(RecordError::bad(
                        "comment must be {\"comment_action\": \"add\", \"value\": \"<text>\"}",
                    ));
                };
                let comments = incident.entry("comments").or_insert_with(|| json!([]));
                if let Some(list) = comments.as_array_mut() {
                    list.push(json!({"comment": text, "created_at": now_ms}));
                }
            } else if key == "assigned_user_mail" && value.as_str() == Some("none") {
                incident.insert(key.clone(), Value::Null);
                incident.insert("assigned_user_pretty_name".into(), Value::Null);
            } else {
                incident.insert(key.clone(), value.clone());
            }
        }
        incident.insert("modification_time".into(), json!(now_ms));
        self.audit_entry("INCIDENT", "Update", &format!("incident {incident_id} updated"), now_ms);
        Ok(())
    }

    /// Adds alerts (already in the API's alert shape) and files them under an open
    /// incident of the same host, opening one when there is none.
    pub fn add_alerts(&mut self, alerts: Vec<Map<String, Value>>, now_ms: i64) -> Vec<String> {
        let mut touched = Vec::new();
        for mut alert in alerts {
            let host =
                alert.get("host_name").and_then(Value::as_str).unwrap_or("unknown").to_string();
            let alert_id = self.next_id().to_string();
            alert.insert("alert_id".into(), json!(alert_id));
            let open = self.incidents.iter().position(|i| {
                i.get("hosts")
                    .and_then(Value::as_array)
                    .is_some_and(|h| h.iter().any(|x| x.as_str() == Some(&host)))
                    && matches!(
                        i.get("status").and_then(Value::as_str),
                        Some("new" | "under_investigation")
                    )
            });
            let idx = match open {
                Some(idx) => idx,
                None => {
                    let incident_id = self.next_id().to_string();
                    let name =
                        alert.get("name").and_then(Value::as_str).unwrap_or("alert").to_string();
                    let source =
                        alert.get("source").and_then(Value::as_str).unwrap_or("Custom").to_string();
                    self.incidents.push(new_incident(&incident_id, &name, &source, &host, now_ms));
                    self.incidents.len() - 1
                }
            };
            let incident = &mut self.incidents[idx];
            let incident_id = incident.get("incident_id").cloned().unwrap_or(Value::Null);
            alert.insert("incident_id".into(), incident_id.clone());
            absorb_alert(incident, &alert, now_ms);
            if let Some(id) = incident_id.as_str()
                && !touched.iter().any(|t: &String| t == id)
            {
                touched.push(id.to_string());
            }
            self.alerts.push(alert);
        }
        touched
    }

    /// Starts isolating or releasing an endpoint; the action completes at once here.
    pub fn endpoint_action(
        &mut self,
        endpoint_id: &str,
        isolate: bool,
        now_ms: i64,
    ) -> Result<Value, RecordError> {
        let endpoint = self
            .endpoints
            .iter_mut()
            .find(|e| e.get("endpoint_id").and_then(Value::as_str) == Some(endpoint_id))
            .ok_or_else(|| RecordError { status: 500, message: NO_ENDPOINT_MESSAGE.into() })?;
        let state = if isolate { "AGENT_ISOLATED" } else { "AGENT_UNISOLATED" };
        endpoint.insert("is_isolated".into(), json!(state));
        if isolate {
            endpoint.insert("isolated_date".into(), json!(now_ms));
        }
        let action_id = self.next_id().to_string();
        self.actions.insert(
            action_id.clone(),
            BTreeMap::from([(endpoint_id.to_string(), "COMPLETED_SUCCESSFULLY".to_string())]),
        );
        let verb = if isolate { "Isolate" } else { "Cancel Isolation" };
        self.audit_entry("RESPONSE", verb, &format!("{verb} endpoint {endpoint_id}"), now_ms);
        Ok(json!({"action_id": action_id, "status": "PENDING", "endpoints_count": 1}))
    }

    pub fn action_status(&self, group_action_id: &str) -> Result<Value, RecordError> {
        let data = self
            .actions
            .get(group_action_id)
            .ok_or_else(|| RecordError::bad(format!("no action with id {group_action_id}")))?;
        Ok(json!({"data": data}))
    }

    fn audit_entry(&mut self, entity: &str, subtype: &str, description: &str, now_ms: i64) {
        let id = self.next_id();
        let mut entry = Map::new();
        for (key, value) in [
            ("AUDIT_ID", json!(id)),
            ("AUDIT_OWNER_NAME", json!("pivotwatch")),
            ("AUDIT_OWNER_EMAIL", json!("pivotwatch@replay.local")),
            ("AUDIT_ASSET_JSON", Value::Null),
            ("AUDIT_ASSET_NAMES", json!("")),
            ("AUDIT_HOSTNAME", Value::Null),
            ("AUDIT_RESULT", json!("SUCCESS")),
            ("AUDIT_REASON", Value::Null),
            ("AUDIT_DESCRIPTION", json!(description)),
            ("AUDIT_ENTITY", json!(entity)),
            ("AUDIT_ENTITY_SUBTYPE", json!(subtype)),
            ("AUDIT_SESSION_ID", Value::Null),
            ("AUDIT_CASE_ID", Value::Null),
            ("AUDIT_INSERT_TIME", json!(now_ms)),
        ] {
            entry.insert(key.into(), value);
        }
        self.audit.push(entry);
    }
}

/// A new incident in the API's shape: status `new`, one host, no alerts yet.
pub fn new_incident(
    id: &str,
    name: &str,
    source: &str,
    host: &str,
    now_ms: i64,
) -> Map<String, Value> {
    let incident = json!({
        "incident_id": id,
        "incident_name": null,
        "creation_time": now_ms,
        "modification_time": now_ms,
        "detection_time": null,
        "status": "new",
        "severity": "low",
        "description": format!("'{name}' generated by {source} detected on host {host}"),
        "assigned_user_mail": null,
        "assigned_user_pretty_name": null,
        "alert_count": 0,
        "low_severity_alert_count": 0,
        "med_severity_alert_count": 0,
        "high_severity_alert_count": 0,
        "critical_severity_alert_count": 0,
        "user_count": 0,
        "host_count": 1,
        "notes": null,
        "resolve_comment": null,
        "manual_severity": null,
        "manual_description": null,
        "xdr_url": format!("http://replay.local/incident-view/{id}"),
        "starred": false,
        "hosts": [host],
        "users": [],
        "incident_sources": [source],
        "mitre_techniques_ids_and_names": [],
        "mitre_tactics_ids_and_names": [],
    });
    match incident {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Counts an alert into its incident: severity counters, the incident's severity (the
/// highest of its alerts), techniques and times.
fn absorb_alert(incident: &mut Map<String, Value>, alert: &Map<String, Value>, now_ms: i64) {
    const ORDER: [&str; 4] = ["low", "medium", "high", "critical"];
    let severity =
        alert.get("severity").and_then(Value::as_str).unwrap_or("low").to_ascii_lowercase();
    let counter = match severity.as_str() {
        "critical" => "critical_severity_alert_count",
        "high" => "high_severity_alert_count",
        "medium" => "med_severity_alert_count",
        _ => "low_severity_alert_count",
    };
    for key in ["alert_count", counter] {
        let n = incident.get(key).and_then(Value::as_u64).unwrap_or(0);
        incident.insert(key.into(), json!(n + 1));
    }
    let rank = |s: &str| ORDER.iter().position(|o| *o == s).unwrap_or(0);
    let current = incident.get("severity").and_then(Value::as_str).unwrap_or("low").to_string();
    if rank(&severity) > rank(&current) {
        incident.insert("severity".into(), json!(ORDER[rank(&severity)]));
    }
    let techniques = alert
        .get("mitre_technique_id_and_name")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(list) =
        incident.get_mut("mitre_techniques_ids_and_names").and_then(Value::as_array_mut)
    {
        for technique in techniques {
            if !list.contains(&technique) {
                list.push(technique);
            }
        }
    }
    if let Some(at) = alert.get("detection_timestamp").and_then(Value::as_i64) {
        let earliest =
            incident.get("detection_time").and_then(Value::as_i64).map_or(at, |t| t.min(at));
        incident.insert("detection_time".into(), json!(earliest));
        let created = incident.get("creation_time").and_then(Value::as_i64).unwrap_or(at);
        incident.insert("creation_time".into(), json!(created.min(at.max(0))));
    }
    incident.insert("modification_time".into(), json!(now_ms));
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let text = |v: Option<&Value>| v.map(|v| v.to_string()).unwrap_or_default();
            text(a).cmp(&text(b))
        }
    }
}

/// Whether a record's field satisfies one wire filter. Array fields (an endpoint's
/// `ip`) match when any element does.
fn matches(value: Option<&Value>, filter: &Filter) -> bool {
    let value = value.unwrap_or(&Value::Null);
    if let Value::Array(items) = value
        && filter.operator != Operator::Contains
    {
        return items.iter().any(|item| matches(Some(item), filter));
    }
    let same = |a: &Value, b: &Value| match (a, b) {
        (Value::String(x), Value::String(y)) => x.eq_ignore_ascii_case(y),
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => {
            let n = if let Value::Number(n) = a {
                n
            } else if let Value::Number(n) = b {
                n
            } else {
                return false;
            };
            n.to_string() == *s
        }
        _ => a == b,
    };
    match filter.operator {
        Operator::Eq => same(value, &filter.value),
        Operator::In => {
            filter.value.as_array().is_some_and(|set| set.iter().any(|v| same(value, v)))
        }
        Operator::Gte => value.as_f64().zip(filter.value.as_f64()).is_some_and(|(v, f)| v >= f),
        Operator::Lte => value.as_f64().zip(filter.value.as_f64()).is_some_and(|(v, f)| v <= f),
        Operator::Contains => {
            let needle = filter.value.as_str().unwrap_or_default().to_lowercase();
            match value {
                Value::Array(items) => items
                    .iter()
                    .any(|i| i.as_str().is_some_and(|s| s.to_lowercase().contains(&needle))),
                other => other.as_str().is_some_and(|s| s.to_lowercase().contains(&needle)),
            }
        }
    }
}
