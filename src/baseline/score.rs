//! Scoring one window against its device's and its peer group's baselines, and turning
//! the score into risk, severity, reasons and ATT&CK for ICS techniques.
//!
//! Three signals are combined. Novelty (conversation kinds and external peers the device
//! or its group never had) is the strongest: IoT and OT devices are creatures of habit,
//! and almost every pivot shows up as something new. Shape (the isolation forest and
//! robust z-scores over volumes, counts and shares) and schedule (activity at an hour
//! the device is normally idle) are weaker on their own: a change in volume over known
//! conversations is worth a look, not an alert, so they alone stay below `high`.

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::json;

use super::DetectConfig;
use super::profile::{
    FAILED_RATIO, FAN_OUT, FeatureRow, N_SHAPE, Profiles, SPREAD_FLOOR, shape_features,
};
use super::stats::percentile_rank;
use super::window::{Direction, PeerClass, Registry, TupleAcc, TupleKey, WindowAcc, Windows};
use crate::model::{Criticality, Evidence, Finding, Flow, FlowRecord, Reason, Severity};
use crate::timefmt::rfc3339;

/// How far shape and schedule alone can lift a score: enough for `medium`, never for an
/// alert.
const SHAPE_CAP: f64 = 0.55;
/// A device needs this many baseline windows before its own history is trusted over its
/// group's.
const MIN_OWN_WINDOWS: usize = 12;
/// Ports of remote administration, file sharing and industrial control, where a new
/// conversation matters most.
const SENSITIVE_PORTS: [u16; 20] = [
    21, 22, 23, 135, 139, 445, 1433, 3389, 5900, 5985, 5986, 6667, 502, 102, 44818, 2222, 20000,
    47808, 4840, 1911,
];
/// Bytes sent to one external peer in one window that make a transfer bulk.
const BULK_BYTES: u64 = 10_000_000;
/// Connections to one new external peer in one window that are a flood, not a service.
const FLOOD_FLOWS: u32 = 100;
const OT_PORTS: [u16; 8] = [502, 102, 44818, 2222, 20000, 47808, 4840, 1911];
const REMOTE_SERVICE_PORTS: [u16; 8] = [22, 23, 3389, 5900, 5985, 5986, 445, 139];

pub struct Scored {
    pub findings: Vec<Finding>,
    pub rows: Vec<FeatureRow>,
}

/// Scores every window of the scoring period.
pub fn score_all(
    config: &DetectConfig,
    registry: &Registry,
    profiles: &Profiles,
    scoring: &Windows,
) -> Scored {
    let mut order: Vec<&WindowAcc> = scoring.windows.iter().collect();
    order.sort_by_key(|w| (registry.devices[w.device as usize].device_id.as_str(), w.window_idx));

    let shapes: Vec<[f64; N_SHAPE]> = order.iter().map(|w| shape_features(w, registry)).collect();
    let isolation = isolation_scores(profiles, &order, &shapes);

    let assessments: Vec<ShapeAssessment> = order
        .iter()
        .enumerate()
        .map(|(i, w)| assess_shape(config, profiles, w, &shapes[i], isolation[i]))
        .collect();
    let same_time = same_time_medians(profiles, &order, &assessments);
    let sweepers = sweep_sources(registry, &order, &shapes);
    let fleet = Fleet { config, registry, profiles, sweepers: &sweepers };

    let mut findings = Vec::with_capacity(order.len());
    let mut rows = Vec::with_capacity(order.len());
    for (i, window) in order.iter().enumerate() {
        let (finding, row) = score_window(fleet, window, &shapes[i], &assessments[i], same_time[i]);
        findings.push(finding);
        rows.push(row);
    }
    fill_peer_percentiles(profiles, &order, &mut findings);
    Scored { findings, rows }
}

/// Runs each group's forest over its windows in one batch.
fn isolation_scores(
    profiles: &Profiles,
    order: &[&WindowAcc],
    shapes: &[[f64; N_SHAPE]],
) -> Vec<Option<f64>> {
    let mut by_group: Vec<Vec<usize>> = vec![Vec::new(); profiles.groups.len()];
    for (i, window) in order.iter().enumerate() {
        by_group[profiles.device_group[window.device as usize]].push(i);
    }
    let mut out = vec![None; order.len()];
    for (group, members) in profiles.groups.iter().zip(by_group) {
        let Some(model) = &group.model else { continue };
        for i in members {
            out[i] = Some(model.score(&shapes[i]));
        }
    }
    out
}

fn fill_peer_percentiles(profiles: &Profiles, order: &[&WindowAcc], findings: &mut [Finding]) {
    let mut by_group: Vec<Vec<f64>> = vec![Vec::new(); profiles.groups.len()];
    for (window, finding) in order.iter().zip(findings.iter()) {
        by_group[profiles.device_group[window.device as usize]].push(finding.score);
    }
    for scores in &mut by_group {
        scores.sort_by(f64::total_cmp);
    }
    for (window, finding) in order.iter().zip(findings.iter_mut()) {
        let scores = &by_group[profiles.device_group[window.device as usize]];
        finding.peer_percentile = round1(percentile_rank(scores, finding.score));
    }
}

/// Something in a window that its baseline never had.
#[derive(Clone, Debug)]
struct Novelty {
    tuple: TupleKey,
    /// The external address, for a new external peer.
    peer: Option<std::net::IpAddr>,
    weight: f64,
    flows: u32,
    failed: u32,
    bytes_sent: u64,
    bytes_received: u64,
    periodicity: f64,
    mean_gap: f64,
    first: Flow,
    new_to_group: bool,
    fleet_wide: bool,
    members_with_it: u32,
    /// Inbound from a device that swept the network in the same window.
    swept: bool,
}

/// How far a window's shape and timing lie from its baseline, before novelty.
#[derive(Clone, Debug)]
struct ShapeAssessment {
    /// Feature index and robust z-score of every feature at z >= 3, largest first.
    deviations: Vec<(usize, f64)>,
    used_own_history: bool,
    isolation: Option<f64>,
    isolation_part: f64,
    hour: usize,
    occupancy: Option<[f64; 24]>,
    off_schedule: f64,
    /// The combined shape signal, at most `SHAPE_CAP`.
    part: f64,
}

fn assess_shape(
    config: &DetectConfig,
    profiles: &Profiles,
    window: &WindowAcc,
    shape: &[f64; N_SHAPE],
    isolation: Option<f64>,
) -> ShapeAssessment {
    let own = &profiles.devices[window.device as usize];
    let group = profiles.group_of(window.device);

    // Robust z-scores against the device's own history when it has one.
    let used_own_history = own.n_windows >= MIN_OWN_WINDOWS;
    let robust = if used_own_history { &own.robust } else { &group.robust };
    let mut deviations: Vec<(usize, f64)> = Vec::new();
    if !robust.is_empty() {
        for j in 0..N_SHAPE {
            let z = robust[j].z(shape[j], SPREAD_FLOOR[j]);
            if z >= 3.0 {
                deviations.push((j, z));
            }
        }
    }
    deviations.sort_by(|a, b| b.1.total_cmp(&a.1));
    let z_max = deviations.first().map_or(0.0, |d| d.1);
    let z_part = ((z_max - 4.0) / 8.0).clamp(0.0, 1.0);
    let isolation_part = match (isolation, &group.model) {
        (Some(s), Some(model)) => ((s - model.baseline_p99) / 0.15).clamp(0.0, 1.0),
        _ => 0.0,
    };

    let hour = ((window.window_idx as f64 * config.window_secs / 3600.0).floor() as i64)
        .rem_euclid(24) as usize;
    let occupancy = own.occupancy.or(group.occupancy);
    let off_schedule = match occupancy {
        // An hour either side is tolerated, so a daylight-saving shift is not a change.
        Some(occ) if window.flows_out > 0 => {
            1.0 - occ[hour].max(occ[(hour + 23) % 24]).max(occ[(hour + 1) % 24])
        }
        _ => 0.0,
    };
    let part = SHAPE_CAP * isolation_part.max(z_part).max(0.8 * off_schedule);
    ShapeAssessment {
        deviations,
        used_own_history,
        isolation,
        isolation_part,
        hour,
        occupancy,
        off_schedule,
        part,
    }
}

/// The median shape signal of each group's members in each window, where at least
/// three members were active: what the whole group does at once is not one device's
/// anomaly.
fn same_time_medians(
    profiles: &Profiles,
    order: &[&WindowAcc],
    assessments: &[ShapeAssessment],
) -> Vec<f64> {
    let mut buckets: std::collections::HashMap<(usize, i64), Vec<f64>> = Default::default();
    for (window, assessment) in order.iter().zip(assessments) {
        let group = profiles.device_group[window.device as usize];
        buckets.entry((group, window.window_idx)).or_default().push(assessment.part);
    }
    let medians: std::collections::HashMap<(usize, i64), f64> = buckets
        .into_iter()
        .map(|(key, mut parts)| {
            let median =
                if parts.len() >= 3 { super::stats::median_in_place(&mut parts) } else { 0.0 };
            (key, median)
        })
        .collect();
    order
        .iter()
        .map(|w| medians[&(profiles.device_group[w.device as usize], w.window_idx)])
        .collect()
}

/// What every window is scored against: the fitted models and fleet-wide facts.
#[derive(Clone, Copy)]
struct Fleet<'a> {
    config: &'a DetectConfig,
    registry: &'a Registry,
    profiles: &'a Profiles,
    sweepers: &'a Sweepers,
}

fn score_window(
    fleet: Fleet<'_>,
    window: &WindowAcc,
    shape: &[f64; N_SHAPE],
    assessment: &ShapeAssessment,
    group_same_time: f64,
) -> (Finding, FeatureRow) {
    let Fleet { config, registry, profiles, sweepers } = fleet;
    let device = &registry.devices[window.device as usize];
    let group = profiles.group_of(window.device);

    let mut novelties = conversation_novelties(registry, profiles, window, sweepers);
    novelties.extend(peer_novelties(registry, profiles, window));
    novelties.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.first.ts.total_cmp(&b.first.ts)));
    let novelty_mass: f64 = novelties.iter().map(|n| n.weight).sum();
    let novelty = 1.0 - (-novelty_mass).exp();

    let ShapeAssessment {
        deviations,
        used_own_history,
        isolation,
        isolation_part,
        hour,
        occupancy,
        off_schedule,
        part,
    } = assessment;
    let (used_own_history, isolation_part, hour, off_schedule) =
        (*used_own_history, *isolation_part, *hour, *off_schedule);
    let own = &profiles.devices[window.device as usize];
    let robust = if used_own_history { &own.robust } else { &group.robust };
    let shape_part = (part - group_same_time).max(0.0);

    let score = 1.0 - (1.0 - novelty) * (1.0 - shape_part);
    let external = novelties.iter().any(|n| {
        n.weight >= 0.5 && matches!(registry.class(n.tuple.class_id()), PeerClass::External)
    });
    let exposure = if external { 1.0 } else { 0.92 };
    let risk =
        round1((100.0 * score * criticality_weight(device.criticality) * exposure).min(100.0));

    let names = super::profile::FEATURE_NAMES;
    let mut reasons: Vec<Reason> = novelties
        .iter()
        .take(4)
        .map(|n| novelty_reason(registry, n, group.members.len()))
        .collect();
    let baseline_label =
        if used_own_history { "its own baseline" } else { "its peer group's baseline" };
    for (j, z) in deviations.iter().take(3) {
        reasons.push(Reason {
            feature: names[*j].to_string(),
            observed: json!(round3(shape[*j])),
            baseline: json!(round3(robust[*j].median)),
            detail: format!("robust z-score {:.1} against {baseline_label}", z),
        });
    }
    if let (Some(s), Some(model)) = (*isolation, &group.model)
        && isolation_part > 0.0
    {
        reasons.push(Reason {
            feature: "isolation_forest".to_string(),
            observed: json!(round3(s)),
            baseline: json!(round3(model.baseline_p99)),
            detail: format!(
                "isolated faster than 99% of the {} baseline windows of its peer group",
                group.n_windows
            ),
        });
    }
    if off_schedule >= 0.5 {
        let share = occupancy.map_or(0.0, |occ| occ[hour]);
        reasons.push(Reason {
            feature: "off_schedule".to_string(),
            observed: json!(format!("active at {hour:02}:00 UTC")),
            baseline: json!(format!(
                "active at this hour on {:.0}% of baseline days",
                100.0 * share
            )),
            detail: "traffic at an hour the device is normally idle".to_string(),
        });
    }

    let techniques = techniques(&novelties, registry, shape);
    let evidence = evidence(window, &novelties);
    let window_start = window.window_idx as f64 * config.window_secs;
    let new_device = novelties.iter().filter(|n| n.peer.is_none() && !n.new_to_group).count();
    let new_group = novelties.iter().filter(|n| n.peer.is_none() && n.new_to_group).count();
    let new_peers = novelties.iter().filter(|n| n.peer.is_some()).count();

    let mut values = [0f64; 14];
    values[..N_SHAPE].copy_from_slice(shape);
    values[10] = new_device as f64;
    values[11] = new_group as f64;
    values[12] = new_peers as f64;
    values[13] = off_schedule;
    let row = FeatureRow {
        device_id: device.device_id.clone(),
        window_start,
        window_end: window_start + config.window_secs,
        values,
        is_baseline: false,
    };

    let finding = Finding {
        device_id: device.device_id.clone(),
        ip: device.ip,
        peer_group: group.key.clone(),
        window_start: rfc3339(window_start),
        window_end: rfc3339(window_start + config.window_secs),
        score: round4(score),
        peer_percentile: 0.0,
        risk,
        severity: Severity::from_risk(risk),
        reasons,
        techniques,
        evidence,
    };
    (finding, row)
}

/// Inventoried devices that reached at least `SWEEP_FAN_OUT` internal hosts in a window,
/// by (window index, address): their own findings carry the sweep.
type Sweepers = HashSet<(i64, IpAddr)>;

/// Distinct internal hosts a device must reach in one window to count as sweeping.
const SWEEP_FAN_OUT: f64 = 20.0;

/// How much a new inbound conversation counts when its source swept the network in the
/// same window: the target is one of many, and the sweeping device's own finding is
/// where an analyst should look.
const SWEPT_TARGET_WEIGHT: f64 = 0.1;

fn sweep_sources(registry: &Registry, order: &[&WindowAcc], shapes: &[[f64; N_SHAPE]]) -> Sweepers {
    order
        .iter()
        .zip(shapes)
        .filter(|(_, shape)| shape[FAN_OUT] >= SWEEP_FAN_OUT)
        .map(|(w, _)| (w.window_idx, registry.devices[w.device as usize].ip))
        .collect()
}

fn conversation_novelties(
    registry: &Registry,
    profiles: &Profiles,
    window: &WindowAcc,
    sweepers: &Sweepers,
) -> Vec<Novelty> {
    let own = &profiles.devices[window.device as usize];
    let group = profiles.group_of(window.device);
    let cold = own.n_windows == 0;
    let mut out = Vec::new();
    for (tuple, acc) in &window.tuples {
        if own.tuples.contains(tuple) {
            continue;
        }
        let members_with_it = group.tuple_members.get(tuple).copied().unwrap_or(0);
        let new_to_group = members_with_it == 0;
        if !new_to_group && cold {
            continue;
        }
        let adopters = group.scoring_tuple_members.get(tuple).copied().unwrap_or(0);
        let fleet_wide = new_to_group && is_fleet_wide(adopters, group.active_members);
        let class = registry.class(tuple.class_id());
        let swept = tuple.direction() == Direction::In
            && sweepers.contains(&(window.window_idx, acc.first.orig_h));
        let weight = novelty_weight(
            tuple.direction(),
            acc.failed == acc.flows,
            class_weight(class),
            tuple.port(),
            acc.flows,
        ) * familiarity(new_to_group, fleet_wide)
            * if swept { SWEPT_TARGET_WEIGHT } else { 1.0 };
        out.push(Novelty {
            tuple: *tuple,
            peer: None,
            weight,
            flows: acc.flows,
            failed: acc.failed,
            bytes_sent: acc.bytes_sent,
            bytes_received: acc.bytes_received,
            periodicity: 0.0,
            mean_gap: 0.0,
            first: acc.first,
            new_to_group,
            fleet_wide,
            members_with_it,
            swept,
        });
    }
    out
}

fn peer_novelties(registry: &Registry, profiles: &Profiles, window: &WindowAcc) -> Vec<Novelty> {
    let own = &profiles.devices[window.device as usize];
    let group = profiles.group_of(window.device);
    let cold = own.n_windows == 0;
    let mut out = Vec::new();
    let mut rotated_per_service: std::collections::BTreeMap<TupleKey, Vec<usize>> =
        Default::default();
    for (peer, acc) in &window.peers {
        if !registry.peer_is_external(*peer) || own.external_peers.contains(peer) {
            continue;
        }
        let members_with_it = group.external_peers.get(peer).copied().unwrap_or(0);
        let new_to_group = members_with_it == 0;
        if !new_to_group && cold {
            continue;
        }
        let adopters = group.scoring_peer_members.get(peer).copied().unwrap_or(0);
        let fleet_wide = new_to_group && is_fleet_wide(adopters, group.active_members);
        let (direction, flows) = if acc.flows_out > 0 {
            (Direction::Out, acc.flows_out)
        } else {
            (Direction::In, acc.flows_in)
        };
        let periodicity = acc.periodicity();
        let regular = periodicity >= 0.8 && acc.flows_out >= 10;
        let bulk = acc.bytes_sent >= BULK_BYTES;
        // Cloud services rotate addresses (NTP pools, CDNs): a new address for a kind of
        // conversation the device already has with the Internet is weak evidence, unless
        // it is a metronome, carries bulk data out or is flooded with connections.
        let tuple_class = registry.peer_class_id(*peer);
        let tuple = TupleKey::new(tuple_class, acc.first.resp_p, acc.first.proto, direction);
        let known_service = own.tuples.contains(&tuple)
            || (!cold && group.tuple_members.get(&tuple).copied().unwrap_or(0) > 0);
        let flood = flows >= FLOOD_FLOWS;
        let rotated = known_service && !regular && !bulk && !flood;
        let failed_only = acc.bytes_received == 0 && acc.bytes_sent == 0;
        let weight = if rotated {
            // Weighed below, together with the other new addresses of the same service.
            novelty_weight(direction, failed_only, 1.0, acc.first.resp_p, 1) * 0.35
        } else {
            let shape_w = if regular { 1.5 } else { 1.0 };
            novelty_weight(direction, failed_only, 1.0, acc.first.resp_p, flows) * shape_w
        } * familiarity(new_to_group, fleet_wide);
        if rotated {
            rotated_per_service.entry(tuple).or_default().push(out.len());
        }
        out.push(Novelty {
            tuple,
            peer: Some(registry.peers[*peer as usize]),
            weight,
            flows: acc.flows_out + acc.flows_in,
            failed: 0,
            bytes_sent: acc.bytes_sent,
            bytes_received: acc.bytes_received,
            periodicity,
            mean_gap: acc.mean_gap(),
            first: acc.first,
            new_to_group,
            fleet_wide,
            members_with_it,
            swept: false,
        });
    }
    // k new addresses of one known service weigh like one address seen 1 + log10(k)
    // times, however many flows they carried: a pool being rotated, not k new parties.
    for indices in rotated_per_service.values() {
        let k = indices.len() as f64;
        for i in indices {
            out[*i].weight *= (1.0 + k.log10()) / k;
        }
    }
    out
}

/// A change most of a group makes at once is the fleet changing, not one device.
fn is_fleet_wide(adopters: u32, active_members: usize) -> bool {
    active_members >= 3 && adopters >= 3 && f64::from(adopters) >= 0.5 * active_members as f64
}

fn familiarity(new_to_group: bool, fleet_wide: bool) -> f64 {
    match (new_to_group, fleet_wide) {
        (false, _) => 0.25,
        (true, true) => 0.2,
        (true, false) => 1.0,
    }
}

fn novelty_weight(
    direction: Direction,
    failed_only: bool,
    class_w: f64,
    port: u16,
    flows: u32,
) -> f64 {
    let direction_w = match (direction, failed_only) {
        (Direction::Out, _) => 1.0,
        (Direction::In, true) => 0.15,
        (Direction::In, false) => 0.6,
    };
    let port_w = if SENSITIVE_PORTS.contains(&port) {
        1.3
    } else if port < 1024 {
        0.9
    } else {
        0.8
    };
    direction_w * class_w * port_w * (1.0 + f64::from(flows.max(1)).log10())
}

fn class_weight(class: &PeerClass) -> f64 {
    match class {
        PeerClass::External => 1.0,
        PeerClass::UnknownInternal => 1.2,
        PeerClass::Multicast => 0.3,
        PeerClass::Device(_) => 0.8,
    }
}

fn criticality_weight(criticality: Criticality) -> f64 {
    match criticality {
        Criticality::Low => 0.80,
        Criticality::Medium => 0.88,
        Criticality::High => 0.95,
        Criticality::Critical => 1.0,
    }
}

fn novelty_reason(registry: &Registry, n: &Novelty, group_size: usize) -> Reason {
    let class = registry.class(n.tuple.class_id()).label();
    let service = format!("{}/{}", n.tuple.proto().as_str(), n.tuple.port());
    let direction = match n.tuple.direction() {
        Direction::Out => "to",
        Direction::In => "from",
    };
    let peers = match group_size.saturating_sub(1) {
        0 => "this device".to_string(),
        1 => "this device or its one peer".to_string(),
        n => format!("this device or its {n} peers"),
    };
    let baseline = if n.new_to_group {
        format!("never seen for {peers} during the baseline")
    } else {
        format!("seen for {} of the group's devices, never for this one", n.members_with_it)
    };
    let mut detail = format!(
        "first {}: {}:{} -> {}:{}",
        rfc3339(n.first.ts),
        n.first.orig_h,
        n.first.orig_p,
        n.first.resp_h,
        n.first.resp_p
    );
    if n.failed > 0 {
        detail.push_str(&format!("; {} of {} attempts failed", n.failed, n.flows));
    }
    if n.periodicity >= 0.8 {
        detail.push_str(&format!("; regular, every {:.0} s", n.mean_gap));
    }
    if n.fleet_wide {
        detail.push_str("; most of the peer group made the same change (fleet-wide)");
    }
    if n.swept {
        detail.push_str(&format!(
            "; {} reached {} or more hosts in this window: a target of its sweep",
            n.first.orig_h, SWEEP_FAN_OUT
        ));
    }
    match n.peer {
        Some(ip) => Reason {
            feature: "new_external_peer".to_string(),
            observed: json!(format!(
                "{ip} ({service}, {} flows, {} sent, {} received)",
                n.flows,
                human_bytes(n.bytes_sent),
                human_bytes(n.bytes_received)
            )),
            baseline: json!(baseline),
            detail,
        },
        None => Reason {
            feature: "new_conversation".to_string(),
            observed: json!(format!(
                "{service} {direction} {class} ({} flows, {} sent, {} received)",
                n.flows,
                human_bytes(n.bytes_sent),
                human_bytes(n.bytes_received)
            )),
            baseline: json!(baseline),
            detail,
        },
    }
}

/// ATT&CK for ICS techniques for the clear cases, by rule. T0841 is deprecated; scans
/// map to T0846 Remote System Discovery.
fn techniques(novelties: &[Novelty], registry: &Registry, shape: &[f64; N_SHAPE]) -> Vec<String> {
    let fan_out = shape[FAN_OUT];
    let failed_ratio = shape[FAILED_RATIO];
    let new_conversations =
        novelties.iter().filter(|n| n.peer.is_none() && n.weight >= 0.5).count();
    let sweep = fan_out >= 20.0 && (failed_ratio >= 0.3 || new_conversations >= 5);

    let mut ids: Vec<&str> = Vec::new();
    if sweep {
        ids.push("T0846");
    }
    for n in novelties.iter().filter(|n| n.weight >= 0.5) {
        // Inside a sweep, unanswered probes of an admin port are discovery, not use of
        // the service.
        let probes_only = sweep && n.failed == n.flows;
        let port = n.tuple.port();
        let class = registry.class(n.tuple.class_id());
        let external = matches!(class, PeerClass::External);
        match n.tuple.direction() {
            Direction::Out => {
                if REMOTE_SERVICE_PORTS.contains(&port) && !probes_only {
                    ids.push("T0886");
                }
                // Many telnet logins of which some were answered: default credentials
                // being tried, the way Mirai-style worms spread.
                if port == 23 && n.flows >= 20 && !probes_only {
                    ids.push("T0812");
                }
                if port == 445 || port == 139 {
                    ids.push("T0867");
                }
                if external {
                    let chatty_dns = port == 53 && n.flows >= 100;
                    if n.periodicity >= 0.8 || chatty_dns || port == 22 || port == 6667 {
                        ids.push("T0869");
                    }
                    if n.periodicity >= 0.8 && matches!(port, 80 | 443 | 53 | 8080) {
                        ids.push("T0885");
                    }
                    if n.bytes_sent >= 100_000_000 {
                        ids.push("T0882");
                    }
                }
            }
            Direction::In => {
                let unknown = matches!(class, PeerClass::UnknownInternal);
                if unknown && OT_PORTS.contains(&port) && n.failed < n.flows {
                    ids.push("T0848");
                    ids.push("T0855");
                }
                if external && REMOTE_SERVICE_PORTS.contains(&port) {
                    ids.push("T0822");
                }
                // An inside device opening a remote session it never opened before, and
                // the session answered: the receiving end of lateral movement.
                let answered = n.failed < n.flows;
                if !external && answered && REMOTE_SERVICE_PORTS.contains(&port) {
                    ids.push("T0886");
                }
                if !external && answered && (port == 445 || port == 139) {
                    ids.push("T0867");
                }
            }
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().map(str::to_string).collect()
}

fn evidence(window: &WindowAcc, novelties: &[Novelty]) -> Evidence {
    if novelties.iter().any(|n| n.weight >= 0.5) {
        let strong: Vec<&Novelty> = novelties.iter().filter(|n| n.weight >= 0.5).collect();
        let mut flows: u64 =
            strong.iter().filter(|n| n.peer.is_none()).map(|n| u64::from(n.flows)).sum();
        if flows == 0 {
            flows = strong.iter().map(|n| u64::from(n.flows)).sum();
        }
        let mut examples: Vec<FlowRecord> = Vec::new();
        for n in strong {
            let record = FlowRecord::from_flow(&n.first);
            if !examples.contains(&record) {
                examples.push(record);
            }
            if examples.len() == 5 {
                break;
            }
        }
        return Evidence { flows, examples };
    }
    let mut busiest: Vec<&TupleAcc> = window.tuples.values().collect();
    busiest.sort_by(|a, b| {
        (b.bytes_sent + b.bytes_received)
            .cmp(&(a.bytes_sent + a.bytes_received))
            .then(a.first.ts.total_cmp(&b.first.ts))
    });
    Evidence {
        flows: u64::from(window.flows),
        examples: busiest.iter().take(3).map(|t| FlowRecord::from_flow(&t.first)).collect(),
    }
}

pub(crate) fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round4(x: f64) -> f64 {
    (x * 10000.0).round() / 10000.0
}
