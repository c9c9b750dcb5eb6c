//! The approval gate: proposals, decisions, and the only way to obtain an `Approved`
//! action.
//!
//! States: proposed → approved | rejected | expired → executing → succeeded | failed.
//! Every transition is written with the decision or execution that caused it and an
//! audit record naming who and why. An approval that completes a proposal's quorum
//! queues an `execute` job keyed by the proposal, so a restart resumes it and a
//! double delivery does not run it twice.
//!
//! `Approved` has private fields and no constructor outside this file: an executor
//! cannot be handed an action that did not come through `claim_approved`, which checks
//! the stored decisions against the policy again before building one.

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Row};
use thiserror::Error;

use super::kinds::{Action, RiskClass, risk_of};
use super::notify::{NOTIFY_JOB, Notice};
use super::policy::{Phase, Policy, Role, Users};
use crate::audit::{self, Actor, Kind};
use crate::store::{Store, StoreError, now_ms};

/// The job kind that executes an approved proposal.
pub const EXECUTE_JOB: &str = "execute";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Proposed,
    Approved,
    Rejected,
    Expired,
    Executing,
    Succeeded,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Proposed => "proposed",
            State::Approved => "approved",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Executing => "executing",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<State, StoreError> {
        Ok(match text {
            "proposed" => State::Proposed,
            "approved" => State::Approved,
            "rejected" => State::Rejected,
            "expired" => State::Expired,
            "executing" => State::Executing,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            other => return Err(StoreError::Corrupt(format!("proposal state {other:?}"))),
        })
    }
}

/// A stored proposal with its approvals so far.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub id: String,
    pub action: Action,
    pub state: State,
    pub proposer: String,
    pub reason: String,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The people who approved, in order.
    pub approvals: Vec<String>,
    /// Distinct approvals the policy asks for.
    pub needed: u32,
}

#[derive(Debug, Error)]
pub enum GateError {
    #[error("no proposal {0}")]
    NotFound(String),
    #[error("{0} is not in the users file")]
    UnknownUser(String),
    #[error("{user} may not approve {kind}: the policy allows {roles}")]
    NotAllowed { user: String, kind: String, roles: String },
    #[error("{0} proposed this action and cannot decide on it")]
    OwnProposal(String),
    #[error("{user} already decided on proposal {id}")]
    AlreadyDecided { user: String, id: String },
    #[error("proposal {id} is {state}, not awaiting a decision")]
    NotPending { id: String, state: &'static str },
    #[error("invalid action: {0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for GateError {
    fn from(err: sqlx::Error) -> GateError {
        GateError::Store(StoreError::Sql(err))
    }
}

/// An action whose approvals satisfy the policy, ready for its executor. Only the gate
/// builds one.
#[derive(Debug)]
pub struct Approved {
    proposal_id: String,
    action: Action,
    approvers: Vec<String>,
    job_id: i64,
    worker: String,
    attempt: i64,
}

impl Approved {
    pub fn action(&self) -> &Action {
        &self.action
    }

    /// The idempotency key: the same for every attempt at this proposal, so a target
    /// that honours it (ServiceNow `correlation_id`, an XSOAR incident name) records
    /// the effect once however often delivery is retried.
    pub fn key(&self) -> &str {
        &self.proposal_id
    }

    pub fn approvers(&self) -> &[String] {
        &self.approvers
    }

    /// 1 for the first try, more after a crash or a retryable failure.
    pub fn attempt(&self) -> i64 {
        self.attempt
    }
}

/// How an execution ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// Worth trying again later (429, 5xx, a timeout).
    Retry(String),
    /// Worth trying again, but not before the target's requested pause (`Retry-After`).
    Throttled(String, std::time::Duration),
    Failed(String),
}

pub struct Gate {
    store: Store,
    policy: Policy,
    users: Users,
}

const SELECT_PROPOSAL: &str = "SELECT id, kind, params, state, proposer, reason, created_at_ms, \
     expires_at_ms FROM proposals";

impl Gate {
    pub fn new(store: Store, policy: Policy, users: Users) -> Gate {
        Gate { store, policy, users }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Records a proposal. In the `monitor` phase nothing is proposed (`None`).
    pub async fn propose(
        &self,
        action: Action,
        proposer: &Actor,
        reason: &str,
    ) -> Result<Option<Proposal>, GateError> {
        self.propose_keyed(action, proposer, reason, None).await
    }

    /// Records a proposal at most once per `key`: a second call with the same key (a
    /// job re-run after a crash, say) returns the first proposal and records nothing.
    pub async fn propose_once(
        &self,
        action: Action,
        proposer: &Actor,
        reason: &str,
        key: &str,
    ) -> Result<Option<Proposal>, GateError> {
        self.propose_keyed(action, proposer, reason, Some(key)).await
    }

    async fn propose_keyed(
        &self,
        action: Action,
        proposer: &Actor,
        reason: &str,
        key: Option<&str>,
    ) -> Result<Option<Proposal>, GateError> {
        action.validate().map_err(GateError::Invalid)?;
        let phase = self.phase().await?;
        if phase == Phase::Monitor {
            return Ok(None);
        }
        if let Actor::User(name) = proposer {
            self.users.get(name).ok_or_else(|| GateError::UnknownUser(name.clone()))?;
        }
        let now = now_ms();
        let id = new_id();
        let expires = now + self.policy.ttl_ms(&action);
        let inserted = sqlx::query(
            "INSERT INTO proposals (id, kind, params, risk, state, proposer, reason, \
             idempotency_key, created_at_ms, expires_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, 'proposed', $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(&id)
        .bind(action.kind())
        .bind(action.params().to_string())
        .bind(format!("{:?}", action.risk()).to_ascii_lowercase())
        .bind(proposer.to_string())
        .bind(reason)
        .bind(key.unwrap_or(&id))
        .bind(now)
        .bind(expires)
        .bind(now)
        .execute(self.store.pool())
        .await?;
        if inserted.rows_affected() == 0 {
            let existing: String =
                sqlx::query_scalar("SELECT id FROM proposals WHERE idempotency_key = $1")
                    .bind(key.unwrap_or(&id))
                    .fetch_one(self.store.pool())
                    .await?;
            return self.get(&existing).await.map(Some);
        }
        audit::append(
            &self.store,
            proposer,
            Kind::Proposal,
            json!({"proposal": id, "kind": action.kind(), "params": action.params(),
                   "risk": action.risk(), "reason": reason}),
        )
        .await?;
        if let Some(standing) = self.covering_standing(&action, phase, proposer).await? {
            self.approve_by_standing(&id, &standing, &action, reason).await?;
        }
        self.get(&id).await.map(Some)
    }

    /// The rollout phase in force: the last one an admin set, else the policy file's.
    pub async fn phase(&self) -> Result<Phase, GateError> {
        let set: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE name = 'phase'")
                .fetch_optional(self.store.pool())
                .await?;
        match set {
            Some(text) => Phase::parse(&text).map_err(|e| GateError::Store(StoreError::Corrupt(e))),
            None => Ok(self.policy.phase),
        }
    }

    /// Changes the rollout phase; only an admin may, and the change is audited.
    pub async fn set_phase(&self, user: &str, phase: Phase, reason: &str) -> Result<(), GateError> {
        self.require_admin(user)?;
        let before = self.phase().await?;
        sqlx::query(
            "INSERT INTO settings (name, value, set_by, at_ms) VALUES ('phase', $1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET value = $1, set_by = $2, at_ms = $3",
        )
        .bind(phase.as_str())
        .bind(user)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        audit::append(
            &self.store,
            &Actor::User(user.into()),
            Kind::Config,
            json!({"setting": "phase", "from": before.as_str(), "to": phase.as_str(),
                   "reason": reason}),
        )
        .await?;
        Ok(())
    }

    fn require_admin(&self, user: &str) -> Result<(), GateError> {
        let person = self.users.get(user).ok_or_else(|| GateError::UnknownUser(user.into()))?;
        if !person.roles.contains(&Role::Admin) {
            return Err(GateError::NotAllowed {
                user: user.into(),
                kind: "this setting".into(),
                roles: "[admin]".into(),
            });
        }
        Ok(())
    }

    /// Records `user`'s standing approval of `kind`: later proposals of that kind (for
    /// high-risk kinds, on the named devices and only in the `contain` phase) are
    /// approved without asking. `devices` are device or endpoint ids, or prefixes ending
    /// in `*`; a high-risk kind needs at least one, and only an admin may grant it.
    pub async fn grant_standing(
        &self,
        kind: &str,
        devices: &[String],
        user: &str,
        reason: &str,
    ) -> Result<String, GateError> {
        let person = self.users.get(user).ok_or_else(|| GateError::UnknownUser(user.into()))?;
        let rule = self
            .policy
            .kinds
            .get(kind)
            .ok_or_else(|| GateError::Invalid(format!("unknown action kind `{kind}`")))?;
        if !person.roles.iter().any(|role| rule.approver_roles.contains(role)) {
            return Err(GateError::NotAllowed {
                user: user.into(),
                kind: kind.into(),
                roles: format!("{:?}", rule.approver_roles).to_ascii_lowercase(),
            });
        }
        if risk_of(kind) == Some(RiskClass::High) {
            self.require_admin(user)?;
            if devices.is_empty() {
                return Err(GateError::Invalid(format!(
                    "a standing approval of {kind} must name the devices it covers"
                )));
            }
        }
        let id = format!("s-{}", &new_id()[2..]);
        sqlx::query(
            "INSERT INTO standing_approvals (id, kind, devices, granted_by, reason, at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&id)
        .bind(kind)
        .bind(json!(devices).to_string())
        .bind(user)
        .bind(reason)
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        audit::append(
            &self.store,
            &Actor::User(user.into()),
            Kind::Decision,
            json!({"standing_approval": id, "kind": kind, "devices": devices, "reason": reason}),
        )
        .await?;
        Ok(id)
    }

    /// Ends a standing approval; its grantor or an admin may.
    pub async fn revoke_standing(&self, id: &str, user: &str) -> Result<(), GateError> {
        let grantor: Option<String> =
            sqlx::query_scalar("SELECT granted_by FROM standing_approvals WHERE id = $1")
                .bind(id)
                .fetch_optional(self.store.pool())
                .await?;
        let grantor = grantor.ok_or_else(|| GateError::NotFound(id.into()))?;
        if grantor != user {
            self.require_admin(user)?;
        }
        sqlx::query("UPDATE standing_approvals SET revoked_at_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(self.store.pool())
            .await?;
        audit::append(
            &self.store,
            &Actor::User(user.into()),
            Kind::Decision,
            json!({"standing_approval": id, "decision": "revoke"}),
        )
        .await?;
        Ok(())
    }

    /// A live standing approval that covers `action` in `phase`, if any.
    async fn covering_standing(
        &self,
        action: &Action,
        phase: Phase,
        proposer: &Actor,
    ) -> Result<Option<String>, GateError> {
        let high = action.risk() == RiskClass::High;
        if high && phase != Phase::Contain {
            return Ok(None);
        }
        let rows = sqlx::query(
            "SELECT id, devices, granted_by FROM standing_approvals \
             WHERE kind = $1 AND revoked_at_ms IS NULL ORDER BY at_ms",
        )
        .bind(action.kind())
        .fetch_all(self.store.pool())
        .await?;
        for row in rows {
            let id: String = row.try_get(0)?;
            let devices: String = row.try_get(1)?;
            let grantor: String = row.try_get(2)?;
            let devices: Vec<String> = serde_json::from_str(&devices).unwrap_or_default();
            if Actor::User(grantor.clone()).to_string() == proposer.to_string() {
                continue;
            }
            let granted_by_allowed = self.users.get(&grantor).is_some_and(|u| {
                self.policy.may_approve(u, action) && (!high || u.roles.contains(&Role::Admin))
            });
            if granted_by_allowed && covers(&devices, action.subject(), high) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Approves a proposal on a standing approval's authority. A containment approved
    /// this way queues a notice to people in the same transaction: nobody pressed a
    /// button, so somebody must hear of it at once.
    async fn approve_by_standing(
        &self,
        id: &str,
        standing: &str,
        action: &Action,
        reason: &str,
    ) -> Result<(), GateError> {
        let now = now_ms();
        let notify = action.risk() == RiskClass::High;
        let mut tx = self.store.pool().begin().await?;
        sqlx::query(
            "INSERT INTO decisions (proposal_id, actor, decision, reason, at_ms) \
             VALUES ($1, $2, 'approve', 'standing approval', $3)",
        )
        .bind(id)
        .bind(format!("standing:{standing}"))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE proposals SET state = 'approved', updated_at_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        queue_execution(&mut tx, id, now).await?;
        if notify {
            let row =
                sqlx::query("SELECT granted_by, reason FROM standing_approvals WHERE id = $1")
                    .bind(standing)
                    .fetch_one(&mut *tx)
                    .await?;
            let granted_by: String = row.try_get(0)?;
            let granted_for: String = row.try_get(1)?;
            let notice = containment_notice(id, action, reason, &granted_by, &granted_for);
            queue_job(
                &mut tx,
                NOTIFY_JOB,
                &json!({"notice": notice}),
                &format!("notify:{id}"),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        audit::append(
            &self.store,
            &Actor::System,
            Kind::Decision,
            json!({"proposal": id, "decision": "approve", "standing_approval": standing,
                   "notify": notify}),
        )
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Proposal, GateError> {
        let row = sqlx::query(AssertSqlSafe(format!("{SELECT_PROPOSAL} WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.store.pool())
            .await?
            .ok_or_else(|| GateError::NotFound(id.to_string()))?;
        self.proposal_from(row).await
    }

    /// Proposals, newest first, optionally in one state.
    pub async fn list(&self, state: Option<State>) -> Result<Vec<Proposal>, GateError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_PROPOSAL} WHERE $1 = '' OR state = $1 ORDER BY created_at_ms DESC, id"
        )))
        .bind(state.map_or("", State::as_str))
        .fetch_all(self.store.pool())
        .await?;
        let mut proposals = Vec::with_capacity(rows.len());
        for row in rows {
            proposals.push(self.proposal_from(row).await?);
        }
        Ok(proposals)
    }

    async fn proposal_from(&self, row: sqlx::any::AnyRow) -> Result<Proposal, GateError> {
        let id: String = row.try_get(0)?;
        let kind: String = row.try_get(1)?;
        let params: String = row.try_get(2)?;
        let params: Value = serde_json::from_str(&params)
            .map_err(|err| StoreError::Corrupt(format!("proposal {id} params: {err}")))?;
        let action = Action::from_parts(&kind, params)
            .map_err(|err| StoreError::Corrupt(format!("proposal {id}: {err}")))?;
        let state: String = row.try_get(3)?;
        let approvals = self.approvers(&id).await?;
        Ok(Proposal {
            needed: self.policy.approvals_needed(&action),
            state: State::parse(&state)?,
            proposer: row.try_get(4)?,
            reason: row.try_get(5)?,
            created_at_ms: row.try_get(6)?,
            expires_at_ms: row.try_get(7)?,
            approvals,
            action,
            id,
        })
    }

    async fn approvers(&self, id: &str) -> Result<Vec<String>, GateError> {
        let rows = sqlx::query(
            "SELECT actor FROM decisions WHERE proposal_id = $1 AND decision = 'approve' \
             ORDER BY at_ms, id",
        )
        .bind(id)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>(0)).collect::<Result<_, _>>()?)
    }

    /// Records `user`'s approval; the one that completes the quorum moves the proposal
    /// to `approved` and queues its execution.
    pub async fn approve(&self, id: &str, user: &str, reason: &str) -> Result<Proposal, GateError> {
        self.decide(id, user, reason, true).await
    }

    pub async fn reject(&self, id: &str, user: &str, reason: &str) -> Result<Proposal, GateError> {
        self.decide(id, user, reason, false).await
    }

    async fn decide(
        &self,
        id: &str,
        user: &str,
        reason: &str,
        approve: bool,
    ) -> Result<Proposal, GateError> {
        let person = self.users.get(user).ok_or_else(|| GateError::UnknownUser(user.into()))?;
        let proposal = self.get(id).await?;
        if proposal.state != State::Proposed {
            return Err(GateError::NotPending { id: id.into(), state: proposal.state.as_str() });
        }
        if proposal.proposer == Actor::User(user.into()).to_string() {
            return Err(GateError::OwnProposal(user.into()));
        }
        if !self.policy.may_approve(person, &proposal.action) {
            let rule = self.policy.rule(&proposal.action);
            return Err(GateError::NotAllowed {
                user: user.into(),
                kind: proposal.action.kind().into(),
                roles: format!("{:?}", rule.approver_roles).to_ascii_lowercase(),
            });
        }
        let now = now_ms();
        if now >= proposal.expires_at_ms {
            self.expire(now).await?;
            return Err(GateError::NotPending { id: id.into(), state: State::Expired.as_str() });
        }

        let mut tx = self.store.pool().begin().await?;
        // Lock the proposal row (and take SQLite's write lock) before counting, so two
        // approvals that arrive together see each other.
        let locked = sqlx::query(
            "UPDATE proposals SET updated_at_ms = $1 WHERE id = $2 AND state = 'proposed'",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if locked.rows_affected() == 0 {
            // Another decision settled it first. Let go of the transaction before reading
            // again: on SQLite it holds the write lock the other connections wait for.
            tx.rollback().await?;
            let state = self.get(id).await.map_or("gone", |p| p.state.as_str());
            return Err(GateError::NotPending { id: id.into(), state });
        }
        let inserted = sqlx::query(
            "INSERT INTO decisions (proposal_id, actor, decision, reason, at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (proposal_id, actor) DO NOTHING",
        )
        .bind(id)
        .bind(user)
        .bind(if approve { "approve" } else { "reject" })
        .bind(reason)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(GateError::AlreadyDecided { user: user.into(), id: id.into() });
        }
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM decisions WHERE proposal_id = $1 AND decision = 'approve'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let new_state = if !approve {
            Some(State::Rejected)
        } else if approvals >= i64::from(proposal.needed) {
            Some(State::Approved)
        } else {
            None
        };
        if let Some(state) = new_state {
            sqlx::query("UPDATE proposals SET state = $1 WHERE id = $2")
                .bind(state.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        if new_state == Some(State::Approved) {
            queue_execution(&mut tx, id, now).await?;
        }
        crate::store::writeups::queue_refresh(&mut tx, id, now).await?;
        tx.commit().await?;
        audit::append(
            &self.store,
            &Actor::User(user.into()),
            Kind::Decision,
            json!({"proposal": id, "decision": if approve { "approve" } else { "reject" },
                   "reason": reason, "approvals": approvals, "needed": proposal.needed,
                   "state": new_state.unwrap_or(State::Proposed)}),
        )
        .await?;
        self.get(id).await
    }

    /// Moves every proposal past its lifetime to `expired`; returns how many.
    pub async fn expire(&self, now: i64) -> Result<u64, GateError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE proposals SET state = 'expired', updated_at_ms = $1 \
             WHERE state = 'proposed' AND expires_at_ms <= $1 RETURNING id",
        )
        .bind(now)
        .fetch_all(self.store.pool())
        .await?;
        for id in &ids {
            audit::append(
                &self.store,
                &Actor::System,
                Kind::Decision,
                json!({"proposal": id, "decision": "expire"}),
            )
            .await?;
        }
        Ok(ids.len() as u64)
    }

    /// Claims the next approved proposal to execute, for `worker`, checking its stored
    /// approvals against the policy once more. A proposal that no longer qualifies is
    /// failed and skipped.
    pub async fn claim_approved(
        &self,
        worker: &str,
        lease_ms: i64,
        now: i64,
    ) -> Result<Option<Approved>, GateError> {
        loop {
            let Some(job) = self.store.claim(EXECUTE_JOB, worker, lease_ms, now).await? else {
                return Ok(None);
            };
            let id = job.payload["proposal"].as_str().unwrap_or_default().to_string();
            let proposal = self.get(&id).await?;
            let qualifies = matches!(proposal.state, State::Approved | State::Executing)
                && self.quorum_holds(&proposal).await?;
            if !qualifies {
                self.store.complete(job.id, worker).await?;
                if proposal.state == State::Approved {
                    self.set_state(&id, State::Failed).await?;
                    audit::append(
                        &self.store,
                        &Actor::System,
                        Kind::Execution,
                        json!({"proposal": id, "state": "failed",
                               "detail": "its approvals no longer satisfy the policy"}),
                    )
                    .await?;
                }
                continue;
            }
            self.set_state(&id, State::Executing).await?;
            audit::append(
                &self.store,
                &Actor::System,
                Kind::Execution,
                json!({"proposal": id, "kind": proposal.action.kind(), "state": "executing",
                       "attempt": job.attempts, "worker": worker}),
            )
            .await?;
            return Ok(Some(Approved {
                proposal_id: id,
                approvers: proposal.approvals,
                action: proposal.action,
                job_id: job.id,
                worker: worker.into(),
                attempt: job.attempts,
            }));
        }
    }

    /// Distinct approvers, none of them the proposer, each allowed by the policy, at
    /// least as many as it asks for; or a standing approval that still covers it.
    async fn quorum_holds(&self, proposal: &Proposal) -> Result<bool, GateError> {
        if proposal.approvals.iter().any(|a| a.starts_with("standing:")) {
            let phase = self.phase().await?;
            let proposer = proposal.proposer.clone();
            let actor = match proposer.strip_prefix("user:") {
                Some(name) => Actor::User(name.into()),
                None if proposer == "agent" => Actor::Agent,
                None => Actor::System,
            };
            return Ok(self.covering_standing(&proposal.action, phase, &actor).await?.is_some());
        }
        let mut distinct: Vec<&String> = proposal.approvals.iter().collect();
        distinct.sort();
        distinct.dedup();
        let valid = distinct
            .iter()
            .filter(|name| Actor::User((**name).clone()).to_string() != proposal.proposer)
            .filter(|name| {
                self.users.get(name).is_some_and(|u| self.policy.may_approve(u, &proposal.action))
            })
            .count();
        Ok(valid >= proposal.needed as usize)
    }

    async fn set_state(&self, id: &str, state: State) -> Result<(), GateError> {
        sqlx::query("UPDATE proposals SET state = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(now_ms())
            .bind(id)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// Records how an execution ended. A retryable outcome leaves the proposal
    /// executing and its job queued again from `retry_at_ms`.
    pub async fn finish(
        &self,
        approved: Approved,
        outcome: Outcome,
        retry_at_ms: i64,
    ) -> Result<State, GateError> {
        let (state, detail) = match &outcome {
            Outcome::Succeeded(detail) => (State::Succeeded, detail.clone()),
            Outcome::Retry(why) | Outcome::Throttled(why, _) => {
                (State::Executing, json!({"retry": why}))
            }
            Outcome::Failed(why) => (State::Failed, json!({"error": why})),
        };
        let still_ours = match &outcome {
            Outcome::Retry(why) | Outcome::Throttled(why, _) => {
                self.store.fail(approved.job_id, &approved.worker, why, Some(retry_at_ms)).await?
            }
            Outcome::Failed(why) => {
                self.store.fail(approved.job_id, &approved.worker, why, None).await?
            }
            Outcome::Succeeded(_) => self.store.complete(approved.job_id, &approved.worker).await?,
        };
        if !still_ours {
            // The lease ran out and another worker owns this execution now; its outcome
            // is the one that counts.
            return Ok(State::Executing);
        }
        let mut detail = detail;
        audit::redact(&mut detail);
        sqlx::query(
            "INSERT INTO executions (proposal_id, attempt, outcome, detail, at_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&approved.proposal_id)
        .bind(approved.attempt)
        .bind(state.as_str())
        .bind(detail.to_string())
        .bind(now_ms())
        .execute(self.store.pool())
        .await?;
        self.set_state(&approved.proposal_id, state).await?;
        audit::append(
            &self.store,
            &Actor::System,
            Kind::Execution,
            json!({"proposal": approved.proposal_id, "kind": approved.action.kind(),
                   "attempt": approved.attempt, "state": state, "detail": detail}),
        )
        .await?;
        Ok(state)
    }
}

/// What people are told when a containment ran on a standing approval.
fn containment_notice(
    id: &str,
    action: &Action,
    reason: &str,
    granted_by: &str,
    granted_for: &str,
) -> Notice {
    let subject = action.subject().unwrap_or("(no device named)");
    let undo = match action {
        Action::QuarantineDevice { .. } => {
            format!("Undo it with a `release_device` proposal for {subject}.")
        }
        Action::XdrIsolateEndpoint { .. } => {
            format!("Undo it with an `xdr_unisolate_endpoint` proposal for {subject}.")
        }
        _ => "Review it before it is relied on.".to_string(),
    };
    Notice {
        proposal: id.to_string(),
        title: format!("Contained without asking: {} on {subject}", action.kind()),
        text: format!(
            "{} was approved by the standing approval {granted_by} granted ({granted_for}), \
             without anyone being asked, and runs now. {undo}",
            action.kind()
        ),
        facts: vec![
            ("Device".into(), subject.to_string()),
            ("Why".into(), reason.to_string()),
            ("Standing approval by".into(), granted_by.to_string()),
        ],
        ..Notice::default()
    }
}

/// Whether a standing approval's device list covers the action's subject. An empty list
/// covers any action of a low- or medium-risk kind, never a high-risk one.
fn covers(devices: &[String], subject: Option<&str>, high: bool) -> bool {
    if devices.is_empty() {
        return !high;
    }
    let Some(subject) = subject else { return false };
    devices.iter().any(|pattern| match pattern.strip_suffix('*') {
        Some(prefix) => subject.starts_with(prefix),
        None => subject == pattern,
    })
}

async fn queue_execution(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    now: i64,
) -> Result<(), GateError> {
    queue_job(tx, EXECUTE_JOB, &json!({"proposal": id}), &format!("execute:{id}"), now).await
}

/// Queues a job inside the caller's transaction, so it exists exactly when the decision
/// that caused it does; a job with the same key already queued is left as it is.
async fn queue_job(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: &str,
    payload: &Value,
    key: &str,
    now: i64,
) -> Result<(), GateError> {
    sqlx::query(
        "INSERT INTO jobs (kind, payload, state, run_after_ms, dedupe_key, created_at_ms) \
         VALUES ($1, $2, 'queued', $3, $4, $5) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(kind)
    .bind(payload.to_string())
    .bind(now)
    .bind(key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A proposal id: `p-` and 16 hex digits of randomness.
fn new_id() -> String {
    use rand::Rng;
    format!("p-{:016x}", rand::thread_rng().r#gen::<u64>())
}
