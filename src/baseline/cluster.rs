//! Devices whose behaviour does not match their labelled type.
//!
//! Devices are clustered by the mean shape of their baseline windows (k-means from
//! linfa, seeded). Each labelled type usually lands in one cluster; a device that lands
//! in a cluster dominated by another type behaves like that type, which points at a
//! mislabelled inventory entry or at a device that is not what it claims to be.

use linfa::prelude::*;
use linfa_clustering::KMeans;
use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::collections::BTreeMap;

use super::profile::{N_SHAPE, Profiles};
use super::window::Registry;

/// A device that behaves like another type than the one it is labelled with.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TypeMismatch {
    pub device_id: String,
    pub labelled_type: String,
    pub behaves_like: String,
}

pub fn type_mismatches(registry: &Registry, profiles: &Profiles, seed: u64) -> Vec<TypeMismatch> {
    let profiled: Vec<usize> = (0..registry.devices.len())
        .filter(|d| profiles.devices[*d].mean_shape.len() == N_SHAPE)
        .collect();
    let mut types: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &profiled {
        *types.entry(registry.devices[*d].device_type.as_str()).or_insert(0) += 1;
    }
    // Clustering only says something when there are several well-populated types.
    let k = types.values().filter(|n| **n >= 3).count();
    if k < 2 || profiled.len() < 2 * k {
        return Vec::new();
    }

    let mut data = Array2::zeros((profiled.len(), N_SHAPE));
    for (i, d) in profiled.iter().enumerate() {
        for (j, v) in profiles.devices[*d].mean_shape.iter().enumerate() {
            data[[i, j]] = *v;
        }
    }
    standardise(&mut data);
    let dataset = DatasetBase::from(data.clone());
    let rng = ChaCha8Rng::seed_from_u64(seed);
    let Ok(model) = KMeans::params_with_rng(k, rng).max_n_iterations(200).fit(&dataset) else {
        return Vec::new();
    };
    let labels = model.predict(&data);

    // Majority type of each cluster.
    let mut cluster_types: BTreeMap<usize, BTreeMap<&str, usize>> = BTreeMap::new();
    for (i, d) in profiled.iter().enumerate() {
        let kind = registry.devices[*d].device_type.as_str();
        *cluster_types.entry(labels[i]).or_default().entry(kind).or_insert(0) += 1;
    }
    let majority = |counts: &BTreeMap<&str, usize>| -> Option<String> {
        counts.iter().max_by_key(|(_, n)| **n).map(|(kind, _)| kind.to_string())
    };

    // k-means alone splits a varied type into pieces; a device is named only when it
    // also lies far from the rest of its type and closer to the type it clusters with.
    let rows: Vec<Vec<f64>> = data.rows().into_iter().map(|r| r.to_vec()).collect();
    let kinds: Vec<&str> =
        profiled.iter().map(|d| registry.devices[*d].device_type.as_str()).collect();
    let mut out = Vec::new();
    for (i, d) in profiled.iter().enumerate() {
        let device = &registry.devices[*d];
        if types.get(kinds[i]).copied().unwrap_or(0) < 3 {
            continue;
        }
        let Some(counts) = cluster_types.get(&labels[i]) else { continue };
        let own_in_cluster = counts.get(kinds[i]).copied().unwrap_or(0);
        let Some(dominant) = majority(counts) else { continue };
        let dominant_size = types.get(dominant.as_str()).copied().unwrap_or(0);
        if dominant == device.device_type || own_in_cluster != 1 || dominant_size < 3 {
            continue;
        }
        let own_spread = typical_spread(&rows, &kinds, kinds[i], Some(i));
        let to_own = distance(&rows[i], &centroid(&rows, &kinds, kinds[i], Some(i)));
        let to_other = distance(&rows[i], &centroid(&rows, &kinds, &dominant, None));
        if to_own > 3.0 * own_spread.max(0.25) && to_other < to_own {
            out.push(TypeMismatch {
                device_id: device.device_id.clone(),
                labelled_type: device.device_type.clone(),
                behaves_like: dominant,
            });
        }
    }
    out
}

/// Mean of the rows of one type, leaving one row out.
fn centroid(rows: &[Vec<f64>], kinds: &[&str], kind: &str, leave_out: Option<usize>) -> Vec<f64> {
    let members: Vec<&Vec<f64>> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| kinds[*i] == kind && Some(*i) != leave_out)
        .map(|(_, r)| r)
        .collect();
    let dim = rows.first().map_or(0, Vec::len);
    (0..dim)
        .map(|j| members.iter().map(|r| r[j]).sum::<f64>() / members.len().max(1) as f64)
        .collect()
}

/// The median distance of a type's members (but one) to the centroid of the others.
fn typical_spread(rows: &[Vec<f64>], kinds: &[&str], kind: &str, except: Option<usize>) -> f64 {
    let mut distances: Vec<f64> = (0..rows.len())
        .filter(|i| kinds[*i] == kind && Some(*i) != except)
        .map(|i| distance(&rows[i], &centroid(rows, kinds, kind, Some(i))))
        .collect();
    super::stats::median_in_place(&mut distances)
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt()
}

fn standardise(data: &mut Array2<f64>) {
    for mut column in data.columns_mut() {
        let n = column.len() as f64;
        let mean = column.sum() / n;
        let sd = (column.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        let sd = if sd > 1e-9 { sd } else { 1.0 };
        column.mapv_inplace(|v| (v - mean) / sd);
    }
}

#[cfg(test)]
mod tests {
    use crate::baseline::{BaselineSplit, DetectConfig, Detector};
    use crate::model::{ConnState, Criticality, Device, Flow, Inventory, Proto, Service};

    fn device(id: &str, ip: &str, kind: &str) -> Device {
        Device {
            device_id: id.to_string(),
            ip: ip.parse().unwrap(),
            mac: String::new(),
            hostname: String::new(),
            device_type: kind.to_string(),
            vendor: String::new(),
            model: String::new(),
            firmware: String::new(),
            segment: String::new(),
            site: String::new(),
            criticality: Criticality::Medium,
            tags: Default::default(),
        }
    }

    fn flow(ts: f64, orig: &str, resp: &str, port: u16, sent: u64, received: u64) -> Flow {
        Flow {
            ts,
            orig_h: orig.parse().unwrap(),
            orig_p: 40000,
            resp_h: resp.parse().unwrap(),
            resp_p: port,
            proto: Proto::Tcp,
            service: Service::Unknown,
            duration: 1.0,
            orig_bytes: sent,
            resp_bytes: received,
            orig_pkts: 4,
            resp_pkts: 4,
            conn_state: ConnState::SF,
        }
    }

    #[test]
    fn a_device_that_behaves_like_another_type_is_named() {
        // Five pumps chat briefly with a server; five cameras stream video to a
        // recorder. cam-5 is labelled a camera but behaves like a pump.
        let mut devices = Vec::new();
        for n in 1..=5 {
            devices.push(device(&format!("pump-{n}"), &format!("10.1.0.{n}"), "Pump"));
            devices.push(device(&format!("cam-{n}"), &format!("10.2.0.{n}"), "Camera"));
        }
        let inventory = Inventory::new(devices).unwrap();
        let mut detector =
            Detector::new(DetectConfig::default(), BaselineSplit::Until(1e9), Some(&inventory));
        for minute in 0..(3 * 24 * 60) {
            let ts = f64::from(minute) * 60.0;
            for n in 1..=5 {
                let pump = format!("10.1.0.{n}");
                let cam = format!("10.2.0.{n}");
                if minute % 5 == 0 {
                    detector.observe(&flow(ts, &pump, "10.9.0.1", 443, 900, 300));
                }
                if n == 5 {
                    if minute % 5 == 0 {
                        detector.observe(&flow(ts, &cam, "10.9.0.1", 443, 900, 300));
                    }
                } else {
                    detector.observe(&flow(ts, "10.9.0.2", &cam, 554, 2_000, 40_000_000));
                    detector.observe(&flow(ts + 1.0, &cam, "10.9.0.3", 514, 200, 0));
                }
            }
        }
        let detection = detector.finish();
        let named: Vec<&str> =
            detection.type_mismatches.iter().map(|m| m.device_id.as_str()).collect();
        assert_eq!(named, ["cam-5"]);
        assert_eq!(detection.type_mismatches[0].behaves_like, "Pump");
    }
}
