//! The triage workers and the polling fallback. A worker claims one queued triage at a
//! time (a lease, so a worker that dies leaves its job to another), runs it with the
//! system as proposer, stores the write-up under the revision it was queued for, and
//! for a new case proposes the case comment, which is posted only once approved (or
//! under a standing approval).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::AppState;
use crate::actions::notify::Decision;
use crate::actions::notify::NOTIFY_JOB;
use crate::actions::{Action, Notice};
use crate::agent::TriageResult;
use crate::agent::triage::finding_for_incident;
use crate::agent::{TriageOptions, triage};
use crate::audit::Actor;
use crate::knowledge::cases::{self, Case};
use crate::store::now_ms;
use crate::store::triages::TRIAGE_JOB;
use crate::xdr::{IncidentFilter, IncidentQuery};

/// Attempts before a triage is failed for good.
const ATTEMPTS: i64 = 5;

/// Claims jobs of `kind` one at a time and hands each to `handle` until `stop` turns
/// true: done on `Ok`, tried again with a doubling pause on `Err` until `attempts`,
/// then failed for good. Idle, it looks again every 200 ms.
pub(crate) async fn claim_loop<F, Fut>(
    state: &AppState,
    kind: &str,
    worker: &str,
    attempts: i64,
    stop: &mut watch::Receiver<bool>,
    handle: F,
) where
    F: Fn(crate::store::Job) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let lease_ms = state.config.job_lease.as_millis() as i64;
    while !*stop.borrow() {
        match state.store.claim(kind, worker, lease_ms, now_ms()).await {
            Ok(Some(job)) => {
                let (id, attempt) = (job.id, job.attempts);
                match handle(job).await {
                    Ok(()) => {
                        let _ = state.store.complete(id, worker).await;
                    }
                    Err(err) => {
                        tracing::warn!(kind, attempt, "a job failed: {err}");
                        let retry =
                            (attempt < attempts).then(|| now_ms() + 2_000 * (1 << attempt.min(8)));
                        let _ = state.store.fail(id, worker, &err, retry).await;
                    }
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(err) => {
                tracing::error!(kind, "claiming a job failed: {err}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Claims and runs triages until `stop` turns true. While a triage runs its lease is
/// renewed; one that fails for good is marked failed on its write-up too.
pub async fn run(state: Arc<AppState>, n: usize, mut stop: watch::Receiver<bool>) {
    let worker = format!("{}-{}-{n}", hostname(), std::process::id());
    let (shared, me) = (&*state, worker.as_str());
    claim_loop(shared, TRIAGE_JOB, me, ATTEMPTS, &mut stop, |job| async move {
        let id = job.payload["triage"].as_str().unwrap_or_default().to_string();
        let revision = job.payload["revision"].as_i64().unwrap_or(1);
        let lease_ms = shared.config.job_lease.as_millis() as i64;
        let renew = async {
            loop {
                tokio::time::sleep(shared.config.job_lease / 3).await;
                let _ = shared.store.extend_lease(job.id, me, now_ms() + lease_ms).await;
            }
        };
        let outcome = tokio::select! {
            outcome = run_one(shared, &id, revision) => outcome,
            () = renew => Ok(()),
        };
        if let Err(err) = &outcome
            && job.attempts >= ATTEMPTS
        {
            let _ = shared.store.finish_triage(&id, revision, Err(err)).await;
        }
        outcome
    })
    .await;
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "pivotwatch".into())
}

async fn run_one(state: &AppState, id: &str, revision: i64) -> Result<(), String> {
    let record = state
        .store
        .triage(id)
        .await
        .map_err(|err| err.to_string())?
        .ok_or_else(|| format!("triage {id} is not in the database"))?;
    let request = &record.request;
    let incident_id =
        record.incident_id.clone().or_else(|| request["incident_id"].as_str().map(str::to_string));
    let (finding, case_text) = match (&incident_id, request.get("finding")) {
        (Some(incident), _) => {
            let (finding, text) = finding_for_incident(&*state.xdr, incident).await?;
            (finding, Some(text))
        }
        (None, Some(finding)) => (
            serde_json::from_value(finding.clone()).map_err(|err| format!("finding: {err}"))?,
            None,
        ),
        (None, None) => return Err("the request names neither a case nor a finding".into()),
    };
    let proposer = match request["requested_by"].as_str() {
        Some(_) => Actor::Agent,
        None => Actor::System,
    };
    let options = TriageOptions {
        llm: state.llm.as_deref(),
        store: Some(&state.store),
        gate: Some(&state.gate),
        incident_id: incident_id.clone(),
        case_text,
        proposer: proposer.clone(),
        ..TriageOptions::default()
    };
    let mut result = triage(&finding, &*state.xdr, Some(&state.knowledge), &options).await;
    state.metrics.triages_run.fetch_add(1, Ordering::Relaxed);
    state.metrics.input_tokens.fetch_add(result.tokens.0, Ordering::Relaxed);
    state.metrics.output_tokens.fetch_add(result.tokens.1, Ordering::Relaxed);
    // The case comment, proposed once per case: a later revision finds the first
    // proposal (and shows it in the write-up) rather than adding a second.
    if let Some(incident) = &incident_id {
        let comment = format!(
            "pivotwatch triage ({} planner): {}",
            result.planner,
            first_sentences(&result.narrative, 5)
        );
        let action = Action::XdrCaseComment { incident_id: incident.clone(), comment };
        let key = format!("case-comment:{incident}");
        match state
            .gate
            .propose_once(action, &proposer, "post the triage write-up on the case", &key)
            .await
        {
            Ok(Some(proposal)) if !result.proposals.contains(&proposal.id) => {
                result.proposals.push(proposal.id)
            }
            Ok(_) => {}
            Err(err) => return Err(format!("proposing the case comment: {err}")),
        }
    }
    let value = serde_json::to_value(&result).map_err(|err| err.to_string())?;
    // The write-up for the chat channels: stored, then queued once per revision (before
    // the result is stored, so a crash in between posts it on the re-run rather than
    // never). The first revision posts it; later ones, and decisions on its
    // proposals, edit the same messages.
    let mut notice = write_up(incident_id.as_deref(), &result);
    // Proposals an earlier revision offered stay offered (or show their decision).
    let mut offered: Vec<String> = match state.store.write_up(id).await {
        Ok(Some(earlier)) => serde_json::from_value::<Notice>(earlier)
            .map(|n| n.decisions.into_iter().map(|d| d.proposal).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    for proposal in &result.proposals {
        if !offered.contains(proposal) {
            offered.push(proposal.clone());
        }
    }
    for proposal in offered.iter().take(5) {
        if let Ok(p) = state.gate.get(proposal).await {
            notice.decisions.push(Decision {
                proposal: proposal.clone(),
                label: p.action.kind().replace('_', " "),
                ..Decision::default()
            });
        }
    }
    let offered: Vec<String> = notice.decisions.iter().map(|d| d.proposal.clone()).collect();
    let notice = serde_json::to_value(&notice).map_err(|err| err.to_string())?;
    state.store.save_write_up(id, &notice, &offered).await.map_err(|err| err.to_string())?;
    state
        .store
        .enqueue(
            NOTIFY_JOB,
            &json!({"write_up": id, "post": true}),
            Some(&format!("write-up:{id}:{revision}")),
            now_ms(),
        )
        .await
        .map_err(|err| err.to_string())?;
    let current =
        state.store.finish_triage(id, revision, Ok(&value)).await.map_err(|err| err.to_string())?;
    if current {
        let case = Case::from_triage(incident_id.as_deref(), &finding, &result.narrative);
        cases::record_triage(&state.store, &case).await.map_err(|err| err.to_string())?;
        let docs = [case.doc()];
        if let Err(err) = state.knowledge.add(&docs).await {
            tracing::warn!("the case could not be indexed: {err}");
        }
    }
    Ok(())
}

/// The chat message for a triage: the device and its criticality, the risk and
/// severity, at most five sentences of narrative, up to five evidence lines, the
/// ATT&CK techniques linked, and who wrote it. The decisions are added by the caller.
pub fn write_up(incident_id: Option<&str>, result: &TriageResult) -> Notice {
    let device = &result.device;
    let name = if device.name.is_empty() { &result.device_id } else { &device.name };
    let what = [&device.vendor, &device.model, &device.kind]
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut facts = vec![
        (
            "Device".to_string(),
            if what.is_empty() {
                format!("{name} ({})", result.ip)
            } else {
                format!("{name} ({}), {what}", result.ip)
            },
        ),
        (
            "Criticality".to_string(),
            if device.criticality.is_empty() {
                "not in the inventory".to_string()
            } else {
                device.criticality.clone()
            },
        ),
        ("Risk".to_string(), format!("{:.0} / 100", result.risk)),
        ("Severity".to_string(), result.severity.as_str().to_string()),
    ];
    if !device.segment.is_empty() {
        facts.push(("Segment".to_string(), device.segment.clone()));
    }
    if let Some(case) = incident_id {
        facts.push(("Case".to_string(), case.to_string()));
    }
    let by = match (&result.model, &result.fallback) {
        (Some(model), None) => format!("written by {model}"),
        (_, Some(why)) => format!("written by the offline planner ({why})"),
        (None, None) => "written by the offline planner".to_string(),
    };
    Notice {
        proposal: result.proposals.first().cloned().unwrap_or_default(),
        title: format!(
            "{}{name}: risk {:.0}, {}",
            incident_id.map(|i| format!("Case {i}, ")).unwrap_or_default(),
            result.risk,
            result.severity.as_str()
        ),
        text: first_sentences(&result.narrative, 5),
        facts,
        evidence: result
            .evidence
            .iter()
            .take(5)
            .map(|item| format!("{}: {}", item.id, clip_line(&item.summary, 200)))
            .collect(),
        techniques: result
            .techniques
            .iter()
            .map(|t| (format!("{} {}", t.id, t.name), t.url.clone()))
            .collect(),
        decisions: Vec::new(),
        footer: Some(by),
    }
}

fn clip_line(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

/// Posts queued notices (write-ups, containment notices) to the configured channels
/// until `stop` turns true.
pub async fn notify(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    let worker = format!("{}-{}-notify", hostname(), std::process::id());
    let channels: Vec<&dyn crate::actions::Channel> = state.channels.iter().map(|c| &**c).collect();
    while !*stop.borrow() {
        if let Err(err) = crate::actions::deliver_notices(
            &state.store,
            &channels,
            &worker,
            state.config.job_lease,
        )
        .await
        {
            tracing::error!("delivering notices failed: {err}");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// The first `n` sentences of a narrative, on one line.
fn first_sentences(text: &str, n: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let mut count = 0;
    for (idx, c) in flat.char_indices() {
        if c == '.' && flat[idx + 1..].starts_with(' ') {
            count += 1;
            if count == n {
                out = flat[..=idx].to_string();
                break;
            }
        }
    }
    if out.is_empty() { flat } else { out }
}

/// The setting that holds the last poll's high-water mark, shared by all replicas.
const POLL_MARK: &str = "xdr.poll_mark_ms";

/// For tenants that cannot send webhooks: every interval, the cases modified since the
/// last poll are accepted as deliveries (so a case seen by a webhook and a poll is still
/// triaged once).
pub async fn poll(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(err) = poll_once(&state).await {
            tracing::warn!("polling the tenant for cases failed: {err}");
        }
        tokio::select! {
            _ = tokio::time::sleep(state.config.poll_interval) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One poll; returns how many cases were new or updated.
pub async fn poll_once(state: &AppState) -> Result<usize, String> {
    use sqlx::Row as _;
    let mark: i64 = sqlx::query("SELECT value FROM settings WHERE name = $1")
        .bind(POLL_MARK)
        .fetch_optional(state.store.pool())
        .await
        .map_err(|err| err.to_string())?
        .and_then(|row| row.try_get::<String, _>(0).ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let query = IncidentQuery::new().filter(IncidentFilter::ModifiedFrom(mark));
    let page = state.xdr.list_incidents(&query).await.map_err(|err| err.to_string())?;
    let mut accepted = 0;
    let mut high = mark;
    for incident in &page.items {
        let Some(modified) = incident.modification_time else { continue };
        high = high.max(modified);
        let case: Value = serde_json::to_value(incident).map_err(|err| err.to_string())?;
        let delivery = state
            .store
            .accept_case(&incident.incident_id, modified, &json!({"incident": case}))
            .await
            .map_err(|err| err.to_string())?;
        accepted += usize::from(!matches!(delivery, crate::store::triages::Delivery::Seen(_)));
    }
    sqlx::query(
        "INSERT INTO settings (name, value, set_by, at_ms) VALUES ($1, $2, 'system', $3) \
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value, at_ms = EXCLUDED.at_ms",
    )
    .bind(POLL_MARK)
    .bind(high.to_string())
    .bind(now_ms())
    .execute(state.store.pool())
    .await
    .map_err(|err| err.to_string())?;
    Ok(accepted)
}
