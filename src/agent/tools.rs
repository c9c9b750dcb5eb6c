//! The typed tools the model may call. Each is a Rust type whose `Args` derive serde
//! and schemars; the model sees the description in `tools/<name>.md` and the schema
//! derived from `Args`. A call's arguments are checked against that schema and then
//! deserialised before the tool runs; a bad call goes back to the model as a tool error
//! it can correct. Read-only tools answer from the tenant and the knowledge base;
//! `propose_action` only records a proposal through the approval gate, and only of the
//! kinds and for the subjects the task permits.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::llm::ToolSpec;
use super::schema;
use crate::actions::{Action, Gate};
use crate::audit::Actor;
use crate::knowledge::devices::DeviceKnowledge;
use crate::knowledge::{self, Filter, Knowledge, Mode};
use crate::store::Store;
use crate::xdr::{Row, Xdr, XqlRequest};

/// What a tool found: a one-line summary and the data behind it. `untrusted` data
/// came from devices, alerts or people outside pivotwatch and reaches the model fenced.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    pub summary: String,
    pub data: Value,
    pub untrusted: bool,
}

/// Why a call did not produce evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolFailure {
    /// No tool of that name is offered for this task.
    Unknown(String),
    /// The arguments are not JSON, or do not fit the schema.
    Arguments(String),
    /// The task does not permit it (a proposal of a kind or subject not asked for).
    Refused(String),
    /// The tool ran and failed (the tenant refused the query, ...).
    Failed(String),
}

impl std::fmt::Display for ToolFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ToolFailure::Unknown(text) => write!(f, "unknown tool: {text}"),
            ToolFailure::Arguments(text) => write!(f, "invalid arguments: {text}"),
            ToolFailure::Refused(text) => write!(f, "refused: {text}"),
            ToolFailure::Failed(text) => write!(f, "failed: {text}"),
        }
    }
}

/// The proposals a task may make: which action kinds, about which device. Derived
/// from the analyst's request and the case's structure, never from telemetry text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Permits {
    pub kinds: BTreeSet<String>,
    /// The device the task is about; an action naming another device is refused.
    pub device_id: Option<String>,
    pub ip: Option<IpAddr>,
    /// The Cortex XDR case the task is about, for case comments.
    pub incident_id: Option<String>,
    /// At most this many proposals in one task.
    pub max_proposals: usize,
}

/// A proposal the model made (and, unless the run is a dry run, the gate recorded).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proposed {
    pub kind: String,
    pub params: Value,
    pub reason: String,
    /// The proposal id, or `None` in a dry run.
    pub id: Option<String>,
}

/// What tools share for one task.
pub struct ToolContext<'a> {
    pub xdr: &'a dyn Xdr,
    pub knowledge: Option<&'a Knowledge>,
    pub store: Option<&'a Store>,
    /// `None` in a dry run: proposals are listed, not recorded.
    pub gate: Option<&'a Gate>,
    pub proposer: Actor,
    pub permits: Permits,
    pub proposed: Mutex<Vec<Proposed>>,
}

impl<'a> ToolContext<'a> {
    pub fn new(xdr: &'a dyn Xdr) -> ToolContext<'a> {
        ToolContext {
            xdr,
            knowledge: None,
            store: None,
            gate: None,
            proposer: Actor::Agent,
            permits: Permits::default(),
            proposed: Mutex::new(Vec::new()),
        }
    }

    pub fn proposed(&self) -> Vec<Proposed> {
        self.proposed.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

/// A tool: a name, the description the model reads, typed arguments and a body.
#[async_trait]
pub trait Tool: Send + Sync {
    type Args: DeserializeOwned + JsonSchema + Send;
    const NAME: &'static str;
    const DESCRIPTION: &'static str;

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: Self::Args,
    ) -> Result<ToolOutput, ToolFailure>;
}

/// A tool with its type erased, so a registry can hold several.
#[async_trait]
pub trait DynTool: Send + Sync {
    fn name(&self) -> &'static str;
    fn spec(&self) -> ToolSpec;
    /// Checks `arguments` (the model's JSON text) and runs the tool.
    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        arguments: &str,
    ) -> Result<ToolOutput, ToolFailure>;
}

#[async_trait]
impl<T: Tool> DynTool for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn spec(&self) -> ToolSpec {
        let schema = serde_json::to_value(schemars::schema_for!(T::Args)).unwrap_or(Value::Null);
        ToolSpec {
            name: T::NAME.to_string(),
            description: T::DESCRIPTION.trim().to_string(),
            parameters: schema::for_model(schema),
        }
    }

    async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        arguments: &str,
    ) -> Result<ToolOutput, ToolFailure> {
        let raw = if arguments.trim().is_empty() { "{}" } else { arguments };
        let value: Value = serde_json::from_str(raw).map_err(|err| {
            ToolFailure::Arguments(format!("not JSON ({err}); send one JSON object"))
        })?;
        let schema = serde_json::to_value(schemars::schema_for!(T::Args)).unwrap_or(Value::Null);
        let problems = schema::check(&schema, &value);
        if !problems.is_empty() {
            return Err(ToolFailure::Arguments(problems.join("; ")));
        }
        let args: T::Args =
            serde_json::from_value(value).map_err(|err| ToolFailure::Arguments(err.to_string()))?;
        self.call(ctx, args).await
    }
}

/// The tools offered for one task.
#[derive(Default)]
pub struct Registry {
    tools: Vec<Box<dyn DynTool>>,
}

impl Registry {
    /// Every read-only tool.
    pub fn read_only() -> Registry {
        let mut registry = Registry::default();
        registry.add(RunXql);
        registry.add(GetDeviceProfile);
        registry.add(ScorePeerGroup);
        registry.add(SearchAttackIcs);
        registry.add(GetCase);
        registry.add(DraftSegmentation);
        registry
    }

    /// The read-only tools and `propose_action`.
    pub fn with_proposals() -> Registry {
        let mut registry = Registry::read_only();
        registry.add(ProposeAction);
        registry
    }

    pub fn add(&mut self, tool: impl DynTool + 'static) {
        self.tools.push(Box::new(tool));
    }

    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.spec()).collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.tools.iter().map(|t| t.name().to_string()).collect()
    }

    /// Runs the named tool, or says which tools exist.
    pub async fn invoke(
        &self,
        ctx: &ToolContext<'_>,
        name: &str,
        arguments: &str,
    ) -> Result<ToolOutput, ToolFailure> {
        // Found by name alone: a schema is only derived for the tool that runs.
        match self.tools.iter().find(|t| t.name() == name) {
            Some(tool) => tool.invoke(ctx, arguments).await,
            None => Err(ToolFailure::Unknown(format!(
                "`{name}` is not a tool here; the tools are {}",
                self.names().join(", ")
            ))),
        }
    }
}

// ---- the tools ---------------------------------------------------------------------

/// Rows a tool returns to the model at most.
const MAX_ROWS: usize = 50;

/// Reads a device reference the model sent: an IP address, or an asset name or id
/// (letters, digits and `-_.:`), so it can sit inside an XQL string safely.
fn device_filter(device: &str) -> Result<String, ToolFailure> {
    let device = device.trim();
    if let Ok(ip) = device.parse::<IpAddr>() {
        return Ok(format!("xdm.asset.ipv4_addresses = \"{ip}\""));
    }
    if device.is_empty()
        || device.len() > 128
        || !device.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(ToolFailure::Arguments(format!(
            "`device` must be an IP address or an asset name or id, not {device:?}"
        )));
    }
    Ok(format!("xdm.asset.name = \"{device}\" or xdm.asset.id = \"{device}\""))
}

async fn rows(xdr: &dyn Xdr, query: &str) -> Result<Vec<Row>, ToolFailure> {
    xdr.run_xql(&XqlRequest::new(query))
        .await
        .map(|r| r.rows)
        .map_err(|err| ToolFailure::Failed(format!("the tenant refused the query: {err}")))
}

fn field<'r>(row: &'r Row, name: &str) -> &'r str {
    row.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// An inventory address field holds one address or a list of them.
fn first_ip(row: &Row) -> Option<IpAddr> {
    match row.get("xdm.asset.ipv4_addresses")? {
        Value::String(text) => text.split(',').next()?.trim().parse().ok(),
        Value::Array(items) => items.first()?.as_str()?.parse().ok(),
        _ => None,
    }
}

/// `run_xql`: one read-only XQL query against the tenant.
pub struct RunXql;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunXqlArgs {
    /// The query, starting with `config timeframe = <N>h|d`.
    #[schemars(length(max = 4000))]
    pub query: String,
    /// Rows to return (default 50).
    #[schemars(range(min = 1, max = 50))]
    pub limit: Option<u32>,
}

#[async_trait]
impl Tool for RunXql {
    type Args = RunXqlArgs;
    const NAME: &'static str = "run_xql";
    const DESCRIPTION: &'static str = include_str!("../../tools/run_xql.md");

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: RunXqlArgs,
    ) -> Result<ToolOutput, ToolFailure> {
        let (_, validation) =
            crate::xql::validate::check(&args.query, &super::planner::hunt_validation());
        if !validation.valid || !validation.read_only {
            let errors: Vec<String> = validation.errors.iter().map(|e| e.message.clone()).collect();
            return Err(ToolFailure::Arguments(format!(
                "the query was refused before it ran: {}",
                errors.join("; ")
            )));
        }
        let found = rows(ctx.xdr, &args.query).await?;
        let limit = args.limit.map_or(MAX_ROWS, |l| l as usize).min(MAX_ROWS);
        let total = found.len();
        let shown: Vec<Row> = found.into_iter().take(limit).collect();
        Ok(ToolOutput {
            summary: if total > shown.len() {
                format!("{total} rows, the first {} shown", shown.len())
            } else {
                format!("{total} rows")
            },
            data: json!({"query": args.query, "row_count": total, "rows": shown}),
            untrusted: true,
        })
    }
}

/// `get_device_profile`: the inventory entry, criticality, and what its model is known
/// to do and never to do.
pub struct GetDeviceProfile;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceArgs {
    /// The device's IP address, asset name or asset id.
    #[schemars(length(min = 1, max = 128))]
    pub device: String,
}

#[async_trait]
impl Tool for GetDeviceProfile {
    type Args = DeviceArgs;
    const NAME: &'static str = "get_device_profile";
    const DESCRIPTION: &'static str = include_str!("../../tools/get_device_profile.md");

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: DeviceArgs,
    ) -> Result<ToolOutput, ToolFailure> {
        device_profile(ctx.xdr, &args.device).await
    }
}

/// The profile behind `get_device_profile`, also used by the offline planner.
pub async fn device_profile(xdr: &dyn Xdr, device: &str) -> Result<ToolOutput, ToolFailure> {
    let filter = device_filter(device)?;
    let found = rows(
        xdr,
        &format!(
            "dataset = asset_inventory | filter {filter} \
             | fields xdm.asset.id, xdm.asset.name, xdm.asset.type.name, xdm.asset.vendor, \
             xdm.asset.model, xdm.asset.segment, xdm.asset.criticality, xdm.asset.firmware, \
             xdm.asset.ipv4_addresses | limit 1"
        ),
    )
    .await?;
    let Some(row) = found.into_iter().next() else {
        return Ok(ToolOutput {
            summary: format!("{device} is not in the asset inventory"),
            data: json!({"device": device, "found": false}),
            untrusted: false,
        });
    };
    let (vendor, model) = (field(&row, "xdm.asset.vendor"), field(&row, "xdm.asset.model"));
    let known = DeviceKnowledge::shipped().model(vendor, model);
    let summary = format!(
        "{} {vendor} {model} {} in {}, criticality {}",
        field(&row, "xdm.asset.name"),
        field(&row, "xdm.asset.type.name"),
        field(&row, "xdm.asset.segment"),
        field(&row, "xdm.asset.criticality"),
    );
    let mut data = json!({"inventory": row});
    if let Some(known) = known {
        data["model_knowledge"] = json!({
            "description": known.description,
            "never_expected": known.never_expected,
            "advisories": known.advisories,
        });
    }
    Ok(ToolOutput { summary, data, untrusted: true })
}

/// `score_peer_group`: where the device stands among devices of its model in its
/// segment, feature by feature, over a window.
pub struct ScorePeerGroup;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerArgs {
    /// The device's IP address, asset name or asset id.
    #[schemars(length(min = 1, max = 128))]
    pub device: String,
    /// The window in days (default 30).
    #[schemars(range(min = 1, max = 30))]
    pub days: Option<u32>,
}

#[async_trait]
impl Tool for ScorePeerGroup {
    type Args = PeerArgs;
    const NAME: &'static str = "score_peer_group";
    const DESCRIPTION: &'static str = include_str!("../../tools/score_peer_group.md");

    async fn call(&self, ctx: &ToolContext<'_>, args: PeerArgs) -> Result<ToolOutput, ToolFailure> {
        peer_scores(ctx.xdr, &args.device, args.days.unwrap_or(30)).await
    }
}

/// The features compared across a peer group.
const PEER_FEATURES: [&str; 4] = ["flows", "peers", "ports", "bytes_up"];

/// The scoring behind `score_peer_group`: the peer group's per-device aggregates come
/// from the tenant (one XQL aggregation, so it runs in the data lake at scale), and the
/// device's percentile on each feature is computed here.
pub async fn peer_scores(
    xdr: &dyn Xdr,
    device: &str,
    days: u32,
) -> Result<ToolOutput, ToolFailure> {
    let filter = device_filter(device)?;
    let me = rows(
        xdr,
        &format!(
            "dataset = asset_inventory | filter {filter} \
             | fields xdm.asset.model, xdm.asset.segment, xdm.asset.ipv4_addresses | limit 1"
        ),
    )
    .await?;
    let Some(me) = me.into_iter().next() else {
        return Err(ToolFailure::Failed(format!("{device} is not in the asset inventory")));
    };
    let ip = first_ip(&me)
        .ok_or_else(|| ToolFailure::Failed(format!("{device} has no address in the inventory")))?;
    let (model, segment) = (field(&me, "xdm.asset.model"), field(&me, "xdm.asset.segment"));
    let quoted = |text: &str| text.replace(['"', '\\'], "");
    let peers = rows(
        xdr,
        &format!(
            "dataset = asset_inventory | filter xdm.asset.model = \"{}\" and xdm.asset.segment = \"{}\" \
             | fields xdm.asset.ipv4_addresses | limit 1000",
            quoted(model),
            quoted(segment)
        ),
    )
    .await?;
    let addresses: Vec<IpAddr> = peers.iter().filter_map(first_ip).collect();
    let list = addresses.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
    let stats = rows(
        xdr,
        &format!(
            "config timeframe = {days}d | dataset = xdr_data | filter action_local_ip in ({list}) \
             | comp count() as flows, count_distinct(action_remote_ip) as peers, \
             count_distinct(action_remote_port) as ports, sum(action_total_upload) as bytes_up \
             by action_local_ip | limit 1000"
        ),
    )
    .await?;
    let value = |row: &Row, feature: &str| row.get(feature).and_then(Value::as_f64).unwrap_or(0.0);
    let mine = stats.iter().find(|r| field(r, "action_local_ip") == ip.to_string());
    let mut features = serde_json::Map::new();
    let mut highest = 0.0_f64;
    for feature in PEER_FEATURES {
        let own = mine.map_or(0.0, |r| value(r, feature));
        let others: Vec<f64> = stats
            .iter()
            .filter(|r| field(r, "action_local_ip") != ip.to_string())
            .map(|r| value(r, feature))
            .collect();
        // The share of peers this device exceeds, ties counted half.
        let percentile = if others.is_empty() {
            0.0
        } else {
            let below = others.iter().filter(|v| **v < own).count() as f64;
            let equal = others.iter().filter(|v| **v == own).count() as f64;
            (100.0 * (below + equal / 2.0) / others.len() as f64).round()
        };
        let mut sorted = others.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        highest = highest.max(percentile);
        features.insert(
            feature.to_string(),
            json!({"value": own, "peer_median": median, "percentile": percentile}),
        );
    }
    let group = format!("{model} in {segment}");
    let peer_count = stats.len().saturating_sub(usize::from(mine.is_some()));
    Ok(ToolOutput {
        summary: format!(
            "over {days} days, {ip} is above {highest:.0} % of its {peer_count} peers ({group}) on its most unusual feature"
        ),
        data: json!({"device": ip.to_string(), "group": group, "days": days,
                     "peers": peer_count, "features": features, "highest_percentile": highest}),
        untrusted: false,
    })
}

/// `search_attack_ics`: techniques, mitigations, device knowledge and past cases that
/// match a description.
pub struct SearchAttackIcs;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchArgs {
    /// A behaviour in plain words, or technique IDs.
    #[schemars(length(min = 1, max = 500))]
    pub query: String,
    /// How many results (default 5).
    #[schemars(range(min = 1, max = 10))]
    pub k: Option<u32>,
    /// Only this kind of entry: `technique` (default), `mitigation`, `device`, `case`.
    pub kind: Option<SearchKind>,
}

#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SearchKind {
    Technique,
    Mitigation,
    Device,
    Case,
}

#[async_trait]
impl Tool for SearchAttackIcs {
    type Args = SearchArgs;
    const NAME: &'static str = "search_attack_ics";
    const DESCRIPTION: &'static str = include_str!("../../tools/search_attack_ics.md");

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: SearchArgs,
    ) -> Result<ToolOutput, ToolFailure> {
        let Some(knowledge) = ctx.knowledge else {
            return Err(ToolFailure::Failed("the knowledge base is not loaded".into()));
        };
        let kind = match args.kind.unwrap_or(SearchKind::Technique) {
            SearchKind::Technique => "technique",
            SearchKind::Mitigation => "mitigation",
            SearchKind::Device => "device",
            SearchKind::Case => "case",
        };
        let k = args.k.unwrap_or(5) as usize;
        let hits = knowledge
            .search(&args.query, Mode::Hybrid, Filter::kind(kind), k)
            .await
            .map_err(|err| ToolFailure::Failed(err.to_string()))?;
        let listed: Vec<Value> = hits
            .iter()
            .map(|h| {
                let text: String = h.doc.text.chars().take(400).collect();
                json!({"id": h.doc.id, "title": h.doc.title, "text": text, "fields": h.doc.fields,
                       "matched": h.matched})
            })
            .collect();
        Ok(ToolOutput {
            summary: hits
                .iter()
                .map(|h| format!("{} {}", h.doc.id, h.doc.title))
                .collect::<Vec<_>>()
                .join("; "),
            data: json!({"query": args.query, "results": listed}),
            untrusted: kind == "case",
        })
    }
}

/// At most `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// `get_case`: a Cortex XDR case with its alerts and artifacts, or the past cases most
/// like a description with their verdicts.
pub struct GetCase;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseArgs {
    /// A Cortex XDR case (incident) id.
    #[schemars(length(min = 1, max = 64))]
    pub case_id: Option<String>,
    /// Instead: a description whose most similar past cases to return.
    #[schemars(length(min = 1, max = 500))]
    pub similar_to: Option<String>,
}

#[async_trait]
impl Tool for GetCase {
    type Args = CaseArgs;
    const NAME: &'static str = "get_case";
    const DESCRIPTION: &'static str = include_str!("../../tools/get_case.md");

    async fn call(&self, ctx: &ToolContext<'_>, args: CaseArgs) -> Result<ToolOutput, ToolFailure> {
        match (args.case_id, args.similar_to) {
            (Some(id), None) => {
                let extra = ctx
                    .xdr
                    .incident_extra_data(&id, 20)
                    .await
                    .map_err(|err| ToolFailure::Failed(err.to_string()))?;
                let alerts: Vec<String> =
                    extra.alerts.data.iter().filter_map(|a| a.name.clone()).collect();
                let mut hosts: Vec<String> = Vec::new();
                for alert in &extra.alerts.data {
                    let host = match (&alert.host_name, alert.host_ip.first()) {
                        (Some(name), Some(ip)) => format!("{name} ({ip})"),
                        (Some(name), None) => name.clone(),
                        (None, Some(ip)) => ip.clone(),
                        (None, None) => continue,
                    };
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
                let quoted: Vec<String> =
                    alerts.iter().take(3).map(|a| format!("\"{}\"", clip(a, 120))).collect();
                Ok(ToolOutput {
                    summary: format!(
                        "case {id}: {} severity, status {}, {} alerts{}{}",
                        extra.incident.severity.as_deref().unwrap_or("unknown"),
                        extra.incident.status.as_deref().unwrap_or("unknown"),
                        extra.alerts.data.len(),
                        if quoted.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", quoted.join(", "))
                        },
                        if hosts.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " on {}",
                                hosts
                                    .iter()
                                    .take(3)
                                    .map(|h| clip(h, 140))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    ),
                    data: json!({"incident": extra.incident, "alert_names": alerts,
                                 "alerts": extra.alerts.data,
                                 "network_artifacts": extra.network_artifacts.data}),
                    untrusted: true,
                })
            }
            (None, Some(description)) => {
                let Some(knowledge) = ctx.knowledge else {
                    return Err(ToolFailure::Failed("the knowledge base is not loaded".into()));
                };
                let hits = knowledge::cases::similar(knowledge, &description, None, 3)
                    .await
                    .map_err(|err| ToolFailure::Failed(err.to_string()))?;
                let listed: Vec<Value> = hits
                    .iter()
                    .map(|h| {
                        json!({"id": h.doc.id, "title": h.doc.title,
                               "verdict": h.doc.fields.get("verdict").and_then(|v| v.first())})
                    })
                    .collect();
                Ok(ToolOutput {
                    summary: format!("{} similar past cases", hits.len()),
                    data: json!({"similar": listed}),
                    untrusted: true,
                })
            }
            _ => {
                Err(ToolFailure::Arguments("give exactly one of `case_id` and `similar_to`".into()))
            }
        }
    }
}

/// `draft_segmentation`: least-privilege rules for a peer group, or a device's
/// quarantine, drafted from the tenant's firewall log and replayed over it.
pub struct DraftSegmentation;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SegmentArgs {
    /// A device type ("infusion pumps") or a group key ("Infusion Pump / clinical-devices").
    #[schemars(length(min = 1, max = 200))]
    pub group: Option<String>,
    /// A device (address or asset name): its group, or with `quarantine` its quarantine.
    #[schemars(length(min = 1, max = 128))]
    pub device: Option<String>,
    /// Draft the quarantine of `device` instead of its group's policy.
    pub quarantine: Option<bool>,
}

#[async_trait]
impl Tool for DraftSegmentation {
    type Args = SegmentArgs;
    const NAME: &'static str = "draft_segmentation";
    const DESCRIPTION: &'static str = include_str!("../../tools/draft_segmentation.md");

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: SegmentArgs,
    ) -> Result<ToolOutput, ToolFailure> {
        use crate::segment::{self, Subject};
        let fleet = segment::fleet(ctx.xdr).await.map_err(ToolFailure::Failed)?;
        let subject = match (args.group.as_deref(), args.device.as_deref(), args.quarantine) {
            (_, Some(device), Some(true)) => Subject::Quarantine(device.to_string()),
            (_, Some(device), _) => {
                let host = fleet.find(device).ok_or_else(|| {
                    ToolFailure::Failed(format!("{device} is not in the inventory"))
                })?;
                Subject::Group(host.group())
            }
            (Some(group), None, _) => {
                Subject::Group(fleet.best_group(group).map_err(ToolFailure::Failed)?)
            }
            (None, None, _) => {
                return Err(ToolFailure::Arguments("give `group` or `device`".into()));
            }
        };
        let (report, _) = segment::draft_for_fleet(ctx.xdr, &fleet, &subject, None)
            .await
            .map_err(ToolFailure::Failed)?;
        let set = segment::panos::set_commands(
            &report.draft,
            &crate::actions::kinds::PanosTarget::Firewall,
        );
        let summary = format!(
            "{} rules for {}: {} of {} baseline conversations blocked, {} of {} after the baseline blocked{}",
            report.draft.rules.len(),
            report.draft.subject,
            report.impact.baseline_blocked.len(),
            report.baseline_conversations,
            report.impact.later_blocked.len(),
            report.later_conversations,
            if report.draft.warnings.is_empty() {
                String::new()
            } else {
                format!("; {}", report.draft.warnings.join("; "))
            }
        );
        let blocked: Vec<Value> = report
            .impact
            .later_blocked
            .iter()
            .take(10)
            .map(|c| json!({"src": c.src, "dst": c.dst, "service": format!("{}/{}", c.proto, c.port), "sessions": c.sessions}))
            .collect();
        Ok(ToolOutput {
            summary,
            data: json!({"subject": report.draft.subject, "rules": report.draft.rules.len(),
                         "baseline_blocked": report.impact.baseline_blocked.len(),
                         "later_blocked": blocked, "unused_rules": report.impact.unused,
                         "warnings": report.draft.warnings,
                         "set_commands": set.lines().take(60).collect::<Vec<_>>()}),
            untrusted: false,
        })
    }
}

/// `propose_action`: records a proposal for a person to approve. Never executes.
pub struct ProposeAction;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProposeArgs {
    /// The action kind.
    pub kind: ActionKindName,
    /// The kind's parameters (see the description).
    pub params: serde_json::Map<String, Value>,
    /// One sentence for the approver: why this action, citing evidence ids.
    #[schemars(length(min = 1, max = 500))]
    pub reason: String,
}

/// The action kinds, by the names policy files use.
#[derive(Clone, Copy, Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActionKindName {
    ServicenowIncident,
    XsoarIncident,
    XsoarWarRoomEntry,
    QuarantineDevice,
    ReleaseDevice,
    XdrCaseComment,
    XdrCustomAlert,
    XdrIsolateEndpoint,
    XdrUnisolateEndpoint,
}

impl ActionKindName {
    fn as_str(self) -> &'static str {
        match self {
            ActionKindName::ServicenowIncident => "servicenow_incident",
            ActionKindName::XsoarIncident => "xsoar_incident",
            ActionKindName::XsoarWarRoomEntry => "xsoar_war_room_entry",
            ActionKindName::QuarantineDevice => "quarantine_device",
            ActionKindName::ReleaseDevice => "release_device",
            ActionKindName::XdrCaseComment => "xdr_case_comment",
            ActionKindName::XdrCustomAlert => "xdr_custom_alert",
            ActionKindName::XdrIsolateEndpoint => "xdr_isolate_endpoint",
            ActionKindName::XdrUnisolateEndpoint => "xdr_unisolate_endpoint",
        }
    }
}

#[async_trait]
impl Tool for ProposeAction {
    type Args = ProposeArgs;
    const NAME: &'static str = "propose_action";
    const DESCRIPTION: &'static str = include_str!("../../tools/propose_action.md");

    async fn call(
        &self,
        ctx: &ToolContext<'_>,
        args: ProposeArgs,
    ) -> Result<ToolOutput, ToolFailure> {
        let kind = args.kind.as_str();
        let permits = &ctx.permits;
        if !permits.kinds.contains(kind) {
            let allowed: Vec<&str> = permits.kinds.iter().map(String::as_str).collect();
            return Err(ToolFailure::Refused(format!(
                "`{kind}` is not among the actions this request permits ({})",
                if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") }
            )));
        }
        let action = Action::from_parts(kind, Value::Object(args.params.clone()))
            .map_err(ToolFailure::Arguments)?;
        check_subject(&action, permits)?;
        // Reserve the slot before the gate is asked, so concurrent calls of one turn
        // cannot exceed the limit; the guard is released before any await.
        {
            let mut proposed = ctx.proposed.lock().map_err(|_| {
                ToolFailure::Failed("the proposal list is unavailable after a panic".into())
            })?;
            if proposed.len() >= permits.max_proposals {
                return Err(ToolFailure::Refused(format!(
                    "at most {} proposals per request",
                    permits.max_proposals
                )));
            }
            if proposed.iter().any(|p| p.kind == kind) {
                return Err(ToolFailure::Refused(format!("a `{kind}` was already proposed")));
            }
            proposed.push(Proposed {
                kind: kind.to_string(),
                params: action.params(),
                reason: args.reason.clone(),
                id: None,
            });
        }
        let id = match ctx.gate {
            Some(gate) => gate
                .propose(action, &ctx.proposer, &args.reason)
                .await
                .map_err(|err| ToolFailure::Failed(err.to_string()))?
                .map(|p| p.id),
            None => None,
        };
        if let Ok(mut proposed) = ctx.proposed.lock()
            && let Some(last) = proposed.iter_mut().rev().find(|p| p.kind == kind)
        {
            last.id = id.clone();
        }
        Ok(ToolOutput {
            summary: match &id {
                Some(id) => format!("proposed {kind} as {id}, waiting for approval"),
                None => format!("{kind} listed (not recorded: a dry run or the monitor phase)"),
            },
            data: json!({"kind": kind, "proposal_id": id}),
            untrusted: false,
        })
    }
}

/// An action may only touch the device and the case the task is about.
fn check_subject(action: &Action, permits: &Permits) -> Result<(), ToolFailure> {
    let problem = match action {
        Action::QuarantineDevice { device_id, ip, .. }
        | Action::ReleaseDevice { device_id, ip, .. }
            if permits.device_id.as_deref() != Some(device_id.as_str())
                || permits.ip != Some(*ip) =>
        {
            format!("{device_id} ({ip}) is not the device in question")
        }
        Action::XdrCaseComment { incident_id, .. }
            if permits.incident_id.as_deref() != Some(incident_id.as_str()) =>
        {
            format!("case {incident_id} is not the case in question")
        }
        Action::XdrCustomAlert { local_ip, .. } if permits.ip != Some(*local_ip) => {
            format!("{local_ip} is not the device in question")
        }
        _ => return Ok(()),
    };
    Err(ToolFailure::Refused(format!(
        "{problem}; this request is about {}",
        permits.device_id.as_deref().unwrap_or("no device")
    )))
}
