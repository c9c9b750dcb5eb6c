//! What callers ask a tenant for: typed filters, sorting and paging for the list calls,
//! the incident update, and XQL requests.
//!
//! The list calls of the public API share one request shape, `{"filters": [{field,
//! operator, value}], "search_from", "search_to", "sort": {field, keyword}}`; the
//! filters are ANDed and a page holds at most 100 items. Each call has its own filter
//! enum here, so a caller cannot send a field that call does not know, and `ListQuery`
//! turns any of them into that shape (`ListRequest`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The most items one list request may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;

/// One `{field, operator, value}` element of a request's `filters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub field: String,
    pub operator: Operator,
    pub value: Value,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operator {
    In,
    Eq,
    Gte,
    Lte,
    Contains,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

/// The wire form of `sort`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sort {
    pub field: String,
    pub keyword: SortOrder,
}

/// The body of every list call, inside `request_data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListRequest {
    #[serde(default)]
    pub filters: Vec<Filter>,
    #[serde(default)]
    pub search_from: u32,
    #[serde(default = "default_search_to")]
    pub search_to: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<Sort>,
}

fn default_search_to() -> u32 {
    MAX_PAGE_SIZE
}

/// A filter a list call understands.
pub trait FilterSpec: Clone + Send + Sync {
    fn to_filter(&self) -> Filter;
}

/// A field a list call can sort by.
pub trait SortField: Clone + Copy + Send + Sync {
    fn wire_name(self) -> &'static str;
}

/// One page request of a list call: filters (ANDed), an optional sort, and the window
/// `[search_from, search_from + page_size)`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery<F, S> {
    pub filters: Vec<F>,
    pub sort: Option<(S, SortOrder)>,
    pub search_from: u32,
    /// Clamped to `1..=MAX_PAGE_SIZE` when sent.
    pub page_size: u32,
}

impl<F, S> Default for ListQuery<F, S> {
    fn default() -> Self {
        ListQuery { filters: Vec::new(), sort: None, search_from: 0, page_size: MAX_PAGE_SIZE }
    }
}

impl<F: FilterSpec, S: SortField> ListQuery<F, S> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn filter(mut self, filter: F) -> Self {
        self.filters.push(filter);
        self
    }

    pub fn sort(mut self, field: S, order: SortOrder) -> Self {
        self.sort = Some((field, order));
        self
    }

    pub fn page(mut self, search_from: u32, page_size: u32) -> Self {
        self.search_from = search_from;
        self.page_size = page_size;
        self
    }

    pub fn effective_page_size(&self) -> u32 {
        self.page_size.clamp(1, MAX_PAGE_SIZE)
    }

    pub fn to_request(&self) -> ListRequest {
        ListRequest {
            filters: self.filters.iter().map(FilterSpec::to_filter).collect(),
            search_from: self.search_from,
            search_to: self.search_from.saturating_add(self.effective_page_size()),
            sort: self
                .sort
                .map(|(field, keyword)| Sort { field: field.wire_name().to_string(), keyword }),
        }
    }
}

fn filter(field: &str, operator: Operator, value: Value) -> Filter {
    Filter { field: field.to_string(), operator, value }
}

pub type IncidentQuery = ListQuery<IncidentFilter, IncidentSort>;
pub type AlertQuery = ListQuery<AlertFilter, AlertSort>;
pub type EndpointQuery = ListQuery<EndpointFilter, EndpointSort>;
pub type AuditQuery = ListQuery<AuditFilter, AuditSort>;

/// Filters of `incidents/get_incidents/`. Times are epoch milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum IncidentFilter {
    IdIn(Vec<String>),
    CreatedFrom(i64),
    CreatedUntil(i64),
    ModifiedFrom(i64),
    ModifiedUntil(i64),
    Status(IncidentStatus),
    Starred(bool),
    DescriptionContains(String),
}

impl FilterSpec for IncidentFilter {
    fn to_filter(&self) -> Filter {
        match self {
            IncidentFilter::IdIn(ids) => filter("incident_id_list", Operator::In, json!(ids)),
            IncidentFilter::CreatedFrom(ms) => filter("creation_time", Operator::Gte, json!(ms)),
            IncidentFilter::CreatedUntil(ms) => filter("creation_time", Operator::Lte, json!(ms)),
            IncidentFilter::ModifiedFrom(ms) => {
                filter("modification_time", Operator::Gte, json!(ms))
            }
            IncidentFilter::ModifiedUntil(ms) => {
                filter("modification_time", Operator::Lte, json!(ms))
            }
            IncidentFilter::Status(status) => filter("status", Operator::Eq, json!(status)),
            IncidentFilter::Starred(starred) => filter("starred", Operator::Eq, json!(starred)),
            IncidentFilter::DescriptionContains(text) => {
                filter("description", Operator::Contains, json!(text))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncidentSort {
    CreationTime,
    ModificationTime,
}

impl SortField for IncidentSort {
    fn wire_name(self) -> &'static str {
        match self {
            IncidentSort::CreationTime => "creation_time",
            IncidentSort::ModificationTime => "modification_time",
        }
    }
}

/// Filters of `alerts/get_alerts_multi_events`. Times are epoch milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertFilter {
    /// Alert ids that look like integers are sent as numbers, which is how the tenant
    /// issues them; anything else is sent as text.
    IdIn(Vec<String>),
    SeverityIn(Vec<AlertSeverity>),
    CreatedFrom(i64),
    CreatedUntil(i64),
    SourceIn(Vec<String>),
}

impl FilterSpec for AlertFilter {
    fn to_filter(&self) -> Filter {
        match self {
            AlertFilter::IdIn(ids) => {
                let ids: Vec<Value> = ids
                    .iter()
                    .map(|id| id.parse::<i64>().map_or_else(|_| json!(id), |n| json!(n)))
                    .collect();
                filter("alert_id_list", Operator::In, Value::Array(ids))
            }
            AlertFilter::SeverityIn(levels) => filter("severity", Operator::In, json!(levels)),
            AlertFilter::CreatedFrom(ms) => filter("creation_time", Operator::Gte, json!(ms)),
            AlertFilter::CreatedUntil(ms) => filter("creation_time", Operator::Lte, json!(ms)),
            AlertFilter::SourceIn(sources) => filter("alert_source", Operator::In, json!(sources)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertSort {
    CreationTime,
    Severity,
}

impl SortField for AlertSort {
    fn wire_name(self) -> &'static str {
        match self {
            AlertSort::CreationTime => "creation_time",
            AlertSort::Severity => "severity",
        }
    }
}

/// Filters of `endpoints/get_endpoint/`. Times are epoch milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum EndpointFilter {
    IdIn(Vec<String>),
    IpIn(Vec<String>),
    HostnameIn(Vec<String>),
    StatusIn(Vec<String>),
    GroupNameIn(Vec<String>),
    Isolated(bool),
    FirstSeenFrom(i64),
    FirstSeenUntil(i64),
    LastSeenFrom(i64),
    LastSeenUntil(i64),
}

impl FilterSpec for EndpointFilter {
    fn to_filter(&self) -> Filter {
        match self {
            EndpointFilter::IdIn(ids) => filter("endpoint_id_list", Operator::In, json!(ids)),
            EndpointFilter::IpIn(ips) => filter("ip_list", Operator::In, json!(ips)),
            EndpointFilter::HostnameIn(names) => filter("hostname", Operator::In, json!(names)),
            EndpointFilter::StatusIn(states) => {
                filter("endpoint_status", Operator::In, json!(states))
            }
            EndpointFilter::GroupNameIn(names) => filter("group_name", Operator::In, json!(names)),
            EndpointFilter::Isolated(isolated) => {
                let value = if *isolated { "isolated" } else { "unisolated" };
                filter("isolate", Operator::In, json!([value]))
            }
            EndpointFilter::FirstSeenFrom(ms) => filter("first_seen", Operator::Gte, json!(ms)),
            EndpointFilter::FirstSeenUntil(ms) => filter("first_seen", Operator::Lte, json!(ms)),
            EndpointFilter::LastSeenFrom(ms) => filter("last_seen", Operator::Gte, json!(ms)),
            EndpointFilter::LastSeenUntil(ms) => filter("last_seen", Operator::Lte, json!(ms)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointSort {
    FirstSeen,
    LastSeen,
}

impl SortField for EndpointSort {
    fn wire_name(self) -> &'static str {
        match self {
            EndpointSort::FirstSeen => "first_seen",
            EndpointSort::LastSeen => "last_seen",
        }
    }
}

/// Filters of `audits/management_logs/`. Times are epoch milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditFilter {
    EmailIn(Vec<String>),
    TypeIn(Vec<String>),
    SubTypeIn(Vec<String>),
    ResultIn(Vec<String>),
    TimestampFrom(i64),
    TimestampUntil(i64),
}

impl FilterSpec for AuditFilter {
    fn to_filter(&self) -> Filter {
        match self {
            AuditFilter::EmailIn(mails) => filter("email", Operator::In, json!(mails)),
            AuditFilter::TypeIn(types) => filter("type", Operator::In, json!(types)),
            AuditFilter::SubTypeIn(types) => filter("sub_type", Operator::In, json!(types)),
            AuditFilter::ResultIn(results) => filter("result", Operator::In, json!(results)),
            AuditFilter::TimestampFrom(ms) => filter("timestamp", Operator::Gte, json!(ms)),
            AuditFilter::TimestampUntil(ms) => filter("timestamp", Operator::Lte, json!(ms)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditSort {
    Timestamp,
}

impl SortField for AuditSort {
    fn wire_name(self) -> &'static str {
        match self {
            AuditSort::Timestamp => "timestamp",
        }
    }
}

/// Incident states a caller may filter on or set. Tenants of different ages know
/// different subsets of the resolved states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    New,
    UnderInvestigation,
    ResolvedThreatHandled,
    ResolvedKnownIssue,
    ResolvedDuplicate,
    ResolvedFalsePositive,
    ResolvedTruePositive,
    ResolvedSecurityTesting,
    ResolvedOther,
    ResolvedAuto,
}

/// Alert severities as the alert filters spell them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertSeverity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

/// Severity an analyst may set on an incident (`manual_severity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentSeverity {
    Low,
    Medium,
    High,
    Critical,
}

/// The changes `incidents/update_incident/` should make; `None` leaves a field alone.
/// `assigned_user_mail: Some("none")` unassigns, as the API defines it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IncidentUpdate {
    pub status: Option<IncidentStatus>,
    pub manual_severity: Option<IncidentSeverity>,
    pub assigned_user_mail: Option<String>,
    pub assigned_user_pretty_name: Option<String>,
    pub resolve_comment: Option<String>,
    /// Added to the incident's comments.
    pub comment: Option<String>,
}

impl IncidentUpdate {
    /// The `update_data` object of the request.
    pub fn to_update_data(&self) -> Value {
        let mut data = serde_json::Map::new();
        if let Some(status) = self.status {
            data.insert("status".into(), json!(status));
        }
        if let Some(severity) = self.manual_severity {
            data.insert("manual_severity".into(), json!(severity));
        }
        if let Some(mail) = &self.assigned_user_mail {
            data.insert("assigned_user_mail".into(), json!(mail));
        }
        if let Some(name) = &self.assigned_user_pretty_name {
            data.insert("assigned_user_pretty_name".into(), json!(name));
        }
        if let Some(comment) = &self.resolve_comment {
            data.insert("resolve_comment".into(), json!(comment));
        }
        if let Some(comment) = &self.comment {
            data.insert("comment".into(), json!({"comment_action": "add", "value": comment}));
        }
        Value::Object(data)
    }
}

/// An XQL query and the time it covers. Without a timeframe the tenant uses the last
/// 24 hours (unless the query sets `config timeframe`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct XqlRequest {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeframe: Option<Timeframe>,
}

impl XqlRequest {
    pub fn new(query: impl Into<String>) -> XqlRequest {
        XqlRequest { query: query.into(), timeframe: None }
    }

    pub fn with_timeframe(mut self, timeframe: Timeframe) -> XqlRequest {
        self.timeframe = Some(timeframe);
        self
    }
}

/// `{"relativeTime": ms}` (the last `millis` milliseconds) or `{"from": ms, "to": ms}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Timeframe {
    Relative {
        #[serde(rename = "relativeTime")]
        millis: u64,
    },
    Absolute {
        #[serde(rename = "from")]
        from_ms: i64,
        #[serde(rename = "to")]
        to_ms: i64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_becomes_the_filters_paging_and_sort_body() {
        let query = IncidentQuery::new()
            .filter(IncidentFilter::CreatedFrom(1_575_806_909_185))
            .filter(IncidentFilter::Status(IncidentStatus::UnderInvestigation))
            .sort(IncidentSort::CreationTime, SortOrder::Asc)
            .page(200, 500);
        let body = serde_json::to_value(query.to_request()).unwrap();
        assert_eq!(
            body,
            json!({
                "filters": [
                    {"field": "creation_time", "operator": "gte", "value": 1_575_806_909_185_i64},
                    {"field": "status", "operator": "eq", "value": "under_investigation"}
                ],
                "search_from": 200,
                "search_to": 300,
                "sort": {"field": "creation_time", "keyword": "asc"}
            })
        );
    }

    #[test]
    fn numeric_alert_ids_are_sent_as_numbers() {
        let filter = AlertFilter::IdIn(vec!["17".into(), "x-1".into()]).to_filter();
        assert_eq!(filter.value, json!([17, "x-1"]));
    }

    #[test]
    fn timeframes_have_the_api_shape() {
        let relative = Timeframe::Relative { millis: 86_400_000 };
        assert_eq!(serde_json::to_value(relative).unwrap(), json!({"relativeTime": 86_400_000}));
        let absolute = Timeframe::Absolute { from_ms: 1, to_ms: 2 };
        assert_eq!(serde_json::to_value(absolute).unwrap(), json!({"from": 1, "to": 2}));
        let back: Timeframe = serde_json::from_value(json!({"from": 1, "to": 2})).unwrap();
        assert_eq!(back, absolute);
    }

    #[test]
    fn an_update_sends_only_what_changes_and_comments_are_added() {
        let update = IncidentUpdate {
            manual_severity: Some(IncidentSeverity::High),
            comment: Some("seen by pivotwatch".into()),
            ..IncidentUpdate::default()
        };
        assert_eq!(
            update.to_update_data(),
            json!({
                "manual_severity": "high",
                "comment": {"comment_action": "add", "value": "seen by pivotwatch"}
            })
        );
    }
}
