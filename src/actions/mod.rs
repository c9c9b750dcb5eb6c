//! Side effects, only with approval: typed actions (`kinds`), who may approve them
//! (`policy`), the gate that records proposals and decisions and alone builds an
//! `Approved` action (`gate`), and the executors that act on one.
//!
//! An executor's only input is `&Approved`; nothing else in the crate can produce one,
//! so a code path that executes an unapproved action does not compile.

pub mod gate;
mod http;
pub mod kinds;
pub mod notify;
mod panos;
pub mod policy;
mod servicenow;
pub mod settings;
mod xdr;
mod xsoar;

use std::time::Duration;

use async_trait::async_trait;

pub use gate::{Approved, Gate, GateError, Outcome, Proposal, State};
pub use http::Secret;
pub use kinds::{Action, RiskClass};
pub use notify::{
    Channel, Connector, Notice, SlackChannel, TeamsChannel, TeamsConfig, deliver_notices,
};
pub use panos::{PanosConfig, PanosCredentials, PanosExecutor};
pub use policy::{Policy, Role, User, Users};
pub use servicenow::{ServiceNowAuth, ServiceNowConfig, ServiceNowExecutor};
pub use xdr::XdrExecutor;
pub use xsoar::{XsoarConfig, XsoarExecutor};

/// Something that carries out approved actions of some kinds.
#[async_trait]
pub trait Executor: Send + Sync {
    /// Whether this executor knows how to carry out `action`.
    fn handles(&self, action: &Action) -> bool;

    /// Carries the action out. Must be safe to call again with the same
    /// `approved.key()` after a crash: the effect happens once.
    async fn execute(&self, approved: &Approved) -> Outcome;
}

/// Executes approved proposals until none is ready. Returns how many were attempted.
pub async fn run_approved(
    gate: &Gate,
    executors: &[&dyn Executor],
    worker: &str,
    lease: Duration,
) -> Result<usize, GateError> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let mut attempted = 0;
    while let Some(approved) = gate.claim_approved(worker, lease_ms, crate::store::now_ms()).await?
    {
        attempted += 1;
        let outcome = match executors.iter().find(|e| e.handles(approved.action())) {
            Some(executor) => executor.execute(&approved).await,
            None => Outcome::Failed(format!(
                "no executor is configured for {}",
                approved.action().kind()
            )),
        };
        let retry_at = crate::store::now_ms() + retry_delay_ms(approved.attempt(), &outcome);
        gate.finish(approved, outcome, retry_at).await?;
    }
    Ok(attempted)
}

/// When to try again after `attempt` failed: a random time between half and all of
/// 5 s doubled per attempt (up to 10 min), so retries from many replicas spread out,
/// and never sooner than a pause the target asked for.
fn retry_delay_ms(attempt: i64, outcome: &Outcome) -> i64 {
    use rand::Rng;
    let shift = u32::try_from(attempt.clamp(1, 8) - 1).unwrap_or(0);
    let ceiling = (5_000_i64 << shift).min(600_000);
    let backoff = rand::thread_rng().gen_range(ceiling / 2..=ceiling);
    match outcome {
        Outcome::Throttled(_, after) => {
            backoff.max(i64::try_from(after.as_millis()).unwrap_or(i64::MAX))
        }
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_spread_out_grow_and_respect_the_targets_pause() {
        for attempt in 1..=10 {
            let ceiling = (5_000_i64 << (attempt.min(8) - 1)).min(600_000);
            let delay = retry_delay_ms(attempt, &Outcome::Retry("503".into()));
            assert!((ceiling / 2..=ceiling).contains(&delay), "{attempt}: {delay}");
        }
        let delays: std::collections::BTreeSet<i64> =
            (0..20).map(|_| retry_delay_ms(3, &Outcome::Retry("503".into()))).collect();
        assert!(delays.len() > 1, "jitter");
        let throttled = Outcome::Throttled("429".into(), Duration::from_secs(120));
        assert!(retry_delay_ms(1, &throttled) >= 120_000);
    }
}
