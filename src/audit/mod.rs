//! The audit trail: every inference, tool call, proposal, decision, execution and
//! configuration change, as append-only records chained by SHA-256.
//!
//! Record `n` stores the hash of record `n - 1` and its own hash over
//! `seq, at_ms, actor, kind, payload, prev_hash`, so changing, removing or reordering a
//! record breaks the chain at that record. The head (the count and the last hash) is
//! kept in its own row and updated in the same transaction as each append, so cutting
//! records off the end is detected too. Appends lock the head row first, which puts
//! every writer, in every replica, in one line: the chain never forks.
//!
//! Payloads pass through `redact` before they are hashed and stored: a field whose name
//! says it holds a credential is replaced, so no secret reaches the trail in clear.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::store::{Store, StoreError, now_ms};

/// The hash that the first record points back to.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who did what a record describes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A person from the users file, by name.
    User(String),
    /// The model, acting for whoever asked it.
    Agent,
    /// pivotwatch itself: webhooks, workers, schedules.
    System,
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(name) => write!(f, "user:{name}"),
            Actor::Agent => f.write_str("agent"),
            Actor::System => f.write_str("system"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Inference,
    ToolCall,
    Proposal,
    Decision,
    Execution,
    /// A notice sent (or not) to people about an action taken on their standing approval.
    Notification,
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Inference => "inference",
            Kind::ToolCall => "tool_call",
            Kind::Proposal => "proposal",
            Kind::Decision => "decision",
            Kind::Execution => "execution",
            Kind::Notification => "notification",
            Kind::Config => "config",
        }
    }
}

/// One stored record, as `audit export` writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub kind: String,
    pub payload: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// What one model call did, for an `inference` record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inference {
    pub model: String,
    pub prompt_id: String,
    /// SHA-256 of the prompt template's text.
    pub prompt_hash: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub latency_ms: u64,
    /// Tool names called, in order.
    pub tool_calls: Vec<String>,
    /// Ids of the evidence the answer cited.
    pub evidence: Vec<String>,
}

/// The outcome of `verify`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: i64,
    /// The sequence number of the first record that was changed, removed or moved.
    pub first_broken: Option<i64>,
    /// What is wrong there, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Field names that hold credentials; their values never reach the trail.
const SECRET_WORDS: [&str; 8] =
    ["secret", "password", "passwd", "token", "api_key", "apikey", "authorization", "private_key"];

/// Replaces, at any depth, the text of every field whose name names a credential.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                let lower = name.to_ascii_lowercase().replace(['-', ' '], "_");
                // Credentials are text; a number under such a name (`input_tokens`) is not one.
                if SECRET_WORDS.iter().any(|word| lower.contains(word)) && field.is_string() {
                    *field = Value::String("[redacted]".into());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn record_hash(seq: i64, at_ms: i64, actor: &str, kind: &str, payload: &str, prev: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [seq.to_string().as_str(), &at_ms.to_string(), actor, kind, payload, prev] {
        // Each part is length-prefixed so that no two different records hash the same
        // bytes by moving text from one field into the next.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Appends one record and returns it.
pub async fn append(
    store: &Store,
    actor: &Actor,
    kind: Kind,
    mut payload: Value,
) -> Result<Record, StoreError> {
    redact(&mut payload);
    // serde_json keeps object keys sorted, so this text is canonical; it is stored as it
    // is hashed, so verification never depends on re-serialising.
    let payload_text = payload.to_string();
    let actor_text = actor.to_string();
    let mut tx = store.pool().begin().await?;
    // Writing the head row first takes its lock (PostgreSQL) or the database's write
    // lock (SQLite) before the head is read, so concurrent appends queue here.
    sqlx::query("UPDATE audit_head SET count = count WHERE id = 1").execute(&mut *tx).await?;
    let head = sqlx::query("SELECT count, last_hash FROM audit_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let count: i64 = head.try_get(0)?;
    let prev_hash: String = head.try_get(1)?;
    let seq = count + 1;
    let at_ms = now_ms();
    let hash = record_hash(seq, at_ms, &actor_text, kind.as_str(), &payload_text, &prev_hash);
    sqlx::query(
        "INSERT INTO audit_records (seq, at_ms, actor, kind, payload, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(seq)
    .bind(at_ms)
    .bind(&actor_text)
    .bind(kind.as_str())
    .bind(&payload_text)
    .bind(&prev_hash)
    .bind(&hash)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE audit_head SET count = $1, last_hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Record {
        seq,
        at_ms,
        actor: actor_text,
        kind: kind.as_str().into(),
        payload,
        prev_hash,
        hash,
    })
}

/// Recomputes the whole chain and checks it against the head.
pub async fn verify(store: &Store) -> Result<Verification, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, actor, kind, payload, prev_hash, hash FROM audit_records ORDER BY seq",
    )
    .fetch_all(store.pool())
    .await?;
    let broken = |seq: i64, records: i64, problem: String| Verification {
        ok: false,
        records,
        first_broken: Some(seq),
        problem: Some(problem),
    };
    let records = rows.len() as i64;
    let mut prev = GENESIS.to_string();
    for (index, row) in rows.iter().enumerate() {
        let expected = index as i64 + 1;
        let seq: i64 = row.try_get(0)?;
        if seq != expected {
            return Ok(broken(expected, records, format!("record {expected} is missing")));
        }
        let at_ms: i64 = row.try_get(1)?;
        let actor: String = row.try_get(2)?;
        let kind: String = row.try_get(3)?;
        let payload: String = row.try_get(4)?;
        let prev_hash: String = row.try_get(5)?;
        let hash: String = row.try_get(6)?;
        if prev_hash != prev {
            return Ok(broken(
                seq,
                records,
                format!("record {seq} does not point at the record before it"),
            ));
        }
        if record_hash(seq, at_ms, &actor, &kind, &payload, &prev_hash) != hash {
            return Ok(broken(
                seq,
                records,
                format!("record {seq} was changed after it was written"),
            ));
        }
        prev = hash;
    }
    let head = sqlx::query("SELECT count, last_hash FROM audit_head WHERE id = 1")
        .fetch_one(store.pool())
        .await?;
    let count: i64 = head.try_get(0)?;
    let last_hash: String = head.try_get(1)?;
    if count > records {
        return Ok(broken(
            records + 1,
            records,
            format!("the trail ends at record {records} but {count} were written"),
        ));
    }
    if count != records || last_hash != prev {
        return Ok(broken(
            count.max(1),
            records,
            "the head checkpoint does not match the last record".into(),
        ));
    }
    Ok(Verification { ok: true, records, first_broken: None, problem: None })
}

/// Records written at or after `since_ms`, oldest first.
pub async fn export(store: &Store, since_ms: i64) -> Result<Vec<Record>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, at_ms, actor, kind, payload, prev_hash, hash FROM audit_records \
         WHERE at_ms >= $1 ORDER BY seq",
    )
    .bind(since_ms)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|row| {
            let payload: String = row.try_get(4)?;
            Ok(Record {
                seq: row.try_get(0)?,
                at_ms: row.try_get(1)?,
                actor: row.try_get(2)?,
                kind: row.try_get(3)?,
                payload: serde_json::from_str(&payload).map_err(|err| {
                    StoreError::Corrupt(format!("audit payload is not JSON: {err}"))
                })?,
                prev_hash: row.try_get(5)?,
                hash: row.try_get(6)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_are_redacted_at_any_depth() {
        let mut payload = json!({
            "kind": "servicenow_incident",
            "auth": {"Authorization": "Basic abc", "user": "svc"},
            "headers": [{"X-Api-Key": "k"}, {"accept": "json"}],
            "webhook_secret": "s",
            "input_tokens": 812
        });
        redact(&mut payload);
        assert_eq!(payload["auth"]["Authorization"], "[redacted]");
        assert_eq!(payload["auth"]["user"], "svc");
        assert_eq!(payload["headers"][0]["X-Api-Key"], "[redacted]");
        assert_eq!(payload["headers"][1]["accept"], "json");
        assert_eq!(payload["webhook_secret"], "[redacted]");
        assert_eq!(payload["input_tokens"], 812);
        assert!(!payload.to_string().contains("abc"));
    }

    #[test]
    fn moving_text_between_fields_changes_the_hash() {
        let a = record_hash(1, 2, "user:ab", "c", "{}", GENESIS);
        let b = record_hash(1, 2, "user:a", "bc", "{}", GENESIS);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }
}
