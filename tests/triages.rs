//! Write-ups per Cortex XDR case: a delivery already seen adds nothing, a newer
//! modification bumps the one write-up and queues exactly one job, concurrent
//! deliveries of the same case make one write-up, and a stale job's outcome does not
//! overwrite the newer revision's. On SQLite and, when configured, PostgreSQL.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use pivotwatch::store::triages::{Delivery, TRIAGE_JOB};
use serde_json::json;

mod common;

#[tokio::test]
async fn one_write_up_per_case_and_one_job_per_modification() {
    for db in common::backends("one_write_up_per_case").await {
        let store = &db.store;
        let case =
            |mtime: i64| json!({"incident": {"incident_id": "412", "modification_time": mtime}});
        let first = store.accept_case("412", 1_000, &case(1_000)).await.unwrap();
        assert!(matches!(first, Delivery::New(_)), "{}", db.name());
        let id = first.id().to_string();
        // The same delivery again, and an older one: nothing new.
        assert_eq!(
            store.accept_case("412", 1_000, &case(1_000)).await.unwrap(),
            Delivery::Seen(id.clone())
        );
        assert_eq!(
            store.accept_case("412", 900, &case(900)).await.unwrap(),
            Delivery::Seen(id.clone())
        );
        // A newer modification updates the same write-up.
        assert_eq!(
            store.accept_case("412", 2_000, &case(2_000)).await.unwrap(),
            Delivery::Updated(id.clone())
        );
        let record = store.triage(&id).await.unwrap().unwrap();
        assert_eq!(
            (record.revision, record.modification_time, record.state.as_str()),
            (2, 2_000, "queued")
        );
        assert_eq!(record.request["incident"]["modification_time"], 2_000);
        // Two jobs in all, one per modification.
        let mut jobs = Vec::new();
        while let Some(job) = store.claim(TRIAGE_JOB, "w", 60_000, i64::MAX / 2).await.unwrap() {
            jobs.push(job.payload["revision"].as_i64().unwrap());
        }
        assert_eq!(jobs, vec![1, 2], "{}", db.name());
        // The first revision's result arrives late: it does not overwrite the second.
        assert!(!store.finish_triage(&id, 1, Ok(&json!({"narrative": "old"}))).await.unwrap());
        assert!(store.finish_triage(&id, 2, Ok(&json!({"narrative": "new"}))).await.unwrap());
        let record = store.triage(&id).await.unwrap().unwrap();
        assert_eq!(
            (record.state.as_str(), record.result.unwrap()["narrative"].as_str()),
            ("done", Some("new"))
        );
        common::drop_schema(&db).await;
    }
}

#[tokio::test]
async fn concurrent_deliveries_of_one_case_make_one_write_up() {
    for db in common::backends("concurrent_deliveries").await {
        let store = db.store.clone();
        let deliveries = (0..16).map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                store.accept_case("77", 5_000 + (n % 2), &json!({"n": n})).await.unwrap()
            })
        });
        let mut new = 0;
        let mut ids = std::collections::BTreeSet::new();
        for delivery in deliveries {
            let delivery = delivery.await.unwrap();
            new += usize::from(matches!(delivery, Delivery::New(_)));
            ids.insert(delivery.id().to_string());
        }
        assert_eq!((new, ids.len()), (1, 1), "{}", db.name());
        let mut jobs = 0;
        while store.claim(TRIAGE_JOB, "w", 60_000, i64::MAX / 2).await.unwrap().is_some() {
            jobs += 1;
        }
        // One job for 5,000 and at most one for 5,001 (if it arrived after 5,000).
        assert!((1..=2).contains(&jobs), "{jobs}");
        common::drop_schema(&db).await;
    }
}
