//! What the HTTP executors share: a secret that never prints, and how an HTTP answer or
//! a transport failure becomes an `Outcome`.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::gate::Outcome;

/// A credential. It prints as `***` in logs, errors and `Debug` output, and the audit
/// trail redacts fields named like it; only the request that needs it sees the text.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A failed answer: 429 and 5xx are worth retrying (the request was not processed or
/// the target is down), after at least the pause the target asked for in `Retry-After`;
/// anything else is final.
pub(crate) fn status_outcome(
    target: &str,
    status: u16,
    retry_after: Option<Duration>,
    message: &str,
) -> Outcome {
    let text = format!("{target} answered HTTP {status}: {message}");
    match (status == 429 || status >= 500, retry_after) {
        (true, Some(after)) => Outcome::Throttled(text, after),
        (true, None) => Outcome::Retry(text),
        (false, _) => Outcome::Failed(text),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by these APIs).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A request that got no answer: a timeout or a refused connection is worth retrying.
pub(crate) fn transport_outcome(target: &str, err: reqwest::Error) -> Outcome {
    let err = err.without_url();
    let mut text = format!("{target}: {err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Outcome::Retry(text)
}

/// An answer's status, the pause it asked for, and its body as JSON (`null` when the
/// body is not JSON) and as text.
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Reads a whole answer from `target`; a body cut off in transit is a transport failure.
async fn read_answer(target: &str, response: reqwest::Response) -> Result<Answer, Outcome> {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let text = response.text().await.map_err(|err| transport_outcome(target, err))?;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Answer { status, retry_after, body, text })
}

/// Sends a request to `target` and reads its whole answer.
pub(crate) async fn exchange(
    target: &str,
    request: reqwest::RequestBuilder,
) -> Result<Answer, Outcome> {
    let response = request.send().await.map_err(|err| transport_outcome(target, err))?;
    read_answer(target, response).await
}
