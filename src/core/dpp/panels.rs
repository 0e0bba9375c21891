//! Orthonormal directions in R^m stored as column panels (m × PANEL row-major, zero
//! padded), and the SIMD kernels of the projection samplers on them: Σ_j (q_j · u_k)² for
//! blocks of rows of U (a register-blocked product, compute-bound), the coefficients
//! q_j · v, and Gram–Schmidt with re-orthogonalisation when the first pass cancels.

use crate::core::simd::{self, finish_lanes, Fma, Level, LANES};

/// Directions per panel: four vector registers of f64 per row of U in the kernel.
pub(crate) const PANEL: usize = 32;
/// Vector chunks per full panel.
const CHUNKS: usize = PANEL / LANES;
/// Rows of U per register block of [`sq_rows`].
const ROWS: usize = 4;

/// A growing set of directions in R^m, stored by panels of [`PANEL`] columns.
pub(crate) struct Panels {
    m: usize,
    data: Vec<f64>,
    /// The same directions row by row (len × m), for the updates of Gram–Schmidt.
    rows: Vec<f64>,
    len: usize,
}

impl Panels {
    /// Room for `cap` directions in R^m.
    pub(crate) fn new(m: usize, cap: usize) -> Panels {
        Panels {
            m,
            data: vec![0.0; cap.div_ceil(PANEL).max(1) * m * PANEL],
            rows: Vec::with_capacity(cap * m),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Forgets all directions (the padding must stay zero, so the used columns are zeroed).
    pub(crate) fn clear(&mut self) {
        let used = self.len.div_ceil(PANEL) * self.m * PANEL;
        self.data[..used].fill(0.0);
        self.rows.clear();
        self.len = 0;
    }

    /// Appends q (length m); the caller keeps the set orthonormal.
    pub(crate) fn push(&mut self, q: &[f64]) {
        let (p, col) = (self.len / PANEL, self.len % PANEL);
        let need = (p + 1) * self.m * PANEL;
        if self.data.len() < need {
            self.data.resize(need, 0.0);
        }
        let panel = &mut self.data[p * self.m * PANEL..need];
        for (row, &x) in panel.chunks_exact_mut(PANEL).zip(q) {
            row[col] = x;
        }
        self.rows.extend_from_slice(&q[..self.m]);
        self.len += 1;
    }

    /// The panels in use (a partial last panel is zero padded and computed in full: the
    /// full-width kernel is the one that vectorises well).
    fn panels(&self) -> impl Iterator<Item = &[f64]> {
        let size = self.m * PANEL;
        (0..self.len.div_ceil(PANEL)).map(move |p| &self.data[p * size..(p + 1) * size])
    }

    /// Σ_j (q_j · u)² for the rows u of `rows` (row-major, m columns), written to `out`.
    /// Each row's sum has a fixed order of operations, whatever the rows around it.
    pub(crate) fn sq_rows(&self, level: Level, rows: &[f64], out: &mut [f64]) {
        out.fill(0.0);
        for panel in self.panels() {
            sq_rows_at(level, rows, self.m, panel, out);
        }
    }

    /// Σ_j (q_j · u)² for one row u when it stays below `bound`, else None (then the
    /// later panels are skipped). The sum is the one [`Panels::sq_rows`] gives.
    pub(crate) fn sq_row_below(&self, level: Level, row: &[f64], bound: f64) -> Option<f64> {
        let mut s = [0.0f64];
        for panel in self.panels() {
            sq_rows_at(level, row, self.m, panel, &mut s);
            if s[0] >= bound {
                return None;
            }
        }
        (s[0] < bound).then_some(s[0])
    }

    /// Gram–Schmidt of `v` (length m, overwritten) against the set: classical
    /// Gram–Schmidt, repeated when the first pass kept less than half of ‖v‖² (then the
    /// cancellation may have left components along the set; twice is enough).
    /// Returns the squared norm of the residual. `work` has length ≥ len rounded up to
    /// [`PANEL`].
    pub(crate) fn orthogonalise(&self, level: Level, v: &mut [f64], work: &mut [f64]) -> f64 {
        let n0 = norm_sq(v);
        if self.len == 0 {
            return n0;
        }
        let mut n1 = n0;
        for _pass in 0..2 {
            for (p, panel) in self.panels().enumerate() {
                let c = &mut work[p * PANEL..(p + 1) * PANEL];
                coeffs_at(level, v, self.m, panel, c);
            }
            subtract_at(level, v, &self.rows, &work[..self.len]);
            let n = norm_sq(v);
            let again = n < 0.5 * n1;
            n1 = n;
            if !again {
                break;
            }
        }
        n1
    }
}

fn norm_sq(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum()
}

/// Sums of squares of the panel coefficients of `R` rows.
#[inline(always)]
fn sq_block<M: Fma, const R: usize>(rows: &[f64], m: usize, panel: &[f64], out: &mut [f64]) {
    let rr: [&[f64]; R] = std::array::from_fn(|r| &rows[r * m..(r + 1) * m]);
    let mut acc = [[[0.0f64; LANES]; CHUNKS]; R];
    for (l, ql) in panel.chunks_exact(PANEL).enumerate().take(m) {
        for r in 0..R {
            let b = rr[r][l];
            for c in 0..CHUNKS {
                for j in 0..LANES {
                    acc[r][c][j] = M::ma(b, ql[c * LANES + j], acc[r][c][j]);
                }
            }
        }
    }
    for r in 0..R {
        let mut s = [0.0f64; LANES];
        for a in &acc[r] {
            for j in 0..LANES {
                s[j] = M::ma(a[j], a[j], s[j]);
            }
        }
        out[r] += finish_lanes(&s);
    }
}

#[inline(always)]
fn sq_rows_body<M: Fma>(rows: &[f64], m: usize, panel: &[f64], out: &mut [f64]) {
    let full = out.len() / ROWS * ROWS;
    let (head, tail) = out.split_at_mut(full);
    for (b, o) in head.chunks_exact_mut(ROWS).enumerate() {
        sq_block::<M, ROWS>(&rows[b * ROWS * m..(b + 1) * ROWS * m], m, panel, o);
    }
    for (t, o) in tail.chunks_exact_mut(1).enumerate() {
        let k = full + t;
        sq_block::<M, 1>(&rows[k * m..(k + 1) * m], m, panel, o);
    }
}

simd::simd_fn!(fn sq_rows_at => sq_rows_body(
    rows: &[f64], m: usize, panel: &[f64], out: &mut [f64]) -> ());

/// c_j = q_j · v for the panel's columns (zero beyond the directions).
#[inline(always)]
fn coeffs_body<M: Fma>(v: &[f64], m: usize, panel: &[f64], c: &mut [f64]) {
    let mut acc = [[0.0f64; LANES]; CHUNKS];
    for (&b, ql) in v[..m].iter().zip(panel.chunks_exact(PANEL)) {
        for (a, q) in acc.iter_mut().zip(ql.chunks_exact(LANES)) {
            for j in 0..LANES {
                a[j] = M::ma(b, q[j], a[j]);
            }
        }
    }
    for (dst, a) in c.chunks_exact_mut(LANES).zip(&acc) {
        dst.copy_from_slice(a);
    }
}

simd::simd_fn!(fn coeffs_at => coeffs_body(v: &[f64], m: usize, panel: &[f64], c: &mut [f64]) -> ());

/// v -= Σ_j c_j q_j, the q_j being the rows of `q` (each of v's length); 32 entries of v
/// stay in registers while the directions stream past.
#[inline(always)]
fn subtract_body<M: Fma>(v: &mut [f64], q: &[f64], c: &[f64]) {
    let m = v.len();
    let full = m / PANEL * PANEL;
    for l0 in (0..full).step_by(PANEL) {
        let mut acc = [[0.0f64; LANES]; CHUNKS];
        for (a, x) in acc.iter_mut().zip(v[l0..l0 + PANEL].chunks_exact(LANES)) {
            a.copy_from_slice(x);
        }
        for (&cj, qj) in c.iter().zip(q.chunks_exact(m)) {
            let qb = &qj[l0..l0 + PANEL];
            for (a, x) in acc.iter_mut().zip(qb.chunks_exact(LANES)) {
                for t in 0..LANES {
                    a[t] = M::ma(-cj, x[t], a[t]);
                }
            }
        }
        for (a, x) in acc.iter().zip(v[l0..l0 + PANEL].chunks_exact_mut(LANES)) {
            x.copy_from_slice(a);
        }
    }
    for l in full..m {
        let mut x = v[l];
        for (&cj, qj) in c.iter().zip(q.chunks_exact(m)) {
            x = M::ma(-cj, qj[l], x);
        }
        v[l] = x;
    }
}

simd::simd_fn!(fn subtract_at => subtract_body(v: &mut [f64], q: &[f64], c: &[f64]) -> ());

/// Squared norms of a few rows, their accumulations overlapping.
#[inline(always)]
fn norms_of<M: Fma>(rs: &[&[f64]], o: &mut [f64]) {
    let m = rs[0].len();
    let full = m / LANES * LANES;
    let mut acc = [[0.0f64; LANES]; ROWS];
    for c in (0..full).step_by(LANES) {
        for (a, r) in acc.iter_mut().zip(rs) {
            let r8 = &r[c..c + LANES];
            for j in 0..LANES {
                a[j] = M::ma(r8[j], r8[j], a[j]);
            }
        }
    }
    for ((a, r), o) in acc.iter_mut().zip(rs).zip(o.iter_mut()) {
        for (j, x) in r[full..].iter().enumerate() {
            a[j] = M::ma(*x, *x, a[j]);
        }
        *o = finish_lanes(a);
    }
}

/// Squared norms of the rows of U (n×m row-major), written to `out`; four rows at a time.
#[inline(always)]
fn row_norms_body<M: Fma>(u: &[f64], m: usize, out: &mut [f64]) {
    let blocks = out.len() / ROWS;
    for (b, o) in out.chunks_mut(ROWS).enumerate() {
        let k0 = b * ROWS;
        if b < blocks {
            let rs: [&[f64]; ROWS] = std::array::from_fn(|r| &u[(k0 + r) * m..(k0 + r + 1) * m]);
            norms_of::<M>(&rs, o);
        } else {
            for (t, ot) in o.iter_mut().enumerate() {
                let r = &u[(k0 + t) * m..(k0 + t + 1) * m];
                norms_of::<M>(&[r], std::slice::from_mut(ot));
            }
        }
    }
}

simd::simd_fn!(pub(crate) fn row_norms_at => row_norms_body(u: &[f64], m: usize, out: &mut [f64]) -> ());

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::dpp::rng::Rng;
    use crate::core::testing::simd_levels;

    fn random(len: usize, seed: u64) -> Vec<f64> {
        let mut r = Rng::stream(seed, 0);
        (0..len).map(|_| r.uniform() - 0.5).collect()
    }

    /// Orthonormal directions by Gram–Schmidt in plain scalar code.
    fn directions(m: usize, k: usize, seed: u64) -> Vec<Vec<f64>> {
        let mut out: Vec<Vec<f64>> = Vec::new();
        for t in 0..k {
            let mut v = random(m, seed + t as u64);
            for _ in 0..2 {
                for q in &out {
                    let c: f64 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
                    v.iter_mut().zip(q).for_each(|(x, y)| *x -= c * y);
                }
            }
            let nv = norm_sq(&v).sqrt();
            out.push(v.iter().map(|x| x / nv).collect());
        }
        out
    }

    #[test]
    fn kernels_match_scalar_reference_at_every_level() {
        // Sizes cover partial chunks, partial panels, several panels and row tails.
        for &(n, m, k) in &[(7, 5, 3), (13, 37, 29), (9, 70, 70), (6, 12, 9)] {
            let u = random(n * m, 1);
            let qs = directions(m, k, 100);
            let mut panels = Panels::new(m, 4);
            qs.iter().for_each(|q| panels.push(q));
            let want: Vec<f64> = u
                .chunks(m)
                .map(|row| {
                    qs.iter()
                        .map(|q| q.iter().zip(row).map(|(a, b)| a * b).sum::<f64>().powi(2))
                        .sum()
                })
                .collect();
            let norms: Vec<f64> = u.chunks(m).map(norm_sq).collect();
            for level in simd_levels() {
                let mut got = vec![0.0; n];
                panels.sq_rows(level, &u, &mut got);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-13 * (1.0 + w.abs()),
                        "{level:?} {g} {w}"
                    );
                }
                // Row by row gives the same bits as the blocked call.
                for (i, row) in u.chunks(m).enumerate() {
                    let mut one = [0.0];
                    panels.sq_rows(level, row, &mut one);
                    assert_eq!(one[0].to_bits(), got[i].to_bits());
                }
                let mut rn = vec![0.0; n];
                row_norms_at(level, &u, m, &mut rn);
                for (g, w) in rn.iter().zip(&norms) {
                    assert!((g - w).abs() <= 1e-13 * w);
                }
                // Gram–Schmidt leaves a residual orthogonal to every direction.
                let mut v = u[..m].to_vec();
                let mut work = vec![0.0; k.div_ceil(PANEL) * PANEL];
                let r = panels.orthogonalise(level, &mut v, &mut work);
                assert!((r - norm_sq(&v)).abs() <= 1e-15);
                for q in &qs {
                    let c: f64 = q.iter().zip(&v).map(|(a, b)| a * b).sum();
                    assert!(c.abs() < 1e-14, "{c}");
                }
            }
            panels.clear();
            assert_eq!(panels.len(), 0);
            assert!(panels.data.iter().all(|&x| x == 0.0));
        }
    }
}
