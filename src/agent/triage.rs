//! Triage of one finding: the context an analyst would gather (the device, its last 24
//! hours and 30 days, the ATT&CK for ICS techniques, what the model normally does, how
//! similar cases were judged), a short narrative written only from that evidence and
//! checked against it, and the actions worth proposing.
//!
//! This is the offline path: the same tools a model would call, run in a fixed order,
//! and a template narrative filled from their results.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::grounding::{self, Fact};
use super::llm::{Llm, Message, Prompt, TRIAGE, TRIAGE_REWRITE};
use super::run::{self, Limits, Run};
use super::tools::{Permits, Registry, ToolContext};
use crate::actions::{Action, Gate};
use crate::audit::Actor;
use crate::knowledge::devices::DeviceKnowledge;
use crate::knowledge::{self, Knowledge, TechniqueRef};
use crate::model::{Finding, Severity};
use crate::store::Store;
use crate::xdr::{Row, Xdr, XqlRequest};

/// One piece of evidence, with the id the narrative cites it by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidenceItem {
    /// `E1`, `E2`, ...
    pub id: String,
    /// The tool that produced it.
    pub tool: String,
    pub summary: String,
    pub data: Value,
}

/// An action the triage suggests; it is created as a proposal only through the gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    pub kind: String,
    pub params: Value,
    pub reason: String,
}

/// What `pivotwatch triage --json` prints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriageResult {
    pub device_id: String,
    pub ip: String,
    /// The device's inventory facts.
    #[serde(default)]
    pub device: DeviceFacts,
    pub risk: f64,
    pub severity: Severity,
    pub narrative: String,
    /// `template` offline.
    pub narrative_source: String,
    /// Whether every figure in the narrative is in the evidence.
    pub grounded: bool,
    /// Figures the checker found in the narrative but not in the evidence.
    pub unsupported: Vec<String>,
    pub evidence: Vec<EvidenceItem>,
    pub techniques: Vec<TechniqueRef>,
    pub suggestions: Vec<Suggestion>,
    /// Proposal ids, once the suggestions were proposed.
    #[serde(default)]
    pub proposals: Vec<String>,
    /// `llm` when the model wrote the narrative, else `offline`.
    pub planner: String,
    /// The model, when one was asked.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub prompt_id: Option<String>,
    /// Why the offline planner answered although a model is configured.
    #[serde(default)]
    pub fallback: Option<String>,
    /// Tokens the model spent on this triage (prompt, completion).
    #[serde(default)]
    pub tokens: (u64, u64),
    /// Tool calls the model made.
    #[serde(default)]
    pub tool_calls: usize,
    /// Evidence dropped from the model's context to fit the token budget.
    #[serde(default)]
    pub dropped_evidence: Vec<String>,
    /// The model's narratives the grounding checker refused, first draft first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected_drafts: Vec<String>,
}

/// The device a triage is about, as the inventory describes it (empty strings where
/// the inventory says nothing).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFacts {
    pub id: String,
    pub ip: String,
    pub name: String,
    pub kind: String,
    pub vendor: String,
    pub model: String,
    pub segment: String,
    pub criticality: String,
}

/// The inventory facts the narrative uses.
#[derive(Default)]
struct Profile {
    name: String,
    kind: String,
    vendor: String,
    model: String,
    segment: String,
    criticality: String,
}

fn text(row: Option<&Row>, field: &str) -> String {
    row.and_then(|r| r.get(field)).and_then(Value::as_str).unwrap_or_default().to_string()
}

async fn xql(xdr: &dyn Xdr, query: &str) -> Result<Vec<Row>, String> {
    xdr.run_xql(&XqlRequest::new(query)).await.map(|r| r.rows).map_err(|err| err.to_string())
}

/// Triages a finding with the offline planner.
pub async fn triage_offline(
    finding: &Finding,
    xdr: &dyn Xdr,
    knowledge: Option<&Knowledge>,
) -> TriageResult {
    let ip = finding.ip.to_string();
    let mut evidence = Vec::new();
    let mut push = |tool: &str, summary: String, data: Value| {
        let id = format!("E{}", evidence.len() + 1);
        evidence.push(EvidenceItem { id: id.clone(), tool: tool.into(), summary, data });
        id
    };

    let reasons: Vec<String> = finding
        .reasons
        .iter()
        .map(|r| {
            format!("{}: {} (baseline: {})", r.feature, plain(&r.observed), plain(&r.baseline))
        })
        .collect();
    let e_finding = push(
        "detection",
        format!(
            "risk {:.0} ({}), {:.0} % more unusual than its peer group {}, {} flows, {} to {}",
            finding.risk,
            finding.severity.as_str(),
            finding.peer_percentile,
            finding.peer_group,
            finding.evidence.flows,
            finding.window_start,
            finding.window_end
        ),
        json!({"risk": finding.risk.round(), "peer_percentile": finding.peer_percentile.round(),
               "flows": finding.evidence.flows, "window_start": finding.window_start,
               "window_end": finding.window_end, "reasons": reasons,
               "examples": finding.evidence.examples}),
    );

    let profile_rows = xql(
        xdr,
        &format!(
            "dataset = asset_inventory | filter xdm.asset.ipv4_addresses = \"{ip}\" \
             | fields xdm.asset.name, xdm.asset.type.name, xdm.asset.vendor, xdm.asset.model, \
             xdm.asset.segment, xdm.asset.criticality, xdm.asset.firmware | limit 1"
        ),
    )
    .await;
    let profile_row = profile_rows.as_ref().ok().and_then(|rows| rows.first());
    let profile = Profile {
        name: text(profile_row, "xdm.asset.name"),
        kind: text(profile_row, "xdm.asset.type.name"),
        vendor: text(profile_row, "xdm.asset.vendor"),
        model: text(profile_row, "xdm.asset.model"),
        segment: text(profile_row, "xdm.asset.segment"),
        criticality: text(profile_row, "xdm.asset.criticality"),
    };
    let e_profile = push(
        "get_device_profile",
        match &profile_rows {
            Ok(rows) if !rows.is_empty() => format!(
                "{} {} {} {} in {}, criticality {}",
                profile.name,
                profile.vendor,
                profile.model,
                profile.kind,
                profile.segment,
                profile.criticality
            ),
            Ok(_) => format!("{ip} is not in the asset inventory"),
            Err(err) => format!("the inventory could not be read: {err}"),
        },
        json!(profile_row),
    );

    let day = xql(
        xdr,
        &format!(
            "config timeframe = 24h | dataset = xdr_data | filter action_local_ip = \"{ip}\" \
             | comp count() as flows, sum(action_total_upload) as bytes_up \
             by action_remote_ip, action_remote_port | sort desc bytes_up | limit 10"
        ),
    )
    .await
    .unwrap_or_default();
    let day_flows: u64 = day.iter().filter_map(|r| r.get("flows").and_then(Value::as_u64)).sum();
    let e_day = push(
        "run_xql",
        format!("last 24 hours: {day_flows} flows to {} peer and port pairs", day.len()),
        json!({"flows": day_flows, "top": day}),
    );

    let month = xql(
        xdr,
        &format!(
            "config timeframe = 30d | dataset = xdr_data | filter action_local_ip = \"{ip}\" \
             | comp count() as flows, count_distinct(action_remote_ip) as peers, \
             count_distinct(action_remote_port) as ports, sum(action_total_upload) as bytes_up"
        ),
    )
    .await
    .unwrap_or_default();
    let month_row = month.first().cloned().unwrap_or_default();
    let e_month = push(
        "run_xql",
        format!(
            "last 30 days: {} flows, {} peers, {} ports",
            month_row.get("flows").cloned().unwrap_or(Value::Null),
            month_row.get("peers").cloned().unwrap_or(Value::Null),
            month_row.get("ports").cloned().unwrap_or(Value::Null)
        ),
        Value::Object(month_row.clone()),
    );

    let peers = super::tools::peer_scores(xdr, &ip, 30).await.ok();
    let e_peers = peers.map(|out| {
        let id = push("score_peer_group", out.summary.clone(), out.data);
        (id, out.summary)
    });

    let techniques = knowledge::resolve(&finding.techniques).unwrap_or_default();
    let e_attack = (!techniques.is_empty()).then(|| {
        push(
            "search_attack_ics",
            techniques
                .iter()
                .map(|t| format!("{} {}", t.id, t.name))
                .collect::<Vec<_>>()
                .join("; "),
            json!(techniques),
        )
    });

    let known = DeviceKnowledge::shipped().model(&profile.vendor, &profile.model).cloned();
    let e_known = known.as_ref().map(|k| {
        push(
            "device_knowledge",
            format!("{} {}: never expected: {}", k.vendor, k.model, k.never_expected.join("; ")),
            json!({"never_expected": k.never_expected, "advisories": k.advisories}),
        )
    });

    let mut similar = Vec::new();
    if let Some(knowledge) = knowledge {
        let description = format!("{} {}", profile.kind, reasons.join(" "));

        if let Ok(hits) = knowledge::cases::similar(knowledge, &description, None, 3).await {
            similar = hits;
        }
    }
    let e_similar = (!similar.is_empty()).then(|| {
        let listed: Vec<String> = similar
            .iter()
            .map(|h| {
                let verdict = h
                    .doc
                    .fields
                    .get("verdict")
                    .and_then(|v| v.first())
                    .map_or("no verdict", String::as_str);
                format!("{} ({verdict})", h.doc.title)
            })
            .collect();
        push("get_case", format!("similar past cases: {}", listed.join("; ")), json!(listed))
    });

    // The narrative, from the evidence only.
    let label =
        if profile.name.is_empty() { finding.device_id.clone() } else { profile.name.clone() };
    let what = if profile.kind.is_empty() {
        "device".to_string()
    } else {
        format!("{} {} {}", profile.vendor, profile.model, profile.kind.to_ascii_lowercase())
    };
    let mut narrative = String::new();
    let _ = write!(
        narrative,
        "What happened: {label} ({ip}), a {what}{}, left its baseline between {} and {}: {} [{e_finding}][{e_profile}].",
        if profile.segment.is_empty() { String::new() } else { format!(" in {}", profile.segment) },
        finding.window_start,
        finding.window_end,
        reasons.first().map_or("its behaviour changed", String::as_str)
    );
    let _ = write!(
        narrative,
        "\nWhy it matters: it is {:.0} % more unusual than its peer group, risk {:.0} ({}){} [{e_finding}].",
        finding.peer_percentile,
        finding.risk,
        finding.severity.as_str(),
        if profile.criticality.is_empty() {
            String::new()
        } else {
            format!(", criticality {}", profile.criticality)
        }
    );
    if let Some(t) = techniques.first() {
        let _ = write!(
            narrative,
            " It fits {} {} ({}) [{}].",
            t.id,
            t.name,
            t.tactics.join(", "),
            e_attack.clone().unwrap_or_default()
        );
    }
    if let (Some(k), Some(id)) = (&known, &e_known)
        && let Some(never) = most_related(&k.never_expected, &reasons.join(" "))
    {
        let _ = write!(narrative, " For this model, never expected: {never} [{id}].");
    }
    let _ = write!(
        narrative,
        "\nContext: {day_flows} flows in the last 24 hours [{e_day}]; over 30 days {} flows [{e_month}].",
        month_row.get("flows").map_or("no".to_string(), |v| v.to_string())
    );
    if let Some((id, summary)) = &e_peers {
        let _ = write!(narrative, " Its 30-day peer comparison: {summary} [{id}].");
    }
    if let Some(id) = &e_similar {
        let _ = write!(narrative, " Similar past cases are listed in [{id}].");
    }
    let sure = match (finding.reasons.len(), finding.peer_percentile) {
        (n, p) if n >= 2 && p >= 95.0 => "high: several features deviate and the peer group agrees",
        (_, p) if p >= 80.0 => "medium: the peer group agrees, few features deviate",
        _ => "low: the deviation is small against its peers",
    };
    let _ = write!(narrative, "\nHow sure: {sure}.");

    let suggestions = suggest(finding, &profile, &label, &ip);
    let steps: Vec<String> = suggestions.iter().map(|s| s.reason.clone()).collect();
    let _ = write!(
        narrative,
        "\nNext: {}",
        if steps.is_empty() {
            "watch the device; nothing warrants an action yet.".to_string()
        } else {
            steps.join(" ")
        }
    );

    let unsupported = unsupported_in(&narrative, &evidence);

    TriageResult {
        device: DeviceFacts {
            id: finding.device_id.clone(),
            ip: ip.clone(),
            name: profile.name,
            kind: profile.kind,
            vendor: profile.vendor,
            model: profile.model,
            segment: profile.segment,
            criticality: profile.criticality,
        },
        device_id: finding.device_id.clone(),
        ip,
        risk: finding.risk,
        severity: finding.severity,
        grounded: unsupported.is_empty(),
        unsupported,
        narrative,
        narrative_source: "template".into(),
        evidence,
        techniques,
        suggestions,
        proposals: Vec::new(),
        planner: "offline".into(),
        model: None,
        prompt_id: None,
        fallback: None,
        tokens: (0, 0),
        tool_calls: 0,
        dropped_evidence: Vec::new(),
        rejected_drafts: Vec::new(),
    }
}

/// The figures a narrative states that its evidence does not hold, described.
pub fn unsupported_in(narrative: &str, evidence: &[EvidenceItem]) -> Vec<String> {
    let evidence_text = serde_json::to_string(evidence).unwrap_or_default();
    let mut known: BTreeSet<Fact> = grounding::facts(&evidence_text);
    for item in evidence {
        known.extend(grounding::facts(&item.summary));
    }
    grounding::unsupported(narrative, &known).iter().map(grounding::describe).collect()
}

/// A value as the narrative writes it: text without quotes, numbers as they are.
fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The statement sharing the most words with `context`, if any shares one that is not
/// common: which of a model's never-expected behaviours this finding is about.
fn most_related<'a>(statements: &'a [String], context: &str) -> Option<&'a String> {
    // Ports written as reasons write them ("udp/53 ", "tcp/22,") under the names the
    // statements use ("DNS", "SSH").
    let mut context = context.to_string();
    let names: Vec<&str> = context
        .split('/')
        .skip(1)
        .filter_map(|after| {
            let end = after.find(|c: char| !c.is_ascii_digit())?;
            let port = after[..end].parse().ok()?;
            matches!(after[end..].chars().next(), Some(' ' | ',')).then_some(port)
        })
        .filter_map(super::planner::service_name)
        .collect();
    for name in names {
        context.push(' ');
        context.push_str(name);
    }
    let context: BTreeSet<String> = crate::knowledge::sparse::terms(&context).into_iter().collect();
    statements
        .iter()
        .map(|s| {
            let shared = crate::knowledge::sparse::terms(s)
                .into_iter()
                .filter(|t| {
                    context.contains(t)
                        && !matches!(
                            t.as_str(),
                            "host"
                                | "device"
                                | "address"
                                | "external"
                                | "internal"
                                | "sent"
                                | "data"
                                | "flow"
                                | "traffic"
                        )
                })
                .count();
            (shared, s)
        })
        .filter(|(shared, _)| *shared > 0)
        .max_by_key(|(shared, _)| *shared)
        .map(|(_, s)| s)
}

/// What to propose. A ticket for anything high or critical; quarantine only for a
/// critical finding on a device whose own criticality is not critical (cutting a
/// life-critical device off needs a person's plan, not a tag).
fn suggest(finding: &Finding, profile: &Profile, label: &str, ip: &str) -> Vec<Suggestion> {
    let mut out = Vec::new();
    if finding.severity >= Severity::High {
        let urgency = if finding.severity == Severity::Critical { 1 } else { 2 };
        let impact = if profile.criticality == "critical" { 1 } else { 2 };
        out.push(Suggestion {
            kind: "servicenow_incident".into(),
            params: json!({
                "short_description": format!("pivotwatch: {label} left its baseline"),
                "description": format!("{label} ({ip}): {}", finding.reasons.first().map_or("", |r| r.detail.as_str())),
                "urgency": urgency,
                "impact": impact,
            }),
            reason: "Open a ticket for the device owner with the evidence.".into(),
        });
    }
    if finding.severity == Severity::Critical
        && !profile.criticality.is_empty()
        && profile.criticality != "critical"
    {
        out.push(Suggestion {
            kind: "quarantine_device".into(),
            params: json!({
                "device_id": finding.device_id,
                "ip": ip,
                "tag": "pw-quarantine",
                "timeout_secs": 3600,
                "criticality": profile.criticality,
            }),
            reason: "Quarantine it for an hour through the firewall's dynamic address group while it is looked at."
                .into(),
        });
    }
    out
}

/// How a triage runs: with which model (none: the offline planner), where proposals
/// and the audit trail go, and its limits.
pub struct TriageOptions<'a> {
    pub llm: Option<&'a Llm>,
    pub store: Option<&'a Store>,
    /// `None`: a dry run; proposals are listed, not recorded.
    pub gate: Option<&'a Gate>,
    /// The Cortex XDR case this finding belongs to, when there is one.
    pub incident_id: Option<String>,
    /// Untrusted text that came with the case (its description, alert names).
    pub case_text: Option<Value>,
    /// Who proposes: the agent for an analyst, the system for an automatic triage.
    pub proposer: Actor,
    pub limits: Limits,
}

impl Default for TriageOptions<'_> {
    fn default() -> Self {
        TriageOptions {
            llm: None,
            store: None,
            gate: None,
            incident_id: None,
            case_text: None,
            proposer: Actor::Agent,
            limits: Limits::default(),
        }
    }
}

/// What this triage may propose, from the finding's structure: a ticket for anything
/// medium or above, an XSOAR incident for high or above, the offline planner's
/// suggestions (quarantine only where it would suggest it), and a case comment when
/// there is a case. Never from anything the telemetry says.
pub fn permits(finding: &Finding, offline: &TriageResult, incident_id: Option<&str>) -> Permits {
    let mut kinds: BTreeSet<String> = offline.suggestions.iter().map(|s| s.kind.clone()).collect();
    if finding.severity >= Severity::Medium {
        kinds.insert("servicenow_incident".into());
    }
    if finding.severity >= Severity::High {
        kinds.insert("xsoar_incident".into());
    }
    if incident_id.is_some() {
        kinds.insert("xdr_case_comment".into());
    }
    Permits {
        kinds,
        device_id: Some(finding.device_id.clone()),
        ip: Some(finding.ip),
        incident_id: incident_id.map(str::to_string),
        max_proposals: 3,
    }
}

/// Triages a finding: with the model when one is configured (it may call tools for more
/// context and propose permitted actions; its narrative is checked against the evidence
/// and rewritten once, else the template is used), and with the offline planner when
/// none is, or when the model fails or runs out of its limits, saying why.
pub async fn triage(
    finding: &Finding,
    xdr: &dyn Xdr,
    knowledge: Option<&Knowledge>,
    options: &TriageOptions<'_>,
) -> TriageResult {
    let mut offline = triage_offline(finding, xdr, knowledge).await;
    if let Some(case) = &options.case_text {
        let id = format!("E{}", offline.evidence.len() + 1);
        offline.evidence.push(EvidenceItem {
            id,
            tool: "get_case".into(),
            summary: format!(
                "Cortex XDR case {}",
                options.incident_id.as_deref().unwrap_or("without an id")
            ),
            data: case.clone(),
        });
    }
    let Some(llm) = options.llm else {
        propose_suggestions(
            &mut offline,
            options.gate,
            &options.proposer,
            options.incident_id.as_deref(),
        )
        .await;
        return offline;
    };
    let mut ctx = ToolContext::new(xdr);
    ctx.knowledge = knowledge;
    ctx.store = options.store;
    ctx.gate = options.gate;
    ctx.proposer = options.proposer.clone();
    ctx.permits = permits(finding, &offline, options.incident_id.as_deref());
    let registry = Registry::with_proposals();
    let system = llm.prompt(&TRIAGE);
    let run = Run {
        llm,
        registry: &registry,
        ctx: &ctx,
        prompt: &system,
        limits: options.limits.clone(),
        nonce: run::nonce(),
    };
    let messages = first_messages(&system, finding, &offline, &ctx.permits, &run.nonce);
    let outcome = run.go(messages, offline.evidence.clone()).await;
    let mut result = offline.clone();
    result.model = Some(llm.model().to_string());
    result.prompt_id = Some(system.id.to_string());
    result.tokens = (outcome.input_tokens, outcome.output_tokens);
    result.tool_calls = outcome.calls.len();
    result.dropped_evidence = outcome.dropped.clone();
    result.evidence = outcome.evidence.clone();
    let proposed = ctx.proposed();
    result.suggestions = proposed
        .iter()
        .map(|p| Suggestion {
            kind: p.kind.clone(),
            params: p.params.clone(),
            reason: p.reason.clone(),
        })
        .collect();
    result.proposals = proposed.iter().filter_map(|p| p.id.clone()).collect();

    let Some(answer) = outcome.answer.clone() else {
        // The model did not finish: the template narrative and the offline planner's
        // proposals (beside any the model already made), saying why.
        let why = outcome
            .stop
            .as_ref()
            .map_or("the model gave no answer".to_string(), ToString::to_string);
        result.planner = "offline".into();
        result.fallback = Some(why);
        result.narrative = offline.narrative.clone();
        result.narrative_source = "template".into();
        let made: BTreeSet<String> = proposed.iter().map(|p| p.kind.clone()).collect();
        let mut rest = offline.clone();
        rest.suggestions.retain(|s| !made.contains(&s.kind));
        propose_suggestions(
            &mut rest,
            options.gate,
            &options.proposer,
            options.incident_id.as_deref(),
        )
        .await;
        result.suggestions.extend(rest.suggestions);
        result.proposals.extend(rest.proposals);
        return result;
    };
    result.planner = "llm".into();
    let unsupported = unsupported_in(&answer, &result.evidence);
    if unsupported.is_empty() {
        result.narrative = answer;
        result.narrative_source = "model".into();
        result.grounded = true;
        result.unsupported = Vec::new();
        return result;
    }
    // One rewrite, told exactly which figures the evidence does not hold.
    result.rejected_drafts.push(answer.clone());
    let mut messages = outcome.messages;
    let rewrite_prompt = llm.prompt(&TRIAGE_REWRITE);
    messages
        .push(Message::User(rewrite_prompt.text.replace("{unsupported}", &unsupported.join(", "))));
    let rewrite = llm.chat(&messages, &[], options.limits.wall).await;
    if let Ok(turn) = &rewrite {
        result.tokens.0 += turn.input_tokens;
        result.tokens.1 += turn.output_tokens;
        let cited = turn.content.as_deref().map(run::cited).unwrap_or_default();
        let cost = (turn.input_tokens, turn.output_tokens, turn.latency_ms);
        rewrite_prompt
            .record(options.store, llm.model(), cost, Vec::new(), cited.into_iter().collect())
            .await;
    }
    let second = rewrite.ok().and_then(|t| t.content);
    match second {
        Some(text) if unsupported_in(&text, &result.evidence).is_empty() => {
            result.narrative = text;
            result.narrative_source = "model_rewrite".into();
            result.grounded = true;
            result.unsupported = Vec::new();
        }
        other => {
            result.rejected_drafts.extend(other);
            result.narrative = offline.narrative.clone();
            result.narrative_source = "template".into();
            result.grounded = offline.grounded;
            result.unsupported = offline.unsupported.clone();
            result.fallback = Some(format!(
                "the model's narrative stated figures not in the evidence ({}) and its rewrite did not fix them",
                unsupported.join(", ")
            ));
        }
    }
    result
}

/// The conversation a model-backed triage starts from: the system prompt and the
/// request with the evidence the offline planner gathered.
pub fn first_messages(
    system: &Prompt,
    finding: &Finding,
    offline: &TriageResult,
    permits: &Permits,
    nonce: &str,
) -> Vec<Message> {
    vec![
        Message::System(system.text.to_string()),
        Message::User(request(finding, offline, permits, nonce)),
    ]
}

/// The request the model reads: the task, what it may propose, and the evidence so far.
fn request(finding: &Finding, offline: &TriageResult, permits: &Permits, nonce: &str) -> String {
    let mut text = format!(
        "Triage this finding for the analyst: device {} ({}), severity {}, risk {:.0}.\n",
        finding.device_id,
        finding.ip,
        finding.severity.as_str(),
        finding.risk
    );
    if permits.kinds.is_empty() {
        text.push_str("This request permits no proposals.\n");
    } else {
        let kinds: Vec<&str> = permits.kinds.iter().map(String::as_str).collect();
        let _ = writeln!(
            text,
            "This request permits proposing, for this device only: {}.",
            kinds.join(", ")
        );
    }
    text.push_str("\nEvidence so far:\n");
    for item in &offline.evidence {
        // Only pivotwatch's own detection figures are unfenced; everything else carries
        // names and values from the tenant.
        let untrusted = item.tool != "detection" && item.tool != "score_peer_group";
        text.push_str(&run::render(nonce, item, untrusted));
        text.push_str("\n\n");
    }
    text
}

/// Records the offline planner's suggestions as proposals, when there is a gate. For
/// a Cortex XDR case each kind of action on each device is proposed once, however
/// often the case is triaged again as it changes: a later triage finds the first
/// proposal rather than adding a second.
async fn propose_suggestions(
    result: &mut TriageResult,
    gate: Option<&Gate>,
    proposer: &Actor,
    incident_id: Option<&str>,
) {
    let Some(gate) = gate else { return };
    for suggestion in &result.suggestions {
        let action = match Action::from_parts(&suggestion.kind, suggestion.params.clone()) {
            Ok(action) => action,
            Err(err) => {
                tracing::error!(
                    "the offline planner suggested an invalid {}: {err}",
                    suggestion.kind
                );
                continue;
            }
        };
        let key = incident_id.map(|case| {
            format!("case:{case}:{}:{}", action.kind(), action.subject().unwrap_or(""))
        });
        let proposed = match &key {
            Some(key) => gate.propose_once(action, proposer, &suggestion.reason, key).await,
            None => gate.propose(action, proposer, &suggestion.reason).await,
        };
        match proposed {
            Ok(Some(proposal)) => result.proposals.push(proposal.id),
            Ok(None) => {}
            Err(err) => tracing::error!("a {} could not be proposed: {err}", suggestion.kind),
        }
    }
}

/// The finding a case is about, and the case's own text (which is untrusted). A case
/// that pivotwatch filed carries its finding in the alert; for any other case the
/// finding is built from the first alert with a host address, the case's severity
/// and the device's 30-day peer comparison.
pub async fn finding_for_incident(
    xdr: &dyn Xdr,
    incident_id: &str,
) -> Result<(Finding, Value), String> {
    let extra = xdr
        .incident_extra_data(incident_id, 50)
        .await
        .map_err(|err| format!("reading case {incident_id}: {err}"))?;
    let case_text = json!({
        "incident_id": extra.incident.incident_id,
        "name": extra.incident.incident_name,
        "description": extra.incident.description,
        "severity": extra.incident.severity,
        "status": extra.incident.status,
        "alerts": extra.alerts.data.iter().map(|a| json!({
            "name": a.name, "category": a.category, "severity": a.severity,
            "host_ip": a.host_ip, "host_name": a.host_name,
            "techniques": a.mitre_technique_id_and_name,
        })).collect::<Vec<_>>(),
    });
    if let Some(finding) = extra
        .alerts
        .data
        .iter()
        .filter_map(|a| a.extra.get("pivotwatch_finding"))
        .find_map(|f| serde_json::from_value::<Finding>(f.clone()).ok())
    {
        return Ok((finding, case_text));
    }
    let alert = extra
        .alerts
        .data
        .iter()
        .find(|a| a.host_ip.iter().any(|ip| ip.parse::<std::net::IpAddr>().is_ok()))
        .ok_or_else(|| format!("case {incident_id} has no alert with a host address"))?;
    let ip: std::net::IpAddr = alert
        .host_ip
        .iter()
        .find_map(|ip| ip.parse().ok())
        .ok_or_else(|| format!("case {incident_id}: no host address"))?;
    let severity = match extra.incident.severity.as_deref().unwrap_or("low") {
        "critical" => Severity::Critical,
        "high" => Severity::High,
        "medium" => Severity::Medium,
        _ => Severity::Low,
    };
    let peers = super::tools::peer_scores(xdr, &ip.to_string(), 30).await.ok();
    let percentile =
        peers.as_ref().and_then(|p| p.data["highest_percentile"].as_f64()).unwrap_or(0.0);
    let group = peers
        .as_ref()
        .and_then(|p| p.data["group"].as_str().map(str::to_string))
        .unwrap_or_default();
    // The case's severity sets the risk; the peer comparison moves it within its band.
    let base = match severity {
        Severity::Critical => 85.0,
        Severity::High => 65.0,
        Severity::Medium => 40.0,
        _ => 15.0,
    };
    let at = |ms: Option<i64>| {
        ms.and_then(|ms| time::OffsetDateTime::from_unix_timestamp(ms / 1000).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default()
    };
    let techniques = alert
        .mitre_technique_id_and_name
        .iter()
        .filter_map(|t| t.split_whitespace().next())
        .filter(|id| id.starts_with('T'))
        .map(str::to_string)
        .collect();
    Ok((
        Finding {
            device_id: alert.host_name.clone().unwrap_or_else(|| ip.to_string()),
            ip,
            peer_group: group,
            window_start: at(alert.detection_timestamp),
            window_end: at(extra.incident.modification_time),
            score: 0.0,
            peer_percentile: percentile,
            risk: (base + percentile / 10.0).min(100.0),
            severity,
            reasons: Vec::new(),
            techniques,
            evidence: crate::model::Evidence { flows: 0, examples: Vec::new() },
        },
        case_text,
    ))
}
