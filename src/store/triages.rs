//! Triage write-ups and the deliveries that ask for them. A Cortex XDR case has one
//! write-up, whatever the number of deliveries: a delivery of a (case, modification
//! time) already seen changes nothing; a newer modification bumps the write-up's
//! revision and queues one job to bring it up to date. The row and its job are written
//! in one transaction, so an accepted delivery is never lost and never doubled.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError, now_ms};

/// The job kind that runs a triage.
pub const TRIAGE_JOB: &str = "triage";

/// A write-up and where it stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TriageRecord {
    pub id: String,
    pub incident_id: Option<String>,
    pub modification_time: i64,
    pub revision: i64,
    /// `queued`, `done` or `failed`.
    pub state: String,
    pub request: Value,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// What a delivery did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A new write-up, queued.
    New(String),
    /// An existing write-up, queued again for a newer modification.
    Updated(String),
    /// Nothing new: this modification (or a newer one) was already accepted.
    Seen(String),
}

impl Delivery {
    pub fn id(&self) -> &str {
        match self {
            Delivery::New(id) | Delivery::Updated(id) | Delivery::Seen(id) => id,
        }
    }
}

fn new_id() -> String {
    use rand::Rng as _;
    format!("tr-{:016x}", rand::thread_rng().r#gen::<u64>())
}

async fn queue(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    revision: i64,
    key: &str,
) -> Result<(), sqlx::Error> {
    let payload = serde_json::json!({"triage": id, "revision": revision});
    sqlx::query(
        "INSERT INTO jobs (kind, payload, state, run_after_ms, dedupe_key, created_at_ms) \
         VALUES ($1, $2, 'queued', $3, $4, $3) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(TRIAGE_JOB)
    .bind(payload.to_string())
    .bind(now_ms())
    .bind(key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn record(row: &sqlx::any::AnyRow) -> Result<TriageRecord, StoreError> {
    let json = |text: Option<String>| -> Result<Option<Value>, StoreError> {
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|err| StoreError::Corrupt(format!("triage JSON: {err}")))
        })
        .transpose()
    };
    Ok(TriageRecord {
        id: row.try_get(0)?,
        incident_id: row.try_get(1)?,
        modification_time: row.try_get(2)?,
        revision: row.try_get(3)?,
        state: row.try_get(4)?,
        request: json(Some(row.try_get(5)?))?.unwrap_or(Value::Null),
        result: json(row.try_get(6)?)?,
        error: row.try_get(7)?,
        created_at_ms: row.try_get(8)?,
        updated_at_ms: row.try_get(9)?,
    })
}

const SELECT_ONE: &str = "SELECT id, incident_id, modification_time, revision, state, request, \
                          result, error, created_at_ms, updated_at_ms FROM triages WHERE id = $1";

impl Store {
    /// Accepts a delivery of a case at its modification time.
    pub async fn accept_case(
        &self,
        incident_id: &str,
        modification_time: i64,
        request: &Value,
    ) -> Result<Delivery, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let id = new_id();
        let inserted = sqlx::query(
            "INSERT INTO triages (id, incident_id, modification_time, revision, state, request, \
             created_at_ms, updated_at_ms) VALUES ($1, $2, $3, 1, 'queued', $4, $5, $5) \
             ON CONFLICT (incident_id) DO NOTHING",
        )
        .bind(&id)
        .bind(incident_id)
        .bind(modification_time)
        .bind(request.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let key = format!("xdr:{incident_id}:{modification_time}");
        if inserted.rows_affected() == 1 {
            queue(&mut tx, &id, 1, &key).await?;
            tx.commit().await?;
            return Ok(Delivery::New(id));
        }
        let updated = sqlx::query(
            "UPDATE triages SET modification_time = $1, revision = revision + 1, \
             state = 'queued', request = $2, updated_at_ms = $3 \
             WHERE incident_id = $4 AND modification_time < $1 RETURNING id, revision",
        )
        .bind(modification_time)
        .bind(request.to_string())
        .bind(now)
        .bind(incident_id)
        .fetch_optional(&mut *tx)
        .await?;
        let delivery = match updated {
            Some(row) => {
                let id: String = row.try_get(0)?;
                let revision: i64 = row.try_get(1)?;
                queue(&mut tx, &id, revision, &key).await?;
                Delivery::Updated(id)
            }
            None => {
                let row = sqlx::query("SELECT id FROM triages WHERE incident_id = $1")
                    .bind(incident_id)
                    .fetch_one(&mut *tx)
                    .await?;
                Delivery::Seen(row.try_get(0)?)
            }
        };
        tx.commit().await?;
        Ok(delivery)
    }

    /// Accepts a request for a triage that is not tied to a case (a finding).
    pub async fn accept_triage(&self, request: &Value) -> Result<String, StoreError> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO triages (id, incident_id, modification_time, revision, state, request, \
             created_at_ms, updated_at_ms) VALUES ($1, NULL, 0, 1, 'queued', $2, $3, $3)",
        )
        .bind(&id)
        .bind(request.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        queue(&mut tx, &id, 1, &format!("triage:{id}")).await?;
        tx.commit().await?;
        Ok(id)
    }

    pub async fn triage(&self, id: &str) -> Result<Option<TriageRecord>, StoreError> {
        let row = sqlx::query(SELECT_ONE).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(record).transpose()
    }

    /// Stores the outcome of revision `revision`. False when a newer revision was
    /// accepted meanwhile: its own job will write the up-to-date result.
    pub async fn finish_triage(
        &self,
        id: &str,
        revision: i64,
        outcome: Result<&Value, &str>,
    ) -> Result<bool, StoreError> {
        let (state, result, error) = match outcome {
            Ok(result) => ("done", Some(result.to_string()), None),
            Err(error) => ("failed", None, Some(error.to_string())),
        };
        let done = sqlx::query(
            "UPDATE triages SET state = $1, result = COALESCE($2, result), error = $3, \
             updated_at_ms = $4 WHERE id = $5 AND revision = $6",
        )
        .bind(state)
        .bind(result)
        .bind(error)
        .bind(now_ms())
        .bind(id)
        .bind(revision)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Write-ups by state, for metrics.
    pub async fn triage_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM triages GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }
}
