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
use crate::knowledge::devices::DeviceKnowledge;
use crate::knowledge::{self, Knowledge, TechniqueRef};
use crate::model::{Finding, Severity};
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
    pub planner: String,
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

    // The check: every figure in the narrative must be in the evidence.
    let evidence_text = serde_json::to_string(&evidence).unwrap_or_default();
    let mut known_facts: BTreeSet<Fact> = grounding::facts(&evidence_text);
    for item in &evidence {
        known_facts.extend(grounding::facts(&item.summary));
    }
    let unsupported: Vec<String> =
        grounding::unsupported(&narrative, &known_facts).iter().map(grounding::describe).collect();

    TriageResult {
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
    }
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
