//! Seeded randomness that does not depend on the order things are generated in.
//!
//! Every draw is keyed: a device-hour gets its own ChaCha8 stream seeded from
//! `(seed, device, hour)`, and a periodic event's jitter is a pure function of
//! `(seed, device, stream, occurrence)`. So hour 200 can be generated without hours
//! 0..199, and adding a device does not change any other device's traffic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clock::{HOUR, SECOND};

/// Hashes key parts into one well-mixed 64-bit value (SplitMix64 finaliser per part).
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut state: u64 = 0x243f_6a88_85a3_08d3;
    for part in parts {
        state = splitmix(state ^ part.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    state
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in `[0, 1)` that depends only on the key.
pub(crate) fn unit(parts: &[u64]) -> f64 {
    (mix(parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// A ChaCha8 stream of its own for one key, such as `(seed, device, hour)`.
pub(crate) fn sub_rng(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(parts))
}

/// A log-uniform draw: sizes such as file transfers spread over orders of magnitude.
pub(crate) fn log_uniform(rng: &mut ChaCha8Rng, low: f64, high: f64) -> f64 {
    let (ln_low, ln_high) = (low.ln(), high.ln());
    (ln_low + rng.r#gen::<f64>() * (ln_high - ln_low)).exp()
}

/// A uniform draw of whole bytes in `[low, high]`.
pub(crate) fn bytes_between(rng: &mut ChaCha8Rng, low: u64, high: u64) -> u64 {
    rng.gen_range(low..=high)
}

/// A uniform duration in microseconds between two lengths in seconds.
pub(crate) fn secs_between(rng: &mut ChaCha8Rng, low: f64, high: f64) -> i64 {
    (rng.gen_range(low..high) * SECOND as f64) as i64
}

/// A recurring event: one occurrence every `period`, offset by `phase` from the start
/// of the run, each moved by up to `jitter` either way.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Periodic {
    pub period: i64,
    pub phase: i64,
    pub jitter: i64,
}

impl Periodic {
    /// Calls `emit` with every occurrence that falls in `[from, to)`. An occurrence is
    /// placed by its jittered time, so one that jitters across an hour boundary is
    /// emitted by exactly one hour and the log stays sorted.
    pub fn each(&self, origin: i64, from: i64, to: i64, key: u64, mut emit: impl FnMut(i64)) {
        if self.period <= 0 || to <= from {
            return;
        }
        let base = origin + self.phase;
        let first = (from - self.jitter - base).div_euclid(self.period);
        let last = (to + self.jitter - base).div_euclid(self.period);
        for occurrence in first..=last {
            let nominal = base + occurrence * self.period;
            let offset = if self.jitter > 0 {
                let u = unit(&[key, occurrence as u64]);
                ((u * 2.0 - 1.0) * self.jitter as f64) as i64
            } else {
                0
            };
            let at = nominal + offset;
            if at >= from && at < to {
                emit(at);
            }
        }
    }
}

/// Event times of a Poisson process over `[from, to)` whose rate may change with time:
/// candidates arrive at `max_per_hour` and each is kept with `rate(t) / max_per_hour`
/// (thinning), so schedules such as business hours are honoured to the second.
pub(crate) fn poisson_times(
    rng: &mut ChaCha8Rng,
    from: i64,
    to: i64,
    max_per_hour: f64,
    rate_per_hour: impl Fn(i64) -> f64,
) -> Vec<i64> {
    let mut times = Vec::new();
    if max_per_hour <= 0.0 {
        return times;
    }
    let mean_gap = HOUR as f64 / max_per_hour;
    let mut at = from as f64;
    loop {
        let u: f64 = rng.r#gen();
        at += -(1.0 - u).ln() * mean_gap;
        if at >= to as f64 {
            break;
        }
        let t = at as i64;
        if rng.r#gen::<f64>() * max_per_hour < rate_per_hour(t) {
            times.push(t);
        }
    }
    times
}

/// `count` sorted times spread uniformly over `[from, to)`.
pub(crate) fn uniform_times(rng: &mut ChaCha8Rng, from: i64, to: i64, count: usize) -> Vec<i64> {
    let mut times: Vec<i64> =
        (0..count).map(|_| if to > from { rng.gen_range(from..to) } else { from }).collect();
    times.sort_unstable();
    times
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_depends_on_every_part_and_on_order() {
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_ne!(mix(&[1, 2]), mix(&[1, 3]));
        assert_eq!(mix(&[7, 8, 9]), mix(&[7, 8, 9]));
    }

    #[test]
    fn periodic_occurrences_are_split_between_hours_without_loss_or_overlap() {
        let every_5_min =
            Periodic { period: 300 * SECOND, phase: 17 * SECOND, jitter: 20 * SECOND };
        let mut whole_day = Vec::new();
        every_5_min.each(0, 0, 24 * HOUR, 42, |t| whole_day.push(t));
        let mut by_hour = Vec::new();
        for hour in 0..24 {
            every_5_min.each(0, hour * HOUR, (hour + 1) * HOUR, 42, |t| by_hour.push(t));
        }
        assert_eq!(whole_day, by_hour);
        assert!((287..=289).contains(&whole_day.len()), "{}", whole_day.len());
        assert!(whole_day.windows(2).all(|w| w[1] - w[0] >= 260 * SECOND));
    }

    #[test]
    fn poisson_rate_follows_the_rate_function() {
        let mut rng = sub_rng(&[1]);
        let times =
            poisson_times(
                &mut rng,
                0,
                100 * HOUR,
                50.0,
                |t| {
                    if t < 50 * HOUR { 40.0 } else { 4.0 }
                },
            );
        let early = times.iter().filter(|t| **t < 50 * HOUR).count();
        let late = times.len() - early;
        assert!((1700..2300).contains(&early), "{early}");
        assert!((120..300).contains(&late), "{late}");
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
    }
}
