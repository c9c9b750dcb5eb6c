//! A hunt: a hunter's question becomes read-only XQL, runs on the tenant, and comes back
//! summarised with two or three follow-up hunts drawn from ATT&CK for ICS.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
};

use super::llm::{HUNT_XQL, HUNT_XQL_REPAIR, Llm};
use super::planner::{self, Direction, Intent, Shape, TimeOfDay};
use crate::store::Store;
use crate::xdr::{Row, Xdr, XqlRequest};

/// Questions whose planned XQL is shown to the model as examples, the closest first.
const EXAMPLES: &str = include_str!("../../prompts/hunt_examples.v1.txt");

/// How many times a refused query goes back to the model with the refusal.
const REPAIRS: usize = 2;

/// Answers a question with the model when one is configured, else (or when the model
/// cannot produce a valid query) with the offline planner, saying so.
pub async fn hunt(
    xdr: &dyn Xdr,
    llm: Option<&Llm>,
    question: &str,
    store: Option<&Store>,
) -> HuntResult {
    let Some(llm) = llm else { return hunt_offline(xdr, question).await };
    let xql = match translate(llm, question, store).await {
        Translation::Query { xql, .. } => xql,
        Translation::Declined(why) => {
            let why = format!("I can't answer that from the tenant's data: {why}");
            return HuntResult::unanswered(question, why, "llm");
        }
        Translation::Failed(why) => {
            let mut answer = hunt_offline(xdr, question).await;
            answer.summary = format!("{} (answered by the offline planner: {why})", answer.summary);
            return answer;
        }
    };
    // The planner's reading of the question, when it has one, shapes the summary and
    // the follow-ups; the query itself is the model's.
    let intent = planner::plan(question).ok().map(|p| p.intent);
    let mut result = HuntResult {
        question: question.to_string(),
        xql: Some(xql.clone()),
        valid: true,
        rows: Vec::new(),
        row_count: 0,
        summary: String::new(),
        follow_ups: intent.as_ref().map(follow_ups).unwrap_or_default(),
        planner: "llm".into(),
    };
    match xdr.run_xql(&XqlRequest::new(xql)).await {
        Ok(answer) => {
            result.row_count = answer.rows.len();
            result.summary = match &intent {
                Some(intent) => summarise(intent, &answer.rows),
                None => format!("{} rows.", answer.rows.len()),
            };
            result.rows = answer.rows.into_iter().take(MAX_ROWS).collect();
        }
        Err(err) => result.summary = format!("the tenant did not answer the query: {err}"),
    }
    result
}

/// What the model made of a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Translation {
    /// A valid, read-only query in canonical form, after this many repairs.
    Query { xql: String, repairs: usize },
    /// The model said the data cannot answer the question, and why.
    Declined(String),
    /// The endpoint failed, or the query was still refused after the repairs.
    Failed(String),
}

/// Asks the model for XQL, validates it, and sends a refusal back for repair at most
/// `REPAIRS` times. Only a valid, read-only query is returned.
pub async fn translate(llm: &Llm, question: &str, store: Option<&Store>) -> Translation {
    match translate_inner(llm, question, store).await {
        Ok(done) => done,
        Err(why) => Translation::Failed(why),
    }
}

async fn translate_inner(
    llm: &Llm,
    question: &str,
    store: Option<&Store>,
) -> Result<Translation, String> {
    let mut messages: Vec<ChatCompletionRequestMessage> = vec![
        ChatCompletionRequestSystemMessage::from(llm.prompt(&HUNT_XQL).text.to_string()).into(),
        ChatCompletionRequestUserMessage::from(examples_for(question)).into(),
    ];
    let mut last_errors = String::new();
    for attempt in 0..=REPAIRS {
        let prompt = llm.prompt(if attempt == 0 { &HUNT_XQL } else { &HUNT_XQL_REPAIR });
        let completion = llm.complete(messages.clone()).await.map_err(|err| err.to_string())?;
        let cost = (completion.input_tokens, completion.output_tokens, completion.latency_ms);
        prompt.record(store, llm.model(), cost, Vec::new(), Vec::new()).await;
        let xql = strip_fences(&completion.text);
        if let Some(why) = xql.strip_prefix("REFUSE:").or_else(|| xql.strip_prefix("REFUSE")) {
            return Ok(Translation::Declined(why.trim().to_string()));
        }
        let (_, validation) = crate::xql::validate::check(&xql, &planner::hunt_validation());
        if validation.valid && validation.read_only {
            let xql = crate::xql::format(&xql).map_err(|err| err.to_string())?;
            return Ok(Translation::Query { xql, repairs: attempt });
        }
        last_errors =
            validation.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
        messages.push(ChatCompletionRequestAssistantMessage::from(completion.text).into());
        messages.push(
            ChatCompletionRequestUserMessage::from(
                llm.prompt(&HUNT_XQL_REPAIR).text.replace("{errors}", &last_errors),
            )
            .into(),
        );
    }
    Err(format!("the model's query was still refused after {REPAIRS} repairs: {last_errors}"))
}

/// The question, preceded by the three example questions sharing the most words with
/// it and the XQL the offline planner writes for them.
pub fn examples_for(question: &str) -> String {
    let asked: std::collections::BTreeSet<String> =
        crate::knowledge::sparse::terms(question).into_iter().collect();
    let mut scored: Vec<(usize, &str)> = EXAMPLES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|example| {
            let shared = crate::knowledge::sparse::terms(example)
                .iter()
                .filter(|t| asked.contains(*t))
                .count();
            (shared, example)
        })
        .collect();
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    let mut text = String::from("Examples:\n");
    for (_, example) in scored.into_iter().take(3) {
        if let Ok(plan) = planner::plan(example) {
            text.push_str(&format!("\nQuestion: {example}\nXQL:\n{}\n", plan.xql));
        }
    }
    text.push_str(&format!("\nQuestion: {question}\nXQL:"));
    text
}

/// The query without Markdown fences or a leading "XQL:" a model may add.
fn strip_fences(text: &str) -> String {
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix("```xql")
        .or_else(|| trimmed.strip_prefix("```sql"))
        .or_else(|| trimmed.strip_prefix("```"))
        .map_or(trimmed, |rest| rest.trim_end().trim_end_matches("```"));
    inner.trim().trim_start_matches("XQL:").trim().to_string()
}

/// What `pivotwatch hunt --json` prints and the server returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HuntResult {
    pub question: String,
    /// The query that ran, or `None` when the question could not be translated.
    pub xql: Option<String>,
    pub valid: bool,
    pub rows: Vec<Row>,
    pub row_count: usize,
    pub summary: String,
    pub follow_ups: Vec<FollowUp>,
    /// `llm` or `offline`.
    pub planner: String,
}

impl HuntResult {
    /// A question that got no query, and why.
    fn unanswered(question: &str, summary: String, planner: &str) -> HuntResult {
        HuntResult {
            question: question.to_string(),
            xql: None,
            valid: false,
            rows: Vec::new(),
            row_count: 0,
            summary,
            follow_ups: Vec::new(),
            planner: planner.into(),
        }
    }
}

/// A next hunt, with the technique that makes it worth running.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub question: String,
    pub technique: String,
    pub technique_name: String,
}

/// How many rows a hunt hands back; the tenant may hold more.
pub const MAX_ROWS: usize = 1_000;

/// Answers a question with the offline planner over `xdr`.
pub async fn hunt_offline(xdr: &dyn Xdr, question: &str) -> HuntResult {
    let plan = match planner::plan(question) {
        Ok(plan) => plan,
        Err(why) => {
            return HuntResult::unanswered(question, why, "offline");
        }
    };
    let (_, validation) = crate::xql::validate::check(&plan.xql, &planner::hunt_validation());
    let follow_ups = follow_ups(&plan.intent);
    let mut result = HuntResult {
        question: question.to_string(),
        xql: Some(plan.xql.clone()),
        valid: validation.valid && validation.read_only,
        rows: Vec::new(),
        row_count: 0,
        summary: String::new(),
        follow_ups,
        planner: "offline".into(),
    };
    if !result.valid {
        // The planner writes only from its grammar; reaching this is a planner bug, and
        // the query is not sent.
        let errors: Vec<String> = validation.errors.iter().map(|e| e.message.clone()).collect();
        result.summary = format!("the planned query did not validate: {}", errors.join("; "));
        return result;
    }
    match xdr.run_xql(&XqlRequest::new(plan.xql)).await {
        Ok(answer) => {
            result.row_count = answer.rows.len();
            result.summary = summarise(&plan.intent, &answer.rows);
            result.rows = answer.rows.into_iter().take(MAX_ROWS).collect();
        }
        Err(err) => {
            result.summary = format!("the tenant did not answer the query: {err}");
        }
    }
    result
}

/// A sentence or two on what came back, with the leading rows named.
pub fn summarise(intent: &Intent, rows: &[Row]) -> String {
    let what = describe(intent);
    if rows.is_empty() {
        return format!("No {what} in the last {}.", hours(intent.window_hours));
    }
    if intent.shape == Shape::Count {
        let row = &rows[0];
        return format!(
            "{} devices, {} flows and {} distinct peers for {what} in the last {}.",
            number(&row["devices"]),
            number(&row["flows"]),
            number(&row["peers"]),
            hours(intent.window_hours)
        );
    }
    let name = |row: &Row| {
        let label = row
            .get("device")
            .or_else(|| row.get("agent_hostname"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let ip = row.get("action_local_ip").and_then(Value::as_str).unwrap_or("?");
        match label {
            Some(label) => format!("{label} ({ip})"),
            None => ip.to_string(),
        }
    };
    let lead: Vec<String> = rows
        .iter()
        .take(3)
        .map(|row| {
            let mut parts = vec![name(row)];
            if let Some(flows) = row.get("flows") {
                parts.push(format!("{} flows", number(flows)));
            }
            if let Some(targets) = row.get("targets") {
                parts.push(format!("{} hosts", number(targets)));
            }
            if let Some(peer) = row.get("action_remote_ip").and_then(Value::as_str) {
                let port = row.get("action_remote_port").map(number).unwrap_or_default();
                parts.push(format!("to {peer}:{port}"));
            }
            if let Some(up) = row.get("bytes_up").and_then(Value::as_f64) {
                parts.push(format!("{} sent", crate::baseline::human_bytes(up as u64)));
            }
            parts.join(", ")
        })
        .collect();
    format!(
        "{} {} of {what} in the last {}; leading: {}.",
        rows.len(),
        if rows.len() == 1 { "row" } else { "rows" },
        hours(intent.window_hours),
        lead.join("; ")
    )
}

fn describe(intent: &Intent) -> String {
    let who = if intent.kinds.is_empty() {
        "devices".to_string()
    } else {
        intent.kinds.iter().map(|k| k.to_ascii_lowercase()).collect::<Vec<_>>().join(" or ")
    };
    let mut text = match intent.shape {
        Shape::Scans => format!("scans ({who})"),
        Shape::Beacons => format!("steady repeated conversations ({who})"),
        Shape::NewPeers => format!("first-seen conversations ({who})"),
        _ if intent.kinds_are_targets => format!("hosts reaching {who}"),
        _ => who,
    };
    if let Some(direction) = intent.direction {
        text.push_str(match direction {
            Direction::External => " with external peers",
            Direction::Internal => " with internal peers",
        });
    }
    if !intent.ports.is_empty() {
        let ports: Vec<String> = intent.ports.iter().map(u16::to_string).collect();
        text.push_str(&format!(" on port {}", ports.join("/")));
    }
    if let Some(tod) = intent.time_of_day {
        text.push_str(match tod {
            TimeOfDay::Night => " at night",
            TimeOfDay::BusinessHours => " in business hours",
        });
    }
    text
}

fn hours(h: u64) -> String {
    if h.is_multiple_of(24) && h >= 48 { format!("{} days", h / 24) } else { format!("{h} hours") }
}

fn number(value: &Value) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "?".into(),
    }
}

/// Next hunts for what was asked, each tied to the ATT&CK for ICS technique it looks
/// for. Every follow-up is itself a question the offline planner translates.
pub fn follow_ups(intent: &Intent) -> Vec<FollowUp> {
    let who = intent
        .kinds
        .first()
        .map(|k| match k.as_str() {
            "IP Camera" => "cameras",
            "Infusion Pump" => "pumps",
            "Patient Monitor" => "monitors",
            "Imaging Modality" => "imaging devices",
            "HVAC Controller" => "HVAC controllers",
            "Badge Reader" => "badge readers",
            "Printer" => "printers",
            "PLC" => "PLCs",
            _ => "devices",
        })
        .unwrap_or("devices");
    let mut ideas: Vec<(String, &str)> = Vec::new();
    let remote_admin = intent.ports.iter().any(|p| matches!(p, 22 | 23 | 3389 | 5900));
    let industrial = intent.ports.iter().any(|p| matches!(p, 102 | 502 | 20000 | 44818 | 47808));
    if intent.direction == Some(Direction::External) || intent.shape == Shape::Beacons {
        ideas.push((
            format!("Which {who} beacon to the same external host in the last 7 days?"),
            "T0869",
        ));
        ideas.push((
            format!("Which {who} started talking to a new external peer in the last 24 hours?"),
            "T0883",
        ));
    }
    if remote_admin {
        ideas.push((format!("Which {who} were reached over SSH, RDP or Telnet by internal hosts in the last 7 days?"), "T0886"));
    }
    if industrial || intent.kinds.iter().any(|k| k == "PLC") {
        ideas.push((
            "Who talks Modbus, S7 or EtherNet/IP to the PLCs in the last 7 days?".into(),
            "T0855",
        ));
    }
    if intent.shape == Shape::Scans {
        ideas.push(("Which devices scanned internal hosts in the last 7 days?".into(), "T0846"));
        ideas.push((
            "Which devices were reached over SSH or RDP in the last 24 hours?".into(),
            "T0886",
        ));
    }
    if matches!(intent.shape, Shape::TopUpload(_))
        || intent.min_upload.is_some()
        || intent.time_of_day == Some(TimeOfDay::Night)
    {
        ideas.push((
            format!("Top 10 {who} by bytes sent to the internet at night in the last 7 days"),
            "T0882",
        ));
    }
    if ideas.len() < 2 {
        ideas.push(("Which devices scanned internal hosts in the last 24 hours?".into(), "T0846"));
        ideas.push((
            "Which devices started talking to a new external peer in the last 24 hours?".into(),
            "T0883",
        ));
    }
    let attack = crate::knowledge::Attack::shipped();
    let mut seen = Vec::new();
    ideas
        .into_iter()
        .filter(|(q, _)| {
            let fresh = !seen.contains(q);
            seen.push(q.clone());
            fresh
        })
        .take(3)
        .map(|(question, technique)| FollowUp {
            technique_name: attack.name(technique).unwrap_or_default().to_string(),
            technique: technique.to_string(),
            question,
        })
        .collect()
}
