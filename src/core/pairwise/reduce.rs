//! Row reducers: what the engine does with each tile of squared distances.
//!
//! [`KernelRows`] is the general one: for every row it keeps, per scale, an online
//! log-sum-exp (running max plus rescaled sum, one exp per pair) or a plain weighted sum,
//! optionally the sum of squared terms (for effective sample sizes) and a weighted mean
//! of the column points (for scores and barycentric maps).

use super::COL_TILE;
use crate::core::simd::{self, Fma};

/// Log-weight spread within a tile up to which the fused pass shifts by the largest
/// weight: the largest term is then at least e^-40, far from underflow. Tiles with a
/// wider spread, or with zero weights, take the exact two-pass route.
const WEIGHT_SPREAD: f64 = 40.0;

/// Log-terms this far below a row's running maximum are skipped tile by tile: their
/// contribution is far below double precision.
const NEGLIGIBLE: f64 = 60.0;

/// Consumes tiles of squared distances for a block of rows.
pub trait RowReducer: Sync {
    /// Per-block accumulator.
    type State: Send;
    /// Fresh state for rows `r0 .. r0 + nr`.
    fn init(&self, r0: usize, nr: usize) -> Self::State;
    /// Consumes the squared distances of rows `r0..r0+nr` against columns `c0..c0+nc`;
    /// row `i` of the tile starts at `d2[i * COL_TILE]`.
    /// `M` is the multiply-add flavour of the SIMD path the engine runs.
    fn tile<M: Fma>(
        &self,
        st: &mut Self::State,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    );
}

/// How a pair's squared distance enters a [`KernelRows`] reduction.
pub trait PairMap: Sync {
    /// `true`: `value` is a log-term and rows reduce by log-sum-exp of `w_j + value`.
    /// `false`: `value` is a factor and rows reduce by the sum of `w_j * value`.
    const LOG: bool;
    /// `true` when `value` never increases with the squared distance. A log-sum then
    /// takes its row maximum from the nearest column, so scales after the first need one
    /// fused exp-and-sum pass each (the bandwidth grid).
    const DECREASING: bool = false;
    /// The log-term or factor for a (scaled) squared distance.
    fn value(&self, d2: f64) -> f64;
    /// `Some(c)` when `value(t) = c·t`: the fused pass then runs the dedicated
    /// exp-sum kernel ([`simd::lin_exp_sum`]).
    fn linear(&self) -> Option<f64> {
        None
    }
    /// Factor applied to a pair's term to weight the column point in the mean. Must be
    /// finite for every `d2 >= 0`.
    fn mean_factor(&self, d2: f64) -> f64;
}

/// Per-row kernel sums over the columns, at one or several scales of the distances.
pub struct KernelRows<'a, F> {
    /// The pair map.
    pub f: F,
    /// Multipliers of the squared distances; one reduction per entry.
    pub scales: &'a [f64],
    /// Per-column log-weights (`F::LOG`) or weights (otherwise).
    pub w: &'a [f64],
    /// Skip the pair (i, i): rows and columns are the same set (leave-one-out).
    pub exclude_self: bool,
    /// Also accumulate the sum of squared terms (first scale only).
    pub sumsq: bool,
    /// Column points, row-major f64, for the weighted mean (first scale only).
    pub mean: Option<&'a [f64]>,
    /// Dimension of `mean`'s points.
    pub d: usize,
}

/// Accumulators of one block; see [`RowStats`] for their meaning.
pub struct KernelState {
    shift: Vec<f64>,
    sum: Vec<f64>,
    sumsq: Vec<f64>,
    wsum: Vec<f64>,
    wacc: Vec<f64>,
    buf: Vec<f64>,
    ubuf: Vec<f64>,
}

/// Results of a [`KernelRows`] pass, for all rows.
///
/// For row `i` and scale `g` (index `i * G + g`), the reduced quantity is
/// `exp(shift) * sum` (so its log is `shift + ln(sum)`). With `sumsq`, the sum of squared
/// terms is `exp(2 shift) * sumsq[i]`. With `mean`, `wacc[i]` is the mean-weighted sum of
/// the column points and `wsum[i]` the sum of the mean weights, both scaled by `exp(-shift)`.
#[derive(Debug, Clone, Default)]
pub struct RowStats {
    /// Number of scales (G).
    pub g: usize,
    /// Log-scale shifts, `n * G` (zero in linear mode).
    pub shift: Vec<f64>,
    /// Scaled sums, `n * G`.
    pub sum: Vec<f64>,
    /// Scaled sums of squared terms, `n` (empty unless requested).
    pub sumsq: Vec<f64>,
    /// Scaled sums of mean weights, `n` (empty unless requested).
    pub wsum: Vec<f64>,
    /// Scaled weighted sums of column points, `n * d` (empty unless requested).
    pub wacc: Vec<f64>,
}

impl RowStats {
    /// `log(exp(shift) * sum)`, -inf for an empty sum.
    pub fn log_sum(&self, k: usize) -> f64 {
        if self.sum[k] > 0.0 {
            self.shift[k] + self.sum[k].ln()
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Concatenates block states in order.
    pub fn from_states(g: usize, states: Vec<KernelState>) -> RowStats {
        let mut out = RowStats {
            g,
            ..Default::default()
        };
        for s in states {
            out.shift.extend(s.shift);
            out.sum.extend(s.sum);
            out.sumsq.extend(s.sumsq);
            out.wsum.extend(s.wsum);
            out.wacc.extend(s.wacc);
        }
        out
    }
}

impl<F: PairMap> RowReducer for KernelRows<'_, F> {
    type State = KernelState;

    fn init(&self, _r0: usize, nr: usize) -> KernelState {
        let g = self.scales.len();
        let with_mean = self.mean.is_some();
        KernelState {
            shift: vec![if F::LOG { f64::NEG_INFINITY } else { 0.0 }; nr * g],
            sum: vec![0.0; nr * g],
            sumsq: if self.sumsq {
                vec![0.0; nr]
            } else {
                Vec::new()
            },
            wsum: if with_mean { vec![0.0; nr] } else { Vec::new() },
            wacc: if with_mean {
                vec![0.0; nr * self.d]
            } else {
                Vec::new()
            },
            buf: vec![0.0; COL_TILE],
            ubuf: if with_mean {
                vec![0.0; nr * COL_TILE]
            } else {
                Vec::new()
            },
        }
    }

    #[inline(always)]
    fn tile<M: Fma>(
        &self,
        st: &mut KernelState,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        let g_count = self.scales.len();
        let w = &self.w[c0..c0 + nc];
        let with_mean = self.mean.is_some();
        // The fused pass applies to scales whose rows need only the log-sum.
        let fused_from = if self.sumsq || with_mean { 1 } else { 0 };
        // Zero weights (-inf) disqualify the tile: its nearest column might carry none.
        // Only maps that can take the fused pass pay for the scan of the weights.
        let fusable = F::LOG && F::DECREASING && g_count > fused_from;
        let (wmax, uniform) = match fusable.then(|| finite_range(w)).flatten() {
            Some((lo, hi)) => (
                if hi - lo <= WEIGHT_SPREAD {
                    hi
                } else {
                    f64::NAN
                },
                lo == hi,
            ),
            _ => (f64::NAN, false),
        };
        for i in 0..nr {
            let drow = &d2[i * COL_TILE..i * COL_TILE + nc];
            let self_j = if self.exclude_self && r0 + i >= c0 && r0 + i < c0 + nc {
                Some(r0 + i - c0)
            } else {
                None
            };
            // Nearest column of the row (the row's own point excluded), for the fused pass.
            let dmin = if wmax.is_nan() {
                f64::NAN
            } else if let Some(s) = self_j {
                simd::min(&drow[..s]).min(simd::min(&drow[s + 1..]))
            } else {
                simd::min(drow)
            };
            for (g, &a) in self.scales.iter().enumerate() {
                let first = g == 0;
                let k = i * g_count + g;
                let v = &mut st.buf[..nc];
                if F::LOG && g >= fused_from && !wmax.is_nan() {
                    if dmin == f64::INFINITY {
                        continue;
                    }
                    // An upper bound of the row-tile's largest log-term, exact for equal
                    // weights.
                    let tm = wmax + self.f.value(a * dmin);
                    if tm.is_nan() {
                        st.sum[k] = f64::NAN;
                        continue;
                    }
                    if tm > st.shift[k] {
                        st.sum[k] *= (st.shift[k] - tm).exp();
                        st.shift[k] = tm;
                    }
                    if tm < st.shift[k] - NEGLIGIBLE {
                        continue;
                    }
                    let shift = st.shift[k];
                    st.sum[k] += match self.f.linear() {
                        Some(cf) if uniform => {
                            simd::lin_exp_sum::<M>(drow, None, cf * a, wmax - shift, self_j, v)
                        }
                        Some(cf) => {
                            simd::lin_exp_sum::<M>(drow, Some(w), cf * a, -shift, self_j, v)
                        }
                        None => {
                            for j in 0..nc {
                                v[j] = simd::exp::<M>(w[j] + self.f.value(a * drow[j]) - shift);
                            }
                            if let Some(s) = self_j {
                                v[s] = 0.0;
                            }
                            simd::sum(v)
                        }
                    };
                } else if F::LOG {
                    for j in 0..nc {
                        v[j] = w[j] + self.f.value(a * drow[j]);
                    }
                    if let Some(s) = self_j {
                        v[s] = f64::NEG_INFINITY;
                    }
                    let tm = simd::max(v);
                    if tm == f64::NEG_INFINITY || tm.is_nan() {
                        if first && with_mean {
                            st.ubuf[i * COL_TILE..i * COL_TILE + nc].fill(0.0);
                        }
                        if tm.is_nan() {
                            st.sum[k] = f64::NAN;
                        }
                        continue;
                    }
                    if tm > st.shift[k] {
                        // Rescale what was accumulated against the old, smaller max.
                        let fac = (st.shift[k] - tm).exp();
                        st.sum[k] *= fac;
                        if first {
                            if self.sumsq {
                                st.sumsq[i] *= fac * fac;
                            }
                            if with_mean {
                                st.wsum[i] *= fac;
                                for x in &mut st.wacc[i * self.d..(i + 1) * self.d] {
                                    *x *= fac;
                                }
                            }
                        }
                        st.shift[k] = tm;
                    }
                    if tm < st.shift[k] - NEGLIGIBLE {
                        // Every term of this row-tile is below e^-60 of the row's largest:
                        // 256 of them change the sum by less than 1e-23 relative.
                        if first && with_mean {
                            st.ubuf[i * COL_TILE..i * COL_TILE + nc].fill(0.0);
                        }
                        continue;
                    }
                    let (s, s2) = simd::exp_shift_sums::<M>(v, st.shift[k]);
                    st.sum[k] += s;
                    if first && self.sumsq {
                        st.sumsq[i] += s2;
                    }
                    if first && with_mean {
                        let u = &mut st.ubuf[i * COL_TILE..i * COL_TILE + nc];
                        for j in 0..nc {
                            u[j] = v[j] * self.f.mean_factor(a * drow[j]);
                        }
                        st.wsum[i] += simd::sum(u);
                    }
                } else {
                    for j in 0..nc {
                        v[j] = w[j] * self.f.value(a * drow[j]);
                    }
                    if let Some(s) = self_j {
                        v[s] = 0.0;
                    }
                    let (s, s2) = simd::sums_sq::<M>(v);
                    st.sum[k] += s;
                    if first && self.sumsq {
                        st.sumsq[i] += s2;
                    }
                    if first && with_mean {
                        let u = &mut st.ubuf[i * COL_TILE..i * COL_TILE + nc];
                        for j in 0..nc {
                            u[j] = w[j] * self.f.mean_factor(a * drow[j]);
                        }
                        if let Some(s) = self_j {
                            u[s] = 0.0;
                        }
                        st.wsum[i] += simd::sum(u);
                    }
                }
            }
        }
        if let Some(cols) = self.mean {
            let d = self.d;
            let x = &cols[c0 * d..(c0 + nc) * d];
            // SAFETY: ubuf is nr rows of stride COL_TILE (nc used), x is nc×d row-major,
            // wacc is nr×d row-major; the three buffers are distinct.
            unsafe {
                matrixmultiply::dgemm(
                    nr,
                    nc,
                    d,
                    1.0,
                    st.ubuf.as_ptr(),
                    COL_TILE as isize,
                    1,
                    x.as_ptr(),
                    d as isize,
                    1,
                    1.0,
                    st.wacc.as_mut_ptr(),
                    d as isize,
                    1,
                );
            }
        }
    }
}

/// Smallest and largest entries, or `None` when one is not finite (or `v` is empty).
fn finite_range(v: &[f64]) -> Option<(f64, f64)> {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for &x in v {
        if !x.is_finite() {
            return None;
        }
        lo = lo.min(x);
        hi = hi.max(x);
    }
    (lo <= hi).then_some((lo, hi))
}

/// Materialises the squared distances of every row against all `m` columns: an n×m
/// buffer, so only for small subsamples (median heuristics) and tests.
pub struct CollectRows {
    /// Number of columns.
    pub m: usize,
}

impl RowReducer for CollectRows {
    type State = Vec<f64>;
    fn init(&self, _r0: usize, nr: usize) -> Vec<f64> {
        vec![0.0; nr * self.m]
    }
    fn tile<M: Fma>(
        &self,
        st: &mut Vec<f64>,
        _r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[f64],
    ) {
        for i in 0..nr {
            st[i * self.m + c0..i * self.m + c0 + nc]
                .copy_from_slice(&d2[i * COL_TILE..i * COL_TILE + nc]);
        }
    }
}
