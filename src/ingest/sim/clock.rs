//! Simulated time: microseconds since the Unix epoch in UTC, and the weekly schedules
//! (business hours, occupancy) that devices follow in their site's local time.
//!
//! Integer microseconds rather than `f64` seconds keep every timestamp exact, so the
//! same seed writes the same bytes on every platform.

pub(crate) const SECOND: i64 = 1_000_000;
pub(crate) const MINUTE: i64 = 60 * SECOND;
pub(crate) const HOUR: i64 = 60 * MINUTE;
pub(crate) const DAY: i64 = 24 * HOUR;

/// Day of the week of an instant, 0 = Monday. 1970-01-01 was a Thursday.
pub(crate) fn weekday(at: i64) -> i64 {
    (at.div_euclid(DAY) + 3).rem_euclid(7)
}

/// Hour of the day, 0..24.
pub(crate) fn hour_of_day(at: i64) -> i64 {
    at.rem_euclid(DAY) / HOUR
}

/// Midnight at or before an instant.
pub(crate) fn day_start(at: i64) -> i64 {
    at.div_euclid(DAY) * DAY
}

/// Whether local time `local` is within Monday–Friday `[open, close)` hours.
pub(crate) fn weekday_hours(local: i64, open: i64, close: i64) -> bool {
    weekday(local) < 5 && (open..close).contains(&hour_of_day(local))
}

/// Business hours, 07–19 Monday to Friday: printers, badge readers, imaging studies.
pub(crate) fn is_business(local: i64) -> bool {
    weekday_hours(local, 7, 19)
}

/// Occupied hours of a building, 06–20 Monday to Friday: HVAC set-points and the
/// controller chatter that follows them.
pub(crate) fn is_occupied(local: i64) -> bool {
    weekday_hours(local, 6, 20)
}

/// Seconds with six decimals, as Zeek prints `ts` and `duration`.
pub(crate) fn as_secs(at: i64) -> f64 {
    at as f64 / SECOND as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-02T00:00:00Z, a Monday.
    const MONDAY: i64 = 1_772_409_600 * SECOND;

    #[test]
    fn knows_the_days_and_business_hours() {
        assert_eq!(weekday(MONDAY), 0);
        assert_eq!(weekday(MONDAY + 5 * DAY + 3 * HOUR), 5);
        assert!(!is_business(MONDAY + 6 * HOUR + 59 * MINUTE));
        assert!(is_business(MONDAY + 7 * HOUR));
        assert!(!is_business(MONDAY + 19 * HOUR));
        assert!(!is_business(MONDAY + 5 * DAY + 10 * HOUR));
        assert!(is_occupied(MONDAY + 6 * HOUR));
        assert_eq!(day_start(MONDAY + 13 * HOUR), MONDAY);
    }
}
