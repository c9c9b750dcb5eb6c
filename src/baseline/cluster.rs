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

    // Majority type of each cluster, and majority cluster of each type.
    let mut cluster_types: BTreeMap<usize, BTreeMap<&str, usize>> = BTreeMap::new();
    for (i, d) in profiled.iter().enumerate() {
        let kind = registry.devices[*d].device_type.as_str();
        *cluster_types.entry(labels[i]).or_default().entry(kind).or_insert(0) += 1;
    }
    let majority = |counts: &BTreeMap<&str, usize>| -> Option<String> {
        counts.iter().max_by_key(|(_, n)| **n).map(|(kind, _)| kind.to_string())
    };
    let mut out = Vec::new();
    for (i, d) in profiled.iter().enumerate() {
        let device = &registry.devices[*d];
        if types.get(device.device_type.as_str()).copied().unwrap_or(0) < 3 {
            continue;
        }
        let Some(counts) = cluster_types.get(&labels[i]) else { continue };
        let own_in_cluster = counts.get(device.device_type.as_str()).copied().unwrap_or(0);
        if let Some(dominant) = majority(counts)
            && dominant != device.device_type
            && own_in_cluster == 1
        {
            out.push(TypeMismatch {
                device_id: device.device_id.clone(),
                labelled_type: device.device_type.clone(),
                behaves_like: dominant,
            });
        }
    }
    out
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
