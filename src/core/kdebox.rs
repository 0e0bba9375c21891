//! Gaussian box probabilities of a KDE (issue 11): for each query box [lo, hi] the
//! weighted sum over data points x_i of P(lo ≤ x_i + L z ≤ hi), z standard normal, for
//! a diagonal bandwidth in any d (products of normal interval probabilities), a full
//! 2-D bandwidth (bivariate normal CDFs at the four corners) and a full 3-D bandwidth
//! (trivariate normal CDFs at the eight corners, Plackett's identity).
//!
//! Everything rests on [`norm_sf`], the upper normal tail with a few ulp relative
//! error: a table of Taylor coefficients of the Mills ratio at steps of 1/64, built
//! once on first use. The trivariate CDF is the scheme of `divest/_kdecalc.py`'s former
//! NumPy `_Tvn` (see docs/design-as-built.md), evaluated with the tail fused into the
//! quadrature's exponential.
//!
//! Work is split into (query, data chunk) tasks whose partial sums are added in a fixed
//! order, so results do not depend on the thread count. Memory: the partial sums, at
//! most 16 per query, and the node tables (a few KiB).

use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::error::invalid;
use super::simd::{self, Fma, SimdTask};
use super::threads;
use super::Result;

// ---- the normal tail ---------------------------------------------------------------

/// Table steps per unit of t.
const STEP: f64 = 64.0;
/// Rows t_j = j/64 for 0 ≤ j ≤ LAST (t up to 40; beyond about 38.6 the rows are 0).
const LAST: usize = 40 * 64;
/// Coefficients per row (degree 6, padded to 8 for aligned rows).
const ROW: usize = 8;
const DEG: usize = 6;
const INV_SQRT_2PI: f64 = 0.398_942_280_401_432_7;

/// Mills ratio M(t) = Q(t)/φ(t) for t > 0: the series of Φ(t) − 1/2 for t < 1/2 (no
/// cancellation there: Q ≥ 0.3), else Laplace's continued fraction evaluated from the
/// back (every term positive, so a few ulp whatever the depth; the depth grows as t
/// shrinks).
fn mills(t: f64, g: f64) -> f64 {
    if t < 0.5 {
        // Φ(t) − 1/2 = φ(t) Σ_k t^(2k+1)/(2k+1)!!.
        let mut term = t;
        let mut s = t;
        let mut k = 1.0;
        while term > 1e-20 * s {
            term *= t * t / (2.0 * k + 1.0);
            s += term;
            k += 1.0;
        }
        return (0.5 - g * s) / g;
    }
    let depth = (4000.0 / (t * t.sqrt())).ceil() as usize + 60;
    let mut v = t;
    for k in (1..=depth).rev() {
        v = t + k as f64 / v;
    }
    1.0 / v
}

/// Rows c_jk = φ(t_j) M^(k)(t_j)/k!, so that Q(t_j + δ) = e^{−(t_j δ + δ²/2)} Σ c_jk δ^k
/// (|δ| ≤ 1/128: the series' remainder is below 1e-17 relative). M^(k) from
/// M' = tM − 1, M^(k+1) = tM^(k) + kM^(k−1).
fn tail_table() -> &'static [[f64; ROW]; LAST + 1] {
    static TABLE: OnceLock<Box<[[f64; ROW]; LAST + 1]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut tab = Box::new([[0.0; ROW]; LAST + 1]);
        for (j, row) in tab.iter_mut().enumerate() {
            let t = j as f64 / STEP;
            // t² = j²/4096 is exact, so φ(t_j) is as good as exp.
            let g = (-0.5 * t * t).exp() * INV_SQRT_2PI;
            if g == 0.0 {
                break;
            }
            let m0 = if j == 0 {
                1.253_314_137_315_500_3 // √(π/2)
            } else {
                mills(t, g)
            };
            let mut m = [0.0; DEG + 1];
            m[0] = m0;
            m[1] = t * m0 - 1.0;
            for k in 1..DEG {
                m[k + 1] = t * m[k] + k as f64 * m[k - 1];
            }
            let mut f = 1.0;
            for k in 0..=DEG {
                row[k] = g * m[k] / f;
                f *= (k + 1) as f64;
            }
        }
        tab
    })
}

/// For a ≥ 0 (or NaN): the table row, δ and the exponent −(t_j δ + δ²/2), so that
/// Q(a) = e^{exponent}·poly(row, δ). |a| ≥ 40, inf and NaN take the last row (zeros).
/// Branch-free (the row index by the 1.5·2^52 rounding trick), so node loops vectorise.
#[inline(always)]
fn tail_parts(a: f64) -> (usize, f64, f64) {
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    // f64::min returns the number when the other operand is NaN: NaN takes the last row.
    let s = (a * STEP).min(LAST as f64);
    let t = s + SHIFT;
    let j = (t.to_bits().wrapping_sub(SHIFT.to_bits()) as usize).min(LAST);
    let tj = (t - SHIFT) * (1.0 / STEP);
    let d = (a - tj).min(0.5 / STEP);
    (j, d, -(tj + 0.5 * d) * d)
}

#[inline(always)]
fn poly<M: Fma>(row: &[f64; ROW], d: f64) -> f64 {
    let mut acc = row[DEG];
    for k in (0..DEG).rev() {
        acc = M::ma(acc, d, row[k]);
    }
    acc
}

/// Upper tail Q(t) = 1 − Φ(t) of the standard normal, a few ulp relative wherever the
/// value is a normal double; exactly 0 (t ≥ 40) or 1 (t ≤ −40) beyond.
pub fn norm_sf(t: f64) -> f64 {
    norm_sf_m::<simd::Unfused>(t)
}

/// Φ(t), full relative accuracy in the lower tail.
pub fn norm_cdf(t: f64) -> f64 {
    norm_sf(-t)
}

#[inline(always)]
fn norm_sf_m<M: Fma>(t: f64) -> f64 {
    let tab = tail_table();
    let (j, d, e) = tail_parts(t.abs());
    let q = poly::<M>(&tab[j], d) * simd::exp::<M>(e);
    let c = 1.0 - q;
    if t < 0.0 {
        c
    } else {
        q
    }
}

/// P(a < Z < b), a ≤ b (±inf allowed), from the tails on the side away from 0.
#[inline(always)]
fn interval<M: Fma>(a: f64, b: f64) -> f64 {
    let up = a >= 0.0;
    let (u, v) = if up { (a, b) } else { (-b, -a) };
    (norm_sf_m::<M>(u) - norm_sf_m::<M>(v)).max(0.0)
}

// ---- Gauss–Legendre nodes ------------------------------------------------------------

/// Nodes and weights of the n-point Gauss–Legendre rule on [−1, 1] (Newton on P_n).
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let nf = n as f64;
    for i in 0..n {
        let mut z = (std::f64::consts::PI * (i as f64 + 0.75) / (nf + 0.5)).cos();
        for _ in 0..100 {
            let (mut p0, mut p1) = (1.0, z);
            for k in 2..=n {
                let kf = k as f64;
                let p2 = ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf;
                p0 = p1;
                p1 = p2;
            }
            let dp = nf * (z * p1 - p0) / (z * z - 1.0);
            let dz = p1 / dp;
            z -= dz;
            if dz.abs() < 1e-17 {
                break;
            }
        }
        // The derivative at the final node (the loop's is one step behind).
        let (mut p0, mut p1) = (1.0, z);
        for k in 2..=n {
            let kf = k as f64;
            let p2 = ((2.0 * kf - 1.0) * z * p1 - (kf - 1.0) * p0) / kf;
            p0 = p1;
            p1 = p2;
        }
        let dp = nf * (z * p1 - p0) / (z * z - 1.0);
        x[n - 1 - i] = z;
        w[n - 1 - i] = 2.0 / ((1.0 - z * z) * dp * dp);
    }
    (x, w)
}

// ---- bivariate normal ---------------------------------------------------------------

const BVN_NODES: usize = 20;
const TWO_PI: f64 = 2.0 * std::f64::consts::PI;

/// Constants of P(X > h, Y > k) for one correlation r (a = √(1 − r²) passed in, so it
/// keeps its accuracy near ±1): |r| < 0.925, Sheppard's integral by 20-point
/// Gauss–Legendre; else the expansion of Drezner–Wesolowsky and Genz (2004) with the
/// smooth remainder by Gauss–Legendre. About 1e-15 absolute.
#[derive(Clone, Debug)]
pub struct Bvn {
    r: f64,
    a: f64,
    /// |r| < 0.925: sin θ_q, 1/(1 − sin² θ_q), weight·(asin r/2)/(2π).
    /// else: s_q², √(1 − s_q²), weight·(a/2).
    c0: Vec<f64>,
    c1: Vec<f64>,
    c2: Vec<f64>,
}

impl Bvn {
    pub fn new(r: f64, a: f64) -> Bvn {
        let (x, w) = gauss_legendre(BVN_NODES);
        let (mut c0, mut c1, mut c2) = (vec![], vec![], vec![]);
        if r.abs() < 0.925 {
            let half = 0.5 * r.asin();
            for (xq, wq) in x.iter().zip(&w) {
                let sn = (half * (1.0 + xq)).sin();
                c0.push(sn);
                c1.push(1.0 / (1.0 - sn * sn));
                c2.push(wq * half / TWO_PI);
            }
        } else {
            let half = 0.5 * a;
            for (xq, wq) in x.iter().zip(&w) {
                let sv = half * (1.0 + xq);
                let xs = sv * sv;
                c0.push(xs);
                c1.push((1.0 - xs).sqrt());
                c2.push(half * wq);
            }
        }
        Bvn { r, a, c0, c1, c2 }
    }

    /// P(X > h, Y > k) for finite h, k.
    #[inline(always)]
    fn upper<M: Fma>(&self, h: f64, k: f64) -> f64 {
        let r = self.r;
        if r.abs() < 0.925 {
            let hk = h * k;
            let hs = 0.5 * (h * h + k * k);
            let n = BVN_NODES;
            let (c0, c1, c2) = (&self.c0[..n], &self.c1[..n], &self.c2[..n]);
            let mut buf = [0.0; BVN_NODES];
            for q in 0..n {
                let e = M::ma(c0[q], hk, -hs) * c1[q];
                buf[q] = c2[q] * simd::exp::<M>(e);
            }
            let acc = simd::sum(&buf);
            return M::ma(norm_sf_m::<M>(h), norm_sf_m::<M>(k), acc);
        }
        let a = self.a;
        let kk = if r > 0.0 { k } else { -k };
        let hk = h * kk;
        let as_ = a * a;
        let bs = (h - kk) * (h - kk);
        let b = bs.sqrt();
        let c = (4.0 - hk) / 8.0;
        let d = (12.0 - hk) / 16.0;
        let e0 = (-0.5 * (bs / as_ + hk)).exp();
        let mut integral =
            a * e0 * (1.0 - c * (bs - as_) * (1.0 - d * bs / 5.0) / 3.0 + c * d * as_ * as_ / 5.0);
        if b > 0.0 {
            let tail = (-0.5 * hk).exp() * TWO_PI.sqrt() * norm_sf_m::<M>(b / a) * b;
            integral -= tail * (1.0 - c * bs * (1.0 - d * bs / 5.0) / 3.0);
        }
        let n = BVN_NODES;
        let (c0, c1, c2) = (&self.c0[..n], &self.c1[..n], &self.c2[..n]);
        for q in 0..n {
            let (xs, rs) = (c0[q], c1[q]);
            let ex = simd::exp::<M>(-0.5 * (bs / xs + hk));
            let rem = simd::exp::<M>(-hk * (1.0 - rs) / (2.0 * (1.0 + rs))) / rs
                - (1.0 + c * xs * (1.0 + d * xs));
            // ex = 0 where rem may be huge: that node contributes nothing.
            integral += if ex > 0.0 { c2[q] * (ex * rem) } else { 0.0 };
        }
        integral /= TWO_PI;
        if !integral.is_finite() {
            integral = 0.0;
        }
        if r > 0.0 {
            return (norm_sf_m::<M>(h.max(kk)) - integral).clamp(0.0, 1.0);
        }
        // P(X > h, Y > k) = P(X > h) − P(X > h, −Y > −k); −Y has correlation −r > 0.
        let extra = if kk > h {
            (norm_sf_m::<M>(h) - norm_sf_m::<M>(kk)).max(0.0)
        } else {
            0.0
        };
        (extra + integral).clamp(0.0, 1.0)
    }

    /// P(X ≤ u, Y ≤ v), ±inf allowed.
    #[inline(always)]
    fn cdf<M: Fma>(&self, u: f64, v: f64) -> f64 {
        if u == f64::NEG_INFINITY || v == f64::NEG_INFINITY {
            return 0.0;
        }
        match (u == f64::INFINITY, v == f64::INFINITY) {
            (true, true) => 1.0,
            (true, false) => norm_sf_m::<M>(-v),
            (false, true) => norm_sf_m::<M>(-u),
            // Beyond 40 every tail is below the smallest double: clipping changes
            // nothing and keeps h·k finite.
            _ => self.upper::<M>(-u.clamp(-40.0, 40.0), -v.clamp(-40.0, 40.0)),
        }
    }

    /// P(X ≤ u, Y ≤ v) (portable path).
    pub fn cdf_at(&self, u: f64, v: f64) -> f64 {
        self.cdf::<simd::Unfused>(u, v)
    }
}

/// Per-node scratch of the Plackett loop (row offsets, δ, weighted factors).
#[derive(Clone, Debug)]
struct Scratch {
    off: Vec<i64>,
    d: Vec<f64>,
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Scratch {
    fn new(n: usize) -> Scratch {
        Scratch {
            off: vec![0; n],
            d: vec![0.0; n],
            a: vec![0.0; n],
            b: vec![0.0; n],
        }
    }
}

/// Σ_q a_q + b_q·poly(row at off_q, δ_q), the lengths a multiple of 8 (padding: a = b =
/// 0, a valid row), in 8 lane sums combined in a fixed order.
#[inline(always)]
fn tail_sum<M: Fma>(off: &[i64], d: &[f64], a: &[f64], b: &[f64]) -> f64 {
    let n = off.len();
    debug_assert!(n.is_multiple_of(8) && d.len() == n && a.len() == n && b.len() == n);
    #[cfg(target_arch = "x86_64")]
    if M::AVX512 {
        // SAFETY: M::AVX512 holds only on the AVX-512 dispatch path; offsets come from
        // tail_parts (rows 0..=LAST of the table).
        return unsafe { tail_sum_512(off, d, a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if M::AVX2 {
        // SAFETY: M::AVX2 holds only on the AVX2 and AVX-512 paths; offsets as above.
        return unsafe { tail_sum_avx2(off, d, a, b) };
    }
    let tab = tail_table();
    let mut acc = [0.0; 8];
    for (q0, l) in (0..n).map(|q| (q, q % 8)) {
        let j = (off[q0] as usize / ROW).min(LAST);
        acc[l] += M::ma(b[q0], poly::<M>(&tab[j], d[q0]), a[q0]);
    }
    simd::finish_lanes(&acc)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tail_sum_512(off: &[i64], d: &[f64], a: &[f64], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let base = tail_table().as_ptr() as *const f64;
    let n = off.len() / 8 * 8;
    let mut acc = _mm512_setzero_pd();
    let mut q = 0;
    while q < n {
        // SAFETY: lanes q..q+8 lie inside the slices; every offset names a table row.
        unsafe {
            let o = _mm512_loadu_si512(off.as_ptr().add(q).cast());
            let dq = _mm512_loadu_pd(d.as_ptr().add(q));
            let mut p = _mm512_i64gather_pd::<8>(o, base.add(DEG).cast());
            for k in (0..DEG).rev() {
                let c = _mm512_i64gather_pd::<8>(o, base.add(k).cast());
                p = _mm512_fmadd_pd(p, dq, c);
            }
            let aq = _mm512_loadu_pd(a.as_ptr().add(q));
            let bq = _mm512_loadu_pd(b.as_ptr().add(q));
            acc = _mm512_add_pd(acc, _mm512_fmadd_pd(bq, p, aq));
        }
        q += 8;
    }
    let mut lanes = [0.0f64; 8];
    // SAFETY: lanes holds 8 f64.
    unsafe { _mm512_storeu_pd(lanes.as_mut_ptr(), acc) };
    simd::finish_lanes(&lanes)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tail_sum_avx2(off: &[i64], d: &[f64], a: &[f64], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    let base = tail_table().as_ptr() as *const f64;
    let n = off.len() / 8 * 8;
    let (mut acc0, mut acc1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut q = 0;
    while q < n {
        // SAFETY: lanes q..q+8 lie inside the slices; every offset names a table row.
        unsafe {
            for (h, acc) in [(0usize, &mut acc0), (4, &mut acc1)] {
                let o = _mm256_loadu_si256(off.as_ptr().add(q + h).cast());
                let dq = _mm256_loadu_pd(d.as_ptr().add(q + h));
                let mut p = _mm256_i64gather_pd::<8>(base.add(DEG).cast(), o);
                for k in (0..DEG).rev() {
                    let c = _mm256_i64gather_pd::<8>(base.add(k).cast(), o);
                    p = _mm256_fmadd_pd(p, dq, c);
                }
                let aq = _mm256_loadu_pd(a.as_ptr().add(q + h));
                let bq = _mm256_loadu_pd(b.as_ptr().add(q + h));
                *acc = _mm256_add_pd(*acc, _mm256_fmadd_pd(bq, p, aq));
            }
        }
        q += 8;
    }
    let mut lanes = [0.0f64; 8];
    // SAFETY: lanes holds 8 f64 (two halves of 4).
    unsafe {
        _mm256_storeu_pd(lanes.as_mut_ptr(), acc0);
        _mm256_storeu_pd(lanes.as_mut_ptr().add(4), acc1);
    }
    // Lane l of acc0/acc1 is lane l / l + 4 of the 8-lane order.
    simd::finish_lanes(&lanes)
}

// ---- trivariate normal -------------------------------------------------------------

const TVN_NODES: usize = 10;
const TVN_MAX_LEVELS: usize = 60;
/// Standardised limits at or above BIG drop their variable (P(X > 8.5) ≈ 9.5e-18,
/// absolute); below −ZERO the probability underflows to 0.
const BIG: f64 = 8.5;
const ZERO: f64 = 38.5;

/// One Plackett term's constants at every node, structure of arrays padded to a
/// multiple of 8 with zero weights.
#[derive(Clone, Debug, Default)]
struct Term {
    sn: Vec<f64>,
    nic2: Vec<f64>,
    ck: Vec<f64>,
    c1: Vec<f64>,
    cj: Vec<f64>,
    wt: Vec<f64>,
}

/// The trivariate normal CDF for one correlation structure (a 3×3 lower-triangular
/// bandwidth factor L): Φ3(h; R) = Φ(h1)Φ2(h2, h3; r23) + I_2 + I_3 (Plackett), I_j by
/// graded Gauss–Legendre panels in Sheppard's angle; X1 is the variable whose
/// complementary pair is least correlated (see docs/design-as-built.md).
#[derive(Clone, Debug)]
pub struct Tvn {
    /// Per-dimension standard deviations √H_kk.
    pub sd: [f64; 3],
    r: [[f64; 3]; 3],
    sine: [[f64; 3]; 3],
    perm: [usize; 3],
    bvn23: Bvn,
    /// Bivariate CDFs of the pairs (1,2), (2,0), (0,1) (index: the dropped variable).
    pairs: [Bvn; 3],
    terms: [Option<Term>; 2],
}

impl Tvn {
    /// From the row-major lower-triangular factor `l` (9 values).
    pub fn new(l: &[f64]) -> Tvn {
        let row = |i: usize| [l[3 * i], l[3 * i + 1], l[3 * i + 2]];
        let mut sd = [0.0; 3];
        let mut e = [[0.0; 3]; 3];
        for i in 0..3 {
            let v = row(i);
            sd[i] = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            for k in 0..3 {
                e[i][k] = v[k] / sd[i];
            }
        }
        let mut r = [[0.0; 3]; 3];
        let mut sine = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                r[i][j] = e[i][0] * e[j][0] + e[i][1] * e[j][1] + e[i][2] * e[j][2];
                if i != j {
                    let (a, b) = (e[i], e[j]);
                    let c = [
                        a[1] * b[2] - a[2] * b[1],
                        a[2] * b[0] - a[0] * b[2],
                        a[0] * b[1] - a[1] * b[0],
                    ];
                    sine[i][j] = (c[0] * c[0] + c[1] * c[1] + c[2] * c[2]).sqrt();
                }
            }
        }
        let det = {
            let v = l[0] * l[4] * l[8] / (sd[0] * sd[1] * sd[2]);
            v * v
        };
        // X1: the variable whose complementary pair has the smallest |r| (the first
        // such on ties).
        let mut j1 = 0;
        for i in 1..3 {
            if sine[(i + 1) % 3][(i + 2) % 3] > sine[(j1 + 1) % 3][(j1 + 2) % 3] {
                j1 = i;
            }
        }
        let (j2, j3) = ((j1 + 1) % 3, (j1 + 2) % 3);
        let (r23, a23) = (r[j2][j3], sine[j2][j3]);
        let (x, w) = gauss_legendre(TVN_NODES);
        let mut terms: [Option<Term>; 2] = [None, None];
        for (slot, (jj, kk)) in terms.iter_mut().zip([(j2, j3), (j3, j2)]) {
            let (rj, rk, aj) = (r[j1][jj], r[j1][kk], sine[j1][jj]);
            if rj == 0.0 {
                continue;
            }
            let th = rj.asin();
            // Distance (in units of θ's range) to the nearest singularity beyond the end.
            let near = 1f64
                .min(aj / th.abs())
                .min(det / (2.0 * a23 * a23) * rj.abs() / (th.abs() * aj))
                .max(f64::MIN_POSITIVE);
            let lev = ((1.0 / near).log2().ceil() + 1.0).clamp(1.0, TVN_MAX_LEVELS as f64) as usize;
            let mut edges = vec![0.0];
            for q in 1..lev {
                edges.push(1.0 - 0.5f64.powi(q as i32));
            }
            edges.push(1.0);
            let mut t = Term::default();
            for p in edges.windows(2) {
                let (a, b) = (p[0], p[1]);
                for (xq, wq) in x.iter().zip(&w) {
                    let tau = a + (b - a) * 0.5 * (xq + 1.0);
                    let wt = wq * (0.5 * (b - a));
                    let theta = th * tau;
                    let (sn, cs) = theta.sin_cos();
                    let tt = sn / rj;
                    let dt = (1.0 - tt * tt) * (a23 * a23) + tt * tt * det;
                    let v = tt * rk;
                    let inv = 1.0 / (cs * dt.sqrt());
                    t.sn.push(sn);
                    t.nic2.push(-0.5 / (cs * cs));
                    t.ck.push(cs * cs * inv);
                    t.c1.push(-(v - r23 * sn) * inv);
                    t.cj.push(-(r23 - sn * v) * inv);
                    t.wt.push(wt * (th / TWO_PI));
                }
            }
            while !t.sn.len().is_multiple_of(8) {
                t.sn.push(0.0);
                t.nic2.push(0.0);
                t.ck.push(0.0);
                t.c1.push(0.0);
                t.cj.push(0.0);
                t.wt.push(0.0);
            }
            *slot = Some(t);
        }
        let pair = |i: usize| {
            let (j, k) = ((i + 1) % 3, (i + 2) % 3);
            Bvn::new(r[j][k], sine[j][k])
        };
        Tvn {
            sd,
            r,
            sine,
            perm: [j1, j2, j3],
            bvn23: Bvn::new(r23, a23),
            pairs: [pair(0), pair(1), pair(2)],
            terms,
        }
    }

    /// Correlations and their sines √(1 − r²).
    pub fn corr(&self) -> ([[f64; 3]; 3], [[f64; 3]; 3]) {
        (self.r, self.sine)
    }

    /// Σ_q wt_q e^{E_q} Φ(A_q): the tail fused into the exponential,
    /// e^{E}·Φ(A) = e^{E − t_jδ − δ²/2}·poly for A < 0, e^{E} minus that for A ≥ 0.
    /// Two passes over the nodes: an elementwise loop without table reads (the loop
    /// vectoriser maps it to full registers) leaves per node the row offset, δ and the
    /// two weighted factors; then [`tail_sum`] reads the rows (gathers on AVX2/AVX-512).
    #[inline(always)]
    fn plackett<M: Fma>(t: &Term, h1: f64, hj: f64, hk: f64, buf: &mut Scratch) -> f64 {
        let base = -0.5 * hj * hj;
        let n = t.sn.len();
        let (sn, nic2, ck) = (&t.sn[..n], &t.nic2[..n], &t.ck[..n]);
        let (c1, cj, wt) = (&t.c1[..n], &t.cj[..n], &t.wt[..n]);
        let (off, dd) = (&mut buf.off[..n], &mut buf.d[..n]);
        let (fa, fb) = (&mut buf.a[..n], &mut buf.b[..n]);
        for q in 0..n {
            let u = M::ma(-hj, sn[q], h1);
            let ex = M::ma(u * u, nic2[q], base);
            let arg = M::ma(hk, ck[q], M::ma(c1[q], h1, cj[q] * hj));
            let (j, d, e) = tail_parts(arg.abs());
            let pe = wt[q] * simd::exp::<M>(ex + e);
            let full = wt[q] * simd::exp::<M>(ex);
            let neg = arg < 0.0;
            off[q] = (j * ROW) as i64;
            dd[q] = d;
            fa[q] = if neg { 0.0 } else { full };
            fb[q] = if neg { pe } else { -pe };
        }
        tail_sum::<M>(off, dd, fa, fb)
    }

    #[inline(always)]
    fn finite<M: Fma>(&self, h: [f64; 3], buf: &mut Scratch) -> f64 {
        let (h1, h2, h3) = (h[self.perm[0]], h[self.perm[1]], h[self.perm[2]]);
        let mut out = norm_sf_m::<M>(-h1) * self.bvn23.cdf::<M>(h2, h3);
        if let Some(t) = &self.terms[0] {
            out += Self::plackett::<M>(t, h1, h2, h3, buf);
        }
        if let Some(t) = &self.terms[1] {
            out += Self::plackett::<M>(t, h1, h3, h2, buf);
        }
        out.clamp(0.0, 1.0)
    }

    /// Scratch for [`Tvn::cdf`]'s node loop.
    fn scratch(&self) -> Scratch {
        Scratch::new(
            self.terms
                .iter()
                .flatten()
                .map(|t| t.sn.len())
                .max()
                .unwrap_or(0),
        )
    }

    /// P(X ≤ h) for standardised limits, ±inf allowed; a limit ≥ 8.5 drops its variable.
    #[inline(always)]
    fn cdf<M: Fma>(&self, h: [f64; 3], buf: &mut Scratch) -> f64 {
        if h.iter().any(|&v| v < -ZERO) {
            return 0.0;
        }
        let up = [h[0] >= BIG, h[1] >= BIG, h[2] >= BIG];
        match up.iter().filter(|&&u| u).count() {
            3 => 1.0,
            2 => {
                let i = (0..3).find(|&i| !up[i]).unwrap_or(0);
                norm_sf_m::<M>(-h[i])
            }
            1 => {
                let i = (0..3).find(|&i| up[i]).unwrap_or(0);
                self.pairs[i].cdf::<M>(h[(i + 1) % 3], h[(i + 2) % 3])
            }
            _ => self.finite::<M>(h, buf),
        }
    }

    /// P(X ≤ h) (portable path).
    pub fn cdf_at(&self, h: [f64; 3]) -> f64 {
        let mut buf = self.scratch();
        self.cdf::<simd::Unfused>(h, &mut buf)
    }

    /// Nodes per finite evaluation (both Plackett terms, padding included).
    pub fn nodes(&self) -> usize {
        self.terms.iter().flatten().map(|t| t.sn.len()).sum()
    }
}

// ---- box probabilities of a KDE ----------------------------------------------------

/// The per-point model of a Gaussian box probability.
#[derive(Clone, Debug)]
pub enum BoxModel {
    /// Diagonal bandwidth: per-dimension standard deviations.
    Diag(Vec<f64>),
    /// Full 2-D bandwidth: standard deviations and the bivariate CDF.
    Full2 { sd: [f64; 2], bvn: Bvn },
    /// Full 3-D bandwidth.
    Full3(Box<Tvn>),
}

impl BoxModel {
    /// From a row-major lower-triangular factor L (d×d); `full` false reads only its
    /// diagonal.
    pub fn new(l: &[f64], d: usize, full: bool) -> Result<BoxModel> {
        if l.len() != d * d || d == 0 {
            return Err(invalid!("chol must be a {d}x{d} matrix"));
        }
        if l.iter().any(|v| !v.is_finite()) || (0..d).any(|k| l[k * d + k] <= 0.0) {
            return Err(invalid!(
                "chol must be finite with a positive diagonal (a Cholesky factor)"
            ));
        }
        if !full {
            return Ok(BoxModel::Diag((0..d).map(|k| l[k * d + k]).collect()));
        }
        match d {
            2 => {
                let s2 = l[2].hypot(l[3]);
                Ok(BoxModel::Full2 {
                    sd: [l[0], s2],
                    bvn: Bvn::new(l[2] / s2, l[3] / s2),
                })
            }
            3 => Ok(BoxModel::Full3(Box::new(Tvn::new(l)))),
            _ => Err(invalid!(
                "a full bandwidth is supported for d = 2 and d = 3 only, not d={d}"
            )),
        }
    }

    fn scratch(&self) -> Scratch {
        match self {
            BoxModel::Full3(t) => t.scratch(),
            _ => Scratch::new(0),
        }
    }

    /// Cost of one (query, point) pair in elementary operations (for the interrupt
    /// watcher).
    fn pair_work(&self) -> usize {
        match self {
            BoxModel::Diag(sd) => 40 * sd.len(),
            BoxModel::Full2 { .. } => 4 * 200,
            BoxModel::Full3(t) => 8 * (30 * t.nodes() + 300),
        }
    }

    /// P(lo ≤ x + Lz ≤ hi) for one point (lo ≤ hi).
    #[inline(always)]
    fn pair<M: Fma>(&self, lo: &[f64], hi: &[f64], x: &[f64], buf: &mut Scratch) -> f64 {
        match self {
            BoxModel::Diag(sd) => {
                let mut p = 1.0;
                for k in 0..sd.len() {
                    let a = (lo[k] - x[k]) / sd[k];
                    let b = (hi[k] - x[k]) / sd[k];
                    p *= interval::<M>(a, b.max(a));
                    if p == 0.0 {
                        break;
                    }
                }
                p
            }
            BoxModel::Full2 { sd, bvn } => {
                let a1 = (lo[0] - x[0]) / sd[0];
                let b1 = (hi[0] - x[0]) / sd[0];
                let a2 = (lo[1] - x[1]) / sd[1];
                let b2 = (hi[1] - x[1]) / sd[1];
                let mut p = bvn.cdf::<M>(b1, b2);
                if a1 != f64::NEG_INFINITY {
                    p -= bvn.cdf::<M>(a1, b2);
                }
                if a2 != f64::NEG_INFINITY {
                    p -= bvn.cdf::<M>(b1, a2);
                    if a1 != f64::NEG_INFINITY {
                        p += bvn.cdf::<M>(a1, a2);
                    }
                }
                p.max(0.0)
            }
            BoxModel::Full3(t) => {
                let mut a = [0.0; 3];
                let mut b = [0.0; 3];
                for k in 0..3 {
                    a[k] = (lo[k] - x[k]) / t.sd[k];
                    b[k] = (hi[k] - x[k]) / t.sd[k];
                }
                let mut p = 0.0;
                for corner in 0..8usize {
                    let mut c = [0.0; 3];
                    let mut odd = false;
                    let mut dead = false;
                    for k in 0..3 {
                        if (corner >> k) & 1 == 1 {
                            c[k] = a[k];
                            odd = !odd;
                            dead |= a[k] == f64::NEG_INFINITY;
                        } else {
                            c[k] = b[k];
                        }
                    }
                    if dead {
                        continue;
                    }
                    let f = t.cdf::<M>(c, buf);
                    p += if odd { -f } else { f };
                }
                p.max(0.0)
            }
        }
    }
}

/// Data points per task at least; at most 16 tasks per query.
const MIN_CHUNK: usize = 256;
const MAX_CHUNKS: usize = 16;

struct ChunkTask<'a> {
    model: &'a BoxModel,
    x: &'a [f64],
    w: &'a [f64],
    lo: &'a [f64],
    hi: &'a [f64],
    d: usize,
    range: (usize, usize),
}

impl SimdTask for ChunkTask<'_> {
    type Output = f64;
    #[inline(always)]
    fn run<M: Fma>(self) -> f64 {
        let d = self.d;
        let mut buf = self.model.scratch();
        let mut acc = 0.0;
        for i in self.range.0..self.range.1 {
            let p = self
                .model
                .pair::<M>(self.lo, self.hi, &self.x[i * d..(i + 1) * d], &mut buf);
            acc = M::ma(self.w[i], p, acc);
        }
        acc
    }
}

/// Σ_i w_i P(lo_j ≤ x_i + L z ≤ hi_j) for every query box j: x (n×d), w (n), lo and
/// hi (m×d, row-major, ±inf allowed, lo ≤ hi assumed: a reversed dimension counts as
/// empty). Results do not depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub fn box_probs(
    model: &BoxModel,
    x: &[f64],
    w: &[f64],
    lo: &[f64],
    hi: &[f64],
    d: usize,
    stop: &AtomicBool,
) -> Result<Vec<f64>> {
    let n = w.len();
    if x.len() != n * d || lo.len() != hi.len() || !lo.len().is_multiple_of(d.max(1)) || d == 0 {
        return Err(invalid!(
            "box_probs: x must be (n, d), w (n,), lo and hi (m, d) with the same shape"
        ));
    }
    let m = lo.len() / d;
    let chunk = MIN_CHUNK.max(n.div_ceil(MAX_CHUNKS)).max(1);
    let nc = n.div_ceil(chunk).max(1);
    let mut part = super::error::try_vec(m.saturating_mul(nc), 0.0f64, "box partial sums")?;
    let level = simd::level();
    threads::install(|| {
        part.par_iter_mut()
            .enumerate()
            .try_for_each(|(idx, out)| -> Result<()> {
                threads::check(stop)?;
                let (j, c) = (idx / nc, idx % nc);
                let range = (c * chunk, ((c + 1) * chunk).min(n));
                *out = simd::dispatch(
                    level,
                    ChunkTask {
                        model,
                        x,
                        w,
                        lo: &lo[j * d..(j + 1) * d],
                        hi: &hi[j * d..(j + 1) * d],
                        d,
                        range,
                    },
                );
                Ok(())
            })
    })??;
    Ok(part.chunks(nc).map(|p| p.iter().sum()).collect())
}

/// Elementary operations of a `box_probs` call (for the interrupt watcher).
pub fn box_work(model: &BoxModel, n: usize, m: usize) -> usize {
    n.saturating_mul(m).saturating_mul(model.pair_work())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Q(t) = 1 − Φ(t) from mpmath (40 digits), rounded to double.
    const SF: [(f64, f64); 12] = [
        (0.0, 0.5),
        (0.001, 0.49960105778608893),
        (0.3, 0.3820885778110474),
        (1.0, 0.15865525393145705),
        (2.5, 0.006209665325776135),
        (5.0, 2.866515718791939e-07),
        (8.4921875, 1.0139175113674892e-17),
        (12.3, 4.5287069561587846e-35),
        (20.0, 2.7536241186062337e-89),
        (30.0, 4.906713927148187e-198),
        (-1.7, 0.955434537241457),
        (-6.2, 0.9999999997176842),
    ];

    #[test]
    fn normal_tail_matches_mpmath() {
        for &(t, want) in &SF {
            let got = norm_sf(t);
            let rel = ((got - want) / want).abs();
            assert!(
                rel < 8.0 * f64::EPSILON,
                "t={t}: {got:e} vs {want:e} ({rel:e})"
            );
        }
        assert_eq!(norm_sf(40.5), 0.0);
        assert_eq!(norm_sf(f64::INFINITY), 0.0);
        assert_eq!(norm_sf(f64::NEG_INFINITY), 1.0);
        assert_eq!(norm_cdf(-41.0), 0.0);
    }

    #[test]
    fn gauss_legendre_integrates_polynomials() {
        let (x, w) = gauss_legendre(10);
        for p in 0..20 {
            let got: f64 = x.iter().zip(&w).map(|(a, b)| b * a.powi(p)).sum();
            let want = if p % 2 == 1 {
                0.0
            } else {
                2.0 / (p as f64 + 1.0)
            };
            assert!((got - want).abs() < 1e-15, "degree {p}: {got}");
        }
    }

    #[test]
    fn bvn_orthant_and_margins() {
        // P(X ≤ 0, Y ≤ 0) = 1/4 + asin(r)/(2π) on both branches.
        for &r in &[-0.99, -0.5, 0.0, 0.3, 0.9, 0.93, 0.9999] {
            let b = Bvn::new(r, (1.0f64 - r * r).sqrt());
            let want = 0.25 + r.asin() / TWO_PI;
            assert!((b.cdf_at(0.0, 0.0) - want).abs() < 1e-15, "r={r}");
            assert!((b.cdf_at(0.7, f64::INFINITY) - norm_cdf(0.7)).abs() < 1e-16);
            assert_eq!(b.cdf_at(f64::NEG_INFINITY, 0.3), 0.0);
        }
        // r = 0: product of the margins.
        let b = Bvn::new(0.0, 1.0);
        let want = norm_cdf(0.4) * norm_cdf(-1.3);
        assert!((b.cdf_at(0.4, -1.3) - want).abs() < 1e-16);
    }

    fn lower(a: [[f64; 3]; 3]) -> Vec<f64> {
        // Cholesky of A Aᵀ, row-major.
        let mut h = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..3 {
                h[i][j] = (0..3).map(|k| a[i][k] * a[j][k]).sum();
            }
        }
        let mut l = [[0.0; 3]; 3];
        for i in 0..3 {
            for j in 0..=i {
                let s: f64 = h[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
                l[i][j] = if i == j { s.sqrt() } else { s / l[j][j] };
            }
        }
        l.iter().flatten().copied().collect()
    }

    #[test]
    fn tvn_orthant_closed_form() {
        // P(X ≤ 0) = 1/8 + (asin r01 + asin r02 + asin r12)/(4π), any correlations,
        // including pairs within 1e-6 of ±1.
        let mats = [
            [[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.4, 0.866]],
            [[1.0, 0.0, 0.0], [0.999, 0.0447, 0.0], [0.3, -0.2, 0.93]],
            [[1.0, 0.0, 0.0], [-0.2, 0.98, 0.0], [0.1, -0.995, 0.05]],
            [[1.0, 0.3, -0.2], [1.0, 0.3 + 1e-6, -0.2], [0.5, -1.0, 0.7]],
        ];
        for a in mats {
            let t = Tvn::new(&lower(a));
            let (r, _) = t.corr();
            let want = 0.125
                + (r[0][1].asin() + r[0][2].asin() + r[1][2].asin()) / (4.0 * std::f64::consts::PI);
            let got = t.cdf_at([0.0, 0.0, 0.0]);
            assert!((got - want).abs() < 1e-14, "{got} vs {want}");
        }
    }

    #[test]
    fn tvn_independent_and_reductions() {
        // Diagonal L: a product of normal CDFs.
        let t = Tvn::new(&[2.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 1.0]);
        let h = [0.3, -1.2, 2.0];
        let want = norm_cdf(0.3) * norm_cdf(-1.2) * norm_cdf(2.0);
        assert!((t.cdf_at(h) - want).abs() < 1e-16);
        let t = Tvn::new(&lower([
            [1.0, 0.0, 0.0],
            [0.6, 0.8, 0.0],
            [-0.3, 0.4, 0.866],
        ]));
        assert_eq!(t.cdf_at([f64::INFINITY; 3]), 1.0);
        assert_eq!(t.cdf_at([0.1, f64::NEG_INFINITY, 0.0]), 0.0);
        let (r, s) = t.corr();
        let b = Bvn::new(r[0][2], s[0][2]);
        let got = t.cdf_at([0.4, f64::INFINITY, -0.2]);
        assert!((got - b.cdf_at(0.4, -0.2)).abs() < 1e-16);
    }

    #[test]
    fn kde_boxes_sum_to_one_and_ignore_threads() {
        let mut g = crate::core::testing::Lcg::new(3);
        let n = 700;
        let x: Vec<f64> = (0..n * 3).map(|_| g.normal()).collect();
        let w: Vec<f64> = (0..n).map(|_| 1.0 / n as f64).collect();
        let l = lower([[0.4, 0.0, 0.0], [0.3, 0.2, 0.0], [-0.1, 0.2, 0.25]]);
        let stop = AtomicBool::new(false);
        for full in [false, true] {
            let model = BoxModel::new(&l, 3, full).unwrap();
            // Eight boxes tiling space at a cut.
            let cut = [0.1, -0.2, 0.3];
            let inf = f64::INFINITY;
            let (mut lo, mut hi) = (vec![], vec![]);
            for c in 0..8 {
                for (k, &ck) in cut.iter().enumerate() {
                    if (c >> k) & 1 == 1 {
                        lo.push(ck);
                        hi.push(inf);
                    } else {
                        lo.push(-inf);
                        hi.push(ck);
                    }
                }
            }
            let p = box_probs(&model, &x, &w, &lo, &hi, 3, &stop).unwrap();
            let total: f64 = p.iter().sum();
            assert!((total - 1.0).abs() < 1e-14, "full={full}: {total}");
            let one = threads::set_thread_override(1).unwrap();
            let p1 = box_probs(&model, &x, &w, &lo, &hi, 3, &stop).unwrap();
            threads::set_thread_override(one).unwrap();
            assert_eq!(p, p1);
        }
    }
}
