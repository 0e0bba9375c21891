//! Nearest-neighbour reducers: the k smallest squared distances per row (brute force over
//! the engine's tiles), and counts of columns within a per-row radius.

use super::reduce::RowReducer;
use super::COL_TILE;
use crate::core::simd::Fma;

/// A second coordinate block for joint distances: the key of a pair becomes
/// max(d², ‖u_i − v_j‖²), the square of the max of the two blocks' Euclidean norms.
#[derive(Clone, Copy, Debug)]
pub struct Joint<'a> {
    /// Row points' second block, row-major (rows × d).
    pub rows: &'a [f64],
    /// Column points' second block, row-major (cols × d).
    pub cols: &'a [f64],
    /// Dimension of the second block.
    pub d: usize,
}

/// Keeps, per row, the k smallest keys (squared distances) in ascending order, with their
/// column indices. Rows with fewer than k admissible columns keep +inf and `usize::MAX`.
pub struct TopK<'a> {
    /// Neighbours to keep.
    pub k: usize,
    /// Skip the pair (i, i): rows and columns are the same set.
    pub exclude_self: bool,
    /// Skip pairs whose key is exactly zero (duplicate points).
    pub skip_zero: bool,
    /// Optional second block for joint (max-of-norms) keys.
    pub joint: Option<Joint<'a>>,
}

/// Per-block neighbour lists: `nr * k` keys and indices, row-major.
pub struct TopKState {
    /// Keys, ascending within each row.
    pub d2: Vec<f64>,
    /// Column indices of the keys.
    pub idx: Vec<usize>,
}

impl RowReducer for TopK<'_> {
    type State = TopKState;

    fn init(&self, _r0: usize, nr: usize) -> TopKState {
        TopKState {
            d2: vec![f64::INFINITY; nr * self.k],
            idx: vec![usize::MAX; nr * self.k],
        }
    }

    fn tile<M: Fma>(
        &self,
        st: &mut TopKState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        let k = self.k;
        for i in 0..nr {
            let row = &d2[i * COL_TILE..i * COL_TILE + nc];
            let keys = &mut st.d2[i * k..(i + 1) * k];
            let idx = &mut st.idx[i * k..(i + 1) * k];
            let gi = r0 + i;
            // Most rows of a late tile hold no candidate: a branch-free scan skips them.
            let thr = keys[k - 1];
            let mut any = false;
            for &v in row {
                any |= v < thr;
            }
            if !any {
                continue;
            }
            for (jj, &v0) in row.iter().enumerate() {
                // Cheap rejection first: a joint key is never below the first block's.
                if v0 >= keys[k - 1] {
                    continue;
                }
                let j = c0 + jj;
                if self.exclude_self && j == gi {
                    continue;
                }
                let mut v = v0;
                if let Some(jt) = &self.joint {
                    let a = &jt.rows[gi * jt.d..(gi + 1) * jt.d];
                    let b = &jt.cols[j * jt.d..(j + 1) * jt.d];
                    let mut s = 0.0;
                    for t in 0..jt.d {
                        let e = a[t] - b[t];
                        s += e * e;
                    }
                    if s > v {
                        v = s;
                    }
                    if v >= keys[k - 1] {
                        continue;
                    }
                }
                if self.skip_zero && v == 0.0 {
                    continue;
                }
                // Insertion into the sorted list (k is small); ties keep the earlier column.
                let mut p = k - 1;
                while p > 0 && keys[p - 1] > v {
                    keys[p] = keys[p - 1];
                    idx[p] = idx[p - 1];
                    p -= 1;
                }
                keys[p] = v;
                idx[p] = j;
            }
        }
    }
}

/// Counts, per row, the columns with squared distance below (`strict`) or at most the
/// row's threshold `r2[row]`, skipping the pair (i, i) when `exclude_self`.
pub struct CountWithin<'a> {
    /// Per-row squared radius.
    pub r2: &'a [f64],
    /// `<` rather than `<=`.
    pub strict: bool,
    /// Skip the pair (i, i).
    pub exclude_self: bool,
}

impl RowReducer for CountWithin<'_> {
    type State = Vec<u64>;

    fn init(&self, _r0: usize, nr: usize) -> Vec<u64> {
        vec![0; nr]
    }

    fn tile<M: Fma>(
        &self,
        st: &mut Vec<u64>,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        for i in 0..nr {
            let row = &d2[i * COL_TILE..i * COL_TILE + nc];
            let t = self.r2[r0 + i];
            let mut c = 0u64;
            if self.strict {
                for &v in row {
                    c += (v < t) as u64;
                }
            } else {
                for &v in row {
                    c += (v <= t) as u64;
                }
            }
            let gi = r0 + i;
            if self.exclude_self && gi >= c0 && gi < c0 + nc {
                let v = row[gi - c0];
                let hit = if self.strict { v < t } else { v <= t };
                c -= hit as u64;
            }
            st[i] += c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pairwise::{reduce_rows_with, Points};
    use crate::core::testing::{sq_dist, Lcg};
    use std::sync::atomic::AtomicBool;

    #[test]
    fn topk_and_counts_match_sorting() {
        let (n, d, k) = (300, 2, 4);
        let mut g = Lcg::new(7);
        let mut x: Vec<f64> = (0..n * d).map(|_| (g.next_u64() >> 44) as f64).collect();
        // A duplicate of point 0.
        x[2] = x[0];
        x[3] = x[1];
        let p = Points::new(&x, n, d).unwrap();
        let stop = AtomicBool::new(false);
        let red = TopK {
            k,
            exclude_self: true,
            skip_zero: true,
            joint: None,
        };
        let st = reduce_rows_with(p, p, &red, &stop, Some(true)).unwrap();
        let keys: Vec<f64> = st.iter().flat_map(|s| s.d2.clone()).collect();
        let mut r2 = vec![0.0; n];
        for i in 0..n {
            let mut all: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| sq_dist(&x, i, &x, j, d))
                .filter(|v| *v > 0.0)
                .collect();
            all.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert_eq!(&keys[i * k..(i + 1) * k], &all[..k], "row {i}");
            r2[i] = all[k - 1];
        }
        let cnt = CountWithin {
            r2: &r2,
            strict: false,
            exclude_self: true,
        };
        let c: Vec<u64> = reduce_rows_with(p, p, &cnt, &stop, Some(true))
            .unwrap()
            .concat();
        // k neighbours at positive distance, plus the duplicate for points 0 and 1.
        assert!(c[0] > k as u64 && c[2] >= k as u64);
        for i in 0..n {
            let want = (0..n)
                .filter(|&j| j != i)
                .filter(|&j| sq_dist(&x, i, &x, j, d) <= r2[i])
                .count() as u64;
            assert_eq!(c[i], want);
        }
    }
}
