//! Wire types of the Cortex XDR public API: what the tenant answers, and the request
//! bodies that are not list queries.
//!
//! Field names are the API's. The fields pivotwatch reads are typed; every other field
//! a tenant sends lands in `extra`, so nothing is lost when an object is stored or
//! passed on. Tenants differ in age and licence, and the samples show the same field as
//! a bool in one and `"Yes"` in another, a port as a number or a string, and a list as
//! a comma-separated string: such fields are read leniently (see `lenient`). A field
//! that may be missing or `null` is an `Option` (or an empty list).
//!
//! Everything here also serialises, so a local tenant can answer in the same format.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Row;

/// Every reply is wrapped as `{"reply": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub reply: T,
}

/// Every request body is wrapped as `{"request_data": ...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestData<T> {
    pub request_data: T,
}

/// One page of a list call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// All matches on the tenant; absent from some calls (audit logs).
    pub total_count: Option<u64>,
    /// The items on this page.
    pub result_count: u64,
    pub items: Vec<T>,
}

/// A `{total_count, data}` list inside a larger reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listing<T> {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default = "Vec::new")]
    pub data: Vec<T>,
}

impl<T> Default for Listing<T> {
    fn default() -> Self {
        Listing { total_count: None, data: Vec::new() }
    }
}

// ---- incidents -------------------------------------------------------------------

/// An incident (a "case" in the newer platform), as `get_incidents` and
/// `get_incident_extra_data` return it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    #[serde(default)]
    pub incident_name: Option<String>,
    #[serde(default)]
    pub creation_time: Option<i64>,
    #[serde(default)]
    pub modification_time: Option<i64>,
    #[serde(default)]
    pub detection_time: Option<i64>,
    #[serde(default)]
    pub resolved_timestamp: Option<i64>,
    /// `new`, `under_investigation` or one of the `resolved_*` states.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub manual_severity: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub manual_description: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub resolve_comment: Option<String>,
    #[serde(default)]
    pub assigned_user_mail: Option<String>,
    #[serde(default)]
    pub assigned_user_pretty_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub low_severity_alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub med_severity_alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub high_severity_alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub critical_severity_alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub user_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub host_count: Option<u64>,
    #[serde(default)]
    pub xdr_url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub starred: Option<bool>,
    /// `host_name:agent_id` strings or host ids.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub hosts: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub users: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub incident_sources: Vec<String>,
    #[serde(default)]
    pub rule_based_score: Option<f64>,
    #[serde(default)]
    pub manual_score: Option<f64>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub mitre_tactics_ids_and_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub mitre_techniques_ids_and_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub alert_categories: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `incidents/get_incidents/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentsReply {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub incidents: Vec<Incident>,
}

/// The reply of `incidents/get_incident_extra_data/`: the incident with its alerts and
/// artifacts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentExtraData {
    pub incident: Incident,
    #[serde(default)]
    pub alerts: Listing<Alert>,
    #[serde(default)]
    pub network_artifacts: Listing<NetworkArtifact>,
    #[serde(default)]
    pub file_artifacts: Listing<FileArtifact>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkArtifact {
    /// `IP` or `DOMAIN`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub network_domain: Option<String>,
    #[serde(default)]
    pub network_remote_ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u16")]
    pub network_remote_port: Option<u16>,
    #[serde(default)]
    pub network_country: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub alert_count: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_manual: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileArtifact {
    /// `HASH`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub file_sha256: Option<String>,
    #[serde(default)]
    pub file_signature_status: Option<String>,
    #[serde(default)]
    pub file_signature_vendor_name: Option<String>,
    #[serde(default)]
    pub file_wildfire_verdict: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_malicious: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_process: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_manual: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub alert_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `incidents/get_incident_extra_data/` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncidentExtraDataRequest {
    pub incident_id: String,
    pub alerts_limit: u32,
}

/// `incidents/update_incident/` request; `update_data` comes from
/// `IncidentUpdate::to_update_data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UpdateIncidentRequest {
    pub incident_id: String,
    pub update_data: Value,
}

// ---- alerts ----------------------------------------------------------------------

/// An alert, from `get_alerts_multi_events` (with `events`) or inside an incident's
/// extra data (where the first event's fields sit on the alert itself, in `extra`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub alert_id: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub description: Option<AlertDescription>,
    #[serde(default)]
    pub severity: Option<String>,
    /// Which product raised it, e.g. `XDR Agent`, `PAN NGFW`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub action_pretty: Option<String>,
    #[serde(default)]
    pub detection_timestamp: Option<i64>,
    #[serde(default)]
    pub local_insert_ts: Option<i64>,
    #[serde(default)]
    pub endpoint_id: Option<String>,
    /// Sent as a list or as one comma-separated string.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub host_ip: Vec<String>,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub user_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub case_id: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub is_whitelisted: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub starred: Option<bool>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub mitre_tactic_id_and_name: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub mitre_technique_id_and_name: Vec<String>,
    #[serde(default)]
    pub events: Vec<AlertEvent>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An alert's description: text, or (multi-events) a list of rendered parts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AlertDescription {
    Text(String),
    Parts(Vec<Value>),
}

/// One event behind an alert; the field vocabulary is XQL's `xdr_data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// e.g. `Process Execution`, `Network Connections`.
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub event_timestamp: Option<i64>,
    #[serde(default)]
    pub action_local_ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u16")]
    pub action_local_port: Option<u16>,
    #[serde(default)]
    pub action_remote_ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u16")]
    pub action_remote_port: Option<u16>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `alerts/get_alerts_multi_events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertsReply {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub alerts: Vec<Alert>,
}

/// The reply of `alerts/get_alerts_by_filter_data/`, an internal-style call with its own
/// schema (`SEV_030_MEDIUM` severities, numeric event types, `alert_fields` wrappers).
/// pivotwatch does not call it; the type exists so a stored answer can still be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertsByFilterReply {
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub alerts: Vec<FilteredAlert>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilteredAlert {
    pub alert_fields: Row,
    /// An object, or the text `"None"`.
    #[serde(default)]
    pub incident_fields: Value,
}

/// A custom alert for `alerts/insert_parsed_alerts/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParsedAlert {
    pub product: String,
    pub vendor: String,
    #[serde(default)]
    pub local_ip: Option<String>,
    /// The API documents ports as strings and integrations send integers; both are read,
    /// integers are written.
    #[serde(default, deserialize_with = "lenient::opt_u16")]
    pub local_port: Option<u16>,
    #[serde(default)]
    pub remote_ip: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u16")]
    pub remote_port: Option<u16>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub event_timestamp: Option<i64>,
    /// e.g. `Informational`, `Low`, `Medium`, `High`.
    pub severity: String,
    pub alert_name: String,
    #[serde(default)]
    pub alert_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ip_v6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ip_v6: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `alerts/insert_parsed_alerts/` and `alerts/insert_cef_alerts/` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InsertAlertsRequest<T> {
    pub alerts: Vec<T>,
}

/// The reply of `indicators/insert_jsons` (IOC upload). pivotwatch does not upload
/// indicators; the type reads a stored answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InsertIndicatorsReply {
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    pub success: Option<bool>,
    #[serde(default)]
    pub validation_errors: Vec<IndicatorError>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndicatorError {
    pub indicator: String,
    pub error: String,
}

// ---- endpoints and actions -------------------------------------------------------

/// An endpoint from `endpoints/get_endpoint/`. The legacy `get_endpoints` list names
/// the same facts `agent_id`, `host_name`, `agent_status` and `agent_type`; those are
/// read into the same fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(alias = "agent_id")]
    pub endpoint_id: String,
    #[serde(default, alias = "host_name")]
    pub endpoint_name: Option<String>,
    #[serde(default, alias = "agent_type")]
    pub endpoint_type: Option<String>,
    /// `CONNECTED`, `DISCONNECTED`, `LOST` or `UNINSTALLED`.
    #[serde(default, alias = "agent_status")]
    pub endpoint_status: Option<String>,
    #[serde(default)]
    pub os_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub ip: Vec<String>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub users: Vec<String>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub alias: Option<String>,
    #[serde(default)]
    pub first_seen: Option<i64>,
    #[serde(default)]
    pub last_seen: Option<i64>,
    #[serde(default)]
    pub install_date: Option<i64>,
    #[serde(default)]
    pub endpoint_version: Option<String>,
    /// `AGENT_ISOLATED`, `AGENT_UNISOLATED`, `AGENT_PENDING_ISOLATION`, ...
    #[serde(default)]
    pub is_isolated: Option<String>,
    #[serde(default)]
    pub isolated_date: Option<i64>,
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub group_name: Vec<String>,
    #[serde(default)]
    pub operational_status: Option<String>,
    #[serde(default)]
    pub scan_status: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `endpoints/get_endpoint/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointsReply {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

/// The reply of a response action (`endpoints/isolate`, `unisolate`, `scan`): an
/// action id to follow with `actions/get_action_status/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointAction {
    #[serde(deserialize_with = "lenient::string")]
    pub action_id: String,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub endpoints_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `endpoints/isolate` and `endpoints/unisolate` request for one endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolateRequest {
    pub endpoint_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident_id: Option<String>,
}

/// `actions/get_action_status/` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionStatusRequest {
    pub group_action_id: String,
}

/// The state of an action on each endpoint it covers: `PENDING`, `IN_PROGRESS`,
/// `COMPLETED_SUCCESSFULLY`, `FAILED`, `TIMEOUT`, ...
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActionStatus {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---- audit logs ------------------------------------------------------------------

/// A management audit log entry; the API spells its keys in upper case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub struct AuditLog {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub audit_id: Option<String>,
    #[serde(default)]
    pub audit_owner_name: Option<String>,
    #[serde(default)]
    pub audit_owner_email: Option<String>,
    #[serde(default)]
    pub audit_asset_json: Option<String>,
    #[serde(default)]
    pub audit_asset_names: Option<String>,
    #[serde(default)]
    pub audit_hostname: Option<String>,
    #[serde(default)]
    pub audit_result: Option<String>,
    #[serde(default)]
    pub audit_reason: Option<String>,
    #[serde(default)]
    pub audit_description: Option<String>,
    #[serde(default)]
    pub audit_entity: Option<String>,
    #[serde(default)]
    pub audit_entity_subtype: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub audit_session_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub audit_case_id: Option<String>,
    /// Epoch milliseconds.
    #[serde(default)]
    pub audit_insert_time: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The reply of `audits/management_logs/`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditLogsReply {
    #[serde(default)]
    pub total_count: Option<u64>,
    #[serde(default)]
    pub result_count: Option<u64>,
    #[serde(default)]
    pub data: Vec<AuditLog>,
}

// ---- XQL -------------------------------------------------------------------------

/// The XQL query units of the tenant (`xql/get_quota`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default)]
    pub license_quota: Option<f64>,
    #[serde(default)]
    pub additional_purchased_quota: Option<f64>,
    #[serde(default)]
    pub used_quota: Option<f64>,
    #[serde(default)]
    pub eval_quota: Option<f64>,
    #[serde(default)]
    pub daily_used_quota: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub total_daily_running_queries: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub total_daily_concurrent_rejected_queries: Option<u64>,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub current_concurrent_active_queries_count: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Where a query stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueryStatus {
    Pending,
    Success,
    /// Multi-tenant queries only: at least one tenant failed.
    PartialSuccess,
    Fail,
}

/// `xql/get_query_results` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResultsRequest {
    pub query_id: String,
    /// `true` answers at once with `PENDING` instead of waiting on the tenant.
    pub pending_flag: bool,
    /// At most 1,000; larger results come as a stream.
    pub limit: u32,
    pub format: String,
}

/// `xql/get_query_results_stream` request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryStreamRequest {
    pub stream_id: String,
    pub is_gzip_compressed: bool,
}

/// The reply of `xql/get_query_results`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryResultsReply {
    pub status: QueryStatus,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub number_of_results: Option<u64>,
    /// Query units per tenant, `{"<tenant id>": units}`.
    #[serde(default)]
    pub query_cost: Option<Value>,
    #[serde(default)]
    pub remaining_quota: Option<f64>,
    #[serde(default)]
    pub results: Option<QueryResults>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl QueryResultsReply {
    /// The cost summed over tenants.
    pub fn total_cost(&self) -> Option<f64> {
        match self.query_cost.as_ref()? {
            Value::Number(number) => number.as_f64(),
            Value::Object(per_tenant) => Some(per_tenant.values().filter_map(Value::as_f64).sum()),
            _ => None,
        }
    }
}

/// Up to 1,000 rows inline, or the id of a stream that holds them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryResults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<Row>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

/// Readers for fields whose type differs between tenants and API versions.
pub(crate) mod lenient {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer};
    use serde_json::Value;

    pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
        match Value::deserialize(de)? {
            Value::Null => Ok(None),
            Value::Number(number) => number
                .as_u64()
                .or_else(|| {
                    number.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)
                })
                .map(Some)
                .ok_or_else(|| D::Error::custom(format!("{number} is not a count"))),
            Value::String(text) if text.trim().is_empty() => Ok(None),
            Value::String(text) => text
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| D::Error::custom(format!("{text:?} is not a count"))),
            other => Err(D::Error::custom(format!("expected a count, found {other}"))),
        }
    }

    pub(crate) fn opt_u16<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u16>, D::Error> {
        match opt_u64(de)? {
            None => Ok(None),
            Some(port) => u16::try_from(port)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("{port} is not a port"))),
        }
    }

    pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(de: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(de)? {
            Value::Null => Ok(None),
            Value::Bool(flag) => Ok(Some(flag)),
            Value::String(text) => match text.trim().to_ascii_lowercase().as_str() {
                "yes" | "true" => Ok(Some(true)),
                "no" | "false" => Ok(Some(false)),
                "" | "null" | "none" | "n/a" => Ok(None),
                _ => Err(D::Error::custom(format!("{text:?} is not yes or no"))),
            },
            Value::Number(number) => Ok(Some(number.as_f64() != Some(0.0))),
            other => Err(D::Error::custom(format!("expected a flag, found {other}"))),
        }
    }

    pub(crate) fn opt_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(de)? {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            Value::Number(number) => Ok(Some(number.to_string())),
            Value::Bool(flag) => Ok(Some(flag.to_string())),
            other => Err(D::Error::custom(format!("expected text, found {other}"))),
        }
    }

    pub(crate) fn string<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
        opt_string(de)?.ok_or_else(|| D::Error::custom("expected text, found null"))
    }

    /// A list of strings, `null` (empty), or one comma-separated string.
    pub(crate) fn string_list<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(de)? {
            Value::Null => Ok(Vec::new()),
            Value::String(text) => Ok(text
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(str::to_string)
                .collect()),
            Value::Array(items) => items
                .into_iter()
                .filter(|item| !item.is_null())
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    Value::Number(number) => Ok(number.to_string()),
                    other => Err(D::Error::custom(format!("expected text, found {other}"))),
                })
                .collect(),
            other => Err(D::Error::custom(format!("expected a list, found {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ports_may_be_numbers_or_strings() {
        let alert: ParsedAlert = serde_json::from_value(json!({
            "product": "pivotwatch", "vendor": "pivotwatch", "severity": "High",
            "alert_name": "x", "local_port": "502", "remote_port": 44818
        }))
        .unwrap();
        assert_eq!((alert.local_port, alert.remote_port), (Some(502), Some(44818)));
        let written = serde_json::to_value(&alert).unwrap();
        assert_eq!(written["local_port"], json!(502));

        let bad = serde_json::from_value::<ParsedAlert>(json!({
            "product": "p", "vendor": "v", "severity": "Low", "alert_name": "x",
            "local_port": "70000"
        }));
        assert!(bad.is_err());
    }

    #[test]
    fn unknown_fields_are_kept() {
        let endpoint: Endpoint = serde_json::from_value(json!({
            "endpoint_id": "e1", "ip": "10.0.0.1, 10.0.0.2", "tenant_future_field": {"a": 1}
        }))
        .unwrap();
        assert_eq!(endpoint.ip, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(endpoint.extra["tenant_future_field"], json!({"a": 1}));
        let back = serde_json::to_value(&endpoint).unwrap();
        assert_eq!(back["tenant_future_field"], json!({"a": 1}));
    }

    #[test]
    fn query_cost_is_summed_over_tenants() {
        let reply: QueryResultsReply = serde_json::from_value(json!({
            "status": "SUCCESS", "query_cost": {"a": 0.5, "b": 0.25}
        }))
        .unwrap();
        assert_eq!(reply.total_cost(), Some(0.75));
    }
}
