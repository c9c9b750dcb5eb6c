//! The store and the audit trail on both backends: SQLite in a temporary folder always,
//! and PostgreSQL at `PIVOTWATCH_TEST_DATABASE_URL` when it is set (each test in a fresh
//! schema of its own). Without the variable the PostgreSQL half says it was skipped.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::HashSet;
use std::sync::Arc;

use pivotwatch::audit::{self, Actor, Kind};
use pivotwatch::store::{Backend, Store};
use serde_json::json;

mod common;
use common::{backends, drop_schema, exec, sqlite};

#[tokio::test]
async fn opening_twice_migrates_once() {
    for db in backends("opening_twice_migrates_once").await {
        // A second open over the same database finds every migration applied.
        let again = match &db.schema {
            Some(schema) => {
                let url = std::env::var("PIVOTWATCH_TEST_DATABASE_URL").unwrap();
                Store::open_in_schema(&url, Some(schema)).await.unwrap()
            }
            None => {
                let path = db._dir.as_ref().unwrap().path().join("pw.db");
                Store::open(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap()
            }
        };
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pivotwatch_migrations")
            .fetch_one(again.pool())
            .await
            .unwrap();
        assert_eq!(n, 8, "{}", db.name());
        drop_schema(&db).await;
    }
}

async fn fill(store: &Store, n: usize) {
    for i in 0..n {
        let actor = if i % 3 == 0 { Actor::System } else { Actor::User(format!("analyst{i}")) };
        audit::append(store, &actor, Kind::Decision, json!({"proposal": format!("p-{i}"), "i": i}))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_changed_record_breaks_the_chain_at_that_record() {
    for db in backends("a_changed_record_breaks_the_chain_at_that_record").await {
        fill(&db.store, 40).await;
        let fine = audit::verify(&db.store).await.unwrap();
        assert!(fine.ok && fine.records == 40 && fine.first_broken.is_none(), "{fine:?}");

        exec(
            &db,
            "UPDATE audit_records SET payload = '{\"i\":16,\"proposal\":\"p-99\"}' WHERE seq = 17",
        )
        .await;
        let broken = audit::verify(&db.store).await.unwrap();
        assert!(!broken.ok, "{}", db.name());
        assert_eq!(broken.first_broken, Some(17), "{}: {broken:?}", db.name());
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn removed_reordered_and_truncated_records_are_found() {
    for db in backends("removed_reordered_and_truncated_records_are_found").await {
        fill(&db.store, 30).await;
        exec(&db, "DELETE FROM audit_records WHERE seq = 30").await;
        let cut = audit::verify(&db.store).await.unwrap();
        assert_eq!(cut.first_broken, Some(30), "{}: {cut:?}", db.name());

        exec(&db, "DELETE FROM audit_records WHERE seq = 12").await;
        let hole = audit::verify(&db.store).await.unwrap();
        assert_eq!(hole.first_broken, Some(12), "{}: {hole:?}", db.name());

        // Swap the bodies of two records, keeping their numbers.
        exec(&db, "UPDATE audit_records SET seq = -5 WHERE seq = 5").await;
        exec(&db, "UPDATE audit_records SET seq = 5 WHERE seq = 6").await;
        exec(&db, "UPDATE audit_records SET seq = 6 WHERE seq = -5").await;
        let swapped = audit::verify(&db.store).await.unwrap();
        assert_eq!(swapped.first_broken, Some(5), "{}: {swapped:?}", db.name());
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn secrets_never_reach_the_trail() {
    for db in backends("secrets_never_reach_the_trail").await {
        let payload = json!({"kind": "servicenow_incident",
                             "request": {"headers": {"Authorization": "Basic c3ZjOmh1bnRlcjI="}},
                             "client_secret": "hunter2", "input_tokens": 90});
        audit::append(&db.store, &Actor::Agent, Kind::Execution, payload).await.unwrap();
        let raw: String = sqlx::query_scalar("SELECT payload FROM audit_records WHERE seq = 1")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert!(!raw.contains("hunter2") && !raw.contains("c3ZjOmh1bnRlcjI="), "{raw}");
        assert!(raw.contains("\"input_tokens\":90"), "{raw}");
        let exported = audit::export(&db.store, 0).await.unwrap();
        assert_eq!(exported[0].payload["client_secret"], "[redacted]");
        assert!(audit::verify(&db.store).await.unwrap().ok);
        drop_schema(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_make_one_unbroken_chain() {
    for db in backends("concurrent_appends_make_one_unbroken_chain").await {
        let n = if db.store.backend() == Backend::Postgres { 1000 } else { 200 };
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    audit::append(&store, &Actor::System, Kind::Proposal, json!({"n": i}))
                        .await
                        .unwrap()
                        .seq
                })
            })
            .collect();
        let mut seqs = HashSet::new();
        for task in tasks {
            assert!(seqs.insert(task.await.unwrap()), "a sequence number was handed out twice");
        }
        assert_eq!(seqs.len(), n);
        let check = audit::verify(&store).await.unwrap();
        assert!(check.ok && check.records == n as i64, "{}: {check:?}", db.name());
        // Every payload made it, once.
        let payloads: HashSet<i64> = audit::export(&store, 0)
            .await
            .unwrap()
            .iter()
            .map(|r| r.payload["n"].as_i64().unwrap())
            .collect();
        assert_eq!(payloads.len(), n);
        drop_schema(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_job_is_claimed_by_one_worker_and_leases_expire() {
    for db in backends("each_job_is_claimed_by_one_worker_and_leases_expire").await {
        let store = Arc::new(db.store.clone());
        let now = 1_000_000;
        for i in 0..120 {
            let key = format!("case-{i}");
            assert!(
                store.enqueue("triage", &json!({"i": i}), Some(&key), now).await.unwrap().is_some()
            );
        }
        // The same delivery again makes no second job.
        assert_eq!(store.enqueue("triage", &json!({}), Some("case-7"), now).await.unwrap(), None);
        // A job for later is not claimable now.
        store.enqueue("later", &json!({}), None, now + 60_000).await.unwrap();

        let workers: Vec<_> = (0..6)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    let name = format!("w{w}");
                    let mut mine = Vec::new();
                    while let Some(job) = store.claim("triage", &name, 30_000, now).await.unwrap() {
                        assert!(store.complete(job.id, &name).await.unwrap());
                        mine.push(job.payload["i"].as_i64().unwrap());
                    }
                    mine
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..120).collect::<Vec<i64>>(), "{}", db.name());

        // A worker that claims and goes silent loses the job when its lease runs out,
        // and its late outcome does not count.
        let later = now + 60_000;
        // A worker claims only its own kind of job.
        assert_eq!(store.claim("triage", "w0", 1_000, later).await.unwrap(), None);
        let job = store.claim("later", "sleepy", 1_000, later).await.unwrap().unwrap();
        assert_eq!(job.kind, "later");
        assert_eq!(store.claim("later", "other", 1_000, later + 500).await.unwrap(), None);
        let retaken = store.claim("later", "other", 1_000, later + 1_001).await.unwrap().unwrap();
        assert_eq!((retaken.id, retaken.attempts), (job.id, 2));
        assert!(!store.complete(job.id, "sleepy").await.unwrap());
        assert!(
            store.fail(job.id, "other", "tenant answered 503", Some(later + 5_000)).await.unwrap()
        );
        assert_eq!(store.claim("later", "other", 1_000, later + 4_999).await.unwrap(), None);
        let third = store.claim("later", "other", 1_000, later + 5_000).await.unwrap().unwrap();
        assert!(store.fail(third.id, "other", "gave up", None).await.unwrap());
        let counts = store.job_counts().await.unwrap();
        assert_eq!((counts.done, counts.failed, counts.queued, counts.running), (120, 1, 0, 0));
        drop_schema(&db).await;
    }
}

/// `pivotwatch audit verify` on a trail with an edited record exits 1 and names it.
#[tokio::test]
async fn the_verify_command_names_the_edited_record() {
    let db = sqlite().await;
    fill(&db.store, 12).await;
    let dir = db._dir.as_ref().unwrap().path();
    let url = format!("sqlite://{}?mode=rwc", dir.join("pw.db").display());
    let verify = |json: bool| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pivotwatch"));
        command.args(["audit", "verify", "--database-url", &url]);
        if json {
            command.arg("--json");
        }
        command.output().unwrap()
    };
    let fine = verify(true);
    assert_eq!(fine.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&fine.stdout).unwrap();
    assert_eq!(report, json!({"ok": true, "records": 12, "first_broken": null}));

    exec(&db, "UPDATE audit_records SET actor = 'user:mallory' WHERE seq = 8").await;
    let broken = verify(true);
    assert_eq!(broken.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&broken.stdout).unwrap();
    assert_eq!((report["ok"].clone(), report["first_broken"].clone()), (json!(false), json!(8)));
    let text = String::from_utf8_lossy(&verify(false).stdout).to_string();
    assert!(text.contains("broken at record 8"), "{text}");
}
