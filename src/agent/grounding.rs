//! The grounding checker: a narrative may only state addresses, ports, counts, volumes,
//! percentages and times that appear in the evidence it was written from.
//!
//! Both sides are reduced to normalised facts before they are compared, so that what
//! analysts write differently still matches: "1,200" and "1200", "three hours" and "3 h",
//! "98 %" and "98%", an IPv6 address in any of its spellings, an address and a CIDR
//! block that contains it, `2026-03-09T21:00:00Z` and "21:00", "two hours ago" and the
//! time two hours before the latest one in the evidence. A figure that is not in the
//! evidence is named in the error, so the writer can be told exactly what to drop.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One checkable statement of fact, normalised.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    Ip(IpAddr),
    /// An address block, as network address and prefix length.
    Cidr(IpAddr, u8),
    /// A number, scaled by 1,000 so decimals to three places compare exactly.
    Number(i64),
    /// A time of day, minutes since midnight UTC.
    Clock(u32),
    /// A date and time, Unix seconds.
    Instant(i64),
    /// A volume in bytes, as the range its written precision allows: "1.24 GB" is
    /// 1,235,000,000 to 1,245,000,000.
    Volume(i64, i64),
    /// A time given relative to the latest time in the evidence ("two hours ago",
    /// "30 minutes earlier"): how many seconds before it, and the unit's length, which
    /// is the precision the phrase carries.
    Ago(i64, i64),
}

/// Words for small numbers, as narratives write them.
const WORD_NUMBERS: [(&str, i64); 21] = [
    ("zero", 0),
    ("one", 1),
    ("two", 2),
    ("three", 3),
    ("four", 4),
    ("five", 5),
    ("six", 6),
    ("seven", 7),
    ("eight", 8),
    ("nine", 9),
    ("ten", 10),
    ("eleven", 11),
    ("twelve", 12),
    ("thirteen", 13),
    ("fourteen", 14),
    ("fifteen", 15),
    ("sixteen", 16),
    ("seventeen", 17),
    ("eighteen", 18),
    ("nineteen", 19),
    ("twenty", 20),
];

/// Byte units and their size, for "1.2 GB" and "1200 MB" to meet.
const BYTE_UNITS: [(&str, f64); 8] = [
    ("b", 1.0),
    ("bytes", 1.0),
    ("kb", 1e3),
    ("mb", 1e6),
    ("gb", 1e9),
    ("tb", 1e12),
    ("kib", 1024.0),
    ("mib", 1_048_576.0),
];

/// The facts stated in `text`.
pub fn facts(text: &str) -> BTreeSet<Fact> {
    let mut out = BTreeSet::new();
    // "1,200" is one number; the comma would otherwise split it below.
    let text = ungroup(text);
    let tokens: Vec<&str> = text
        .split(|c: char| {
            c.is_whitespace() || matches!(c, ',' | ';' | '(' | ')' | '[' | ']' | '"' | '\'')
        })
        .filter(|t| !t.is_empty())
        .collect();
    let mut i = 0;
    while i < tokens.len() {
        let raw = tokens[i];
        let token = raw.trim_end_matches(['.', ':', '!', '?']).trim_start_matches(['<', '>']);
        let lower = token.to_ascii_lowercase();
        if let Some(fact) = address(token) {
            out.insert(fact);
        } else if let Some(instant) = instant(token) {
            out.insert(Fact::Instant(instant));
            out.insert(Fact::Clock(clock_of(instant)));
        } else if let Some(minutes) = clock(token) {
            out.insert(Fact::Clock(minutes));
        } else if let Some((ip, port)) = address_with_port(token) {
            out.insert(Fact::Ip(ip));
            out.insert(Fact::Number(i64::from(port) * 1000));
        } else if let Some(port) = lower.strip_prefix("tcp/").or_else(|| lower.strip_prefix("udp/"))
        {
            if let Ok(port) = port.parse::<u16>() {
                out.insert(Fact::Number(i64::from(port) * 1000));
            }
        } else if let Some((seconds, unit)) = relative(&lower, &tokens[i + 1..]) {
            out.insert(Fact::Ago(seconds, unit));
            i += 3;
            continue;
        } else if let Some(value) = number(&lower) {
            // A unit in the same token ("3h", "98%", "1.2GB") or the next one.
            let digits_unit = split_unit(&lower);
            let unit = digits_unit.or_else(|| {
                tokens.get(i + 1).map(|t| t.trim_end_matches(['.', ':']).to_ascii_lowercase())
            });
            let scaled = unit.as_deref().and_then(|u| {
                BYTE_UNITS.iter().find(|(name, _)| *name == u).map(|(_, size)| value * size)
            });
            // A volume is its size in bytes, to the precision it was written with.
            match scaled {
                Some(bytes) => {
                    let decimals = lower.split_once('.').map_or(0, |(_, frac)| {
                        frac.chars().take_while(char::is_ascii_digit).count()
                    });
                    let half = 0.5
                        * 10f64.powi(-(decimals as i32))
                        * (bytes / value.max(f64::MIN_POSITIVE));
                    out.insert(Fact::Volume(
                        (bytes - half).floor() as i64,
                        (bytes + half).ceil() as i64,
                    ));
                }
                None => {
                    out.insert(Fact::Number((value * 1000.0).round() as i64));
                }
            }
        } else if let Some((_, n)) = WORD_NUMBERS.iter().find(|(w, _)| *w == lower) {
            out.insert(Fact::Number(n * 1000));
        }
        i += 1;
    }
    out
}

/// The facts of `narrative` that the evidence does not support.
pub fn unsupported(narrative: &str, evidence: &BTreeSet<Fact>) -> Vec<Fact> {
    facts(narrative).into_iter().filter(|fact| !supported(fact, evidence)).collect()
}

fn supported(fact: &Fact, evidence: &BTreeSet<Fact>) -> bool {
    if evidence.contains(fact) {
        return true;
    }
    match fact {
        // An address inside a block the evidence names, or a block that holds an
        // address the evidence names.
        Fact::Ip(ip) => {
            evidence.iter().any(|e| matches!(e, Fact::Cidr(net, len) if contains(net, *len, ip)))
        }
        Fact::Cidr(net, len) => {
            evidence.iter().any(|e| matches!(e, Fact::Ip(ip) if contains(net, *len, ip)))
        }
        // Small counting words ("one of", "two devices") are language more than claims
        // when the number is at most two.
        Fact::Number(n) => *n <= 2000 && *n >= 0 && n % 1000 == 0,
        Fact::Ago(seconds, unit) => {
            // Relative to the latest time the evidence states.
            let anchor = evidence.iter().filter_map(|e| match e {
                Fact::Instant(t) => Some(*t),
                _ => None,
            });
            let Some(anchor) = anchor.max() else { return false };
            let at = anchor - seconds;
            evidence.iter().any(|e| matches!(e, Fact::Instant(t) if (t - at).abs() <= unit / 2))
        }
        Fact::Volume(lo, hi) => evidence.iter().any(|e| match e {
            Fact::Number(n) => (*lo..=*hi).contains(&(n / 1000)),
            Fact::Volume(a, b) => a <= hi && lo <= b,
            _ => false,
        }),
        _ => false,
    }
}

/// Describes a fact for an error message.
pub fn describe(fact: &Fact) -> String {
    match fact {
        Fact::Ip(ip) => ip.to_string(),
        Fact::Cidr(net, len) => format!("{net}/{len}"),
        Fact::Number(n) if n % 1000 == 0 => (n / 1000).to_string(),
        Fact::Number(n) => format!("{:.3}", *n as f64 / 1000.0),
        Fact::Clock(m) => format!("{:02}:{:02}", m / 60, m % 60),
        Fact::Instant(s) => crate::timefmt::rfc3339(*s as f64),
        Fact::Volume(lo, hi) => format!("{} bytes", (lo + hi) / 2),
        Fact::Ago(seconds, unit) => format!("{} {} ago", seconds / unit, unit_name(*unit)),
    }
}

/// "two hours ago", "30 minutes earlier", "3 days before": a count, a unit and a word
/// that makes it relative. Returns the seconds and the unit's length.
fn relative(first: &str, rest: &[&str]) -> Option<(i64, i64)> {
    let count = number(first)
        .map(|n| n as i64)
        .or_else(|| WORD_NUMBERS.iter().find(|(w, _)| *w == first).map(|(_, n)| *n))?;
    let unit = rest.first()?.trim_end_matches(['.', ',']).to_ascii_lowercase();
    let unit = match unit.as_str() {
        "minute" | "minutes" | "min" | "mins" => 60,
        "hour" | "hours" | "h" | "hrs" => 3_600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    let word = rest.get(1)?.trim_end_matches(['.', ',', ';', ':']).to_ascii_lowercase();
    matches!(word.as_str(), "ago" | "earlier" | "before").then_some((count * unit, unit))
}

fn unit_name(unit: i64) -> &'static str {
    match unit {
        60 => "minutes",
        3_600 => "hours",
        _ => "days",
    }
}

fn contains(net: &IpAddr, len: u8, ip: &IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(net), IpAddr::V4(ip)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
            u32::from(*net) & mask == u32::from(*ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) => {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len.min(128))) };
            u128::from(*net) & mask == u128::from(*ip) & mask
        }
        _ => false,
    }
}

fn address(token: &str) -> Option<Fact> {
    if let Some((net, len)) = token.split_once('/')
        && let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u8>())
    {
        return Some(Fact::Cidr(net, len));
    }
    let bare = token.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| match ip {
            // An IPv4-mapped IPv6 address is the IPv4 address.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        })
        .map(Fact::Ip)
}

fn address_with_port(token: &str) -> Option<(IpAddr, u16)> {
    if let Some(rest) = token.strip_prefix('[') {
        let (ip, port) = rest.split_once("]:")?;
        return Some((ip.parse().ok()?, port.parse().ok()?));
    }
    let (ip, port) = token.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    Some((IpAddr::V4(ip), port.parse().ok()?))
}

fn instant(token: &str) -> Option<i64> {
    if token.len() < 16 || !token.contains('T') {
        return None;
    }
    crate::timefmt::parse_time(token).ok().map(|secs| secs as i64)
}

fn clock_of(secs: i64) -> u32 {
    u32::try_from(secs.rem_euclid(86_400) / 60).unwrap_or(0)
}

/// "21:00", "03:10", "21:00Z".
fn clock(token: &str) -> Option<u32> {
    let token = token.trim_end_matches(['Z', 'z']);
    let (h, m) = token.split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m) = (h.parse::<u32>().ok()?, m.parse::<u32>().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// A number at the start of the token: "1200", "98.5", "98%", "3h", "1.2gb".
fn number(token: &str) -> Option<f64> {
    let end = token
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(token.len(), |(i, _)| i);
    let digits = token[..end].trim_end_matches('.');
    if digits.is_empty() || !digits.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The unit glued to a number ("gb" of "1.2gb"), if any.
fn split_unit(token: &str) -> Option<String> {
    let start = token.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    (start > 0).then(|| token[start..].trim_matches('%').to_string()).filter(|u| !u.is_empty())
}

/// The text with thousands separators dropped from numbers: "1,200" becomes "1200",
/// while "3, 4" and "1,2" are left alone.
fn ungroup(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, c) in chars.iter().enumerate() {
        let separator = *c == ','
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1..i + 4).is_some_and(|d| d.iter().all(char::is_ascii_digit))
            && chars.get(i + 4).is_none_or(|d| !d.is_ascii_digit());
        if !separator {
            out.push(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence(text: &str) -> BTreeSet<Fact> {
        facts(text)
    }

    #[test]
    fn what_analysts_write_differently_still_matches() {
        let e = evidence(
            "flows 1200; window 2026-03-09T21:00:00Z; peer 2001:db8:0:0:0:0:0:1; \
             hours 3; peer_percentile 98; bytes_sent 1200000000; port 22; host 10.20.1.17",
        );
        for narrative in [
            "It made 1,200 flows.",
            "Starting at 21:00 on 2026-03-09T21:00:00Z.",
            "It reached 2001:db8::1 over SSH (port 22).",
            "For three hours, 98 % more unusual than its peers.",
            "It sent 1.2 GB, the same as 1200 MB.",
            "It sent 1.20 GB.",
            "The pump at 10.20.1.17:22 inside 10.20.0.0/16.",
        ] {
            assert!(
                unsupported(narrative, &e).is_empty(),
                "{narrative}: {:?}",
                unsupported(narrative, &e)
            );
        }
    }

    #[test]
    fn a_figure_the_evidence_lacks_is_named() {
        let e = evidence("host 10.20.1.17 flows 1200 port 22");
        let bad =
            unsupported("The pump 10.20.1.17 sent 1,200 flows to 203.0.113.9 on port 2222.", &e);
        let named: Vec<String> = bad.iter().map(describe).collect();
        assert_eq!(named, ["203.0.113.9", "2222"]);
        let bad = unsupported("It happened at 04:30.", &evidence("window 2026-03-09T21:00:00Z"));
        assert_eq!(bad.iter().map(describe).collect::<Vec<_>>(), ["04:30"]);
        // A relative time counts back from the latest time in the evidence.
        let window = evidence("from 2026-03-09T21:00:00Z to 2026-03-09T23:00:00Z");
        assert!(unsupported("It began two hours ago.", &window).is_empty());
        assert!(unsupported("It began 120 minutes earlier.", &window).is_empty());
        let off: Vec<String> =
            unsupported("It began five hours ago.", &window).iter().map(describe).collect();
        assert_eq!(off, ["5 hours ago"]);
        // A volume must agree to the precision it is written with.
        let sent = evidence("bytes_sent 1243567890");
        assert!(unsupported("1.24 GB left the network", &sent).is_empty());
        assert_eq!(unsupported("1.3 GB left the network", &sent).len(), 1);
        // An IPv4-mapped IPv6 spelling is the same address.
        assert!(unsupported("::ffff:10.20.1.17", &e).is_empty());
    }
}
