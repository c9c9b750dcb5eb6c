//! The approval gate on both backends: who may decide, quorum, expiry, and a seeded
//! random walk of proposals, decisions, crashes and retries after which no executor has
//! seen an action whose approvals fail the policy and every approved action took effect
//! exactly once.

#![allow(clippy::unwrap_used, reason = "a test should stop at the first unexpected error")]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use pivotwatch::actions::{
    Action, Approved, Executor, Gate, GateError, Outcome, Policy, State, Users, run_approved,
};
use pivotwatch::audit::{self, Actor};
use pivotwatch::store::now_ms;

mod common;
use common::{backends, drop_schema};

const USERS: &str = r#"
[[user]]
name = "ana"
roles = ["analyst"]

[[user]]
name = "bea"
roles = ["approver"]

[[user]]
name = "cy"
roles = ["approver", "analyst"]

[[user]]
name = "dee"
roles = ["admin"]

[[user]]
name = "vic"
roles = ["viewer"]
"#;

fn comment(i: usize) -> Action {
    Action::from_parts(
        "xdr_case_comment",
        json!({"incident_id": format!("{i}"), "comment": "seen"}),
    )
    .unwrap()
}

fn quarantine(criticality: &str) -> Action {
    Action::from_parts(
        "quarantine_device",
        json!({"device_id": "pump-0007", "ip": "10.20.1.17", "tag": "pw-quarantine",
               "timeout_secs": 3600, "criticality": criticality}),
    )
    .unwrap()
}

fn gate(db: &common::Db) -> Gate {
    Gate::new(db.store.clone(), Policy::default(), Users::parse(USERS).unwrap())
}

#[tokio::test]
async fn only_allowed_people_other_than_the_proposer_decide() {
    for db in backends("only_allowed_people_other_than_the_proposer_decide").await {
        let gate = gate(&db);
        let p = gate.propose(comment(1), &Actor::User("cy".into()), "post the write-up").await;
        let p = p.unwrap().unwrap();
        assert_eq!((p.state, p.needed), (State::Proposed, 1));

        assert!(matches!(gate.approve(&p.id, "cy", "").await, Err(GateError::OwnProposal(_))));
        assert!(matches!(gate.approve(&p.id, "ana", "").await, Err(GateError::NotAllowed { .. })));
        assert!(matches!(gate.approve(&p.id, "zed", "").await, Err(GateError::UnknownUser(_))));
        let approved = gate.approve(&p.id, "bea", "fine").await.unwrap();
        assert_eq!(approved.state, State::Approved);
        assert_eq!(approved.approvals, vec!["bea".to_string()]);
        assert!(matches!(gate.reject(&p.id, "dee", "").await, Err(GateError::NotPending { .. })));

        let r = gate.propose(comment(2), &Actor::System, "auto triage").await.unwrap().unwrap();
        let rejected = gate.reject(&r.id, "dee", "wrong case").await.unwrap();
        assert_eq!(rejected.state, State::Rejected);
        assert!(matches!(gate.approve(&r.id, "bea", "").await, Err(GateError::NotPending { .. })));

        // Every step is in the audit trail, which still verifies.
        let records = audit::export(&db.store, 0).await.unwrap();
        assert_eq!(records.len(), 4, "two proposals and two decisions");
        assert!(audit::verify(&db.store).await.unwrap().ok);
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn quarantining_a_critical_device_takes_two_distinct_approvers() {
    for db in backends("quarantining_a_critical_device_takes_two_distinct_approvers").await {
        let gate = gate(&db);
        let p =
            gate.propose(quarantine("critical"), &Actor::Agent, "beacon").await.unwrap().unwrap();
        assert_eq!(p.needed, 2);
        assert_eq!(gate.approve(&p.id, "bea", "").await.unwrap().state, State::Proposed);
        assert!(matches!(
            gate.approve(&p.id, "bea", "again").await,
            Err(GateError::AlreadyDecided { .. })
        ));
        assert_eq!(gate.approve(&p.id, "dee", "").await.unwrap().state, State::Approved);

        let low = gate.propose(quarantine("low"), &Actor::Agent, "beacon").await.unwrap().unwrap();
        assert_eq!(low.needed, 1);
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn proposals_expire_and_the_monitor_phase_proposes_nothing() {
    for db in backends("proposals_expire_and_the_monitor_phase_proposes_nothing").await {
        let gate = gate(&db);
        let p = gate.propose(comment(3), &Actor::System, "").await.unwrap().unwrap();
        assert_eq!(gate.expire(p.expires_at_ms - 1).await.unwrap(), 0);
        assert_eq!(gate.expire(p.expires_at_ms).await.unwrap(), 1);
        assert_eq!(gate.get(&p.id).await.unwrap().state, State::Expired);
        assert!(matches!(gate.approve(&p.id, "bea", "").await, Err(GateError::NotPending { .. })));

        let monitor = Policy::parse("phase = \"monitor\"\n").unwrap();
        let quiet = Gate::new(db.store.clone(), monitor, Users::parse(USERS).unwrap());
        assert!(quiet.propose(comment(4), &Actor::System, "").await.unwrap().is_none());
        drop_schema(&db).await;
    }
}

/// A target system that honours idempotency keys, as ServiceNow does with
/// `correlation_id`: a repeated key adds no second effect. It can be told to fail.
#[derive(Default)]
struct Target {
    effects: Mutex<HashMap<String, usize>>,
    /// Every approval set the executor was handed, to check against the policy.
    seen: Mutex<Vec<(String, Vec<String>)>>,
    fail_next: Mutex<u32>,
}

#[async_trait]
impl Executor for Target {
    fn handles(&self, _action: &Action) -> bool {
        true
    }

    async fn execute(&self, approved: &Approved) -> Outcome {
        self.seen.lock().unwrap().push((approved.key().to_string(), approved.approvers().to_vec()));
        {
            let mut fail = self.fail_next.lock().unwrap();
            if *fail > 0 {
                *fail -= 1;
                return Outcome::Retry("HTTP 503".into());
            }
        }
        let mut effects = self.effects.lock().unwrap();
        let count = effects.entry(approved.key().to_string()).or_default();
        if *count == 0 {
            *count = 1;
        }
        Outcome::Succeeded(json!({"sys_id": approved.key()}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_decisions_crashes_and_retries_execute_each_approval_once() {
    for db in backends("random_decisions_crashes_and_retries_execute_each_approval_once").await {
        let gate = gate(&db);
        let target = Target::default();
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let people = ["ana", "bea", "cy", "dee", "vic"];
        let mut ids = Vec::new();
        for step in 0..160 {
            match rng.gen_range(0..10) {
                0..=2 => {
                    let action = match rng.gen_range(0..3) {
                        0 => quarantine("critical"),
                        1 => quarantine("high"),
                        _ => comment(step),
                    };
                    let proposer = if rng.gen_bool(0.5) {
                        Actor::User(people[rng.gen_range(0..4)].into())
                    } else {
                        Actor::Agent
                    };
                    if let Some(p) = gate.propose(action, &proposer, "walk").await.unwrap() {
                        ids.push(p.id);
                    }
                }
                3..=6 if !ids.is_empty() => {
                    let id = &ids[rng.gen_range(0..ids.len())];
                    let who = people[rng.gen_range(0..people.len())];
                    // Refusals (not allowed, own proposal, already decided) are fine here;
                    // what matters is what reaches the executor.
                    let _ = if rng.gen_bool(0.85) {
                        gate.approve(id, who, "walk").await
                    } else {
                        gate.reject(id, who, "walk").await
                    };
                }
                7 => {
                    // A worker claims an execution and dies before finishing it: its
                    // lease (1 ms) runs out and the next worker takes the job over.
                    let _ = gate.claim_approved("doomed", 1, now_ms()).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                8 => {
                    *target.fail_next.lock().unwrap() = rng.gen_range(0..3);
                    run_approved(&gate, &[&target], "worker", Duration::from_secs(60))
                        .await
                        .unwrap();
                }
                _ => {}
            }
        }
        // Drain: retries become due, leases lapse; run until nothing is left.
        *target.fail_next.lock().unwrap() = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let all = gate.list(None).await.unwrap();
            if all.iter().all(|p| p.state != State::Approved && p.state != State::Executing) {
                break;
            }
            // Queue everything retrying for now, so the drain does not wait minutes.
            sqlx::query("UPDATE jobs SET run_after_ms = 0 WHERE state = 'queued'")
                .execute(db.store.pool())
                .await
                .unwrap();
            run_approved(&gate, &[&target], "drain", Duration::from_secs(60)).await.unwrap();
        }

        let proposals = gate.list(None).await.unwrap();
        let users = Users::parse(USERS).unwrap();
        let policy = Policy::default();
        for (key, approvers) in target.seen.lock().unwrap().iter() {
            let p = proposals.iter().find(|p| &p.id == key).unwrap();
            let mut distinct = approvers.clone();
            distinct.sort();
            distinct.dedup();
            let valid = distinct
                .iter()
                .filter(|n| Actor::User((*n).clone()).to_string() != p.proposer)
                .filter(|n| policy.may_approve(users.get(n).unwrap(), &p.action))
                .count();
            assert!(
                valid >= policy.approvals_needed(&p.action) as usize,
                "{p:?} ran with {approvers:?}"
            );
        }
        let effects = target.effects.lock().unwrap().clone();
        let mut approved_total = 0;
        for p in &proposals {
            let ran = effects.get(&p.id).copied().unwrap_or(0);
            match p.state {
                State::Succeeded => {
                    approved_total += 1;
                    assert_eq!(ran, 1, "{p:?}");
                }
                State::Proposed | State::Rejected | State::Expired => assert_eq!(ran, 0, "{p:?}"),
                other => panic!("{} left {other:?}", p.id),
            }
        }
        assert!(approved_total >= 5, "the walk should approve a few: {approved_total}");
        // However often delivery was retried, each success is recorded once.
        let doubles: Vec<(String, i64)> = sqlx::query_as(
            "SELECT proposal_id, COUNT(*) FROM executions WHERE outcome = 'succeeded' \
             GROUP BY proposal_id HAVING COUNT(*) > 1",
        )
        .fetch_all(db.store.pool())
        .await
        .unwrap();
        assert!(doubles.is_empty(), "{doubles:?}");
        assert!(audit::verify(&db.store).await.unwrap().ok);
        drop_schema(&db).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_proposals_and_decisions_loses_and_duplicates_nothing() {
    for db in backends("a_burst_of_proposals_and_decisions_loses_and_duplicates_nothing").await {
        let n = if db.store.backend() == pivotwatch::store::Backend::Postgres { 1000 } else { 150 };
        let gate = std::sync::Arc::new(gate(&db));
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let gate = std::sync::Arc::clone(&gate);
                tokio::spawn(async move {
                    let p =
                        gate.propose(comment(i), &Actor::Agent, "burst").await.unwrap().unwrap();
                    // Two approvers race on every proposal; one quorum, two decisions.
                    let (a, b) = tokio::join!(
                        gate.approve(&p.id, "bea", "x"),
                        gate.approve(&p.id, "cy", "y")
                    );
                    let outcomes: Vec<Result<State, String>> = [a, b]
                        .into_iter()
                        .map(|r| r.map(|p| p.state).map_err(|e| e.to_string()))
                        .collect();
                    assert!(outcomes.contains(&Ok(State::Approved)), "{outcomes:?}");
                    p.id
                })
            })
            .collect();
        let mut ids = std::collections::HashSet::new();
        for task in tasks {
            assert!(ids.insert(task.await.unwrap()));
        }
        let listed = gate.list(Some(State::Approved)).await.unwrap();
        assert_eq!(listed.len(), n, "{}", db.name());
        let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE kind = 'execute'")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        assert_eq!(jobs, n as i64, "one execution job per approved proposal");
        let check = audit::verify(&db.store).await.unwrap();
        assert!(check.ok, "{check:?}");
        let decisions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM decisions")
            .fetch_one(db.store.pool())
            .await
            .unwrap();
        // Each proposal's record, then one record per decision that was accepted.
        assert_eq!(check.records, n as i64 + decisions, "{}", db.name());
        drop_schema(&db).await;
    }
}

#[tokio::test]
async fn standing_approvals_cover_what_they_name_and_containment_only_in_contain() {
    for db in
        backends("standing_approvals_cover_what_they_name_and_containment_only_in_contain").await
    {
        let gate = gate(&db);
        // Comments may post without asking, once an approver has said so.
        let before = gate.propose(comment(1), &Actor::System, "").await.unwrap().unwrap();
        assert_eq!(before.state, State::Proposed);
        assert!(matches!(
            gate.grant_standing("xdr_case_comment", &[], "ana", "").await,
            Err(GateError::NotAllowed { .. })
        ));
        let standing =
            gate.grant_standing("xdr_case_comment", &[], "bea", "routine").await.unwrap();
        let after = gate.propose(comment(2), &Actor::System, "").await.unwrap().unwrap();
        assert_eq!(after.state, State::Approved);
        assert_eq!(after.approvals, vec![format!("standing:{standing}")]);
        // The grantor's own proposals are not approved by her standing approval.
        let own = gate.propose(comment(3), &Actor::User("bea".into()), "").await.unwrap().unwrap();
        assert_eq!(own.state, State::Proposed);

        // Containment needs an admin, named devices, and the contain phase.
        assert!(
            gate.grant_standing("quarantine_device", &["pump-*".into()], "bea", "").await.is_err()
        );
        assert!(gate.grant_standing("quarantine_device", &[], "dee", "").await.is_err());
        gate.grant_standing("quarantine_device", &["pump-*".into()], "dee", "playbook")
            .await
            .unwrap();
        let waits = gate.propose(quarantine("high"), &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(waits.state, State::Proposed, "recommend phase: containment still waits");
        assert!(matches!(
            gate.set_phase("bea", pivotwatch::actions::policy::Phase::Contain, "").await,
            Err(GateError::NotAllowed { .. })
        ));
        gate.set_phase("dee", pivotwatch::actions::policy::Phase::Contain, "pilot on pumps")
            .await
            .unwrap();
        let runs = gate.propose(quarantine("high"), &Actor::Agent, "").await.unwrap().unwrap();
        assert_eq!(runs.state, State::Approved);
        let other = Action::from_parts(
            "quarantine_device",
            json!({"device_id": "cam-0001", "ip": "10.41.1.10", "tag": "pw-quarantine",
                   "timeout_secs": 600, "criticality": "low"}),
        )
        .unwrap();
        assert_eq!(
            gate.propose(other, &Actor::Agent, "").await.unwrap().unwrap().state,
            State::Proposed
        );

        // Revoked, it covers nothing more, and a queued execution it approved no longer runs.
        gate.revoke_standing(&standing, "bea").await.unwrap();
        let later = gate.propose(comment(4), &Actor::System, "").await.unwrap().unwrap();
        assert_eq!(later.state, State::Proposed);
        let target = Target::default();
        run_approved(&gate, &[&target], "w", Duration::from_secs(60)).await.unwrap();
        assert_eq!(gate.get(&after.id).await.unwrap().state, State::Failed);
        assert_eq!(gate.get(&runs.id).await.unwrap().state, State::Succeeded);

        let records = audit::export(&db.store, 0).await.unwrap();
        assert!(
            records.iter().any(|r| r.kind == "config"
                && r.actor == "user:dee"
                && r.payload["to"] == "contain")
        );
        assert!(audit::verify(&db.store).await.unwrap().ok);
        drop_schema(&db).await;
    }
}
