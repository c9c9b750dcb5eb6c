//! Test databases: SQLite in a temporary folder always, PostgreSQL at
//! `PIVOTWATCH_TEST_DATABASE_URL` when it is set, each in a fresh schema.

#![allow(dead_code, reason = "each test file uses the part it needs")]
#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

pub mod fleet;
pub mod model;

use std::sync::atomic::{AtomicU64, Ordering};

use pivotwatch::store::{Backend, Store};
use sqlx::AssertSqlSafe;
use tempfile::TempDir;

/// A store to test against, and what keeps it alive.
pub struct Db {
    pub store: Store,
    pub _dir: Option<TempDir>,
    /// The PostgreSQL schema to drop afterwards.
    pub schema: Option<String>,
}

impl Db {
    pub fn name(&self) -> &'static str {
        match self.store.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

pub async fn sqlite() -> Db {
    let dir = TempDir::new().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("pw.db").display());
    Db { store: Store::open(&url).await.unwrap(), _dir: Some(dir), schema: None }
}

pub async fn postgres(test: &str) -> Option<Db> {
    let Ok(url) = std::env::var("PIVOTWATCH_TEST_DATABASE_URL") else {
        eprintln!("{test}: PostgreSQL skipped: PIVOTWATCH_TEST_DATABASE_URL is not set");
        return None;
    };
    static N: AtomicU64 = AtomicU64::new(0);
    let stamp =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let schema =
        format!("pw_test_{}_{stamp}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let store = Store::open_in_schema(&url, Some(&schema)).await.unwrap();
    Some(Db { store, _dir: None, schema: Some(schema) })
}

pub async fn backends(test: &str) -> Vec<Db> {
    let mut dbs = vec![sqlite().await];
    dbs.extend(postgres(test).await);
    dbs
}

pub async fn drop_schema(db: &Db) {
    if let Some(schema) = &db.schema {
        let sql = format!("DROP SCHEMA \"{schema}\" CASCADE");
        sqlx::query(AssertSqlSafe(sql)).execute(db.store.pool()).await.unwrap();
    }
}

pub async fn exec(db: &Db, sql: &str) {
    sqlx::query(AssertSqlSafe(sql.to_string())).execute(db.store.pool()).await.unwrap();
}

/// Runs the `pivotwatch` binary `bin` (a test's `CARGO_BIN_EXE_pivotwatch`) with `args`,
/// on the embedded defaults: every setting that would point it at a server is removed,
/// and with `data_dir` its files go there. Returns the exit code, stdout and stderr.
pub fn pivotwatch(
    bin: &str,
    args: &[&str],
    data_dir: Option<&std::path::Path>,
) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(bin);
    command.args(args);
    if let Some(dir) = data_dir {
        command.arg("--data-dir").arg(dir);
    }
    embedded_defaults(&mut command);
    let out = command.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Removes every setting that would point `command` at a server (a tenant, a database,
/// Qdrant, an embeddings endpoint, a model, a configuration file), so it runs on the
/// embedded defaults whatever the test's environment holds.
pub fn embedded_defaults(command: &mut std::process::Command) {
    for setting in [
        "PIVOTWATCH_XDR_URL",
        "PIVOTWATCH_DATABASE_URL",
        "PIVOTWATCH_QDRANT_URL",
        "PIVOTWATCH_EMBEDDINGS_URL",
        "PIVOTWATCH_LLM_BASE_URL",
        "PIVOTWATCH_CONFIG",
    ] {
        command.env_remove(setting);
    }
}
