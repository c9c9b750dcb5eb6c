//! Side effects, only with approval: typed actions (`kinds`), who may approve them
//! (`policy`), the gate that records proposals and decisions and alone builds an
//! `Approved` action (`gate`), and the executors that act on one.
//!
//! An executor's only input is `&Approved`; nothing else in the crate can produce one,
//! so a code path that executes an unapproved action does not compile.

pub mod gate;
mod http;
pub mod kinds;
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
pub use panos::{PanosConfig, PanosExecutor};
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
        // Retries back off with the attempt number: 5 s, 10 s, 20 s ... up to 10 min.
        let shift = u32::try_from(approved.attempt().clamp(1, 8) - 1).unwrap_or(0);
        let retry_at = crate::store::now_ms() + (5_000_i64 << shift).min(600_000);
        gate.finish(approved, outcome, retry_at).await?;
    }
    Ok(attempted)
}
