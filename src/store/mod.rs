//! Durable state shared by every replica: proposals, decisions, executions, the audit
//! trail and a job queue, in SQLite (the embedded default, one file under the data
//! directory) or PostgreSQL (when the database URL says so).
//!
//! Both backends are reached through sqlx's `Any` driver with one set of queries;
//! where they differ (auto-increment keys, row locking) the difference is spelled out
//! here and nowhere else. Schema changes are numbered migrations applied at open, under
//! an advisory lock on PostgreSQL so that replicas starting together apply each once.
//!
//! Times are Unix milliseconds (`BIGINT`), JSON is stored as text.

mod jobs;
pub mod triages;
pub mod writeups;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, AssertSqlSafe, Executor, Row};
use thiserror::Error;

pub use crate::timefmt::now_ms;
pub use jobs::{Job, JobCounts};

/// The database file inside the data directory when no URL is configured.
pub const SQLITE_FILE: &str = "pivotwatch.db";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither postgres://... nor sqlite:...")]
    UnsupportedUrl(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database content: {0}")]
    Corrupt(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A pool of connections to the one database every replica shares.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// Numbered schema changes. Each is a list of statements, written once per backend
/// where the dialects differ.
struct Migration {
    version: i64,
    sqlite: &'static [&'static str],
    postgres: &'static [&'static str],
}

const TABLES: [&str; 5] = [
    "CREATE TABLE proposals (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        params TEXT NOT NULL,
        risk TEXT NOT NULL,
        state TEXT NOT NULL,
        proposer TEXT NOT NULL,
        reason TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE INDEX proposals_state ON proposals (state, created_at_ms)",
    "CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        actor TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL)",
    "CREATE TABLE audit_head (
        id BIGINT PRIMARY KEY CHECK (id = 1),
        count BIGINT NOT NULL,
        last_hash TEXT NOT NULL)",
    "INSERT INTO audit_head (id, count, last_hash) VALUES (1, 0, \
     '0000000000000000000000000000000000000000000000000000000000000000')",
];

/// Tables whose keys auto-increment, which the dialects spell differently.
const SQLITE_V1: [&str; 3] = [
    "CREATE TABLE decisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        actor TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        UNIQUE (proposal_id, actor))",
    "CREATE TABLE executions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        attempt BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_ms BIGINT NOT NULL)",
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        run_after_ms BIGINT NOT NULL,
        locked_by TEXT,
        locked_until_ms BIGINT,
        last_error TEXT,
        dedupe_key TEXT UNIQUE,
        created_at_ms BIGINT NOT NULL)",
];

const POSTGRES_V1: [&str; 3] = [
    "CREATE TABLE decisions (
        id BIGSERIAL PRIMARY KEY,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        actor TEXT NOT NULL,
        decision TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        UNIQUE (proposal_id, actor))",
    "CREATE TABLE executions (
        id BIGSERIAL PRIMARY KEY,
        proposal_id TEXT NOT NULL REFERENCES proposals (id),
        attempt BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL,
        at_ms BIGINT NOT NULL)",
    "CREATE TABLE jobs (
        id BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        run_after_ms BIGINT NOT NULL,
        locked_by TEXT,
        locked_until_ms BIGINT,
        last_error TEXT,
        dedupe_key TEXT UNIQUE,
        created_at_ms BIGINT NOT NULL)",
];

const JOBS_INDEX: &str = "CREATE INDEX jobs_ready ON jobs (state, run_after_ms, id)";

/// Standing approvals and settings changed at run time (the rollout phase).
const STANDING: [&str; 2] = [
    "CREATE TABLE standing_approvals (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        devices TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms BIGINT NOT NULL,
        revoked_at_ms BIGINT)",
    "CREATE TABLE settings (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        set_by TEXT NOT NULL,
        at_ms BIGINT NOT NULL)",
];

/// Each job kind has its own worker loop, which claims by kind.
const JOBS_BY_KIND: [&str; 2] = [
    "DROP INDEX jobs_ready",
    "CREATE INDEX jobs_ready_by_kind ON jobs (kind, state, run_after_ms, id)",
];

/// Triaged cases and the verdicts analysts gave them, for comparison with new ones.
const CASES: [&str; 2] = [
    "CREATE TABLE cases (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL,
        vendor TEXT,
        model TEXT,
        summary TEXT NOT NULL,
        techniques TEXT NOT NULL,
        verdict TEXT,
        verdict_by TEXT,
        verdict_reason TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE INDEX cases_device ON cases (device_id)",
];

/// Triage write-ups: one per Cortex XDR case (updated in place when the case changes)
/// or per finding asked for through the API.
const TRIAGES: [&str; 2] = [
    "CREATE TABLE triages (
        id TEXT PRIMARY KEY,
        incident_id TEXT UNIQUE,
        modification_time BIGINT NOT NULL,
        revision BIGINT NOT NULL,
        state TEXT NOT NULL,
        request TEXT NOT NULL,
        result TEXT,
        error TEXT,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE INDEX triages_state ON triages (state)",
];

/// Chat messages that show a write-up, kept up to date in place.
const WRITE_UPS: [&str; 3] = [
    "CREATE TABLE write_ups (
        id TEXT PRIMARY KEY,
        notice TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL)",
    "CREATE TABLE write_up_proposals (
        proposal_id TEXT NOT NULL,
        write_up TEXT NOT NULL,
        PRIMARY KEY (proposal_id, write_up))",
    "CREATE TABLE write_up_messages (
        write_up TEXT NOT NULL,
        channel TEXT NOT NULL,
        reference TEXT NOT NULL,
        updated_at_ms BIGINT NOT NULL,
        PRIMARY KEY (write_up, channel))",
];

const MIGRATIONS: [Migration; 8] = [
    Migration { version: 1, sqlite: &TABLES, postgres: &TABLES },
    Migration { version: 2, sqlite: &SQLITE_V1, postgres: &POSTGRES_V1 },
    Migration { version: 3, sqlite: &[JOBS_INDEX], postgres: &[JOBS_INDEX] },
    Migration { version: 4, sqlite: &STANDING, postgres: &STANDING },
    Migration { version: 5, sqlite: &JOBS_BY_KIND, postgres: &JOBS_BY_KIND },
    Migration { version: 6, sqlite: &CASES, postgres: &CASES },
    Migration { version: 7, sqlite: &TRIAGES, postgres: &TRIAGES },
    Migration { version: 8, sqlite: &WRITE_UPS, postgres: &WRITE_UPS },
];

/// The advisory lock key that serialises migrations across replicas ("pw-migr").
const MIGRATION_LOCK: i64 = 0x0070_772d_6d69_6772;

impl Store {
    /// Opens (and migrates) the database at `url`: `postgres://...` or `sqlite:...`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_in_schema(url, None).await
    }

    /// The default database: `url` when one is configured, else a SQLite file in the
    /// data directory.
    pub async fn open_default(url: Option<&str>, data_dir: &Path) -> Result<Store, StoreError> {
        match url {
            Some(url) => Store::open(url).await,
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|err| StoreError::Corrupt(format!("{}: {err}", data_dir.display())))?;
                let file = data_dir.join(SQLITE_FILE);
                Store::open(&format!("sqlite://{}?mode=rwc", file.display())).await
            }
        }
    }

    /// Like `open`, with every connection's PostgreSQL `search_path` set to `schema`
    /// (created when missing), so that several test runs or tenants can share one
    /// database without seeing each other. Ignored for SQLite.
    pub async fn open_in_schema(url: &str, schema: Option<&str>) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::UnsupportedUrl(redact_url(url)));
        };
        let options = AnyConnectOptions::from_str(url)?;
        let schema = schema.filter(|_| backend == Backend::Postgres).map(quote_ident);
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match (backend, schema) {
                        (Backend::Sqlite, _) => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 10000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                        }
                        (Backend::Postgres, Some(schema)) => {
                            // The name is quoted by `quote_ident`, so it cannot break out
                            // of the statement.
                            let create = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
                            conn.execute(AssertSqlSafe(create)).await?;
                            let path = format!("SET search_path TO {schema}");
                            conn.execute(AssertSqlSafe(path)).await?;
                        }
                        (Backend::Postgres, None) => {}
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        let store = Store { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the migrations this database has not seen, each in its own transaction.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        let result = async {
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pivotwatch_migrations (
                    version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
            )
            .await?;
            let applied: Vec<i64> = sqlx::query("SELECT version FROM pivotwatch_migrations")
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|row| row.try_get::<i64, _>(0))
                .collect::<Result<_, _>>()?;
            for migration in &MIGRATIONS {
                if applied.contains(&migration.version) {
                    continue;
                }
                let statements = match self.backend {
                    Backend::Sqlite => migration.sqlite,
                    Backend::Postgres => migration.postgres,
                };
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                for statement in statements {
                    tx.execute(*statement).await?;
                }
                sqlx::query(
                    "INSERT INTO pivotwatch_migrations (version, applied_at_ms) VALUES ($1, $2)",
                )
                .bind(migration.version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
            }
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *conn)
                .await?;
        }
        Ok(result?)
    }
}

/// A PostgreSQL identifier, quoted.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => {
                    format!("{}{}:***{}", &url[..scheme_end + 3], &credentials[..colon], &url[at..])
                }
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact_url("postgres://pw:hunter2@db:5432/x"), "postgres://pw:***@db:5432/x");
        assert_eq!(redact_url("postgres://pw@db/x"), "postgres://pw@db/x");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
