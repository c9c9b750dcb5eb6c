//! The one error type of the XDR boundary, and how an HTTP answer becomes one.
//!
//! Cortex XDR answers a failed call with a non-2xx status and, usually, a body of the
//! form `{"reply": {"err_code", "err_msg", "err_extra"}}`. The status alone is not
//! enough to act on: an XQL syntax error and the daily quota both arrive as 500, and
//! rate limiting is recognised by its message as much as by 429. `classify` looks at
//! both so that callers can branch on the variant and ask `is_retryable`.
//!
//! No variant carries a credential: the key never leaves `cortex::ApiKey`.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

/// What went wrong talking to a Cortex XDR tenant (or to the local replay tenant).
#[derive(Clone, Debug, Error, PartialEq)]
pub enum XdrError {
    /// 401: the key id, the key or (for an advanced key) the signed timestamp was refused.
    #[error("{}", unauthorized_text(message, *clock_skew_suspected))]
    Unauthorized { message: String, clock_skew_suspected: bool },

    /// 402: the tenant's licence does not include this API (XQL needs Pro per endpoint or
    /// per GB; custom alert ingestion needs Pro).
    #[error("the tenant's licence does not cover this API: {message}")]
    LicenseRequired { message: String },

    /// 403: the key's role lacks the RBAC permission this call needs.
    #[error("the API key's role lacks the permission for this call: {message}")]
    Forbidden { message: String },

    /// 404: almost always a wrong base URL or tenant FQDN rather than a missing object.
    #[error("not found ({path}): check that the XDR URL is https://api-<tenant fqdn>")]
    NotFound { path: String },

    /// 429, or any answer saying "Rate limit exceeded".
    #[error("rate limited by the tenant{}", retry_after_text(*retry_after))]
    RateLimited { retry_after: Option<Duration> },

    /// The tenant's daily XQL quota is used up; it resets the next day.
    #[error("XQL daily quota exceeded: {message}")]
    QuotaExceeded { message: String },

    /// The XQL query does not parse: found before sending by the local parser, or
    /// reported by the tenant.
    #[error("XQL syntax error: {message}")]
    XqlParse { message: String },

    /// The XQL query could write (a `target` stage, a `call` of a saved query that is
    /// not on the allow-list) and was not sent. `reasons` name each offending stage
    /// with its line and column.
    #[error("query refused: {}", reasons.join("; "))]
    QueryRefused { reasons: Vec<String> },

    /// An isolate or unisolate named no endpoint the tenant knows, so no action was
    /// created. The tenant answers this with a 500; repeating it cannot help.
    #[error(
        "no endpoint matches the request, so the tenant created no action: {message}; \
         check the endpoint id"
    )]
    NoEndpointFound { message: String },

    /// A 5xx that is none of the above.
    #[error("tenant error (HTTP {status}): {message}")]
    Server { status: u16, message: String },

    /// 400 or another 4xx: the request itself was wrong.
    #[error("request refused (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },

    /// No complete answer within the configured time.
    #[error("{call} did not answer within {} ms", after.as_millis())]
    Timeout { call: String, after: Duration },

    /// The connection failed before an HTTP answer arrived.
    #[error("could not reach the tenant: {message}")]
    Transport { message: String },

    /// A 2xx answer whose body does not have the documented shape.
    #[error("unexpected answer from {call}: {detail}")]
    Decode { call: String, detail: String },

    /// An XQL query ended with status `FAIL`.
    #[error("XQL query {query_id} failed: {message}")]
    QueryFailed { query_id: String, message: String },

    /// The client configuration cannot work; names the setting.
    #[error("invalid XDR setting {setting}: {reason}")]
    InvalidConfig { setting: &'static str, reason: String },
}

impl XdrError {
    /// Whether the same call may succeed if repeated later: rate limits, server
    /// trouble, timeouts and broken connections. Credentials, licences, permissions,
    /// bad queries and an exhausted quota stay wrong however often they are retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            XdrError::RateLimited { .. }
                | XdrError::Server { .. }
                | XdrError::Timeout { .. }
                | XdrError::Transport { .. }
        )
    }
}

/// What the tenant says, inside a 500, when an endpoint action names no endpoint it
/// knows.
pub(crate) const NO_ENDPOINT_MESSAGE: &str =
    "no endpoint was found for creating the requested action";

/// Turns a non-2xx answer (or a 2xx whose reply carries `err_code`) into an error.
/// `path` is the API path, for `NotFound`; `retry_after` is the parsed `Retry-After`
/// header, if any.
pub(crate) fn classify(
    status: u16,
    body: &[u8],
    path: &str,
    retry_after: Option<Duration>,
) -> XdrError {
    let reply = ErrorBody::parse(body);
    let message = reply.message.clone().unwrap_or_else(|| default_message(status).to_string());

    if contains_ignore_case(&message, "query usage exceeded max daily quota") {
        return XdrError::QuotaExceeded { message };
    }
    if status == 429 || contains_ignore_case(&message, "rate limit exceeded") {
        return XdrError::RateLimited { retry_after };
    }
    if let Some(parse_err) = reply.parse_err {
        return XdrError::XqlParse { message: parse_err };
    }
    if contains_ignore_case(&message, NO_ENDPOINT_MESSAGE) {
        return XdrError::NoEndpointFound { message };
    }

    match status {
        401 => XdrError::Unauthorized {
            clock_skew_suspected: message.contains("API request Unauthorized"),
            message,
        },
        402 => XdrError::LicenseRequired { message },
        403 => XdrError::Forbidden { message },
        404 => XdrError::NotFound { path: path.to_string() },
        500..=599 => XdrError::Server { status, message },
        _ => XdrError::BadRequest { status, message },
    }
}

/// The parts of `{"reply": {"err_code", "err_msg", "err_extra"}}` that classification
/// needs. Bodies that are not JSON (a proxy's HTML page) leave everything `None`.
#[derive(Debug, Default)]
pub(crate) struct ErrorBody {
    pub(crate) code: Option<u16>,
    pub(crate) message: Option<String>,
    parse_err: Option<String>,
}

impl ErrorBody {
    pub(crate) fn parse(body: &[u8]) -> ErrorBody {
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return ErrorBody::default();
        };
        let reply = value.get("reply").unwrap_or(&value);
        let code = reply.get("err_code").and_then(status_code);
        let mut message = reply.get("err_msg").and_then(Value::as_str).map(str::to_string);
        let extra = reply.get("err_extra");
        let parse_err = extra
            .and_then(|extra| extra.get("parse_err"))
            .filter(|parse_err| !parse_err.is_null())
            .map(|parse_err| match parse_err {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });

        // A plain-text err_extra often says more than err_msg ("Internal server error").
        if let Some(Value::String(extra)) = extra
            && !extra.is_empty()
        {
            message = Some(match message {
                Some(message) => format!("{message}: {extra}"),
                None => extra.clone(),
            });
        }
        ErrorBody { code, message, parse_err }
    }

    /// Whether a 2xx reply is really an error in disguise, as some endpoints send.
    pub(crate) fn is_error(&self) -> bool {
        self.code.is_some_and(|code| code >= 400) && self.message.is_some()
    }
}

fn status_code(value: &Value) -> Option<u16> {
    match value {
        Value::Number(number) => number.as_u64().and_then(|code| u16::try_from(code).ok()),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn default_message(status: u16) -> &'static str {
    match status {
        400 => "bad request",
        401 => "unauthorized",
        402 => "license required",
        403 => "forbidden",
        404 => "not found",
        429 => "too many requests",
        500..=599 => "server error",
        _ => "unexpected HTTP status",
    }
}

fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    haystack.to_ascii_lowercase().contains(needle)
}

fn unauthorized_text(message: &str, clock_skew_suspected: bool) -> String {
    if clock_skew_suspected {
        format!(
            "the tenant refused the API key ({message}); check the key id and key, and for \
             an advanced key check that this host's clock is in sync with the tenant's, \
             because a skewed clock makes the signed timestamp stale"
        )
    } else {
        format!("the tenant refused the API key ({message}); check the key id and key")
    }
}

fn retry_after_text(retry_after: Option<Duration>) -> String {
    match retry_after {
        Some(after) => format!("; retry after {} s", after.as_secs()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: u16, msg: &str, extra: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "reply": {"err_code": code, "err_msg": msg, "err_extra": extra}
        }))
        .unwrap()
    }

    #[test]
    fn a_500_with_parse_err_is_an_xql_syntax_error() {
        let err = classify(
            500,
            &body(500, "Internal server error", serde_json::json!({"parse_err": "line 1: bad"})),
            "xql/start_xql_query",
            None,
        );
        assert_eq!(err, XdrError::XqlParse { message: "line 1: bad".into() });
        assert!(!err.is_retryable());
    }

    #[test]
    fn a_500_without_parse_err_is_a_retryable_server_error() {
        let err = classify(500, &body(500, "Internal server error", Value::Null), "p", None);
        assert!(matches!(err, XdrError::Server { status: 500, .. }));
        assert!(err.is_retryable());
    }

    #[test]
    fn the_daily_quota_message_wins_over_the_status() {
        let msg = "Query usage exceeded max daily quota";
        let err = classify(500, &body(500, msg, Value::Null), "p", None);
        assert!(matches!(err, XdrError::QuotaExceeded { .. }));
        assert!(!err.is_retryable());
    }

    #[test]
    fn rate_limits_are_recognised_by_status_or_by_message() {
        let by_status = classify(429, b"", "p", Some(Duration::from_secs(3)));
        assert_eq!(by_status, XdrError::RateLimited { retry_after: Some(Duration::from_secs(3)) });
        let by_message = classify(500, &body(500, "Rate limit exceeded", Value::Null), "p", None);
        assert_eq!(by_message, XdrError::RateLimited { retry_after: None });
        assert!(by_message.is_retryable());
    }

    #[test]
    fn unauthorized_says_when_the_clock_may_be_skewed() {
        let skew = classify(401, &body(401, "API request Unauthorized", Value::Null), "p", None);
        assert!(matches!(skew, XdrError::Unauthorized { clock_skew_suspected: true, .. }));
        assert!(skew.to_string().contains("clock"));

        let plain = classify(401, &body(401, "Unauthorized", Value::Null), "p", None);
        assert!(matches!(plain, XdrError::Unauthorized { clock_skew_suspected: false, .. }));
        assert!(!plain.to_string().contains("clock"));
        assert!(!plain.is_retryable());
    }

    #[test]
    fn licence_permission_and_url_errors_are_typed_and_final() {
        let cases = [
            (402, "LicenseRequired"),
            (403, "Forbidden"),
            (404, "NotFound"),
            (400, "BadRequest"),
            (409, "BadRequest"),
        ];
        for (status, want) in cases {
            let err = classify(status, &body(status, "nope", Value::Null), "incidents/x/", None);
            let got = format!("{err:?}");
            assert!(got.starts_with(want), "{status}: {got}");
            assert!(!err.is_retryable(), "{status} must not be retried");
        }
    }

    #[test]
    fn an_endpoint_action_without_an_endpoint_is_typed_and_final() {
        let message = "An error occurred: no endpoint was found for creating the requested action";
        let err = classify(500, &body(500, message, Value::Null), "endpoints/isolate", None);
        assert_eq!(err, XdrError::NoEndpointFound { message: message.into() });
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("check the endpoint id"), "{err}");
    }

    #[test]
    fn a_body_that_is_not_json_still_classifies_by_status() {
        let err = classify(503, b"<html>bad gateway</html>", "p", None);
        assert_eq!(err, XdrError::Server { status: 503, message: "server error".into() });
    }

    #[test]
    fn text_err_extra_is_kept_in_the_message() {
        let err = classify(400, &body(400, "Bad request", "field x is unknown".into()), "p", None);
        assert!(err.to_string().contains("field x is unknown"));
    }

    #[test]
    fn an_err_code_inside_a_200_reply_is_detected() {
        let parsed = ErrorBody::parse(&body(500, "no endpoint was found", Value::Null));
        assert!(parsed.is_error());
        assert!(!ErrorBody::parse(br#"{"reply": true}"#).is_error());
        assert!(!ErrorBody::parse(br#"{"reply": {"err_code": 200, "err_msg": "ok"}}"#).is_error());
    }
}
