//! Reductions over the pairs of several point sets at once.
//!
//! Some statistics need, for each pair (i, j), the distances of the pair in several
//! samples of the same n observations: distance covariance multiplies the centred
//! distances of x and of y, JdCov multiplies those of every variable. [`reduce_pairs_multi`]
//! walks rows in fixed blocks of [`ROW_BLOCK`] and columns in tiles of [`COL_TILE`] like
//! [`super::reduce_rows`], computes one squared-distance tile per point set and hands all
//! of them to a [`MultiReducer`]. A reducer can ask for the upper triangle only (j ≥ i up
//! to whole tiles), which halves the work of symmetric sums. Memory: one copy of each
//! set's columns (direct path) or their norms, plus one tile per set per running task.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::{direct_tile, gemm_tile, row_norms, Cols, Float, Points, COL_TILE, ROW_BLOCK};
use crate::core::error::{invalid, Result};
use crate::core::simd::dgemm::{group_width, pack_to, MR};
use crate::core::simd::{self, Fma, Level, SimdTask};
use crate::core::threads;

/// Largest dimension that uses exact differences here; above it distances come from a
/// GEMM. Higher than the engine's default because these statistics cancel, and exact
/// differences keep duplicated points at distance exactly zero.
pub const MULTI_DIRECT_MAX_D: usize = 16;

/// Consumes, for a block of rows, one tile of squared distances per point set.
pub trait MultiReducer: Sync {
    /// Per-block accumulator.
    type State: Send;
    /// `true`: the engine only visits column tiles that end after the block's first row;
    /// the reducer itself skips the pairs j < i that those tiles still contain.
    fn upper(&self) -> bool;
    /// Fresh state for rows `r0 .. r0 + nr`.
    fn init(&self, r0: usize, nr: usize) -> Self::State;
    /// Consumes rows `r0..r0+nr` against columns `c0..c0+nc`; `d2[k][i * COL_TILE + j]`
    /// is the squared distance of the pair in set k.
    fn tile<M: Fma>(
        &self,
        st: &mut Self::State,
        r0: usize,
        nr: usize,
        c0: usize,
        nc: usize,
        d2: &[Vec<f64>],
    );
}

#[inline(always)]
fn block_body<T: Float, R: MultiReducer, M: Fma>(
    sets: &[Points<'_, T>],
    cols: &[Cols<'_, T>],
    red: &R,
    b: usize,
    stop: &AtomicBool,
) -> Result<R::State> {
    let n = sets[0].n;
    let r0 = b * ROW_BLOCK;
    let nr = ROW_BLOCK.min(n - r0);
    let mut st = red.init(r0, nr);
    let level = simd::level_of::<M>();
    // Sets on the packed kernel of this path: their row block packed once, in groups of
    // MR rows (the tile then holds the padded rows too; reducers read the first nr).
    let packed = |c: &Cols<'_, T>| M::AVX2 && c.pack_level == Some(level);
    let ng = nr.div_ceil(MR);
    let mut d2: Vec<Vec<f64>> = cols
        .iter()
        .map(|c| vec![0.0f64; if packed(c) { ng * MR } else { nr } * COL_TILE])
        .collect();
    let mut cbufs: Vec<Vec<T>> = Vec::with_capacity(sets.len());
    let mut qns: Vec<Vec<f64>> = Vec::with_capacity(sets.len());
    let mut groups: Vec<Vec<T>> = Vec::with_capacity(sets.len());
    for (p, c) in sets.iter().zip(cols) {
        let rdata = &p.data[r0 * p.d..(r0 + nr) * p.d];
        if c.direct {
            cbufs.push(Vec::new());
            qns.push(Vec::new());
            groups.push(Vec::new());
        } else if packed(c) {
            cbufs.push(Vec::new());
            let mut qn = row_norms(rdata, nr, p.d);
            qn.resize(ng * MR, 0.0);
            qns.push(qn);
            groups.push(pack_to(rdata, nr, p.d, group_width(level), ng * MR));
        } else {
            cbufs.push(vec![T::ZERO; nr * COL_TILE]);
            qns.push(row_norms(rdata, nr, p.d));
            groups.push(Vec::new());
        }
    }
    let mut t = if red.upper() { r0 / COL_TILE } else { 0 };
    while t * COL_TILE < n {
        threads::check(stop)?;
        let c0 = t * COL_TILE;
        let nc = COL_TILE.min(n - c0);
        for (k, (p, c)) in sets.iter().zip(cols).enumerate() {
            let d = p.d;
            let rdata = &p.data[r0 * d..(r0 + nr) * d];
            if c.direct {
                let soa = &c.soa[t * d * COL_TILE..(t + 1) * d * COL_TILE];
                direct_tile::<T, M>(rdata, nr, d, soa, nc, &mut d2[k]);
            } else if packed(c) {
                let np = nc.div_ceil(T::NR);
                T::dist_tile::<M>(
                    &groups[k],
                    ng,
                    d,
                    &c.packed[c0 * d..(c0 + np * T::NR) * d],
                    np,
                    &qns[k],
                    &c.norms[c0..c0 + np * T::NR],
                    &mut d2[k],
                    COL_TILE,
                );
            } else {
                gemm_tile(
                    rdata,
                    &qns[k],
                    nr,
                    d,
                    &c.pts.data[c0 * d..(c0 + nc) * d],
                    &c.norms[c0..c0 + nc],
                    nc,
                    &mut cbufs[k],
                    &mut d2[k],
                );
            }
        }
        red.tile::<M>(&mut st, r0, nr, c0, nc, &d2);
        t += 1;
    }
    Ok(st)
}

fn run_block<T: Float, R: MultiReducer>(
    level: Level,
    sets: &[Points<'_, T>],
    cols: &[Cols<'_, T>],
    red: &R,
    b: usize,
    stop: &AtomicBool,
) -> Result<R::State> {
    struct Task<'a, 'p, T, R> {
        sets: &'a [Points<'p, T>],
        cols: &'a [Cols<'p, T>],
        red: &'a R,
        b: usize,
        stop: &'a AtomicBool,
    }
    impl<T: Float, R: MultiReducer> SimdTask for Task<'_, '_, T, R> {
        type Output = Result<R::State>;
        #[inline(always)]
        fn run<M: Fma>(self) -> Result<R::State> {
            block_body::<T, R, M>(self.sets, self.cols, self.red, self.b, self.stop)
        }
    }
    simd::dispatch(
        level,
        Task {
            sets,
            cols,
            red,
            b,
            stop,
        },
    )
}

/// Drives `red` over the pairs (i, j) of n observations seen through several point sets
/// (all with n points; dimensions may differ), in parallel over fixed blocks of
/// [`ROW_BLOCK`] rows. Returns one state per block, in order, so a fixed-order combination
/// of the states is bitwise independent of the thread count.
pub fn reduce_pairs_multi<T: Float, R: MultiReducer>(
    sets: &[Points<'_, T>],
    red: &R,
    stop: &AtomicBool,
) -> Result<Vec<R::State>> {
    reduce_pairs_multi_with(sets, red, stop, MULTI_DIRECT_MAX_D, false)
}

/// [`reduce_pairs_multi`] with the largest dimension on exact differences chosen
/// (`direct_max_d`), and, with `pack`, the sets above it on the packed distance kernel of
/// the engine ([`simd::dgemm::dist_tile`], AVX2 and AVX-512; `matrixmultiply` on the
/// portable path) instead of a general GEMM per tile. Extra memory with `pack`: one
/// packed copy of each such set and one padded tile per set per running task.
pub fn reduce_pairs_multi_with<T: Float, R: MultiReducer>(
    sets: &[Points<'_, T>],
    red: &R,
    stop: &AtomicBool,
    direct_max_d: usize,
    pack: bool,
) -> Result<Vec<R::State>> {
    let Some(first) = sets.first() else {
        return Err(invalid!("at least one point set is needed"));
    };
    let n = first.n;
    if let Some(p) = sets.iter().find(|p| p.n != n) {
        return Err(invalid!(
            "all samples must have the same number of observations; got {n} and {}",
            p.n
        ));
    }
    let level = simd::level();
    let pack = (pack && level >= Level::Avx2).then_some(level);
    let cols: Vec<Cols<'_, T>> = sets
        .iter()
        .map(|&p| Cols::new(p, p.d <= direct_max_d, pack))
        .collect();
    let n_blocks = n.div_ceil(ROW_BLOCK);
    threads::install(|| {
        (0..n_blocks)
            .into_par_iter()
            .map(|b| run_block(level, sets, &cols, red, b, stop))
            .collect::<Result<Vec<_>>>()
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{sq_dist, sym_vec};

    /// Sums d2_0 * d2_1 over all pairs, or over j > i (doubled) plus the diagonal.
    struct Cross {
        upper: bool,
    }
    impl MultiReducer for Cross {
        type State = f64;
        fn upper(&self) -> bool {
            self.upper
        }
        fn init(&self, _r0: usize, _nr: usize) -> f64 {
            0.0
        }
        fn tile<M: Fma>(
            &self,
            st: &mut f64,
            r0: usize,
            nr: usize,
            c0: usize,
            nc: usize,
            d2: &[Vec<f64>],
        ) {
            for i in 0..nr {
                for j in 0..nc {
                    let (gi, gj) = (r0 + i, c0 + j);
                    let w = if !self.upper {
                        1.0
                    } else if gj > gi {
                        2.0
                    } else if gj == gi {
                        1.0
                    } else {
                        0.0
                    };
                    *st += w * d2[0][i * COL_TILE + j] * d2[1][i * COL_TILE + j];
                }
            }
        }
    }

    #[test]
    fn upper_and_full_walks_match_naive_on_both_paths() {
        let stop = AtomicBool::new(false);
        for &(n, p, q) in &[(1, 1, 1), (70, 2, 3), (300, 20, 1), (513, 3, 40)] {
            let x = sym_vec(1, n * p);
            let y = sym_vec(2, n * q);
            let sets = [
                Points::new(&x, n, p).unwrap(),
                Points::new(&y, n, q).unwrap(),
            ];
            let mut want = 0.0;
            for i in 0..n {
                for j in 0..n {
                    want += sq_dist(&x, i, &x, j, p) * sq_dist(&y, i, &y, j, q);
                }
            }
            for upper in [false, true] {
                let st = reduce_pairs_multi(&sets, &Cross { upper }, &stop).unwrap();
                let got: f64 = st.iter().sum();
                assert!(
                    (got - want).abs() <= 1e-10 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
                // Every set on the packed distance kernel (padded row groups).
                let st = reduce_pairs_multi_with(&sets, &Cross { upper }, &stop, 0, true).unwrap();
                let got: f64 = st.iter().sum();
                assert!(
                    (got - want).abs() <= 1e-10 * want.abs().max(1.0),
                    "packed: {got} vs {want}"
                );
            }
        }
        let x = sym_vec(1, 10);
        let y = sym_vec(1, 12);
        let bad = [
            Points::new(&x, 10, 1).unwrap(),
            Points::new(&y, 12, 1).unwrap(),
        ];
        assert!(reduce_pairs_multi(&bad, &Cross { upper: true }, &stop).is_err());
        let stopped = AtomicBool::new(true);
        let ok = [Points::new(&x, 10, 1).unwrap()];
        assert!(reduce_pairs_multi(&ok, &Cross { upper: false }, &stopped).is_err());
    }
}
