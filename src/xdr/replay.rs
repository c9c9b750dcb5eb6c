//! `Replay`, the embedded default tenant: recorded telemetry in the data directory,
//! queried with the local XQL engine, answering the same `Xdr` calls as a real tenant.
//!
//! `pivotwatch replay load` copies flow files (any Zeek `conn.log` the readers take)
//! and the inventory into `<data_dir>/replay/`; opening the tenant reads them back into
//! columnar datasets (see `datasets` for the field mapping). "Now" is the end of the
//! recorded data, so a query over the last 24 hours means the last recorded day.
//!
//! Every query is validated against the tenant's schema before it runs, exactly as a
//! hunt's query is before it reaches a real tenant: a write is refused and a mistyped
//! field is named with its nearest match.

pub mod datasets;
pub mod records;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::ingest::{self, IngestError, ReadSummary};
use crate::model::{Finding, Inventory};
// The wall clock, as opposed to `Replay::now_ms`, the end of the recorded data.
use crate::timefmt::now_ms as wall_clock_ms;
use crate::xql::exec::{self, ExecError, ExecOptions, Table, Tenant};
use crate::xql::validate::check;
use crate::xql::{Schema, ValidationOptions};

use super::error::NO_ENDPOINT_MESSAGE;
use super::query::{ListQuery, ListRequest};
use super::types::{
    ActionStatus, Alert, AuditLog, Endpoint, EndpointAction, Incident, IncidentExtraData, Page,
    ParsedAlert, QueryStatus, Quota,
};
use super::{
    AlertQuery, AuditQuery, EndpointQuery, IncidentQuery, IncidentUpdate, Timeframe, Xdr, XdrError,
    XqlRequest, XqlResult,
};
use datasets::FlowColumns;
use records::{ListKind, RecordError, Records};

/// Where the replay tenant keeps its files inside the data directory.
pub const REPLAY_DIR: &str = "replay";
const INFO_FILE: &str = "tenant.json";
const INVENTORY_FILE: &str = "inventory.csv";
const FLOWS_DIR: &str = "flows";

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(
        "no replay tenant in {}; load one with `pivotwatch replay load --inventory F --flows F...`",
        .0.display()
    )]
    Missing(PathBuf),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io { path: path.to_path_buf(), source }
}

/// What a loaded tenant holds, kept in `tenant.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub flows: u64,
    pub skipped: u64,
    pub devices: usize,
    /// Unix seconds of the first and last flow start.
    pub first_ts: Option<f64>,
    pub last_ts: Option<f64>,
    /// The files the flows were copied from, as given.
    pub sources: Vec<String>,
}

/// The replay tenant, opened and held in memory.
pub struct Replay {
    root: PathBuf,
    info: TenantInfo,
    data: Arc<TenantData>,
    inventory: Inventory,
    records: Mutex<Records>,
}

struct TenantData {
    tables: BTreeMap<String, Table>,
    schema: Schema,
    now_ms: i64,
}

impl Tenant for TenantData {
    fn dataset(&self, name: &str) -> Option<Table> {
        self.tables
            .get(name)
            .or_else(|| {
                self.tables.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, t)| t)
            })
            .cloned()
    }

    fn dataset_names(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

/// Why a query did not run on the replay tenant.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum ReplayQueryError {
    /// A syntax, schema or boundedness problem; the messages name line and column.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The query could write.
    #[error("{}", .0.join("; "))]
    Refused(Vec<String>),
    #[error(transparent)]
    Exec(#[from] ExecError),
}

impl Replay {
    /// Copies flow files and an inventory into `<data_dir>/replay/`, replacing any
    /// tenant there. Every file is read once first, so a file that cannot be read is
    /// refused before anything is replaced.
    pub fn load(
        data_dir: &Path,
        inventory: Option<&Path>,
        flows: &[PathBuf],
    ) -> Result<TenantInfo, ReplayError> {
        let inventory_devices = match inventory {
            Some(path) => ingest::read_inventory(path)?.devices().len(),
            None => 0,
        };
        let mut summary = ReadSummary::default();
        for path in flows {
            summary.merge(ingest::read_flows(path, &mut |_| {})?);
        }

        let root = data_dir.join(REPLAY_DIR);
        let staging = data_dir.join(format!("{REPLAY_DIR}.loading"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        let flows_dir = staging.join(FLOWS_DIR);
        fs::create_dir_all(&flows_dir).map_err(io_err(&flows_dir))?;
        for (idx, path) in flows.iter().enumerate() {
            let name = path
                .file_name()
                .map_or_else(|| "flows".into(), |n| n.to_string_lossy().to_string());
            let target = flows_dir.join(format!("{idx:04}-{name}"));
            fs::copy(path, &target).map_err(io_err(path))?;
        }
        if let Some(path) = inventory {
            fs::copy(path, staging.join(INVENTORY_FILE)).map_err(io_err(path))?;
        }
        let info = TenantInfo {
            flows: summary.flows,
            skipped: summary.skipped,
            devices: inventory_devices,
            first_ts: summary.first_ts,
            last_ts: summary.last_ts,
            sources: flows.iter().map(|p| p.display().to_string()).collect(),
        };
        let mut records = Records::default();
        if let Some(path) = inventory {
            records.endpoints = endpoints_of(&ingest::read_inventory(path)?, summary.last_ts);
        }
        records.write(&staging).map_err(io_err(&staging))?;
        let info_path = staging.join(INFO_FILE);
        let text = serde_json::to_string_pretty(&info).unwrap_or_default();
        fs::write(&info_path, text).map_err(io_err(&info_path))?;

        // Swap the new tenant in only once it is complete.
        if root.exists() {
            fs::remove_dir_all(&root).map_err(io_err(&root))?;
        }
        fs::rename(&staging, &root).map_err(io_err(&root))?;
        Ok(info)
    }

    /// Whether a tenant has been loaded into this data directory.
    pub fn exists(data_dir: &Path) -> bool {
        data_dir.join(REPLAY_DIR).join(INFO_FILE).is_file()
    }

    /// Reads the tenant in `<data_dir>/replay/` into memory.
    pub fn open(data_dir: &Path) -> Result<Replay, ReplayError> {
        let root = data_dir.join(REPLAY_DIR);
        let info_path = root.join(INFO_FILE);
        if !info_path.is_file() {
            return Err(ReplayError::Missing(data_dir.to_path_buf()));
        }
        let text = fs::read_to_string(&info_path).map_err(io_err(&info_path))?;
        let info: TenantInfo = serde_json::from_str(&text).map_err(|err| ReplayError::Corrupt {
            path: info_path.clone(),
            message: err.to_string(),
        })?;

        let inventory_path = root.join(INVENTORY_FILE);
        let inventory = if inventory_path.is_file() {
            ingest::read_inventory(&inventory_path)?
        } else {
            Inventory::default()
        };
        let flows_dir = root.join(FLOWS_DIR);
        let mut files: Vec<PathBuf> = fs::read_dir(&flows_dir)
            .map_err(io_err(&flows_dir))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let mut columns = FlowColumns::default();
        for path in &files {
            ingest::read_flows(path, &mut |flow| columns.push(flow, &inventory))?;
        }
        let now_ms = columns.latest_ms().unwrap_or(0) + 1;
        let tables = columns.finish(&inventory);
        let schema = datasets::schema(&tables);
        let records = Records::read(&root).map_err(|message| ReplayError::Corrupt {
            path: root.join(records::RECORDS_FILE),
            message,
        })?;
        Ok(Replay {
            root,
            info,
            data: Arc::new(TenantData { tables, schema, now_ms }),
            inventory,
            records: Mutex::new(records),
        })
    }

    fn records(&self) -> MutexGuard<'_, Records> {
        // A panic while holding the lock leaves whole records behind (every change is
        // made on a clone-free map in one step), so the data is still good to use.
        self.records.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `change` on the records and writes them back; nothing is kept in memory
    /// that is not also on disk.
    fn change<T>(
        &self,
        change: impl FnOnce(&mut Records) -> Result<T, RecordError>,
    ) -> Result<T, RecordError> {
        let mut records = self.records();
        let mut updated = records.clone();
        let out = change(&mut updated)?;
        updated.write(&self.root).map_err(|err| RecordError {
            status: 500,
            message: format!("the replay tenant could not save its records: {err}"),
        })?;
        *records = updated;
        Ok(out)
    }

    /// Files the alerting findings of a detection run as alerts, grouped into one
    /// incident per device, the way a tenant shows IoT Security detections.
    pub fn import_findings(&self, findings: &[Finding]) -> Result<usize, RecordError> {
        let alerts: Vec<Map<String, Value>> = findings
            .iter()
            .filter(|f| f.severity.is_alert())
            .map(|f| alert_from_finding(f, &self.inventory))
            .collect();
        let n_alerts = alerts.len();
        let now_ms = self.now_ms();
        self.change(|records| {
            records.add_alerts(alerts, now_ms);
            Ok(())
        })?;
        Ok(n_alerts)
    }

    // The wire-level calls: request and reply bodies as the public API has them, for
    // the local API server and the typed `Xdr` implementation below.

    pub fn list_wire(
        &self,
        kind: ListKind,
        request: &ListRequest,
    ) -> Result<(u64, Vec<Value>), RecordError> {
        self.records().list(kind, request)
    }

    pub fn incident_extra_data_wire(
        &self,
        incident_id: &str,
        alerts_limit: usize,
    ) -> Result<Value, RecordError> {
        self.records().incident_extra_data(incident_id, alerts_limit)
    }

    pub fn update_incident_wire(
        &self,
        incident_id: &str,
        update: &Value,
    ) -> Result<(), RecordError> {
        let now_ms = wall_clock_ms();
        self.change(|records| records.update_incident(incident_id, update, now_ms))
    }

    /// `alerts/insert_parsed_alerts/`: at most 60 alerts, each with the documented
    /// fields.
    pub fn insert_parsed_alerts_wire(&self, alerts: &[Value]) -> Result<(), RecordError> {
        if alerts.len() > 60 {
            return Err(RecordError {
                status: 400,
                message: "at most 60 alerts per request".into(),
            });
        }
        let mut converted = Vec::with_capacity(alerts.len());
        for (idx, alert) in alerts.iter().enumerate() {
            converted.push(alert_from_parsed(alert).map_err(|message| RecordError {
                status: 400,
                message: format!("alerts[{idx}]: {message}"),
            })?);
        }
        let now_ms = wall_clock_ms();
        self.change(|records| {
            records.add_alerts(converted, now_ms);
            Ok(())
        })
    }

    /// `alerts/insert_cef_alerts/`: each line must at least be a CEF header.
    pub fn insert_cef_alerts_wire(&self, lines: &[String]) -> Result<(), RecordError> {
        let mut converted = Vec::with_capacity(lines.len());
        for (idx, line) in lines.iter().enumerate() {
            let parts: Vec<&str> = line.splitn(8, '|').collect();
            if parts.len() < 7 || !parts[0].starts_with("CEF:") {
                return Err(RecordError {
                    status: 400,
                    message: format!(
                        "alerts[{idx}] is not a CEF line (CEF:Version|Vendor|Product|...)"
                    ),
                });
            }
            let mut alert = Map::new();
            alert.insert("name".into(), json!(parts[5]));
            alert.insert("source".into(), json!(format!("{} {}", parts[1], parts[2])));
            alert.insert("severity".into(), json!(cef_severity(parts[6])));
            alert.insert("description".into(), json!(line));
            alert.insert(
                "host_name".into(),
                json!(
                    cef_field(line, "dhost")
                        .or_else(|| cef_field(line, "src"))
                        .unwrap_or("unknown")
                ),
            );
            converted.push(alert);
        }
        let now_ms = wall_clock_ms();
        self.change(|records| {
            records.add_alerts(converted, now_ms);
            Ok(())
        })
    }

    pub fn endpoint_action_wire(
        &self,
        endpoint_id: &str,
        isolate: bool,
    ) -> Result<Value, RecordError> {
        let now_ms = wall_clock_ms();
        self.change(|records| records.endpoint_action(endpoint_id, isolate, now_ms))
    }

    pub fn action_status_wire(&self, group_action_id: &str) -> Result<Value, RecordError> {
        self.records().action_status(group_action_id)
    }

    pub fn quota_wire(&self) -> Value {
        json!({"license_quota": 5.0, "additional_purchased_quota": 0.0, "used_quota": 0.0,
               "eval_quota": 0.0})
    }

    /// The flow files the tenant holds, in load order.
    pub fn flow_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(self.root.join(FLOWS_DIR))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The inventory the tenant holds, if it was loaded with one.
    pub fn inventory_file(&self) -> Option<PathBuf> {
        Some(self.root.join(INVENTORY_FILE)).filter(|p| p.is_file())
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    pub fn info(&self) -> &TenantInfo {
        &self.info
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The datasets and fields this tenant has.
    pub fn schema(&self) -> &Schema {
        &self.data.schema
    }

    /// The tenant's "now": just after the last recorded flow, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.data.now_ms
    }

    /// Validates and runs a query. A query that sets no timeframe and is given none
    /// runs over everything recorded, as a tenant's default window would.
    pub fn query(
        &self,
        text: &str,
        timeframe: Option<&Timeframe>,
    ) -> Result<Table, ReplayQueryError> {
        let options = ValidationOptions {
            schema: Some(&self.data.schema),
            caller_timeframe: true,
            require_timeframe: false,
            call_allow_list: &[],
        };
        let (query, validation) = check(text, &options);
        let messages = |items: &[crate::xql::validate::Diagnostic]| {
            items.iter().map(ToString::to_string).collect()
        };
        if !validation.read_only {
            return Err(ReplayQueryError::Refused(messages(&validation.refusals)));
        }
        let (Some(query), true) = (query, validation.valid) else {
            return Err(ReplayQueryError::Invalid(messages(&validation.errors)));
        };
        let window = timeframe.map(|t| self.window(t));
        let options = ExecOptions { timeframe: window, ..ExecOptions::default() };
        Ok(exec::execute(&query, &*self.data, &options)?)
    }

    /// An API timeframe as `[from, to)` milliseconds on this tenant's clock.
    pub fn window(&self, timeframe: &Timeframe) -> (i64, i64) {
        match timeframe {
            Timeframe::Relative { millis } => {
                let span = i64::try_from(*millis).unwrap_or(i64::MAX);
                (self.data.now_ms.saturating_sub(span), self.data.now_ms + 1)
            }
            Timeframe::Absolute { from_ms, to_ms } => (*from_ms, to_ms.saturating_add(1)),
        }
    }
}

/// Servers and workstations in the inventory run an agent, so they are endpoints the
/// tenant can isolate; IoT and OT devices do not.
fn endpoints_of(inventory: &Inventory, last_ts: Option<f64>) -> Vec<Map<String, Value>> {
    let last_seen = last_ts.map(|ts| (ts * 1000.0) as i64);
    inventory
        .devices()
        .iter()
        .filter(|d| {
            let kind = d.device_type.to_ascii_lowercase();
            ["server", "workstation", "jump", "historian"].iter().any(|k| kind.contains(k))
        })
        .map(|d| {
            let endpoint = json!({
                "endpoint_id": format!("ep-{}", d.device_id),
                "endpoint_name": if d.hostname.is_empty() { &d.device_id } else { &d.hostname },
                "endpoint_type": "AGENT_TYPE_SERVER",
                "endpoint_status": "CONNECTED",
                "os_type": "AGENT_OS_LINUX",
                "ip": [d.ip.to_string()],
                "users": [],
                "domain": "",
                "alias": d.device_id,
                "first_seen": last_seen,
                "last_seen": last_seen,
                "is_isolated": "AGENT_UNISOLATED",
                "group_name": [d.segment],
            });
            if let Value::Object(map) = endpoint { map } else { Map::new() }
        })
        .collect()
}

fn alert_from_finding(finding: &Finding, inventory: &Inventory) -> Map<String, Value> {
    let device = inventory.by_ip(&finding.ip);
    let host = device.map_or(finding.device_id.as_str(), |d| {
        if d.hostname.is_empty() { &d.device_id } else { &d.hostname }
    });
    let start_ms =
        crate::timefmt::parse_time(&finding.window_start).map_or(0, |s| (s * 1000.0) as i64);
    let summary: Vec<String> =
        finding.reasons.iter().take(3).map(|r| format!("{}: {}", r.feature, r.detail)).collect();
    let events: Vec<Value> = finding
        .evidence
        .examples
        .iter()
        .map(|f| {
            json!({
                "event_type": "Network Connections",
                "event_timestamp": crate::timefmt::parse_time(&f.ts).map_or(0, |s| (s * 1000.0) as i64),
                "action_local_ip": f.orig_h.to_string(),
                "action_local_port": f.orig_p,
                "action_remote_ip": f.resp_h.to_string(),
                "action_remote_port": f.resp_p,
            })
        })
        .collect();
    let alert = json!({
        "external_id": format!("{}:{}", finding.device_id, finding.window_start),
        "name": format!("{} deviates from its peer group", device.map_or("Device", |d| d.device_type.as_str())),
        "category": "IoT Security",
        "description": summary.join("; "),
        "severity": finding.severity.as_str(),
        "source": "IoT Security",
        "action": "DETECTED",
        "action_pretty": "Detected",
        "detection_timestamp": start_ms,
        "local_insert_ts": start_ms,
        "host_ip": [finding.ip.to_string()],
        "host_name": host,
        "endpoint_id": null,
        "mitre_technique_id_and_name": finding.techniques,
        "mitre_tactic_id_and_name": [],
        "events": events,
        "pivotwatch_finding": finding,
    });
    if let Value::Object(map) = alert { map } else { Map::new() }
}

/// A parsed alert as the API takes it, turned into the alert shape the tenant lists.
fn alert_from_parsed(parsed: &Value) -> Result<Map<String, Value>, String> {
    let text = |key: &str| parsed.get(key).and_then(Value::as_str);
    let port = |key: &str| -> Result<Option<u64>, String> {
        match parsed.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|p| *p <= 65535)
                .map(Some)
                .ok_or_else(|| format!("{key} is not a port")),
            Some(Value::String(s)) => s
                .parse::<u16>()
                .map(|p| Some(u64::from(p)))
                .map_err(|_| format!("{key} \"{s}\" is not a port")),
            Some(_) => Err(format!("{key} is not a port")),
        }
    };
    for required in ["product", "vendor", "local_ip", "remote_ip", "severity", "alert_name"] {
        if text(required).is_none() {
            return Err(format!("{required} is missing or not text"));
        }
    }
    let severity = text("severity").unwrap_or("low").to_ascii_lowercase();
    let severity = match severity.as_str() {
        "informational" | "info" | "unknown" => "low",
        "low" | "medium" | "high" | "critical" => severity.as_str(),
        other => {
            return Err(format!(
                "severity \"{other}\" is not one of Informational, Low, Medium, High, Critical"
            ));
        }
    }
    .to_string();
    let ts = parsed.get("event_timestamp").and_then(Value::as_i64).unwrap_or_else(wall_clock_ms);
    let alert = json!({
        "name": text("alert_name"),
        "description": text("alert_description").unwrap_or_default(),
        "severity": severity,
        "source": format!("{} {}", text("vendor").unwrap_or_default(), text("product").unwrap_or_default()),
        "category": "Custom Alert",
        "action": text("action_status").unwrap_or("DETECTED"),
        "detection_timestamp": ts,
        "local_insert_ts": ts,
        "host_ip": [text("local_ip")],
        "host_name": text("local_ip"),
        "mitre_technique_id_and_name": [],
        "events": [{
            "event_type": "Network Connections",
            "event_timestamp": ts,
            "action_local_ip": text("local_ip"),
            "action_local_port": port("local_port")?,
            "action_remote_ip": text("remote_ip"),
            "action_remote_port": port("remote_port")?,
        }],
    });
    Ok(if let Value::Object(map) = alert { map } else { Map::new() })
}

fn cef_severity(text: &str) -> &'static str {
    match text.trim().parse::<u8>() {
        Ok(0..=3) => "low",
        Ok(4..=6) => "medium",
        Ok(7..=8) => "high",
        Ok(_) => "critical",
        Err(_) => "low",
    }
}

fn cef_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let extension = line.rsplit('|').next()?;
    extension.split(' ').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

fn to_xdr_error(err: RecordError) -> XdrError {
    if err.message.contains(NO_ENDPOINT_MESSAGE) {
        return XdrError::NoEndpointFound { message: err.message };
    }
    match err.status {
        400 => XdrError::BadRequest { status: 400, message: err.message },
        status => XdrError::Server { status, message: err.message },
    }
}

fn from_json<T: serde::de::DeserializeOwned>(call: &str, value: Value) -> Result<T, XdrError> {
    serde_json::from_value(value)
        .map_err(|err| XdrError::Decode { call: call.into(), detail: err.to_string() })
}

fn page<T: serde::de::DeserializeOwned>(
    call: &str,
    (total, items): (u64, Vec<Value>),
) -> Result<Page<T>, XdrError> {
    let items: Vec<T> = items.into_iter().map(|v| from_json(call, v)).collect::<Result<_, _>>()?;
    Ok(Page { total_count: Some(total), result_count: items.len() as u64, items })
}

fn list_request<F: super::query::FilterSpec, S: super::query::SortField>(
    query: &ListQuery<F, S>,
) -> ListRequest {
    query.to_request()
}

impl ReplayQueryError {
    fn into_xdr(self) -> XdrError {
        match self {
            ReplayQueryError::Invalid(messages) => {
                XdrError::XqlParse { message: messages.join("; ") }
            }
            ReplayQueryError::Refused(reasons) => XdrError::QueryRefused { reasons },
            ReplayQueryError::Exec(
                err @ (ExecError::UnknownField { .. } | ExecError::UnknownDataset { .. }),
            ) => XdrError::XqlParse { message: err.to_string() },
            ReplayQueryError::Exec(err) => {
                XdrError::BadRequest { status: 400, message: err.to_string() }
            }
        }
    }
}

#[async_trait]
impl Xdr for Replay {
    async fn run_xql(&self, request: &XqlRequest) -> Result<XqlResult, XdrError> {
        let table = self
            .query(&request.query, request.timeframe.as_ref())
            .map_err(ReplayQueryError::into_xdr)?;
        Ok(XqlResult {
            rows: table.to_rows(),
            status: QueryStatus::Success,
            query_cost: Some(0.0),
            remaining_quota: None,
        })
    }

    async fn xql_quota(&self) -> Result<Quota, XdrError> {
        from_json("xql/get_quota", self.quota_wire())
    }

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Page<Incident>, XdrError> {
        let listed =
            self.list_wire(ListKind::Incidents, &list_request(query)).map_err(to_xdr_error)?;
        page("incidents/get_incidents", listed)
    }

    async fn incident_extra_data(
        &self,
        incident_id: &str,
        alerts_limit: u32,
    ) -> Result<IncidentExtraData, XdrError> {
        let value = self
            .incident_extra_data_wire(incident_id, alerts_limit as usize)
            .map_err(to_xdr_error)?;
        from_json("incidents/get_incident_extra_data", value)
    }

    async fn update_incident(
        &self,
        incident_id: &str,
        update: &IncidentUpdate,
    ) -> Result<(), XdrError> {
        let update_data = update.to_update_data();
        if update_data.as_object().is_some_and(Map::is_empty) {
            return Ok(());
        }
        self.update_incident_wire(incident_id, &update_data).map_err(to_xdr_error)
    }

    async fn alerts_multi_events(&self, query: &AlertQuery) -> Result<Page<Alert>, XdrError> {
        let listed =
            self.list_wire(ListKind::Alerts, &list_request(query)).map_err(to_xdr_error)?;
        page("alerts/get_alerts_multi_events", listed)
    }

    async fn insert_parsed_alerts(&self, alerts: &[ParsedAlert]) -> Result<(), XdrError> {
        for chunk in alerts.chunks(60) {
            let values: Vec<Value> =
                chunk.iter().map(|a| serde_json::to_value(a).unwrap_or(Value::Null)).collect();
            self.insert_parsed_alerts_wire(&values).map_err(to_xdr_error)?;
        }
        Ok(())
    }

    async fn insert_cef_alerts(&self, alerts: &[String]) -> Result<(), XdrError> {
        self.insert_cef_alerts_wire(alerts).map_err(to_xdr_error)
    }

    async fn get_endpoints(&self, query: &EndpointQuery) -> Result<Page<Endpoint>, XdrError> {
        let listed =
            self.list_wire(ListKind::Endpoints, &list_request(query)).map_err(to_xdr_error)?;
        page("endpoints/get_endpoint", listed)
    }

    async fn isolate_endpoint(
        &self,
        endpoint_id: &str,
        _incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError> {
        from_json(
            "endpoints/isolate",
            self.endpoint_action_wire(endpoint_id, true).map_err(to_xdr_error)?,
        )
    }

    async fn unisolate_endpoint(
        &self,
        endpoint_id: &str,
        _incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError> {
        from_json(
            "endpoints/unisolate",
            self.endpoint_action_wire(endpoint_id, false).map_err(to_xdr_error)?,
        )
    }

    async fn action_status(&self, group_action_id: &str) -> Result<ActionStatus, XdrError> {
        from_json(
            "actions/get_action_status",
            self.action_status_wire(group_action_id).map_err(to_xdr_error)?,
        )
    }

    async fn audit_management_logs(&self, query: &AuditQuery) -> Result<Page<AuditLog>, XdrError> {
        let listed = self.list_wire(ListKind::Audit, &list_request(query)).map_err(to_xdr_error)?;
        page("audits/management_logs", listed)
    }
}
