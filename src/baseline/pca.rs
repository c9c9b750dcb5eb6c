//! Principal component rotation of a peer group's scaled shape features.
//!
//! The forest cuts one feature at a time; rotating onto the principal axes first lets a
//! cut follow the directions in which a group's windows actually vary (flows and bytes
//! move together). The covariance matrix is small (one row and column per shape
//! feature), so it is decomposed exactly with cyclic Jacobi rotations. linfa's PCA
//! estimates a truncated SVD iteratively and panics on the rank-deficient data a quiet
//! group routinely produces (a feature that never moves), which a detector cannot
//! afford.

// Matrix code reads most plainly with row and column indices.
#![allow(clippy::needless_range_loop)]

/// A rotation onto principal axes.
#[derive(Clone, Debug)]
pub struct Pca {
    mean: Vec<f64>,
    /// One principal axis per row, by decreasing variance along it.
    axes: Vec<Vec<f64>>,
}

impl Pca {
    /// Fits the rotation on rows of equal length; `None` for fewer than two rows.
    pub fn fit(rows: &[Vec<f64>]) -> Option<Pca> {
        let n = rows.len();
        let dim = rows.first()?.len();
        if n < 2 || dim == 0 {
            return None;
        }
        let mean: Vec<f64> =
            (0..dim).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n as f64).collect();
        let mut cov = vec![vec![0.0; dim]; dim];
        for row in rows {
            for a in 0..dim {
                let da = row[a] - mean[a];
                for b in a..dim {
                    cov[a][b] += da * (row[b] - mean[b]);
                }
            }
        }
        for a in 0..dim {
            for b in a..dim {
                cov[a][b] /= (n - 1) as f64;
                cov[b][a] = cov[a][b];
            }
        }
        if cov.iter().flatten().any(|v| !v.is_finite()) {
            return None;
        }
        let (values, vectors) = jacobi_eigen(cov);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|a, b| values[*b].total_cmp(&values[*a]).then(a.cmp(b)));
        let axes = order.iter().map(|k| (0..dim).map(|i| vectors[i][*k]).collect()).collect();
        Some(Pca { mean, axes })
    }

    /// Projects a row onto the principal axes.
    pub fn transform(&self, row: &[f64]) -> Vec<f64> {
        self.axes
            .iter()
            .map(|axis| axis.iter().zip(row).zip(&self.mean).map(|((a, x), m)| a * (x - m)).sum())
            .collect()
    }
}

/// Eigenvalues and eigenvectors (as columns) of a symmetric matrix, by cyclic Jacobi
/// rotations until the off-diagonal mass vanishes.
fn jacobi_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut v: Vec<Vec<f64>> =
        (0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = c * akp - s * akq;
                    a[k][q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_main_axis_of_correlated_data() {
        let rows: Vec<Vec<f64>> =
            (0..100).map(f64::from).map(|x| vec![x, 2.0 * x + 1.0, 5.0]).collect();
        let pca = Pca::fit(&rows).unwrap();
        // All variance lies along (1, 2, 0) / sqrt(5); the constant column adds none.
        let axis = &pca.axes[0];
        assert!((axis[0].abs() - 1.0 / 5f64.sqrt()).abs() < 1e-9);
        assert!((axis[1].abs() - 2.0 / 5f64.sqrt()).abs() < 1e-9);
        let rest: Vec<f64> = rows.iter().map(|r| pca.transform(r)[1].abs()).collect();
        assert!(rest.iter().all(|v| *v < 1e-6));
        // Projection keeps distances: the spread of the first coordinate is the data's.
        let first: Vec<f64> = rows.iter().map(|r| pca.transform(r)[0]).collect();
        let range = first.iter().cloned().fold(f64::MIN, f64::max)
            - first.iter().cloned().fold(f64::MAX, f64::min);
        assert!((range - 99.0 * 5f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn constant_data_does_not_break_it() {
        let rows = vec![vec![1.0, 1.0, 1.0]; 20];
        let pca = Pca::fit(&rows).unwrap();
        assert!(pca.transform(&[2.0, 1.0, 1.0]).iter().all(|v| v.is_finite()));
        assert!(Pca::fit(&rows[..1]).is_none());
    }
}
