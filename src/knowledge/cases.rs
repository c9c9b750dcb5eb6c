//! Past cases: every triage and every analyst verdict, kept in the database (so every
//! replica sees them) and indexed, so a new case can be set beside the most similar
//! earlier ones and how they were judged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use super::{Doc, Filter, Hit, Knowledge, KnowledgeError, Mode};
use crate::audit::{self, Actor, Kind};
use crate::store::{Store, StoreError, now_ms};

/// How an analyst judged a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    TruePositive,
    FalsePositive,
    /// Real and harmless: a firmware update, a new server, a moved device.
    BenignChange,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::TruePositive => "true_positive",
            Verdict::FalsePositive => "false_positive",
            Verdict::BenignChange => "benign_change",
        }
    }

    pub fn parse(text: &str) -> Result<Verdict, String> {
        match text {
            "true_positive" => Ok(Verdict::TruePositive),
            "false_positive" => Ok(Verdict::FalsePositive),
            "benign_change" => Ok(Verdict::BenignChange),
            other => Err(format!(
                "verdict {other:?} is not true_positive, false_positive or benign_change"
            )),
        }
    }
}

/// A triaged case.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Case {
    /// The Cortex XDR incident id, or pivotwatch's own for a finding without one.
    pub id: String,
    pub device_id: String,
    #[serde(default)]
    pub vendor: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    /// The triage narrative's summary.
    pub summary: String,
    pub techniques: Vec<String>,
    #[serde(default)]
    pub verdict: Option<Verdict>,
    #[serde(default)]
    pub verdict_reason: Option<String>,
    pub created_at_ms: i64,
}

impl Case {
    /// A case as a triage records it: the Cortex XDR case id when there is one, else
    /// the device and the finding's window; the narrative's first line as summary.
    pub fn from_triage(
        incident_id: Option<&str>,
        finding: &crate::model::Finding,
        narrative: &str,
    ) -> Case {
        Case {
            id: incident_id.map_or_else(
                || format!("{}@{}", finding.device_id, finding.window_start),
                str::to_string,
            ),
            device_id: finding.device_id.clone(),
            vendor: None,
            model: None,
            summary: narrative.lines().next().unwrap_or_default().to_string(),
            techniques: finding.techniques.clone(),
            verdict: None,
            verdict_reason: None,
            created_at_ms: crate::store::now_ms(),
        }
    }

    pub fn doc(&self) -> Doc {
        let mut fields = BTreeMap::new();
        fields.insert("technique".to_string(), self.techniques.clone());
        fields.insert("device".to_string(), vec![self.device_id.clone()]);
        if let Some(vendor) = &self.vendor {
            fields.insert("vendor".to_string(), vec![vendor.clone()]);
        }
        if let Some(model) = &self.model {
            fields.insert("model".to_string(), vec![model.clone()]);
        }
        if let Some(verdict) = self.verdict {
            fields.insert("verdict".to_string(), vec![verdict.as_str().to_string()]);
        }
        let mut text = self.summary.clone();
        if let Some(reason) = &self.verdict_reason {
            text.push_str("\nVerdict: ");
            text.push_str(reason);
        }
        Doc {
            id: format!("case:{}", self.id),
            kind: "case".into(),
            title: format!("Case {} on {}", self.id, self.device_id),
            text,
            fields,
        }
    }
}

/// Records (or updates) a triage, keeping a verdict already given.
pub async fn record_triage(store: &Store, case: &Case) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO cases (id, device_id, vendor, model, summary, techniques, created_at_ms, \
         updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
         ON CONFLICT (id) DO UPDATE SET device_id = excluded.device_id, vendor = excluded.vendor, \
         model = excluded.model, summary = excluded.summary, techniques = excluded.techniques, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(&case.id)
    .bind(&case.device_id)
    .bind(&case.vendor)
    .bind(&case.model)
    .bind(&case.summary)
    .bind(serde_json::to_string(&case.techniques).unwrap_or_else(|_| "[]".into()))
    .bind(case.created_at_ms)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Records an analyst's verdict on a case, as an audited decision.
pub async fn record_verdict(
    store: &Store,
    id: &str,
    verdict: Verdict,
    analyst: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE cases SET verdict = $1, verdict_by = $2, verdict_reason = $3, updated_at_ms = $4 \
         WHERE id = $5",
    )
    .bind(verdict.as_str())
    .bind(analyst)
    .bind(reason)
    .bind(now_ms())
    .bind(id)
    .execute(store.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::Corrupt(format!("no case {id} was triaged")));
    }
    audit::append(
        store,
        &Actor::User(analyst.to_string()),
        Kind::Decision,
        json!({"case": id, "verdict": verdict.as_str(), "reason": reason}),
    )
    .await?;
    Ok(())
}

/// Every case, oldest first.
pub async fn all(store: &Store) -> Result<Vec<Case>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, device_id, vendor, model, summary, techniques, verdict, verdict_reason, \
         created_at_ms FROM cases ORDER BY created_at_ms, id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.into_iter()
        .map(|row| {
            let techniques: String = row.try_get(5)?;
            let verdict: Option<String> = row.try_get(6)?;
            Ok(Case {
                id: row.try_get(0)?,
                device_id: row.try_get(1)?,
                vendor: row.try_get(2)?,
                model: row.try_get(3)?,
                summary: row.try_get(4)?,
                techniques: serde_json::from_str(&techniques).unwrap_or_default(),
                verdict: verdict
                    .as_deref()
                    .map(Verdict::parse)
                    .transpose()
                    .map_err(StoreError::Corrupt)?,
                verdict_reason: row.try_get(7)?,
                created_at_ms: row.try_get(8)?,
            })
        })
        .collect()
}

/// The past cases most like `description`, best first, the case itself excluded.
pub async fn similar(
    knowledge: &Knowledge,
    description: &str,
    exclude: Option<&str>,
    limit: usize,
) -> Result<Vec<Hit>, KnowledgeError> {
    let mut hits =
        knowledge.search(description, Mode::Hybrid, Filter::kind("case"), limit + 1).await?;
    if let Some(id) = exclude {
        let own = format!("case:{id}");
        hits.retain(|h| h.doc.id != own);
    }
    hits.truncate(limit);
    Ok(hits)
}
