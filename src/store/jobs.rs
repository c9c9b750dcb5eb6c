//! The job queue: work that must survive a restart (a triage to run, an approved action
//! to execute), claimed by one worker at a time across every replica.
//!
//! A claim is one `UPDATE ... RETURNING` of the oldest ready job. On PostgreSQL the job is
//! picked with `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other
//! nor take the same job; SQLite runs one writer at a time, which gives the same
//! guarantee. A claim is a lease: a worker that dies leaves its job to be claimed again
//! once the lease runs out, and finishing a job checks the lease is still the worker's,
//! so a worker that was presumed dead cannot overwrite its successor's outcome.

use serde_json::Value;
use sqlx::Row;

use super::{Backend, Store, StoreError, now_ms};

/// A claimed job.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    /// Claims so far, this one included.
    pub attempts: i64,
}

/// Jobs by state, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JobCounts {
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
}

const CLAIM_POSTGRES: &str = "UPDATE jobs SET state = 'running', locked_by = $1, \
     locked_until_ms = $2, attempts = attempts + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE kind = $4 AND ((state = 'queued' AND run_after_ms <= $3) \
           OR (state = 'running' AND locked_until_ms < $3)) \
        ORDER BY run_after_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     RETURNING id, kind, payload, attempts";

const CLAIM_SQLITE: &str = "UPDATE jobs SET state = 'running', locked_by = $1, \
     locked_until_ms = $2, attempts = attempts + 1 \
     WHERE id = (SELECT id FROM jobs \
        WHERE kind = $4 AND ((state = 'queued' AND run_after_ms <= $3) \
           OR (state = 'running' AND locked_until_ms < $3)) \
        ORDER BY run_after_ms, id LIMIT 1) \
     RETURNING id, kind, payload, attempts";

impl Store {
    /// Queues a job to run from `run_after_ms` on. With a `dedupe_key` already queued
    /// (or run), nothing is added and `None` is returned: a webhook delivered twice
    /// makes one job.
    pub async fn enqueue(
        &self,
        kind: &str,
        payload: &Value,
        dedupe_key: Option<&str>,
        run_after_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "INSERT INTO jobs (kind, payload, state, run_after_ms, dedupe_key, created_at_ms) \
             VALUES ($1, $2, 'queued', $3, $4, $5) \
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(kind)
        .bind(payload.to_string())
        .bind(run_after_ms)
        .bind(dedupe_key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get::<i64, _>(0)).transpose()?)
    }

    /// Claims the oldest ready job of `kind` (or one whose lease ran out) for `worker`
    /// until `now_ms + lease_ms`. Each kind has its own worker loop, so a backlog of one
    /// kind never holds up another.
    pub async fn claim(
        &self,
        kind: &str,
        worker: &str,
        lease_ms: i64,
        now_ms: i64,
    ) -> Result<Option<Job>, StoreError> {
        let sql = match self.backend {
            Backend::Postgres => CLAIM_POSTGRES,
            Backend::Sqlite => CLAIM_SQLITE,
        };
        let row = sqlx::query(sql)
            .bind(worker)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(now_ms)
            .bind(kind)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let payload: String = row.try_get(2)?;
        Ok(Some(Job {
            id: row.try_get(0)?,
            kind: row.try_get(1)?,
            payload: serde_json::from_str(&payload)
                .map_err(|err| StoreError::Corrupt(format!("job payload is not JSON: {err}")))?,
            attempts: row.try_get(3)?,
        }))
    }

    /// Extends a running job's lease to `until_ms`, while it is still `worker`'s. A
    /// worker renews while it works, so a short lease recovers quickly from a dead
    /// worker without taking a live one's job away.
    pub async fn extend_lease(
        &self,
        job_id: i64,
        worker: &str,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let extended = sqlx::query(
            "UPDATE jobs SET locked_until_ms = $1 \
             WHERE id = $2 AND state = 'running' AND locked_by = $3",
        )
        .bind(until_ms)
        .bind(job_id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(extended.rows_affected() == 1)
    }

    /// Marks a job done. False when the lease is no longer `worker`'s (it ran out and
    /// another worker claimed the job): the caller's outcome does not count.
    pub async fn complete(&self, job_id: i64, worker: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'done', locked_by = NULL, locked_until_ms = NULL \
             WHERE id = $1 AND state = 'running' AND locked_by = $2",
        )
        .bind(job_id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a failed attempt: the job runs again from `retry_at_ms`, or, with
    /// `None`, is failed for good. False when the lease is no longer `worker`'s.
    pub async fn fail(
        &self,
        job_id: i64,
        worker: &str,
        error: &str,
        retry_at_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let (state, run_after) = match retry_at_ms {
            Some(at) => ("queued", at),
            None => ("failed", 0),
        };
        let failed = sqlx::query(
            "UPDATE jobs SET state = $1, run_after_ms = CASE WHEN $1 = 'queued' THEN $2 \
             ELSE run_after_ms END, last_error = $3, locked_by = NULL, locked_until_ms = NULL \
             WHERE id = $4 AND state = 'running' AND locked_by = $5",
        )
        .bind(state)
        .bind(run_after)
        .bind(error)
        .bind(job_id)
        .bind(worker)
        .execute(&self.pool)
        .await?;
        Ok(failed.rows_affected() == 1)
    }

    pub async fn job_counts(&self) -> Result<JobCounts, StoreError> {
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = JobCounts::default();
        for row in rows {
            let state: String = row.try_get(0)?;
            let n: i64 = row.try_get(1)?;
            match state.as_str() {
                "queued" => counts.queued = n,
                "running" => counts.running = n,
                "done" => counts.done = n,
                "failed" => counts.failed = n,
                other => return Err(StoreError::Corrupt(format!("job state {other:?}"))),
            }
        }
        Ok(counts)
    }
}
