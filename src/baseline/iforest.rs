//! A small, seeded isolation forest (Liu, Ting and Zhou, ICDM 2008).
//!
//! Each tree isolates a random subsample by cutting a random feature at a random value
//! between its bounds; anomalies are cut off near the root. The score of a point is
//! `2^(-E[h(x)] / c(psi))`, where `h` is the path length and `c(psi)` the average path
//! length of an unsuccessful search in a binary tree of `psi` points: about 0.5 for
//! ordinary points, towards 1 for anomalies. Trees are built from a seed, so the same
//! data and seed always give the same forest, which a detector that people must be able
//! to re-run needs and the crates on offer do not provide.

use rand::Rng;
use rand::SeedableRng;
use rand::seq::index;
use rand_chacha::ChaCha8Rng;

/// Settings as in the original paper: 100 trees of 256 samples each.
#[derive(Clone, Copy, Debug)]
pub struct ForestParams {
    pub n_trees: usize,
    pub sample_size: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    fn default() -> ForestParams {
        ForestParams { n_trees: 100, sample_size: 256, seed: 0 }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Split { feature: usize, value: f64, left: u32, right: u32 },
    Leaf { size: usize },
}

#[derive(Clone, Debug)]
struct Tree {
    nodes: Vec<Node>,
}

/// A fitted forest over points of a fixed dimension.
#[derive(Clone, Debug)]
pub struct IsolationForest {
    trees: Vec<Tree>,
    dim: usize,
    c_psi: f64,
}

impl IsolationForest {
    /// Fits a forest on `rows`, each of the same length. Returns `None` for fewer than
    /// two rows, where nothing can be isolated.
    pub fn fit(rows: &[Vec<f64>], params: ForestParams) -> Option<IsolationForest> {
        if rows.len() < 2 {
            return None;
        }
        let dim = rows[0].len();
        let psi = params.sample_size.min(rows.len()).max(2);
        let height_limit = (psi as f64).log2().ceil() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);

        // A feature constant over all the data can never split a node.
        let all: Vec<usize> = (0..rows.len()).collect();
        let varying: Vec<usize> = (0..dim)
            .filter(|f| {
                let (lo, hi) = bounds(rows, &all, *f);
                hi > lo
            })
            .collect();

        let mut trees = Vec::with_capacity(params.n_trees);
        for _ in 0..params.n_trees {
            let mut sample: Vec<usize> = index::sample(&mut rng, rows.len(), psi).into_vec();
            let mut nodes = Vec::with_capacity(2 * psi);
            build(rows, &mut sample, &varying, 0, height_limit, &mut rng, &mut nodes);
            trees.push(Tree { nodes });
        }
        Some(IsolationForest { trees, dim, c_psi: average_path(psi) })
    }

    /// The anomaly score in (0, 1] of one point.
    pub fn score(&self, point: &[f64]) -> f64 {
        debug_assert_eq!(point.len(), self.dim);
        let total: f64 = self.trees.iter().map(|tree| path_length(tree, point)).sum();
        let mean = total / self.trees.len() as f64;
        2f64.powf(-mean / self.c_psi)
    }
}

fn build(
    rows: &[Vec<f64>],
    sample: &mut [usize],
    varying: &[usize],
    depth: usize,
    height_limit: usize,
    rng: &mut ChaCha8Rng,
    nodes: &mut Vec<Node>,
) -> u32 {
    let idx = nodes.len() as u32;
    if depth >= height_limit || sample.len() <= 1 {
        nodes.push(Node::Leaf { size: sample.len() });
        return idx;
    }

    // Only a feature that still varies inside this sample can split it. Features are
    // tried in a random order and bounds computed only for the ones tried, which keeps
    // a node's cost near one pass over its sample.
    let mut order: Vec<usize> = varying.to_vec();
    let mut chosen = None;
    for tried in 0..order.len() {
        let pick = rng.gen_range(tried..order.len());
        order.swap(tried, pick);
        let feature = order[tried];
        let (lo, hi) = bounds(rows, sample, feature);
        if hi > lo {
            chosen = Some((feature, lo, hi));
            break;
        }
    }
    let Some((feature, lo, hi)) = chosen else {
        nodes.push(Node::Leaf { size: sample.len() });
        return idx;
    };
    let value = rng.gen_range(lo..hi);

    // Partition in place: points below the cut first.
    let mut split = 0;
    for i in 0..sample.len() {
        if rows[sample[i]][feature] < value {
            sample.swap(i, split);
            split += 1;
        }
    }
    nodes.push(Node::Leaf { size: 0 });
    let (left_part, right_part) = sample.split_at_mut(split);
    let left = build(rows, left_part, varying, depth + 1, height_limit, rng, nodes);
    let right = build(rows, right_part, varying, depth + 1, height_limit, rng, nodes);
    nodes[idx as usize] = Node::Split { feature, value, left, right };
    idx
}

fn bounds(rows: &[Vec<f64>], sample: &[usize], feature: usize) -> (f64, f64) {
    sample.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &r| {
        let v = rows[r][feature];
        (lo.min(v), hi.max(v))
    })
}

fn path_length(tree: &Tree, point: &[f64]) -> f64 {
    let mut node = 0usize;
    let mut depth = 0.0;
    loop {
        match tree.nodes[node] {
            Node::Split { feature, value, left, right } => {
                node = if point[feature] < value { left as usize } else { right as usize };
                depth += 1.0;
            }
            Node::Leaf { size } => return depth + average_path(size),
        }
    }
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree
/// of `n` points, which stands in for the part of a path a height limit cut off.
fn average_path(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = n as f64;
            let harmonic = (n - 1.0).ln() + 0.577_215_664_901_532_9;
            2.0 * harmonic - 2.0 * (n - 1.0) / n
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(n: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| vec![rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0)]).collect()
    }

    #[test]
    fn outliers_score_higher_than_inliers() {
        let rows = cloud(500, 1);
        let forest = IsolationForest::fit(&rows, ForestParams::default()).unwrap();
        let inlier = forest.score(&[0.0, 0.0]);
        let outlier = forest.score(&[6.0, -6.0]);
        assert!(inlier < 0.5, "inlier scored {inlier}");
        assert!(outlier > 0.65, "outlier scored {outlier}");
    }

    #[test]
    fn same_seed_same_scores_and_other_seed_differs() {
        let rows = cloud(300, 2);
        let params = ForestParams { seed: 11, ..ForestParams::default() };
        let a = IsolationForest::fit(&rows, params).unwrap();
        let b = IsolationForest::fit(&rows, params).unwrap();
        let c = IsolationForest::fit(&rows, ForestParams { seed: 12, ..params }).unwrap();
        let point = [0.7, -0.2];
        assert_eq!(a.score(&point), b.score(&point));
        assert_ne!(a.score(&point), c.score(&point));
    }

    #[test]
    fn constant_data_and_tiny_samples_do_not_break() {
        let rows = vec![vec![1.0, 1.0]; 10];
        let forest = IsolationForest::fit(&rows, ForestParams::default()).unwrap();
        assert!(forest.score(&[1.0, 1.0]).is_finite());
        assert!(IsolationForest::fit(&rows[..1], ForestParams::default()).is_none());
    }

    #[test]
    fn average_path_matches_the_paper() {
        // c(256) from the paper's normalisation is about 10.24.
        assert!((average_path(256) - 10.24).abs() < 0.01);
    }
}
