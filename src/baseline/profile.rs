//! Window features and the baseline profiles of devices and peer groups.
//!
//! A window has two kinds of features. Shape features (volumes, counts, shares,
//! regularity) can be computed from the window alone, so the baseline's own windows have
//! them too and the isolation forest and the robust z-scores learn from them. Context
//! features (conversations and external peers new to the device or its group, activity
//! at an unusual hour) only mean something against a baseline, so they are computed for
//! scored windows and are zero for baseline windows.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;

use super::DetectConfig;
use super::iforest::{ForestParams, IsolationForest};
use super::pca::Pca;
use super::stats::Robust;
use super::window::{IdMap, Registry, TupleKey, WindowAcc, Windows};
use crate::model::PeerAttr;

/// Names of the exported features, shape features first.
pub const FEATURE_NAMES: [&str; 14] = [
    "flows_log",
    "bytes_sent_log",
    "bytes_received_log",
    "peers",
    "ports",
    "external_share",
    "failed_ratio",
    "fan_out",
    "beacon",
    "bytes_sent_external_log",
    "new_tuples_device",
    "new_tuples_group",
    "new_external_peers",
    "off_schedule",
];

pub const N_SHAPE: usize = 10;
/// Index of the failed-connection ratio among the shape features.
pub const FAILED_RATIO: usize = 6;
/// Index of the fan-out (distinct internal hosts reached) among the shape features.
pub const FAN_OUT: usize = 7;

/// The smallest spread a shape feature's z-score divides by, so that a feature that
/// never moved in the baseline does not turn the slightest change into a huge z.
pub const SPREAD_FLOOR: [f64; N_SHAPE] = [0.35, 0.5, 0.5, 1.0, 1.0, 0.05, 0.05, 1.0, 0.1, 0.5];

pub fn shape_features(window: &WindowAcc, registry: &Registry) -> [f64; N_SHAPE] {
    let mut ports: HashSet<(u16, u8)> = HashSet::new();
    for key in window.tuples.keys() {
        ports.insert((key.port(), key.proto() as u8));
    }
    let mut fan_out = 0u32;
    let mut beacon = 0f64;
    for (peer, acc) in &window.peers {
        if acc.flows_out > 0 && registry.peer_is_internal_endpoint(*peer) {
            fan_out += 1;
        }
        beacon = beacon.max(acc.periodicity());
    }
    let flows = f64::from(window.flows.max(1));
    [
        f64::from(window.flows).ln_1p(),
        (window.bytes_sent as f64).ln_1p(),
        (window.bytes_received as f64).ln_1p(),
        window.peers.len() as f64,
        ports.len() as f64,
        f64::from(window.external_flows) / flows,
        if window.flows_out == 0 {
            0.0
        } else {
            f64::from(window.failed_out) / f64::from(window.flows_out)
        },
        f64::from(fan_out),
        beacon,
        (window.bytes_sent_external as f64).ln_1p(),
    ]
}

/// One exported window.
#[derive(Clone, Debug)]
pub struct FeatureRow {
    pub device_id: String,
    pub window_start: f64,
    pub window_end: f64,
    pub values: [f64; 14],
    pub is_baseline: bool,
}

/// What a device did during the baseline.
#[derive(Debug, Default)]
pub struct DeviceProfile {
    pub n_windows: usize,
    pub tuples: HashSet<TupleKey>,
    pub external_peers: HashSet<u32>,
    /// Robust statistics of each shape feature over the device's baseline windows.
    pub robust: Vec<Robust>,
    /// Share of baseline days on which the device originated traffic in each UTC hour.
    pub occupancy: Option<[f64; 24]>,
    /// Mean shape of the device's baseline windows, for clustering.
    pub mean_shape: Vec<f64>,
}

/// What a peer group did during the baseline, and how its members behave while scored.
#[derive(Debug)]
pub struct GroupProfile {
    pub key: String,
    pub members: Vec<u32>,
    /// For each conversation kind, how many members had it in the baseline.
    pub tuple_members: IdMap<TupleKey, u32>,
    pub external_peers: IdMap<u32, u32>,
    pub robust: Vec<Robust>,
    pub n_windows: usize,
    pub model: Option<ShapeModel>,
    /// How many members show each conversation kind and external peer while scored:
    /// something new that most of a group adopts at once is a fleet-wide change.
    pub scoring_tuple_members: IdMap<TupleKey, u32>,
    pub scoring_peer_members: IdMap<u32, u32>,
    /// Members that were seen at all, in either period.
    pub active_members: usize,
    pub occupancy: Option<[f64; 24]>,
}

/// A peer group's isolation forest over robustly scaled, PCA-rotated shape features.
#[derive(Debug)]
pub struct ShapeModel {
    center: Vec<f64>,
    scale: Vec<f64>,
    pca: Option<Pca>,
    forest: IsolationForest,
    /// The 99th percentile of the forest's scores on the baseline windows themselves.
    pub baseline_p99: f64,
}

impl ShapeModel {
    fn fit(rows: &[[f64; N_SHAPE]], robust: &[Robust], seed: u64) -> Option<ShapeModel> {
        if rows.len() < 8 {
            return None;
        }
        let center: Vec<f64> = robust.iter().map(|r| r.median).collect();
        let scale: Vec<f64> =
            robust.iter().zip(SPREAD_FLOOR).map(|(r, floor)| r.spread.max(floor)).collect();
        let scaled: Vec<Vec<f64>> = rows.iter().map(|r| scale_row(r, &center, &scale)).collect();
        let pca = Pca::fit(&scaled);
        let points: Vec<Vec<f64>> = match &pca {
            Some(pca) => scaled.iter().map(|r| pca.transform(r)).collect(),
            None => scaled,
        };
        let forest =
            IsolationForest::fit(&points, ForestParams { seed, ..ForestParams::default() })?;
        let mut own: Vec<f64> = points.iter().map(|p| forest.score(p)).collect();
        own.sort_by(f64::total_cmp);
        let p99_idx = ((own.len() as f64 * 0.99).ceil() as usize).clamp(1, own.len()) - 1;
        let baseline_p99 = own[p99_idx].max(0.5);
        Some(ShapeModel { center, scale, pca, forest, baseline_p99 })
    }

    /// The isolation score of one window.
    pub fn score(&self, row: &[f64; N_SHAPE]) -> f64 {
        let scaled = scale_row(row, &self.center, &self.scale);
        match &self.pca {
            Some(pca) => self.forest.score(&pca.transform(&scaled)),
            None => self.forest.score(&scaled),
        }
    }
}

fn scale_row(row: &[f64; N_SHAPE], center: &[f64], scale: &[f64]) -> Vec<f64> {
    (0..N_SHAPE).map(|j| (row[j] - center[j]) / scale[j]).collect()
}

/// Profiles of every device and group.
#[derive(Debug)]
pub struct Profiles {
    pub devices: Vec<DeviceProfile>,
    pub groups: Vec<GroupProfile>,
    pub device_group: Vec<usize>,
}

impl Profiles {
    pub fn build(
        config: &DetectConfig,
        registry: &Registry,
        baseline: &Windows,
        scoring: &Windows,
    ) -> Profiles {
        let device_group_keys = group_keys(config, registry, baseline, scoring);
        let mut key_index: BTreeMap<String, usize> = BTreeMap::new();
        for key in &device_group_keys {
            let next = key_index.len();
            key_index.entry(key.clone()).or_insert(next);
        }
        // Number groups in key order so output does not depend on inventory order.
        for (i, idx) in key_index.values_mut().enumerate() {
            *idx = i;
        }
        let device_group: Vec<usize> = device_group_keys.iter().map(|k| key_index[k]).collect();

        let n_devices = registry.devices.len();
        let mut device_rows: Vec<Vec<[f64; N_SHAPE]>> = vec![Vec::new(); n_devices];
        let mut devices: Vec<DeviceProfile> =
            (0..n_devices).map(|_| DeviceProfile::default()).collect();
        let mut active_hours: Vec<HashSet<i64>> = vec![HashSet::new(); n_devices];
        let (mut first_hour, mut last_hour) = (i64::MAX, i64::MIN);
        for window in &baseline.windows {
            let d = window.device as usize;
            let profile = &mut devices[d];
            profile.n_windows += 1;
            profile.tuples.extend(window.tuples.keys().copied());
            for peer in window.peers.keys() {
                if registry.peer_is_external(*peer) {
                    profile.external_peers.insert(*peer);
                }
            }
            device_rows[d].push(shape_features(window, registry));
            let hour = (window.window_idx as f64 * config.window_secs / 3600.0).floor() as i64;
            first_hour = first_hour.min(hour);
            last_hour = last_hour.max(hour);
            if window.flows_out > 0 {
                active_hours[d].insert(hour);
            }
        }
        // A schedule needs at least two days of baseline to mean anything.
        let baseline_days =
            if first_hour <= last_hour { (last_hour - first_hour + 1) as f64 / 24.0 } else { 0.0 };
        for (d, profile) in devices.iter_mut().enumerate() {
            profile.robust = robust_columns(&device_rows[d]);
            profile.mean_shape = mean_columns(&device_rows[d]);
            if baseline_days >= 2.0 && profile.n_windows > 0 {
                let mut counts = [0f64; 24];
                for hour in &active_hours[d] {
                    counts[hour.rem_euclid(24) as usize] += 1.0;
                }
                profile.occupancy = Some(counts.map(|c| (c / baseline_days).min(1.0)));
            }
        }

        let mut groups: Vec<GroupProfile> = key_index
            .keys()
            .map(|key| GroupProfile {
                key: key.clone(),
                members: Vec::new(),
                tuple_members: IdMap::default(),
                external_peers: IdMap::default(),
                robust: Vec::new(),
                n_windows: 0,
                model: None,
                scoring_tuple_members: IdMap::default(),
                scoring_peer_members: IdMap::default(),
                active_members: 0,
                occupancy: None,
            })
            .collect();
        let mut seen: Vec<bool> = vec![false; n_devices];
        for window in baseline.windows.iter().chain(&scoring.windows) {
            seen[window.device as usize] = true;
        }
        for (d, group_idx) in device_group.iter().enumerate() {
            let group = &mut groups[*group_idx];
            group.members.push(d as u32);
            group.active_members += usize::from(seen[d]);
            for tuple in &devices[d].tuples {
                *group.tuple_members.entry(*tuple).or_insert(0) += 1;
            }
            for peer in &devices[d].external_peers {
                *group.external_peers.entry(*peer).or_insert(0) += 1;
            }
        }
        adoption(scoring, &device_group, &mut groups, registry);

        for (g, group) in groups.iter_mut().enumerate() {
            let rows: Vec<[f64; N_SHAPE]> = group
                .members
                .iter()
                .flat_map(|d| device_rows[*d as usize].iter().copied())
                .collect();
            group.n_windows = rows.len();
            group.robust = robust_columns(&rows);
            let seed = config.seed ^ (g as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            group.model = ShapeModel::fit(&rows, &group.robust, seed);
            let occupancies: Vec<[f64; 24]> =
                group.members.iter().filter_map(|d| devices[*d as usize].occupancy).collect();
            if !occupancies.is_empty() {
                let mut mean = [0f64; 24];
                for occ in &occupancies {
                    for h in 0..24 {
                        mean[h] += occ[h] / occupancies.len() as f64;
                    }
                }
                group.occupancy = Some(mean);
            }
        }

        Profiles { devices, groups, device_group }
    }

    pub fn group_of(&self, device: u32) -> &GroupProfile {
        &self.groups[self.device_group[device as usize]]
    }

    /// Feature rows of the baseline windows (context features are zero there).
    pub fn baseline_rows(
        &self,
        registry: &Registry,
        baseline: &Windows,
        window_secs: f64,
    ) -> Vec<FeatureRow> {
        baseline
            .windows
            .iter()
            .map(|window| {
                let shape = shape_features(window, registry);
                let mut values = [0f64; 14];
                values[..N_SHAPE].copy_from_slice(&shape);
                let window_start = window.window_idx as f64 * window_secs;
                FeatureRow {
                    device_id: registry.devices[window.device as usize].device_id.clone(),
                    window_start,
                    window_end: window_start + window_secs,
                    values,
                    is_baseline: true,
                }
            })
            .collect()
    }
}

/// Counts, per group, how many members show each conversation kind and external peer
/// during the scoring period.
fn adoption(
    scoring: &Windows,
    device_group: &[usize],
    groups: &mut [GroupProfile],
    registry: &Registry,
) {
    type Users<K> = IdMap<K, HashSet<u32>>;
    let mut per_group: Vec<(Users<TupleKey>, Users<u32>)> = Vec::new();
    per_group.resize_with(groups.len(), || (IdMap::default(), IdMap::default()));
    for window in &scoring.windows {
        let (tuples, peers) = &mut per_group[device_group[window.device as usize]];
        for tuple in window.tuples.keys() {
            tuples.entry(*tuple).or_default().insert(window.device);
        }
        for peer in window.peers.keys() {
            if registry.peer_is_external(*peer) {
                peers.entry(*peer).or_default().insert(window.device);
            }
        }
    }
    for (group, (tuples, peers)) in groups.iter_mut().zip(per_group) {
        group.scoring_tuple_members =
            tuples.into_iter().map(|(k, users)| (k, users.len() as u32)).collect();
        group.scoring_peer_members =
            peers.into_iter().map(|(k, users)| (k, users.len() as u32)).collect();
    }
}

/// The peer-group key of every device: the configured attributes, shortened one at a
/// time while the group has fewer than `min_group_size` members.
fn group_keys(
    config: &DetectConfig,
    registry: &Registry,
    _baseline: &Windows,
    _scoring: &Windows,
) -> Vec<String> {
    let key_of = |d: usize, len: usize| -> String {
        let device = &registry.devices[d];
        config
            .peer_key
            .iter()
            .take(len)
            .map(|attr| {
                let value = attr.value(device);
                if value.is_empty() && *attr == PeerAttr::DeviceType { "unknown" } else { value }
            })
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let n = registry.devices.len();
    let mut keys: Vec<Option<String>> = vec![None; n];
    for len in (1..=config.peer_key.len().max(1)).rev() {
        let mut sizes: BTreeMap<String, usize> = BTreeMap::new();
        for (d, key) in keys.iter().enumerate() {
            if key.is_none() {
                *sizes.entry(key_of(d, len)).or_insert(0) += 1;
            }
        }
        for (d, key) in keys.iter_mut().enumerate() {
            if key.is_none() {
                let candidate = key_of(d, len);
                if sizes[&candidate] >= config.min_group_size || len == 1 {
                    *key = Some(candidate);
                }
            }
        }
    }
    keys.into_iter().map(|k| k.unwrap_or_default()).collect()
}

fn robust_columns(rows: &[[f64; N_SHAPE]]) -> Vec<Robust> {
    (0..N_SHAPE)
        .map(|j| {
            let mut column: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            Robust::of(&mut column).unwrap_or(Robust { median: 0.0, spread: 0.0 })
        })
        .collect()
}

fn mean_columns(rows: &[[f64; N_SHAPE]]) -> Vec<f64> {
    if rows.is_empty() {
        return Vec::new();
    }
    (0..N_SHAPE).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / rows.len() as f64).collect()
}

pub fn write_features_csv(rows: &[FeatureRow], out: impl Write) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    write!(out, "device_id,window_start,window_end")?;
    for name in FEATURE_NAMES {
        write!(out, ",{name}")?;
    }
    writeln!(out, ",is_baseline")?;
    for row in rows {
        write!(
            out,
            "{},{},{}",
            csv_field(&row.device_id),
            crate::timefmt::rfc3339(row.window_start),
            crate::timefmt::rfc3339(row.window_end)
        )?;
        for value in row.values {
            write!(out, ",{value}")?;
        }
        writeln!(out, ",{}", u8::from(row.is_baseline))?;
    }
    out.flush()
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}
