//! Who is calling: signed webhook deliveries (HMAC-SHA256 over `<timestamp>.<raw
//! body>` with a shared secret, inside a time window) and API callers (bearer tokens,
//! matched by their SHA-256 to a person in the users file, with that person's roles).
//! Per-client rate limits.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::actions::policy::Role;
use crate::actions::policy::User;
use crate::actions::{Secret, Users};

/// Why a signed delivery was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    Missing(&'static str),
    Malformed(&'static str),
    Stale { skew_secs: i64, window_secs: u64 },
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::Missing(header) => write!(f, "the {header} header is missing"),
            SignatureError::Malformed(header) => write!(f, "the {header} header is malformed"),
            SignatureError::Stale { skew_secs, window_secs } => write!(
                f,
                "the timestamp is {skew_secs} s away from this server's clock; at most {window_secs} s are accepted"
            ),
            SignatureError::Mismatch => write!(f, "the signature does not match the body"),
        }
    }
}

/// Hex HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never returns early.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// How a sender signs: its two headers, the signature's prefix, and what the HMAC
/// covers (`<timestamp>.<body>` for pivotwatch's webhook, `v0:<timestamp>:<body>` for
/// Slack).
#[derive(Clone, Copy, Debug)]
pub struct Scheme {
    pub timestamp_header: &'static str,
    pub signature_header: &'static str,
    pub prefix: &'static str,
}

/// Signed Cortex XDR deliveries (a forwarding rule or XSOAR playbook signs them).
pub const PIVOTWATCH_V1: Scheme = Scheme {
    timestamp_header: "X-Pivotwatch-Timestamp",
    signature_header: "X-Pivotwatch-Signature",
    prefix: "v1=",
};

/// Slack's request signing.
pub const SLACK_V0: Scheme = Scheme {
    timestamp_header: "X-Slack-Request-Timestamp",
    signature_header: "X-Slack-Signature",
    prefix: "v0=",
};

/// Checks a signed delivery (`(timestamp, signature)` header values) within `window`
/// of `now_secs`. The comparison takes the same time whatever the signature.
pub fn verify(
    scheme: &Scheme,
    secret: &Secret,
    (timestamp, signature): (Option<&str>, Option<&str>),
    body: &[u8],
    now_secs: i64,
    window: Duration,
) -> Result<(), SignatureError> {
    let timestamp = timestamp.ok_or(SignatureError::Missing(scheme.timestamp_header))?;
    let signature = signature.ok_or(SignatureError::Missing(scheme.signature_header))?;
    let at: i64 =
        timestamp.trim().parse().map_err(|_| SignatureError::Malformed(scheme.timestamp_header))?;
    let skew = (now_secs - at).abs();
    if skew > window.as_secs() as i64 {
        return Err(SignatureError::Stale { skew_secs: skew, window_secs: window.as_secs() });
    }
    let hex = signature
        .trim()
        .strip_prefix(scheme.prefix)
        .ok_or(SignatureError::Malformed(scheme.signature_header))?;
    let given = decode_hex(hex).ok_or(SignatureError::Malformed(scheme.signature_header))?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .map_err(|_| SignatureError::Mismatch)?;
    if scheme.prefix == SLACK_V0.prefix {
        mac.update(b"v0:");
        mac.update(timestamp.trim().as_bytes());
        mac.update(b":");
    } else {
        mac.update(timestamp.trim().as_bytes());
        mac.update(b".");
    }
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// The person a bearer token belongs to.
pub fn bearer_user<'u>(users: &'u Users, authorization: Option<&str>) -> Option<&'u User> {
    let token = authorization?.strip_prefix("Bearer ")?.trim();
    if token.is_empty() {
        return None;
    }
    let digest: String =
        Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    users.users.iter().find(|u| {
        u.api_token_sha256.as_deref().is_some_and(|h| constant_eq(h.as_bytes(), digest.as_bytes()))
    })
}

fn constant_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a person holds one of `roles` (admins hold every role).
pub fn has_role(user: &User, roles: &[Role]) -> bool {
    user.roles.contains(&Role::Admin) || user.roles.iter().any(|r| roles.contains(r))
}

/// A token bucket per client, refilled continuously to `per_minute`.
// TODO: the buckets live in this process, so N replicas behind a load balancer allow
// N times the configured rate; a shared limit needs the database or a shared cache.
pub struct RateLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> RateLimiter {
        RateLimiter { per_minute: f64::from(per_minute), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request from `client`'s bucket; `Err(seconds)` until one is free.
    pub fn take(&self, client: &str) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        let now = Instant::now();
        if buckets.len() > 100_000 {
            // Forget clients idle for a minute, so the map cannot grow without bound.
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets.entry(client.to_string()).or_insert((self.per_minute, now));
        let refill = now.duration_since(*at).as_secs_f64() * self.per_minute / 60.0;
        *tokens = (*tokens + refill).min(self.per_minute);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) * 60.0 / self.per_minute).ceil() as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn a_signature_holds_only_for_its_body_time_and_secret() {
        let secret = Secret::new("0123456789abcdef0123".to_string());
        let body = br#"{"incident":{"incident_id":"412"}}"#;
        let good = format!("v1={}", sign(b"0123456789abcdef0123", "1733300000", body));
        let check = |ts: &str, sig: &str, body: &[u8], now: i64| {
            verify(
                &PIVOTWATCH_V1,
                &secret,
                (Some(ts), Some(sig)),
                body,
                now,
                Duration::from_secs(300),
            )
        };
        assert_eq!(check("1733300000", &good, body, 1_733_300_100), Ok(()));
        assert_eq!(check("1733300000", &good, b"{}", 1_733_300_100), Err(SignatureError::Mismatch));
        assert!(matches!(
            check("1733300000", &good, body, 1_733_300_301),
            Err(SignatureError::Stale { .. })
        ));
        assert_eq!(
            check("1733300000", "sha256=00", body, 1_733_300_000),
            Err(SignatureError::Malformed(PIVOTWATCH_V1.signature_header))
        );
        assert_eq!(
            check("soon", &good, body, 1_733_300_000),
            Err(SignatureError::Malformed(PIVOTWATCH_V1.timestamp_header))
        );
        let other = format!("v1={}", sign(b"another-secret-entirely", "1733300000", body));
        assert_eq!(check("1733300000", &other, body, 1_733_300_000), Err(SignatureError::Mismatch));
    }

    #[test]
    fn a_bucket_refuses_past_its_rate_and_says_when_to_retry() {
        let limiter = RateLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.take("a").is_ok());
        }
        assert_eq!(limiter.take("a"), Err(20));
        assert!(limiter.take("b").is_ok());
    }
}
