//! The Cortex XDR boundary: the `Xdr` trait that everything above this module talks to,
//! its request and wire types, its error type, and `CortexXdr`, the implementation over
//! the tenant's public REST API.
//!
//! Callers hold an `Arc<dyn Xdr>` and never see HTTP: a local tenant implements the same
//! trait from stored telemetry, so hunts, triage and tests run the same code with or
//! without credentials. XQL rows are normalised here (`rows`) so that every
//! implementation hands out rows of one shape, and `flows` turns network rows into the
//! canonical `model::Flow`.
//!
//! This module depends on `model`, on `xql` (queries are validated before they are
//! sent, and the replay tenant runs them locally) and on `ingest` (the replay tenant
//! loads flow files).

pub mod connect;
pub mod cortex;
pub mod error;
pub mod flows;
pub mod query;
pub mod replay;
pub mod rows;
pub mod sim;
pub mod types;

use std::future::Future;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use cortex::{AlertRate, ApiKey, CortexConfig, CortexXdr, KeyType, RetryPolicy, XqlPolling};
pub use error::XdrError;
pub use query::{
    AlertFilter, AlertQuery, AlertSeverity, AlertSort, AuditFilter, AuditQuery, AuditSort,
    EndpointFilter, EndpointQuery, EndpointSort, FilterSpec, IncidentFilter, IncidentQuery,
    IncidentSeverity, IncidentSort, IncidentStatus, IncidentUpdate, ListQuery, SortField,
    SortOrder, Timeframe, XqlRequest,
};
pub use types::{
    ActionStatus, Alert, AuditLog, Endpoint, EndpointAction, Incident, IncidentExtraData, Page,
    ParsedAlert, QueryStatus, Quota,
};

/// One XQL result row after `rows::normalize_row`: `"NULL"`, `"TRUE"` and `"FALSE"`
/// are JSON values and timestamps are epoch milliseconds.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// The answer to an XQL query.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct XqlResult {
    pub rows: Vec<Row>,
    /// `Success`, or `PartialSuccess` when some tenant of a multi-tenant query failed.
    pub status: QueryStatus,
    /// Query units this query cost, summed over tenants.
    pub query_cost: Option<f64>,
    /// Query units left on the tenant's quota.
    pub remaining_quota: Option<f64>,
}

/// A Cortex XDR tenant: the remote one, or a local stand-in.
///
/// Times are epoch milliseconds throughout, as the API has them. A list call returns
/// one page; `collect_pages` walks them all.
#[async_trait]
pub trait Xdr: Send + Sync {
    /// Runs a query to completion (`PENDING` is waited out) and returns all its rows.
    /// A query that ends as `FAIL` is `XdrError::QueryFailed`.
    async fn run_xql(&self, request: &XqlRequest) -> Result<XqlResult, XdrError>;

    async fn xql_quota(&self) -> Result<Quota, XdrError>;

    async fn list_incidents(&self, query: &IncidentQuery) -> Result<Page<Incident>, XdrError>;

    /// An incident with up to `alerts_limit` of its alerts and its artifacts.
    async fn incident_extra_data(
        &self,
        incident_id: &str,
        alerts_limit: u32,
    ) -> Result<IncidentExtraData, XdrError>;

    /// Applies the fields set in `update`; an update that sets nothing sends nothing.
    async fn update_incident(
        &self,
        incident_id: &str,
        update: &IncidentUpdate,
    ) -> Result<(), XdrError>;

    async fn alerts_multi_events(&self, query: &AlertQuery) -> Result<Page<Alert>, XdrError>;

    /// Sends custom alerts, batched and paced to the tenant's ingestion limits; it waits
    /// rather than fails when the per-minute budget is spent. On an error, the batches
    /// sent before it stay inserted.
    async fn insert_parsed_alerts(&self, alerts: &[ParsedAlert]) -> Result<(), XdrError>;

    /// Like `insert_parsed_alerts`, for alerts already written as CEF lines.
    async fn insert_cef_alerts(&self, alerts: &[String]) -> Result<(), XdrError>;

    async fn get_endpoints(&self, query: &EndpointQuery) -> Result<Page<Endpoint>, XdrError>;

    /// Starts isolating one endpoint; `incident_id` links the action to an incident.
    async fn isolate_endpoint(
        &self,
        endpoint_id: &str,
        incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError>;

    async fn unisolate_endpoint(
        &self,
        endpoint_id: &str,
        incident_id: Option<&str>,
    ) -> Result<EndpointAction, XdrError>;

    /// Where an action started by `isolate_endpoint` and the like stands, per endpoint.
    async fn action_status(&self, group_action_id: &str) -> Result<ActionStatus, XdrError>;

    async fn audit_management_logs(&self, query: &AuditQuery) -> Result<Page<AuditLog>, XdrError>;
}

/// Fetches page after page of a list call, starting at `query.search_from`, until the
/// tenant has no more or `max_items` are collected. `fetch` is the list call, e.g.
/// `|page| async move { xdr.list_incidents(&page).await }`.
///
/// When the tenant reports `total_count`, paging runs until it is reached (so a tenant
/// that serves smaller pages than asked for is read completely); otherwise a short page
/// is taken to be the last.
pub async fn collect_pages<F, S, T, Fetch, Fut>(
    query: &ListQuery<F, S>,
    max_items: usize,
    mut fetch: Fetch,
) -> Result<Vec<T>, XdrError>
where
    F: FilterSpec,
    S: SortField,
    Fetch: FnMut(ListQuery<F, S>) -> Fut,
    Fut: Future<Output = Result<Page<T>, XdrError>>,
{
    let mut items = Vec::new();
    let mut page_query = query.clone();
    while items.len() < max_items {
        let page = fetch(page_query.clone()).await?;
        let n_items = page.items.len();
        items.extend(page.items);

        let next_from = page_query.search_from.saturating_add(n_items as u32);
        let finished = match page.total_count {
            Some(total) => n_items == 0 || u64::from(next_from) >= total,
            None => n_items < page_query.effective_page_size() as usize,
        };
        if finished {
            break;
        }
        page_query.search_from = next_from;
    }
    items.truncate(max_items);
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn page_of(from: u32, size: u32, total: u64) -> Page<u32> {
        let end = u64::from(from + size).min(total) as u32;
        let items: Vec<u32> = (from..end).collect();
        Page { total_count: Some(total), result_count: items.len() as u64, items }
    }

    #[tokio::test]
    async fn pages_are_walked_until_the_total_is_reached() {
        let asked = Mutex::new(Vec::new());
        let query = IncidentQuery::new();
        let all = collect_pages(&query, usize::MAX, |page| {
            asked.lock().unwrap().push(page.search_from);
            // This tenant serves at most 40 per page whatever is asked for.
            let served = page_of(page.search_from, 40, 95);
            async move { Ok(served) }
        })
        .await
        .unwrap();
        assert_eq!(all, (0..95).collect::<Vec<_>>());
        assert_eq!(*asked.lock().unwrap(), [0, 40, 80]);
    }

    #[tokio::test]
    async fn paging_stops_at_max_items_and_on_errors() {
        let query = IncidentQuery::new();
        let some = collect_pages(&query, 150, |page| {
            let served = page_of(page.search_from, page.effective_page_size(), 1000);
            async move { Ok(served) }
        })
        .await
        .unwrap();
        assert_eq!(some.len(), 150);

        let failed = collect_pages(&query, 10, |_| async {
            Err::<Page<u32>, _>(XdrError::Forbidden { message: "no".into() })
        })
        .await;
        assert!(matches!(failed, Err(XdrError::Forbidden { .. })));
    }

    #[tokio::test]
    async fn without_a_total_a_short_page_is_the_last() {
        let query = AuditQuery::new();
        let calls = Mutex::new(0);
        let all = collect_pages(&query, usize::MAX, |page| {
            *calls.lock().unwrap() += 1;
            let mut served = page_of(page.search_from, 100, 130);
            served.total_count = None;
            async move { Ok(served) }
        })
        .await
        .unwrap();
        assert_eq!(all.len(), 130);
        assert_eq!(*calls.lock().unwrap(), 2);
    }
}
