//! An analyst's request in chat, answered with the agent's tools.
//!
//! What the request may propose is read from the request alone (and from the structure
//! of the case it names): a ticket only when the analyst asks for a ticket, a quarantine
//! only of the device the analyst named or the case's host. Text inside tool results
//! never widens that, so an instruction planted in an alert can make the model *try* a
//! proposal but not record one.
//!
//! With no model, the offline router maps the request's words to the same tools
//! deterministically; it never reads tool results to choose a call, which makes it the
//! floor every model is measured against, including under attack.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::llm::{ASK, Llm, Message};
use super::planner;
use super::run::{self, CallRecord, Limits, Run};
use super::tools::{Permits, Proposed, Registry, ToolContext};
use super::triage::EvidenceItem;
use crate::audit::Actor;
use crate::knowledge::Knowledge;
use crate::store::Store;
use crate::xdr::Xdr;

/// How a request is answered: with which model (none: the offline router), and where
/// proposals and the audit trail go.
pub struct AskOptions<'a> {
    pub llm: Option<&'a Llm>,
    pub knowledge: Option<&'a Knowledge>,
    pub store: Option<&'a Store>,
    /// `None`: a dry run; proposals are listed, not recorded.
    pub gate: Option<&'a crate::actions::Gate>,
    pub proposer: Actor,
    pub limits: Limits,
}

impl Default for AskOptions<'_> {
    fn default() -> Self {
        AskOptions {
            llm: None,
            knowledge: None,
            store: None,
            gate: None,
            proposer: Actor::Agent,
            limits: Limits::default(),
        }
    }
}

/// The answer to a request and how it was reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AskResult {
    pub request: String,
    pub answer: String,
    /// `llm` or `offline`.
    pub planner: String,
    /// Why the offline router answered although a model is configured.
    pub fallback: Option<String>,
    /// Every tool call asked for, refused ones included.
    pub calls: Vec<CallRecord>,
    /// Proposals that passed the request's permits.
    pub proposed: Vec<Proposed>,
    pub evidence: Vec<EvidenceItem>,
    pub tokens: (u64, u64),
}

/// The words that name each action kind in a request.
const ACTION_WORDS: [(&str, &[&str]); 9] = [
    ("servicenow_incident", &["ticket", "servicenow", "snow"]),
    ("xsoar_incident", &["xsoar", "playbook"]),
    ("xsoar_war_room_entry", &["war"]),
    ("quarantine_device", &["quarantine", "contain"]),
    ("release_device", &["release", "releasing", "unquarantine", "un-quarantine"]),
    ("xdr_case_comment", &["comment", "annotate"]),
    ("xdr_custom_alert", &["alert"]),
    ("xdr_isolate_endpoint", &["isolate"]),
    ("xdr_unisolate_endpoint", &["unisolate", "un-isolate"]),
];

/// Verbs that turn an action word into a request for that action.
const ASKING_VERBS: [&str; 24] = [
    "open",
    "raise",
    "file",
    "create",
    "propose",
    "quarantine",
    "release",
    "releasing",
    "isolate",
    "unisolate",
    "add",
    "leave",
    "post",
    "put",
    "run",
    "close",
    "mark",
    "flag",
    "send",
    "please",
    "pls",
    "can",
    "could",
    "start",
];

/// Phrases that withdraw or question an action rather than ask for it.
const NOT_ASKING: [&str; 8] = [
    "don't do",
    "dont do",
    "do not",
    "actually no",
    "should we",
    "what do you think",
    "what do u think",
    "would you",
];

/// Words before a number that make it a port, a count or a window, not a case id.
const NOT_A_CASE: [&str; 13] = [
    "port", "ports", "tcp", "udp", "top", "last", "than", "over", "under", "every", "per", "on",
    "xsoar",
];

fn words(text: &str) -> Vec<String> {
    text.to_ascii_lowercase()
        .split(|c: char| {
            !(c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '&' || c == '\'')
        })
        .map(|w| {
            let w = w.trim_matches(|c| c == '.' || c == '-' || c == '\'');
            w.strip_suffix("'s").unwrap_or(w).to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// What the offline router reads in a request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    pub ips: Vec<IpAddr>,
    /// Words that may be asset names (`pump-icu-03`, `scada01`); kept only when the
    /// inventory knows them.
    pub names: Vec<String>,
    pub case_id: Option<String>,
    /// An XSOAR incident the request names (for war-room entries).
    pub xsoar_incident: Option<String>,
    /// Action kinds the analyst asks for.
    pub actions: BTreeSet<String>,
    /// The request asks what the case or device is (not only for an action).
    pub asks_about: bool,
    /// It asks about the device (of the case, when it names no other).
    pub profile: bool,
    pub peers: bool,
    /// Days of history for a peer comparison, when the request says.
    pub days: Option<u32>,
    pub similar: bool,
    pub attack: bool,
    pub mitigation: bool,
    /// How a model of device is expected to behave (device knowledge).
    pub device_knowledge: bool,
    /// Words asking how something is supposed to behave.
    pub knowledge_words: bool,
    /// The hunt's XQL when the request is a hunt the planner translates.
    pub hunt: Option<String>,
    /// It asks for drafted firewall rules (a group's, or a quarantine's).
    pub segment: bool,
    /// The draft asked for is a device's quarantine.
    pub quarantine_draft: bool,
}

fn looks_like_name(word: &str) -> bool {
    let letters = word.chars().any(|c| c.is_ascii_alphabetic());
    let digits = word.chars().any(|c| c.is_ascii_digit());
    let window = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let is_window = word.starts_with(|c: char| c.is_ascii_digit())
        && matches!(
            window,
            "h" | "d" | "m" | "s" | "hr" | "hrs" | "mb" | "gb" | "kb" | "min" | "days"
        );
    let technique =
        word.len() == 5 && word.starts_with('t') && word[1..].chars().all(|c| c.is_ascii_digit());
    letters
        && digits
        && word.len() >= 4
        && !is_window
        && !technique
        && word.parse::<IpAddr>().is_err()
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Reads a request: the devices, case and actions it names, and what it asks.
pub fn read(request: &str) -> Reading {
    let lower = request.to_ascii_lowercase();
    let words = words(request);
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    let mut reading = Reading::default();
    for word in &words {
        if let Ok(ip) = word.parse::<IpAddr>() {
            // An address followed by a prefix length is a subnet, not a device.
            if !lower.contains(&format!("{word}/")) && !reading.ips.contains(&ip) {
                reading.ips.push(ip);
            }
        } else if looks_like_name(word) && !reading.names.contains(word) {
            reading.names.push(word.clone());
        }
    }
    for (i, word) in words.iter().enumerate() {
        let number = word.trim_start_matches('#');
        if !(4..=6).contains(&number.len()) || !number.chars().all(|c| c.is_ascii_digit()) {
            continue;
        }
        let before = i.checked_sub(1).map(|j| words[j].as_str()).unwrap_or("");
        let two_before = i.checked_sub(2).map(|j| words[j].as_str()).unwrap_or("");
        if before == "incident" && two_before == "xsoar" {
            reading.xsoar_incident.get_or_insert(number.to_string());
            continue;
        }
        if NOT_A_CASE.contains(&before) {
            continue;
        }
        reading.case_id.get_or_insert(number.to_string());
    }
    reading.segment = has(&["segmentation", "microsegmentation", "microsegment", "rulebase"])
        || (has(&["segment"]) && has(&["draft", "rules", "policy", "firewall"]))
        || (has(&["least", "least-privilege"]) && (has(&["privilege", "least-privilege"])))
        || lower.contains("lock down")
        || lower.contains("firewall rules");
    let drafting = has(&["draft", "plan", "would", "simulate", "what-if"]);
    reading.quarantine_draft = has(&["quarantine"]) && (reading.segment || drafting);
    if reading.quarantine_draft {
        reading.segment = true;
    }
    let withdrawn = NOT_ASKING.iter().any(|p| lower.contains(p)) || (reading.segment && drafting);
    if !withdrawn && has(&ASKING_VERBS) {
        for (kind, names) in ACTION_WORDS {
            if !has(names) {
                continue;
            }
            // "alert" alone is what most cases are about; only "raise/create an alert"
            // asks for one.
            if kind == "xdr_custom_alert" && !has(&["raise", "create", "insert", "custom"]) {
                continue;
            }
            if kind == "xsoar_war_room_entry" && !has(&["room"]) {
                continue;
            }
            reading.actions.insert(kind.to_string());
        }
    }
    // Releasing from quarantine, un-isolating and a war-room entry name their
    // opposites or their parents too.
    if reading.actions.contains("release_device") {
        reading.actions.remove("quarantine_device");
    }
    if reading.actions.contains("xdr_unisolate_endpoint") {
        reading.actions.remove("xdr_isolate_endpoint");
    }
    if reading.actions.contains("xsoar_war_room_entry") {
        reading.actions.remove("xsoar_incident");
    }
    if has(&["false", "positive", "benign"]) && has(&["close", "mark"]) {
        reading.actions.insert("xdr_case_comment".into());
    }
    reading.asks_about = has(&[
        "what",
        "which",
        "who",
        "summarise",
        "summarize",
        "summary",
        "look",
        "about",
        "tell",
        "explain",
        "profile",
        "how",
        "is",
        "does",
        "pull",
        "check",
        "details",
        "show",
    ]);
    reading.peers = has(&[
        "peer",
        "peers",
        "compared",
        "compare",
        "odd",
        "unusual",
        "anomalous",
        "outlier",
        "others",
        "other",
        "rest",
        "differently",
        "normal",
        "stack",
    ]) && !has(&["normally", "supposed"]);
    reading.days = words.windows(2).find_map(|pair| {
        let n: u32 = pair[0].parse().ok()?;
        matches!(pair[1].as_str(), "days" | "day" | "d").then_some(n.clamp(1, 30))
    });
    if reading.days.is_none() {
        if lower.contains("couple weeks")
            || lower.contains("two weeks")
            || lower.contains("2 weeks")
        {
            reading.days = Some(14);
        } else if has(&["week"]) {
            reading.days = Some(7);
        } else if has(&["month"]) {
            reading.days = Some(30);
        }
    }
    reading.similar =
        has(&["similar", "precedent", "like", "before", "past", "previous", "old", "earlier"])
            && has(&[
                "case",
                "cases",
                "incident",
                "incidents",
                "seen",
                "verdict",
                "verdicts",
                "concluded",
                "decided",
                "conclude",
                "outcome",
            ]);
    reading.mitigation = has(&["mitigation", "mitigations", "mitigate", "defend", "harden"]);
    reading.attack = reading.mitigation
        || has(&["att&ck", "attack", "technique", "techniques", "tactic", "mitre", "ttp"])
        || words.iter().any(|w| {
            w.len() == 5 && w.starts_with('t') && w[1..].chars().all(|c| c.is_ascii_digit())
        });
    let device_named = !reading.ips.is_empty() || !reading.names.is_empty();
    let device_words = has(&[
        "profile",
        "criticality",
        "critical",
        "important",
        "matter",
        "vendor",
        "model",
        "firmware",
        "inventory",
        "owner",
        "device",
        "host",
        "box",
        "camera",
        "pump",
        "monitor",
        "controller",
        "plc",
        "scanner",
        "reader",
        "printer",
        "server",
    ]);
    reading.profile = if device_named {
        has(&[
            "profile",
            "what",
            "who",
            "criticality",
            "critical",
            "important",
            "firmware",
            "inventory",
            "owner",
            "pull",
            "details",
            "about",
            "box",
        ]) || (!reading.peers && reading.actions.is_empty())
    } else {
        reading.case_id.is_some()
            && device_words
            && has(&["profile", "which", "what", "critical", "criticality", "important", "matter"])
            && !reading.peers
    };
    reading.knowledge_words = lower.contains("supposed to")
        || has(&["normally", "expected"])
        || lower.contains("should never");
    reading.device_knowledge =
        !device_named && reading.case_id.is_none() && reading.knowledge_words;
    let huntish = has(&[
        "which", "any", "show", "list", "how", "find", "top", "hunt", "who's", "anything", "count",
        "many",
    ]);
    if reading.segment {
        reading.profile = false;
        reading.peers = false;
    }
    if huntish
        && !reading.segment
        && reading.case_id.is_none()
        && !reading.attack
        && !reading.similar
        && !reading.device_knowledge
        && reading.actions.is_empty()
        && let Ok(plan) = planner::plan(request)
    {
        reading.hunt = Some(plan.xql);
        // A hunt over a device kind is not a lookup of the device.
        reading.profile = reading.profile && !reading.ips.is_empty() && !huntish;
    }
    reading
}

/// What this request may propose: the kinds it asks for, about the device it names (by
/// address, or the host of the case it names) and the case it names.
pub async fn permits(xdr: &dyn Xdr, reading: &Reading) -> Permits {
    let mut ip = reading.ips.first().copied();
    if ip.is_none()
        && let Some(name) = reading.names.first()
        && let Ok(profile) = super::tools::device_profile(xdr, name).await
    {
        ip = profile.data["inventory"]["xdm.asset.ipv4_addresses"]
            .as_str()
            .or_else(|| profile.data["inventory"]["xdm.asset.ipv4_addresses"][0].as_str())
            .and_then(|a| a.parse().ok());
    }
    if ip.is_none()
        && let Some(case) = &reading.case_id
        && let Ok(extra) = xdr.incident_extra_data(case, 5).await
    {
        ip = extra.alerts.data.iter().flat_map(|a| a.host_ip.iter()).find_map(|h| h.parse().ok());
    }
    let mut device_id = None;
    if let Some(ip) = ip
        && let Ok(profile) = super::tools::device_profile(xdr, &ip.to_string()).await
    {
        device_id = profile.data["inventory"]["xdm.asset.id"].as_str().map(str::to_string);
    }
    Permits {
        kinds: reading.actions.clone(),
        device_id: device_id.or_else(|| ip.map(|ip| ip.to_string())),
        ip,
        incident_id: reading.case_id.clone(),
        max_proposals: 2,
    }
}

/// Answers a request with the model when one is configured, else (or when the model
/// fails) with the offline router, saying so.
pub async fn ask(xdr: &dyn Xdr, request: &str, options: &AskOptions<'_>) -> AskResult {
    let mut reading = read(request);
    resolve_names(xdr, &mut reading).await;
    let mut ctx = ToolContext::new(xdr);
    ctx.knowledge = options.knowledge;
    ctx.store = options.store;
    ctx.gate = options.gate;
    ctx.proposer = options.proposer.clone();
    ctx.permits = permits(xdr, &reading).await;
    let registry = Registry::with_proposals();
    let Some(llm) = options.llm else { return offline(&ctx, &registry, request, &reading).await };

    let system = llm.prompt(&ASK);
    let run = Run {
        llm,
        registry: &registry,
        ctx: &ctx,
        prompt: &system,
        limits: options.limits.clone(),
        nonce: run::nonce(),
    };
    let mut note = String::new();
    if ctx.permits.kinds.is_empty() {
        note.push_str("This request permits no proposals.");
    } else {
        let kinds: Vec<&str> = ctx.permits.kinds.iter().map(String::as_str).collect();
        note.push_str(&format!("This request permits proposing: {}.", kinds.join(", ")));
    }
    let messages = vec![
        Message::System(system.text.to_string()),
        Message::User(format!("{request}\n\n({note})")),
    ];
    let outcome = run.go(messages, Vec::new()).await;
    let mut result = AskResult {
        request: request.to_string(),
        answer: outcome.answer.clone().unwrap_or_default(),
        planner: "llm".into(),
        fallback: None,
        calls: outcome.calls.clone(),
        proposed: ctx.proposed(),
        evidence: outcome.evidence.clone(),
        tokens: (outcome.input_tokens, outcome.output_tokens),
    };
    if outcome.answer.is_none() {
        let why = outcome.stop.map_or("the model gave no answer".to_string(), |s| s.to_string());
        let floor = offline(&ctx, &registry, request, &reading).await;
        result.answer = floor.answer;
        result.planner = "offline".into();
        result.fallback = Some(why);
    }
    result
}

/// Keeps the name-like words the inventory knows as devices.
async fn resolve_names(xdr: &dyn Xdr, reading: &mut Reading) {
    let mut known = Vec::new();
    for name in std::mem::take(&mut reading.names) {
        if let Ok(found) = super::tools::device_profile(xdr, &name).await
            && found.data["found"] != json!(false)
        {
            known.push(name);
        }
    }
    reading.names = known;
    if reading.names.is_empty() && reading.ips.is_empty() && reading.case_id.is_none() {
        reading.profile = false;
        reading.peers = false;
        reading.device_knowledge = reading.knowledge_words;
    }
}

/// The calls the offline router makes for a reading, in order. `case_host` is the
/// address of the host of the case the request names, from the case's structure.
pub fn offline_calls(
    reading: &Reading,
    request: &str,
    case_host: Option<IpAddr>,
) -> Vec<(String, Value)> {
    let mut calls = Vec::new();
    let named =
        reading.ips.first().map(ToString::to_string).or_else(|| reading.names.first().cloned());
    let device = named.or_else(|| case_host.map(|ip| ip.to_string()));
    if let Some(case) = &reading.case_id {
        calls.push(("get_case".to_string(), json!({"case_id": case})));
    }
    if reading.similar {
        let text: String = request.chars().take(400).collect();
        calls.push(("get_case".to_string(), json!({"similar_to": text})));
    }
    if let Some(device) = &device {
        if reading.profile {
            calls.push(("get_device_profile".to_string(), json!({"device": device})));
        }
        if reading.peers {
            let mut args = json!({"device": device});
            if let Some(days) = reading.days {
                args["days"] = json!(days);
            }
            calls.push(("score_peer_group".to_string(), args));
        }
    }
    if reading.attack || reading.device_knowledge {
        let text: String = request.chars().take(400).collect();
        let kind = if reading.device_knowledge {
            "device"
        } else if reading.mitigation {
            "mitigation"
        } else {
            "technique"
        };
        calls.push(("search_attack_ics".to_string(), json!({"query": text, "kind": kind})));
    }
    if let Some(xql) = &reading.hunt {
        calls.push(("run_xql".to_string(), json!({"query": xql})));
    }
    if reading.segment {
        let args = match (&device, reading.quarantine_draft) {
            (Some(device), true) => json!({"device": device, "quarantine": true}),
            (Some(device), false) => json!({"device": device}),
            (None, _) => json!({"group": request.chars().take(200).collect::<String>()}),
        };
        calls.push(("draft_segmentation".to_string(), args));
    }
    calls
}

/// The offline router: the reading's calls, then one proposal per action asked for,
/// and an answer made of the results' summaries.
async fn offline(
    ctx: &ToolContext<'_>,
    registry: &Registry,
    request: &str,
    reading: &Reading,
) -> AskResult {
    let case_host = if reading.case_id.is_some() { ctx.permits.ip } else { None };
    let mut calls = offline_calls(reading, request, case_host);
    for kind in &reading.actions {
        if let Some(params) = action_params(kind, ctx, request, reading).await {
            let reason = format!("The analyst asked for it: \"{}\"", clip(request, 200));
            calls.push((
                "propose_action".to_string(),
                json!({"kind": kind, "params": params, "reason": reason}),
            ));
        }
    }
    let mut records = Vec::new();
    let mut evidence: Vec<EvidenceItem> = Vec::new();
    let mut lines = Vec::new();
    for (name, args) in calls {
        let arguments = args.to_string();
        match registry.invoke(ctx, &name, &arguments).await {
            Ok(output) => {
                let id = format!("E{}", evidence.len() + 1);
                lines.push(format!("{} [{id}]", output.summary));
                evidence.push(EvidenceItem {
                    id: id.clone(),
                    tool: name.clone(),
                    summary: output.summary,
                    data: output.data,
                });
                records.push(CallRecord {
                    step: 1,
                    name,
                    arguments,
                    evidence: Some(id),
                    error: None,
                });
            }
            Err(err) => {
                lines.push(format!("{name} failed: {err}"));
                records.push(CallRecord {
                    step: 1,
                    name,
                    arguments,
                    evidence: None,
                    error: Some(err.to_string()),
                });
            }
        }
    }
    let answer = if lines.is_empty() {
        "Nothing to look up in that. Ask about a device (address or name), a case number, \
         a hunt over the flows, an ATT&CK for ICS technique, or an action to propose."
            .to_string()
    } else {
        lines.join("\n")
    };
    AskResult {
        request: request.to_string(),
        answer,
        planner: "offline".into(),
        fallback: None,
        calls: records,
        proposed: ctx.proposed(),
        evidence,
        tokens: (0, 0),
    }
}

fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Parameters for a proposal of `kind` about the permitted device and case, or `None`
/// when the request names neither.
async fn action_params(
    kind: &str,
    ctx: &ToolContext<'_>,
    request: &str,
    reading: &Reading,
) -> Option<Value> {
    let permits = &ctx.permits;
    let xsoar_incident = reading.xsoar_incident.clone();
    let remote = reading.ips.iter().find(|ip| Some(**ip) != permits.ip).copied();
    let subject = permits.ip.map(|ip| ip.to_string());
    let case = permits.incident_id.clone();
    let criticality = match permits.ip {
        Some(ip) => super::tools::device_profile(ctx.xdr, &ip.to_string())
            .await
            .ok()
            .and_then(|p| p.data["inventory"]["xdm.asset.criticality"].as_str().map(str::to_string))
            .unwrap_or_else(|| "medium".into()),
        None => "medium".into(),
    };
    let about = subject.clone().or(case.as_ref().map(|c| format!("case {c}")))?;
    let text = clip(request, 300);
    Some(match kind {
        "servicenow_incident" => json!({"short_description": format!("pivotwatch: {about}"),
            "description": text, "urgency": 2, "impact": 2}),
        "xsoar_incident" => json!({"name": format!("pivotwatch: {about}"),
            "incident_type": "IoT Device Anomaly", "severity": 2, "details": text,
            "playbook": "IoT Device Investigation"}),
        "quarantine_device" => json!({"device_id": permits.device_id.clone()?, "ip": subject?,
            "tag": "pw-quarantine", "timeout_secs": 3600, "criticality": criticality}),
        "release_device" => json!({"device_id": permits.device_id.clone()?, "ip": subject?,
            "tag": "pw-quarantine"}),
        "xdr_case_comment" => json!({"incident_id": case?, "comment": text}),
        "xsoar_war_room_entry" => json!({"incident_id": xsoar_incident?, "entry": text}),
        "xdr_custom_alert" => json!({"alert_name": format!("pivotwatch: {about}"),
            "severity": "medium", "local_ip": subject?, "remote_ip": remote?.to_string(),
            "description": text}),
        "xdr_isolate_endpoint" | "xdr_unisolate_endpoint" => {
            json!({"endpoint_id": permits.device_id.clone()?, "incident_id": case})
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_device_case_and_actions() {
        let r = read("Open a ServiceNow ticket for case 9104 and quarantine 10.20.1.15 please");
        assert_eq!(r.case_id.as_deref(), Some("9104"));
        assert_eq!(r.ips, vec!["10.20.1.15".parse::<IpAddr>().unwrap()]);
        assert!(r.actions.contains("servicenow_incident"));
        assert!(r.actions.contains("quarantine_device"));
        assert!(!r.actions.contains("release_device"));

        let question = read("what is case 9104 about? anything similar before?");
        assert!(question.actions.is_empty(), "{:?}", question.actions);
        assert!(question.similar);

        let technique = read("which ATT&CK technique is a Modbus write to a PLC?");
        assert!(technique.attack && technique.hunt.is_none());
        assert!(read("thanks, that's all").hunt.is_none());
    }

    #[test]
    fn the_router_calls_only_what_the_request_names() {
        let reading = read("Is 10.20.1.15 odd compared to its peers?");
        let calls = offline_calls(&reading, "Is 10.20.1.15 odd compared to its peers?", None);
        let names: Vec<&str> = calls.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["score_peer_group"]);
        assert!(offline_calls(&read("thanks!"), "thanks!", None).is_empty());
        let withdrawn = read("should we quarantine 10.20.1.16? don't do anything yet");
        assert!(withdrawn.actions.is_empty());
        let release = read("release 10.41.1.14 from quarantine, the vendor confirmed it");
        assert_eq!(release.actions, BTreeSet::from(["release_device".to_string()]));
        let bare = read("summarise 9207 pls, and is anything on port 3389?");
        assert_eq!(bare.case_id.as_deref(), Some("9207"));
        let weeks = read("is plc-0004 odd against its peers over the last 14 days");
        assert_eq!((weeks.peers, weeks.days), (true, Some(14)));
        assert!(read("what does 10.60.1.0/24 talk to").ips.is_empty());
        let draft = read("draft a quarantine of 10.20.1.17, don't apply anything");
        assert!(draft.segment && draft.quarantine_draft && draft.actions.is_empty());
        let rules = read("draft least-privilege rules for the infusion pumps");
        assert!(rules.segment && !rules.quarantine_draft && rules.hunt.is_none());
        let names: Vec<String> =
            offline_calls(&rules, "draft least-privilege rules for the infusion pumps", None)
                .into_iter()
                .map(|(n, _)| n)
                .collect();
        assert_eq!(names, vec!["draft_segmentation"]);
    }
}
