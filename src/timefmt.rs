//! Conversions between Unix seconds, as flows carry them, and RFC 3339 text, as every
//! output and flag of pivotwatch speaks it.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Formats Unix seconds as RFC 3339 in UTC, to the second when the time is whole and
/// to the microsecond otherwise.
pub fn rfc3339(unix_secs: f64) -> String {
    let nanos = (unix_secs * 1e9).round() as i128;
    let rounded = (nanos + 500).div_euclid(1000) * 1000;
    match OffsetDateTime::from_unix_timestamp_nanos(rounded) {
        Ok(at) => at.format(&Rfc3339).unwrap_or_else(|_| format!("{unix_secs}")),
        Err(_) => format!("{unix_secs}"),
    }
}

/// Parses RFC 3339 text (`2026-03-01T00:00:00Z`), a bare date (`2026-03-01`, midnight
/// UTC) or Unix seconds into Unix seconds.
pub fn parse_time(text: &str) -> Result<f64, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok(secs);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at.unix_timestamp_nanos() as f64 / 1e9);
    }
    let with_midnight = format!("{text}T00:00:00Z");
    if let Ok(at) = OffsetDateTime::parse(&with_midnight, &Rfc3339) {
        return Ok(at.unix_timestamp_nanos() as f64 / 1e9);
    }
    Err(format!(
        "\"{text}\" is not a time; use RFC 3339 (2026-03-01T00:00:00Z), a date (2026-03-01) \
         or Unix seconds"
    ))
}

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses a length such as `1h`, `5m`, `30s`, `1d` or `500ms` into seconds.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration; use a number and ms, s, m, h or d"))?;
    let scale = match unit {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown duration unit \"{other}\" in \"{text}\"")),
    };
    let secs = value * scale;
    if secs <= 0.0 || !secs.is_finite() {
        return Err(format!("duration \"{text}\" must be positive"));
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_whole_and_fractional_seconds() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1545403816.962094), "2018-12-21T14:50:16.962094Z");
        assert_eq!(rfc3339(1545403816.8709), "2018-12-21T14:50:16.8709Z");
    }

    #[test]
    fn durations_take_milliseconds_to_days() {
        assert_eq!(parse_duration("500ms"), Ok(0.5));
        assert_eq!(parse_duration("5m"), Ok(300.0));
        assert_eq!(parse_duration("2d"), Ok(172_800.0));
        assert!(parse_duration("5y").unwrap_err().contains("unknown duration unit"));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn parses_the_three_accepted_forms() {
        assert_eq!(parse_time("2026-03-01T00:00:00Z"), Ok(1772323200.0));
        assert_eq!(parse_time("2026-03-01"), Ok(1772323200.0));
        assert_eq!(parse_time("1772323200"), Ok(1772323200.0));
        assert!(parse_time("next tuesday").unwrap_err().contains("next tuesday"));
    }

    #[test]
    fn parses_window_lengths() {
        assert_eq!(parse_duration("1h"), Ok(3600.0));
        assert_eq!(parse_duration("5m"), Ok(300.0));
        assert_eq!(parse_duration("90"), Ok(90.0));
        assert!(parse_duration("0h").is_err());
        assert!(parse_duration("3w").unwrap_err().contains("unit"));
    }
}
