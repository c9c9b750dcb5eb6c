//! Chat messages kept up to date in place. A triage write-up is posted once per chat
//! channel; the store keeps the notice it shows, the proposals it offers decisions on,
//! and, per channel, what identifies the posted message (a Slack channel and `ts`, a
//! Teams conversation and activity id). A newer revision of the case, or a decision
//! on one of its proposals, queues a refresh that edits those messages rather than
//! posting new ones.

use std::collections::BTreeMap;

use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

impl Store {
    /// Stores (or replaces) the notice a write-up shows and the proposals it offers.
    pub async fn save_write_up(
        &self,
        id: &str,
        notice: &Value,
        proposals: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO write_ups (id, notice, updated_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET notice = EXCLUDED.notice, \
             updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(id)
        .bind(notice.to_string())
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        for proposal in proposals {
            sqlx::query(
                "INSERT INTO write_up_proposals (proposal_id, write_up) VALUES ($1, $2) \
                 ON CONFLICT (proposal_id, write_up) DO NOTHING",
            )
            .bind(proposal)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The notice a write-up shows now.
    pub async fn write_up(&self, id: &str) -> Result<Option<Value>, StoreError> {
        let row = sqlx::query("SELECT notice FROM write_ups WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let text: String = row.try_get(0)?;
            serde_json::from_str(&text)
                .map_err(|err| StoreError::Corrupt(format!("write-up {id}: {err}")))
        })
        .transpose()
    }

    /// Where the write-up was posted, by channel name.
    pub async fn write_up_messages(&self, id: &str) -> Result<BTreeMap<String, Value>, StoreError> {
        let rows =
            sqlx::query("SELECT channel, reference FROM write_up_messages WHERE write_up = $1")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        let mut messages = BTreeMap::new();
        for row in rows {
            let channel: String = row.try_get(0)?;
            let reference: String = row.try_get(1)?;
            let reference = serde_json::from_str(&reference)
                .map_err(|err| StoreError::Corrupt(format!("write-up {id} message: {err}")))?;
            messages.insert(channel, reference);
        }
        Ok(messages)
    }

    /// Records where the write-up was posted on one channel.
    pub async fn set_write_up_message(
        &self,
        id: &str,
        channel: &str,
        reference: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO write_up_messages (write_up, channel, reference, updated_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (write_up, channel) DO UPDATE \
             SET reference = EXCLUDED.reference, updated_at_ms = EXCLUDED.updated_at_ms",
        )
        .bind(id)
        .bind(channel)
        .bind(reference.to_string())
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The write-ups that offer a decision on `proposal`.
    pub async fn write_ups_showing(&self, proposal: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT write_up FROM write_up_proposals WHERE proposal_id = $1 ORDER BY write_up",
        )
        .bind(proposal)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }
}

/// Queues, inside a decision's transaction, a refresh of every write-up that shows
/// `proposal`, so the messages say who decided whichever way the decision was made
/// (chat button, API or command line).
pub(crate) async fn queue_refresh(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    proposal: &str,
    now: i64,
) -> Result<(), StoreError> {
    // Write-up ids are generated here (`tr-` and hex digits), so they need no escaping
    // inside the JSON string.
    sqlx::query(
        "INSERT INTO jobs (kind, payload, state, run_after_ms, dedupe_key, created_at_ms) \
         SELECT $1, '{\"write_up\":\"' || write_up || '\"}', 'queued', $2, NULL, $2 \
         FROM write_up_proposals WHERE proposal_id = $3",
    )
    .bind(crate::actions::notify::NOTIFY_JOB)
    .bind(now)
    .bind(proposal)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Where a proposal stands, for showing under a message: its state, when it expires,
/// and the decisions on it (who, `approve` or `reject`, when), oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionTrail {
    pub state: String,
    pub expires_at_ms: i64,
    pub decisions: Vec<(String, String, i64)>,
}

impl Store {
    pub async fn decision_trail(
        &self,
        proposal: &str,
    ) -> Result<Option<DecisionTrail>, StoreError> {
        let Some(row) = sqlx::query("SELECT state, expires_at_ms FROM proposals WHERE id = $1")
            .bind(proposal)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT actor, decision, at_ms FROM decisions WHERE proposal_id = $1 \
             ORDER BY at_ms, id",
        )
        .bind(proposal)
        .fetch_all(&self.pool)
        .await?;
        let decisions = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, sqlx::Error>>()?;
        Ok(Some(DecisionTrail {
            state: row.try_get(0)?,
            expires_at_ms: row.try_get(1)?,
            decisions,
        }))
    }
}
