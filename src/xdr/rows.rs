//! Normalisation of XQL result rows, so that a query answered inline (JSON) and the
//! same query answered as a stream (NDJSON) give equal rows.
//!
//! The two forms differ: inline results carry `_time` and `insert_timestamp` as epoch
//! milliseconds, the stream carries them as text such as `2021-05-18 09:59:28 UTC` or
//! `2021-10-14 03:59:09.793 UTC`; and both may spell null and booleans as the strings
//! `"NULL"`, `"TRUE"` and `"FALSE"`. After `normalize_row` those are JSON null and
//! booleans, and every string of exactly the stream's timestamp shape, in any field,
//! is an integer of epoch milliseconds.

use serde_json::Value;
use time::{Date, Month, PrimitiveDateTime, Time};

use super::Row;

/// Rewrites a row in place; values inside arrays and nested objects are rewritten too.
pub fn normalize_row(row: &mut Row) {
    for value in row.values_mut() {
        normalize_value(value);
    }
}

fn normalize_value(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(replacement) = normalize_text(text) {
                *value = replacement;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_value),
        Value::Object(fields) => fields.values_mut().for_each(normalize_value),
        _ => {}
    }
}

fn normalize_text(text: &str) -> Option<Value> {
    match text {
        "NULL" => Some(Value::Null),
        "TRUE" => Some(Value::Bool(true)),
        "FALSE" => Some(Value::Bool(false)),
        _ => parse_stream_timestamp(text).map(Value::from),
    }
}

/// Epoch milliseconds of `YYYY-MM-DD HH:MM:SS[.f...] UTC`, or `None` when the text has
/// any other shape. Fractions beyond milliseconds are truncated.
pub fn parse_stream_timestamp(text: &str) -> Option<i64> {
    let stamp = text.strip_suffix(" UTC")?;
    let bytes = stamp.as_bytes();
    if !stamp.is_ascii()
        || bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b' '
    {
        return None;
    }
    if bytes[13] != b':' || bytes[16] != b':' {
        return None;
    }

    let year = digits(&stamp[0..4])?;
    let month = Month::try_from(u8::try_from(digits(&stamp[5..7])?).ok()?).ok()?;
    let day = u8::try_from(digits(&stamp[8..10])?).ok()?;
    let hour = u8::try_from(digits(&stamp[11..13])?).ok()?;
    let minute = u8::try_from(digits(&stamp[14..16])?).ok()?;
    let second = u8::try_from(digits(&stamp[17..19])?).ok()?;

    let millis = match &stamp[19..] {
        "" => 0,
        fraction => {
            let fraction = fraction.strip_prefix('.')?;
            if fraction.is_empty() || fraction.len() > 9 {
                return None;
            }
            let mut first_three: String = fraction.chars().take(3).collect();
            while first_three.len() < 3 {
                first_three.push('0');
            }
            digits(fraction)?;
            digits(&first_three)?
        }
    };

    let date = Date::from_calendar_date(i32::try_from(year).ok()?, month, day).ok()?;
    let time = Time::from_hms(hour, minute, second).ok()?;
    let seconds = PrimitiveDateTime::new(date, time).assume_utc().unix_timestamp();
    Some(seconds * 1000 + i64::from(millis))
}

/// The stream's text for epoch milliseconds: `YYYY-MM-DD HH:MM:SS UTC`, with `.mmm`
/// before ` UTC` when the time is not on a whole second. The inverse of
/// `parse_stream_timestamp`.
pub fn format_stream_timestamp(epoch_ms: i64) -> String {
    let seconds = epoch_ms.div_euclid(1000);
    let millis = epoch_ms.rem_euclid(1000);
    let Ok(at) = time::OffsetDateTime::from_unix_timestamp(seconds) else {
        return "NULL".to_string();
    };
    let mut text = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    if millis != 0 {
        text.push_str(&format!(".{millis:03}"));
    }
    text.push_str(" UTC");
    text
}

fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(value: Value) -> Row {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("test rows are objects"),
        }
    }

    #[test]
    fn formatted_stream_timestamps_read_back_to_the_same_millisecond() {
        assert_eq!(format_stream_timestamp(1_621_331_968_000), "2021-05-18 09:59:28 UTC");
        assert_eq!(format_stream_timestamp(1_634_183_949_793), "2021-10-14 03:59:09.793 UTC");
        for ms in [0_i64, 1, 999, 1_000, 1_700_000_000_042, 4_102_444_799_999] {
            assert_eq!(parse_stream_timestamp(&format_stream_timestamp(ms)), Some(ms), "{ms}");
        }
    }

    #[test]
    fn stream_timestamps_become_epoch_milliseconds() {
        assert_eq!(parse_stream_timestamp("2021-05-18 09:59:28 UTC"), Some(1_621_331_968_000));
        assert_eq!(parse_stream_timestamp("2021-10-14 03:59:09.793 UTC"), Some(1_634_183_949_793));
        assert_eq!(parse_stream_timestamp("2021-10-14 03:59:09.7 UTC"), Some(1_634_183_949_700));
        assert_eq!(
            parse_stream_timestamp("2021-10-14 03:59:09.793456 UTC"),
            Some(1_634_183_949_793)
        );
    }

    #[test]
    fn other_shapes_are_left_alone() {
        for text in [
            "2021-05-18 09:59:28",
            "2021-05-18T09:59:28 UTC",
            "2021-13-18 09:59:28 UTC",
            "2021-02-30 09:59:28 UTC",
            "2021-05-18 09:59:28. UTC",
            "2021-05-18 09:59:28.12a UTC",
            "meeting at 2021-05-18 09:59:28 UTC",
        ] {
            assert_eq!(parse_stream_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn null_and_boolean_spellings_are_replaced_everywhere() {
        let mut stream = row(json!({
            "event_sub_type": "NULL",
            "action_proxy": "FALSE",
            "flags": ["TRUE", "x"],
            "_time": "2021-05-18 09:59:28 UTC",
            "insert_timestamp": "2021-05-18 14:24:51.681 UTC",
            "nested": {"seen": "2021-05-18 09:59:28 UTC"},
            "name": "null",
        }));
        normalize_row(&mut stream);
        assert_eq!(
            Value::Object(stream),
            json!({
                "event_sub_type": null,
                "action_proxy": false,
                "flags": [true, "x"],
                "_time": 1_621_331_968_000_i64,
                "insert_timestamp": 1_621_347_891_681_i64,
                "nested": {"seen": 1_621_331_968_000_i64},
                "name": "null",
            })
        );
    }

    #[test]
    fn a_json_row_and_its_stream_twin_normalise_to_the_same_row() {
        let mut inline = row(json!({"_time": 1_621_331_968_000_i64, "event_sub_type": "NULL"}));
        let mut streamed =
            row(json!({"_time": "2021-05-18 09:59:28 UTC", "event_sub_type": "NULL"}));
        normalize_row(&mut inline);
        normalize_row(&mut streamed);
        assert_eq!(inline, streamed);
    }
}
