//! The tiled pairwise engine.
//!
//! Rows (queries) are cut into fixed blocks of [`ROW_BLOCK`]; each block is one rayon task
//! on divest's pool. A block walks the columns (the other point set) in tiles of
//! [`COL_TILE`], computes the squared distances of the tile, and hands them to a
//! [`RowReducer`]. The partition never depends on the thread count, so results are
//! bitwise identical for any number of threads. No n×m matrix is ever formed: per block
//! the engine holds one `ROW_BLOCK × COL_TILE` tile.
//!
//! Distances come from a direct loop over a structure-of-arrays copy of the columns when
//! d is small (exact differences, vectorised across columns), and from a GEMM with
//! ‖x‖² + ‖y‖² − 2x·y, clamped at zero, when d is large: on AVX2 and AVX-512 the pre-packed
//! micro-kernels of [`simd::dgemm`], otherwise `matrixmultiply`. Callers
//! centre the data first so the identity loses little precision.

pub mod kdtree;
pub mod maps;
pub mod multi;
pub mod reduce;
pub mod topk;

use std::ops::{Add, Mul, Sub};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::error::{invalid, Result};
use super::simd::{self, Fma, Level, MulAdd, SimdTask};
use super::threads;

pub use reduce::RowReducer;

/// Rows per task on the direct path. Fixed, so the partition (and every result) is
/// independent of the thread count.
pub const ROW_BLOCK: usize = 64;
/// Rows per task on the GEMM path: larger blocks re-read the columns fewer times.
pub const ROW_BLOCK_GEMM: usize = 192;
/// Columns per tile; the distance tile is `ROW_BLOCK × COL_TILE` f64 (128 KiB).
pub const COL_TILE: usize = 256;
/// Width of the direct-distance micro-kernel (columns computed together).
const DIRECT_WIDTH: usize = 32;
/// Largest dimension that uses the direct loop; above it the GEMM path is faster.
pub const DIRECT_MAX_D: usize = 8;

/// Element types the engine accepts (f32 and f64).
pub trait Float:
    Copy
    + Send
    + Sync
    + Default
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + MulAdd
{
    /// Additive identity.
    const ZERO: Self;
    /// Widening (or identity) conversion.
    fn to_f64(self) -> f64;
    /// Narrowing (or identity) conversion.
    fn from_f64(x: f64) -> Self;
    /// Points per column panel of the packed distance kernel.
    const NR: usize;
    /// The packed distance kernel ([`simd::dgemm::dist_tile`] or its f32 twin).
    #[allow(clippy::too_many_arguments)]
    fn dist_tile<M: Fma>(
        groups: &[Self],
        ng: usize,
        d: usize,
        panels: &[Self],
        np: usize,
        qn: &[f64],
        xn: &[f64],
        out: &mut [f64],
        ldo: usize,
    );
    /// C = A·B with general strides (alpha = 1, beta = 0).
    ///
    /// # Safety
    /// The pointers and strides must describe valid matrices of the given shapes, and `c`
    /// must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        c: *mut Self,
        rsc: isize,
    );
}

impl Float for f64 {
    const ZERO: f64 = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn from_f64(x: f64) -> f64 {
        x
    }
    const NR: usize = simd::dgemm::NR;
    #[inline(always)]
    fn dist_tile<M: Fma>(
        groups: &[f64],
        ng: usize,
        d: usize,
        panels: &[f64],
        np: usize,
        qn: &[f64],
        xn: &[f64],
        out: &mut [f64],
        ldo: usize,
    ) {
        simd::dgemm::dist_tile::<M>(groups, ng, d, panels, np, qn, xn, out, ldo)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f64,
        rsa: isize,
        csa: isize,
        b: *const f64,
        rsb: isize,
        csb: isize,
        c: *mut f64,
        rsc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::dgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, 1) }
    }
}

impl Float for f32 {
    const ZERO: f32 = 0.0;
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> f32 {
        x as f32
    }
    const NR: usize = simd::dgemm::NR32;
    #[inline(always)]
    fn dist_tile<M: Fma>(
        groups: &[f32],
        ng: usize,
        d: usize,
        panels: &[f32],
        np: usize,
        qn: &[f64],
        xn: &[f64],
        out: &mut [f64],
        ldo: usize,
    ) {
        simd::dgemm::dist_tile_f32::<M>(groups, ng, d, panels, np, qn, xn, out, ldo)
    }
    unsafe fn gemm(
        m: usize,
        k: usize,
        n: usize,
        a: *const f32,
        rsa: isize,
        csa: isize,
        b: *const f32,
        rsb: isize,
        csb: isize,
        c: *mut f32,
        rsc: isize,
    ) {
        // SAFETY: forwarded from the caller's contract.
        unsafe { matrixmultiply::sgemm(m, k, n, 1.0, a, rsa, csa, b, rsb, csb, 0.0, c, rsc, 1) }
    }
}

/// A borrowed row-major point set: `n` points of dimension `d`.
#[derive(Clone, Copy, Debug)]
pub struct Points<'a, T> {
    /// Row-major coordinates, `n * d` long.
    pub data: &'a [T],
    /// Number of points.
    pub n: usize,
    /// Dimension.
    pub d: usize,
}

impl<'a, T: Float> Points<'a, T> {
    /// Wraps a row-major buffer, checking its length.
    pub fn new(data: &'a [T], n: usize, d: usize) -> Result<Self> {
        if n.checked_mul(d) != Some(data.len()) {
            return Err(invalid!(
                "points buffer has {} values, expected n*d = {n}*{d}",
                data.len()
            ));
        }
        if d == 0 {
            return Err(invalid!(
                "points must have at least one dimension; got d = 0"
            ));
        }
        Ok(Points { data, n, d })
    }

    /// Row `i`.
    #[inline(always)]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// Coordinates widened to f64 (a copy).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        self.data.iter().map(|x| x.to_f64()).collect()
    }
}

/// Squared norms of each row, accumulated in f64 in index order (one add chain per row).
/// Eight rows run side by side, so that their chains overlap: the same sums bit for bit
/// as one row at a time, without waiting on an add's latency per value (that took about
/// 0.2 cycles per pair of a 3000 × 3000 KDE at d = 256, once for the rows and once for
/// the columns).
#[allow(clippy::needless_range_loop)] // indices over the eight rows keep the chains interleaved
fn row_norms<T: Float>(p: &[T], n: usize, d: usize) -> Vec<f64> {
    const R: usize = 8;
    let one = |row: &[T]| -> f64 {
        row.iter()
            .map(|x| {
                let v = x.to_f64();
                v * v
            })
            .sum()
    };
    let mut out = vec![0.0f64; n];
    let full = n / R * R;
    for (i0, o) in (0..full).step_by(R).zip(out.chunks_exact_mut(R)) {
        let rows: [&[T]; R] = std::array::from_fn(|r| &p[(i0 + r) * d..(i0 + r + 1) * d]);
        let mut acc = [0.0f64; R];
        for k in 0..d {
            for r in 0..R {
                let v = rows[r][k].to_f64();
                acc[r] += v * v;
            }
        }
        o.copy_from_slice(&acc);
    }
    for (i, o) in out.iter_mut().enumerate().skip(full) {
        *o = one(&p[i * d..(i + 1) * d]);
    }
    out
}

/// Column-side data prepared once per call.
struct Cols<'a, T> {
    pts: Points<'a, T>,
    /// Direct path: per tile, `d` rows of `COL_TILE` values (zero padded).
    soa: Vec<T>,
    /// GEMM path: squared norms of the columns (zero-padded to whole panels when
    /// `packed` is in use).
    norms: Vec<f64>,
    /// GEMM path on AVX2 and AVX-512: the columns in k-major panels of `T::NR` points (empty
    /// otherwise).
    packed: Vec<T>,
    /// The level `packed` was laid out for (its block widths depend on it).
    pack_level: Option<Level>,
    direct: bool,
}

impl<'a, T: Float> Cols<'a, T> {
    /// `pack`: prepare the packed distance kernel of that level (GEMM path only).
    fn new(pts: Points<'a, T>, direct: bool, pack: Option<Level>) -> Self {
        let (n, d) = (pts.n, pts.d);
        let n_tiles = n.div_ceil(COL_TILE);
        let mut soa = Vec::new();
        let mut norms = Vec::new();
        let mut packed = Vec::new();
        if direct {
            soa = vec![T::ZERO; n_tiles * d * COL_TILE];
            for j in 0..n {
                let (t, jj) = (j / COL_TILE, j % COL_TILE);
                let base = t * d * COL_TILE;
                for (k, &x) in pts.row(j).iter().enumerate() {
                    soa[base + k * COL_TILE + jj] = x;
                }
            }
        } else {
            norms = row_norms(pts.data, n, d);
            if let Some(level) = pack {
                let n_pad = n.div_ceil(T::NR) * T::NR;
                let w = simd::dgemm::panel_width(level, T::NR);
                packed = simd::dgemm::pack_to(pts.data, n, d, w, n_pad);
                norms.resize(n_pad, 0.0);
            }
        }
        Cols {
            pts,
            soa,
            norms,
            pack_level: pack.filter(|_| !packed.is_empty()),
            packed,
            direct,
        }
    }
}

/// Exact squared distances of `nr` rows against one SoA column tile.
#[inline(always)]
fn direct_tile<T: Float, M: Fma>(
    rows: &[T],
    nr: usize,
    d: usize,
    soa: &[T],
    nc: usize,
    out: &mut [f64],
) {
    let ncp = nc.div_ceil(DIRECT_WIDTH) * DIRECT_WIDTH;
    for i in 0..nr {
        let q = &rows[i * d..(i + 1) * d];
        let orow = &mut out[i * COL_TILE..(i + 1) * COL_TILE];
        let mut j0 = 0;
        while j0 < ncp {
            let mut acc = [T::ZERO; DIRECT_WIDTH];
            for (k, &qk) in q.iter().enumerate() {
                let col = &soa[k * COL_TILE + j0..k * COL_TILE + j0 + DIRECT_WIDTH];
                for l in 0..DIRECT_WIDTH {
                    let t = qk - col[l];
                    acc[l] = M::ma(t, t, acc[l]);
                }
            }
            for l in 0..DIRECT_WIDTH {
                orow[j0 + l] = acc[l].to_f64();
            }
            j0 += DIRECT_WIDTH;
        }
    }
}

/// Squared distances through a GEMM: ‖q‖² + ‖x‖² − 2 q·x, clamped at zero.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_tile<T: Float>(
    rows: &[T],
    qn: &[f64],
    nr: usize,
    d: usize,
    cols: &[T],
    xn: &[f64],
    nc: usize,
    cbuf: &mut [T],
    out: &mut [f64],
) {
    debug_assert!(rows.len() >= nr * d && cols.len() >= nc * d && cbuf.len() >= nr * COL_TILE);
    // SAFETY: rows is nr×d row-major, cols is nc×d row-major (read as its d×nc transpose),
    // cbuf holds nr rows of stride COL_TILE >= nc; the buffers are distinct allocations.
    unsafe {
        T::gemm(
            nr,
            d,
            nc,
            rows.as_ptr(),
            d as isize,
            1,
            cols.as_ptr(),
            1,
            d as isize,
            cbuf.as_mut_ptr(),
            COL_TILE as isize,
        );
    }
    for i in 0..nr {
        let c = &cbuf[i * COL_TILE..i * COL_TILE + nc];
        let o = &mut out[i * COL_TILE..i * COL_TILE + nc];
        let q = qn[i];
        for j in 0..nc {
            let v = (q + xn[j]) - 2.0 * c[j].to_f64();
            o[j] = if v > 0.0 { v } else { 0.0 };
        }
    }
}

/// One row block: all column tiles, fed to the reducer.
#[inline(always)]
fn block_body<T: Float, R: RowReducer, M: Fma>(
    rows: &Points<'_, T>,
    cols: &Cols<'_, T>,
    red: &R,
    b: usize,
    stop: &AtomicBool,
) -> Result<R::State> {
    let d = rows.d;
    let rb = if cols.direct {
        ROW_BLOCK
    } else {
        ROW_BLOCK_GEMM
    };
    let r0 = b * rb;
    let nr = rb.min(rows.n - r0);
    let rdata = &rows.data[r0 * d..(r0 + nr) * d];
    let mut st = red.init(r0, nr);
    // The packed f64 kernel: rows packed once per block into groups, padded rows
    // included in the tile (the reducer reads the first nr).
    if M::AVX2 && cols.pack_level == Some(simd::level_of::<M>()) {
        use simd::dgemm::{group_width, pack_to, MR};
        let ng = nr.div_ceil(MR);
        let groups = pack_to(rdata, nr, d, group_width(simd::level_of::<M>()), ng * MR);
        let mut qn = row_norms(rdata, nr, d);
        qn.resize(ng * MR, 0.0);
        let mut d2 = vec![0.0f64; ng * MR * COL_TILE];
        let m = cols.pts.n;
        let mut c0 = 0;
        while c0 < m {
            threads::check(stop)?;
            let nc = COL_TILE.min(m - c0);
            let np = nc.div_ceil(T::NR);
            T::dist_tile::<M>(
                &groups,
                ng,
                d,
                &cols.packed[c0 * d..(c0 + np * T::NR) * d],
                np,
                &qn,
                &cols.norms[c0..c0 + np * T::NR],
                &mut d2,
                COL_TILE,
            );
            red.tile::<M>(&mut st, r0, nr, c0, nc, &d2);
            c0 += nc;
        }
        return Ok(st);
    }
    let mut d2 = vec![0.0f64; nr * COL_TILE];
    let (mut cbuf, qn) = if cols.direct {
        (Vec::new(), Vec::new())
    } else {
        (vec![T::ZERO; nr * COL_TILE], row_norms(rdata, nr, d))
    };
    let m = cols.pts.n;
    let mut c0 = 0;
    let mut t = 0;
    while c0 < m {
        threads::check(stop)?;
        let nc = COL_TILE.min(m - c0);
        if cols.direct {
            let soa = &cols.soa[t * d * COL_TILE..(t + 1) * d * COL_TILE];
            direct_tile::<T, M>(rdata, nr, d, soa, nc, &mut d2);
        } else {
            gemm_tile(
                rdata,
                &qn,
                nr,
                d,
                &cols.pts.data[c0 * d..(c0 + nc) * d],
                &cols.norms[c0..c0 + nc],
                nc,
                &mut cbuf,
                &mut d2,
            );
        }
        red.tile::<M>(&mut st, r0, nr, c0, nc, &d2);
        c0 += nc;
        t += 1;
    }
    Ok(st)
}

/// One row block as a [`simd::SimdTask`].
struct BlockTask<'a, 'p, T, R> {
    rows: &'a Points<'p, T>,
    cols: &'a Cols<'p, T>,
    red: &'a R,
    b: usize,
    stop: &'a AtomicBool,
}

impl<T: Float, R: RowReducer> SimdTask for BlockTask<'_, '_, T, R> {
    type Output = Result<R::State>;
    #[inline(always)]
    fn run<M: Fma>(self) -> Result<R::State> {
        block_body::<T, R, M>(self.rows, self.cols, self.red, self.b, self.stop)
    }
}

fn run_block<T: Float, R: RowReducer>(
    level: Level,
    rows: &Points<'_, T>,
    cols: &Cols<'_, T>,
    red: &R,
    b: usize,
    stop: &AtomicBool,
) -> Result<R::State> {
    simd::dispatch(
        level,
        BlockTask {
            rows,
            cols,
            red,
            b,
            stop,
        },
    )
}

/// Drives `red` over every (row, column) pair of `rows` × `cols`, in parallel over row
/// blocks on divest's pool. Returns one reducer state per block of [`ROW_BLOCK`] rows, in
/// order (blocks of [`ROW_BLOCK`] rows on the direct path, [`ROW_BLOCK_GEMM`] on the
/// GEMM path). Extra memory: a copy of the columns (direct path, and the packed f64 GEMM
/// path on AVX2 and AVX-512) or their norms, plus one `ROW_BLOCK × COL_TILE` tile per running task.
pub fn reduce_rows<T: Float, R: RowReducer>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    red: &R,
    stop: &AtomicBool,
) -> Result<Vec<R::State>> {
    reduce_rows_with(rows, cols, red, stop, None)
}

/// [`reduce_rows`] with an explicit choice of distance path (`Some(true)` = direct).
pub fn reduce_rows_with<T: Float, R: RowReducer>(
    rows: Points<'_, T>,
    cols: Points<'_, T>,
    red: &R,
    stop: &AtomicBool,
    direct: Option<bool>,
) -> Result<Vec<R::State>> {
    if rows.d != cols.d {
        return Err(invalid!(
            "points have dimension {} but the other set has dimension {}",
            rows.d,
            cols.d
        ));
    }
    let direct = direct.unwrap_or(rows.d <= DIRECT_MAX_D);
    let level = simd::level();
    let cols = Cols::new(cols, direct, (level >= Level::Avx2).then_some(level));
    let n_blocks = rows
        .n
        .div_ceil(if direct { ROW_BLOCK } else { ROW_BLOCK_GEMM });
    threads::install(|| {
        (0..n_blocks)
            .into_par_iter()
            .map(|b| run_block(level, &rows, &cols, red, b, stop))
            .collect::<Result<Vec<_>>>()
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testing::{simd_levels, sq_dist, sym_vec};

    #[test]
    fn distances_match_naive_on_both_paths_and_all_levels() {
        let stop = AtomicBool::new(false);
        for &(n, m, d) in &[
            (1, 1, 1),
            (3, 300, 2),
            (70, 513, 5),
            (65, 257, 40),
            (2, 31, 3),
        ] {
            let x = sym_vec(1, n * d);
            let y = sym_vec(2, m * d);
            let px = Points::new(&x, n, d).unwrap();
            let py = Points::new(&y, m, d).unwrap();
            let red = reduce::CollectRows { m };
            for (direct, pack) in [(true, false), (false, false), (false, true)] {
                let mut per_level = Vec::new();
                for lvl in simd_levels() {
                    let cols = Cols::new(py, direct, pack.then_some(lvl));
                    let nb = n.div_ceil(if direct { ROW_BLOCK } else { ROW_BLOCK_GEMM });
                    let got: Vec<f64> = (0..nb)
                        .flat_map(|b| run_block(lvl, &px, &cols, &red, b, &stop).unwrap())
                        .collect();
                    per_level.push(got);
                }
                for (i, got) in per_level.iter().enumerate() {
                    for (a, b) in got.iter().zip(&per_level[0]) {
                        assert!(
                            (a - b).abs() <= 1e-14 * (1.0 + b.abs()),
                            "level {i}: {a} vs {b}"
                        );
                    }
                }
                let got = &per_level[0];
                for i in 0..n {
                    for j in 0..m {
                        let want = sq_dist(&x, i, &y, j, d);
                        let g = got[i * m + j];
                        assert!((g - want).abs() <= 1e-12 * (1.0 + want), "{g} vs {want}");
                    }
                }
            }
        }
    }

    /// The packed f32 path at every level (half panels of 16 points on AVX2, whole
    /// panels of 32 on AVX-512), with ragged row and column counts, against f64 sums.
    #[test]
    fn f32_packed_path_matches_naive_at_all_levels() {
        let stop = AtomicBool::new(false);
        for &(n, m, d) in &[(13, 45, 20), (200, 300, 40), (7, 600, 300)] {
            let x: Vec<f32> = sym_vec(5, n * d).iter().map(|&v| v as f32).collect();
            let y: Vec<f32> = sym_vec(6, m * d).iter().map(|&v| v as f32).collect();
            let (xd, yd): (Vec<f64>, Vec<f64>) = (
                x.iter().map(|&v| v as f64).collect(),
                y.iter().map(|&v| v as f64).collect(),
            );
            let px = Points::new(&x, n, d).unwrap();
            let py = Points::new(&y, m, d).unwrap();
            let red = reduce::CollectRows { m };
            for lvl in simd_levels() {
                let cols = Cols::new(py, false, Some(lvl));
                let got: Vec<f64> = (0..n.div_ceil(ROW_BLOCK_GEMM))
                    .flat_map(|b| run_block(lvl, &px, &cols, &red, b, &stop).unwrap())
                    .collect();
                for i in 0..n {
                    for j in 0..m {
                        let want = sq_dist(&xd, i, &yd, j, d);
                        let g = got[i * m + j];
                        assert!(
                            (g - want).abs() <= 1e-5 * (1.0 + want),
                            "{lvl:?} ({i},{j}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The eight-rows-at-a-time norms are the one-row-at-a-time sums bit for bit (same
    /// order of adds per row), for every remainder of n mod 8, in f64 and f32.
    #[test]
    fn row_norms_equal_sequential_sums_bit_for_bit() {
        for &d in &[1usize, 3, 8, 37, 256] {
            for n in 0..20 {
                let x = sym_vec(9, n * d);
                let want: Vec<f64> = (0..n)
                    .map(|i| {
                        let mut s = 0.0f64;
                        for &v in &x[i * d..(i + 1) * d] {
                            s += v * v;
                        }
                        s
                    })
                    .collect();
                let got = row_norms(&x, n, d);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "n={n} d={d}"
                );
                let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
                let got32 = row_norms(&x32, n, d);
                for i in 0..n {
                    let mut s = 0.0f64;
                    for &v in &x32[i * d..(i + 1) * d] {
                        s += (v as f64) * (v as f64);
                    }
                    assert_eq!(got32[i].to_bits(), s.to_bits(), "f32 n={n} d={d} row {i}");
                }
            }
        }
    }

    #[test]
    fn threads_do_not_change_results_and_stop_works() {
        let (n, m, d) = (200, 300, 3);
        let x = sym_vec(3, n * d);
        let y = sym_vec(4, m * d);
        let red = reduce::CollectRows { m };
        let stop = AtomicBool::new(false);
        let run = || {
            reduce_rows(
                Points::new(&x, n, d).unwrap(),
                Points::new(&y, m, d).unwrap(),
                &red,
                &stop,
            )
            .unwrap()
        };
        let a = run();
        threads::set_num_threads(1).unwrap();
        let b = run();
        threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
        let stopped = AtomicBool::new(true);
        let r = reduce_rows(
            Points::new(&x, n, d).unwrap(),
            Points::new(&y, m, d).unwrap(),
            &red,
            &stopped,
        );
        assert_eq!(r.unwrap_err(), crate::core::Error::Cancelled);
        assert!(Points::new(&x, n, d + 1).is_err());
    }
}
