//! Robust statistics used for explanations: medians, median absolute deviations and
//! robust z-scores, which a single huge window in the baseline cannot drag around the
//! way it would a mean and a standard deviation.

/// Median and scaled MAD of a sample, the robust stand-ins for mean and deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Robust {
    pub median: f64,
    /// MAD scaled by 1.4826 so it estimates the standard deviation of normal data.
    pub spread: f64,
}

impl Robust {
    pub fn of(values: &mut [f64]) -> Option<Robust> {
        if values.is_empty() {
            return None;
        }
        let median = median_in_place(values);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        let spread = 1.4826 * median_in_place(&mut deviations);
        Some(Robust { median, spread })
    }

    /// How many spreads `value` lies above the median. `floor` keeps a constant
    /// baseline from turning a tiny change into an enormous z-score.
    pub fn z(&self, value: f64, floor: f64) -> f64 {
        (value - self.median) / self.spread.max(floor)
    }
}

pub fn median_in_place(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 }
}

/// Percentage of `sorted` (ascending) that is at or below `value`.
pub fn percentile_rank(sorted: &[f64], value: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at_or_below = sorted.partition_point(|v| *v <= value);
    100.0 * at_or_below as f64 / sorted.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_statistics_ignore_one_outlier() {
        let mut values = vec![10.0, 11.0, 9.0, 10.0, 10.5, 9.5, 1000.0];
        let robust = Robust::of(&mut values).unwrap();
        assert_eq!(robust.median, 10.0);
        assert!(robust.spread < 2.0);
        assert!(robust.z(1000.0, 0.1) > 100.0);
    }

    #[test]
    fn percentile_rank_counts_ties_as_below() {
        let sorted = [1.0, 2.0, 2.0, 3.0];
        assert_eq!(percentile_rank(&sorted, 2.0), 75.0);
        assert_eq!(percentile_rank(&sorted, 0.5), 0.0);
        assert_eq!(percentile_rank(&sorted, 3.0), 100.0);
    }
}
