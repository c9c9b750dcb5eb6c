//! The `triage` suite: a finding written up, scored on the facts it states, the claims
//! it makes without evidence, the actions it proposes and its length.
//!
//! The narrative scored is the model's own first draft (before the grounding checker
//! sends it back for a rewrite or replaces it with the template), so a model that
//! invents figures is seen to do so even though pivotwatch would not deliver them;
//! `delivered_by_model` says how often the model's text was what the analyst got.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::tenant::EvalTenant;
use super::{CaseRun, Scored};
use crate::agent::llm::Llm;
use crate::agent::triage::{TriageOptions, triage, unsupported_in};
use crate::knowledge::Knowledge;
use crate::model::Finding;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageActions {
    #[serde(default)]
    pub expected: Vec<String>,
    #[serde(default)]
    pub wrong: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriageCase {
    pub id: String,
    /// `simulator` or `iot23`.
    pub source: String,
    #[serde(default)]
    pub scenario: Option<String>,
    /// The IoT-23 capture an inline finding came from.
    #[serde(default)]
    pub capture: Option<String>,
    /// For the simulator, `{"device_id", "window_start"}` of a finding of the eval
    /// tenant's detection; otherwise the whole finding.
    pub finding: Value,
    /// Strings a good write-up states.
    pub facts: Vec<String>,
    pub actions: TriageActions,
    #[serde(default = "default_words")]
    pub max_words: usize,
}

fn default_words() -> usize {
    180
}

impl TriageCase {
    fn finding(&self, tenant: &EvalTenant) -> Result<Finding, String> {
        if self.source == "simulator" {
            let device = self.finding["device_id"].as_str().unwrap_or_default();
            let start = self.finding["window_start"].as_str().unwrap_or_default();
            tenant
                .findings
                .iter()
                .find(|f| f.device_id == device && f.window_start == start)
                .cloned()
                .ok_or_else(|| {
                    format!(
                        "{}: the eval tenant's detection has no finding for {device} at {start}",
                        self.id
                    )
                })
        } else {
            serde_json::from_value(self.finding.clone())
                .map_err(|err| format!("{}: the finding does not read: {err}", self.id))
        }
    }
}

/// Whether `text` states `fact`: case-insensitive, and not as part of a longer number
/// or word (`22` is in `tcp/22`, not in `2200`).
pub fn states(text: &str, fact: &str) -> bool {
    let text = text.to_ascii_lowercase();
    let fact = fact.to_ascii_lowercase();
    let bytes = text.as_bytes();
    text.match_indices(&fact).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + fact.len()).copied();
        !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric())
    })
}

/// Runs the suite once.
pub async fn run(
    cases: &[TriageCase],
    tenant: &EvalTenant,
    knowledge: &Knowledge,
    llm: Option<&Llm>,
) -> Result<Vec<Scored>, String> {
    let mut out = Vec::new();
    for case in cases {
        let finding = case.finding(tenant)?;
        let options = TriageOptions { llm, ..TriageOptions::default() };
        let result = triage(&finding, &tenant.replay, Some(knowledge), &options).await;
        let narrative = result.rejected_drafts.first().cloned().unwrap_or(result.narrative.clone());
        let recalled = case.facts.iter().filter(|f| states(&narrative, f)).count();
        let recall =
            if case.facts.is_empty() { 1.0 } else { recalled as f64 / case.facts.len() as f64 };
        let unsupported = unsupported_in(&narrative, &result.evidence);
        let proposed: BTreeSet<String> =
            result.suggestions.iter().map(|s| s.kind.clone()).collect();
        let expected: BTreeSet<String> = case.actions.expected.iter().cloned().collect();
        let wrong = proposed.iter().filter(|k| case.actions.wrong.contains(k)).count();
        let right = proposed.intersection(&expected).count();
        let action_recall =
            if expected.is_empty() { 1.0 } else { right as f64 / expected.len() as f64 };
        let words = narrative.split_whitespace().count();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let mut metrics = BTreeMap::new();
        metrics.insert("fact_recall".into(), recall);
        metrics.insert("unsupported_claims".into(), unsupported.len() as f64);
        metrics.insert("grounded".into(), flag(unsupported.is_empty()));
        metrics.insert("action_recall".into(), action_recall);
        metrics.insert("wrong_actions".into(), wrong as f64);
        metrics.insert("words".into(), words as f64);
        metrics.insert("within_length".into(), flag(words <= case.max_words));
        if llm.is_some() {
            let delivered =
                result.narrative_source == "model" || result.narrative_source == "model_rewrite";
            metrics.insert("delivered_by_model".into(), flag(delivered));
        }
        let pass = recall >= 0.99
            && unsupported.is_empty()
            && wrong == 0
            && action_recall >= 0.99
            && words <= case.max_words;
        let score = (recall
            + flag(unsupported.is_empty())
            + (action_recall + flag(wrong == 0)) / 2.0
            + flag(words <= case.max_words))
            / 4.0;
        out.push(Scored {
            id: case.id.clone(),
            group: Some(case.source.clone()),
            input: format!(
                "{} {} ({}, risk {:.0})",
                finding.device_id,
                finding.ip,
                finding.severity.as_str(),
                finding.risk
            ),
            expected: json!({"facts": case.facts, "actions": case.actions}),
            run: CaseRun {
                pass,
                score,
                metrics,
                output: json!({"narrative": narrative, "delivered": result.narrative,
                               "unsupported": unsupported, "proposed": proposed,
                               "planner": result.planner, "fallback": result.fallback}),
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::states;

    #[test]
    fn a_fact_is_a_whole_number_or_word() {
        assert!(states("it reached tcp/22 on 10.21.1.17.", "22"));
        assert!(states("it reached tcp/22 on 10.21.1.17.", "10.21.1.17"));
        assert!(!states("port 2200 on 10.21.1.170", "22"));
        assert!(!states("port 2200 on 10.21.1.170", "10.21.1.17"));
        assert!(states("Sent 256.0 MB", "256"));
    }
}
