//! An exact kd-tree for k-nearest-neighbour queries and radius counts at low dimension.
//!
//! Built once per point set: median splits on the widest coordinate, leaves of at most
//! [`LEAF`] points (more only when all of a leaf's points are equal), points stored
//! contiguously in tree order (coordinate-major, so a leaf's distances vectorise like the
//! engine's direct tiles), and tight bounding boxes per node.
//!
//! Results are bitwise identical to the brute-force engine path
//! (`reduce_rows_with(.., Some(true))` with the `TopK` / `CountWithin` reducers):
//! * a distance is computed exactly as `direct_tile` does: differences `q − x` in the input
//!   precision, accumulated over coordinates 0..d in order with the same multiply-add
//!   flavour (fused on the AVX levels, unfused on scalar), then widened to f64; a joint
//!   second block is summed unfused in f64 as `TopK` does;
//! * box bounds are computed the same way from the box faces, and floating-point rounding
//!   is monotone, so a box's lower bound never exceeds (and its upper bound is never below)
//!   the computed distance of any point inside it: pruning is exact;
//! * neighbours are ordered by (distance, column index), which is what the engine's
//!   stable insertion over ascending columns yields, so ties pick the same columns.
//!
//! Queries run in fixed blocks of [`QUERY_BLOCK`] rows on divest's pool; each query's
//! result depends only on the tree and the query, so nothing depends on the thread count.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::{Float, Points};
use crate::core::error::{invalid, Result};
use crate::core::simd::{self, Fma, Level, SimdTask};
use crate::core::threads;

/// Most points in a leaf (unless all of them coincide).
pub const LEAF: usize = 48;
/// Points per distance chunk of the leaf kernel: splits put a multiple of it on the left,
/// so leaves hold whole chunks (all but those on the right edge of the tree).
const CHUNK: usize = 16;
/// Most distances computed before a scan of a leaf (a leaf of coinciding points may be
/// larger than [`LEAF`]).
const SCAN: usize = 64;
/// Queries per task: a fixed partition of the query order.
pub const QUERY_BLOCK: usize = 128;

/// A node: points `start..end` in tree order; `left == 0` marks a leaf (the root is 0).
#[derive(Clone, Copy, Debug)]
struct Node {
    start: usize,
    end: usize,
    left: usize,
    right: usize,
}

/// A kd-tree over `n` points with a first block of dimension `d` (type `T`) and an optional
/// second block of dimension `du` (f64), whose distance is the max of the two blocks'.
pub struct KdTree<T> {
    n: usize,
    d: usize,
    du: usize,
    /// First block in tree order, coordinate-major: `soa[k * (n + SCAN) + p]` (each
    /// coordinate padded by SCAN zeros so leaf chunks are always full width).
    soa: Vec<T>,
    /// Second block in tree order, coordinate-major.
    usoa: Vec<f64>,
    /// Tree position → original index.
    perm: Vec<usize>,
    /// Original index → tree position.
    pos: Vec<usize>,
    nodes: Vec<Node>,
    /// Per node, the first block's box (`d` values each).
    lo: Vec<T>,
    hi: Vec<T>,
    /// Per node, the second block's box (`du` values each).
    ulo: Vec<f64>,
    uhi: Vec<f64>,
    /// Per internal node, its children's first-block boxes side by side, for bounding
    /// both children in two lanes: `[lo_left, lo_right, hi_left, hi_right]` per
    /// coordinate (`4 d` values per node; leaves' entries unused).
    pair: Vec<T>,
}

/// max(v, 0) (for a difference of finite values).
#[inline(always)]
fn pos<T: Float>(v: T) -> T {
    if v > T::ZERO {
        v
    } else {
        T::ZERO
    }
}

fn coord<T: Float>(pts: &[T], d: usize, u: &[f64], du: usize, i: usize, c: usize) -> f64 {
    if c < d {
        pts[i * d + c].to_f64()
    } else {
        u[i * du + (c - d)]
    }
}

impl<T: Float> KdTree<T> {
    /// Builds the tree. `second` is an optional second block (row-major `n × du`).
    /// Memory: a tree-ordered copy of the points plus four boxes per node (its own, and
    /// its children's side by side; about 2n/LEAF nodes). Time O(n (d + du) log n),
    /// sequential.
    pub fn build(pts: Points<'_, T>, second: Option<(&[f64], usize)>) -> Result<Self> {
        let (n, d) = (pts.n, pts.d);
        let (u, du) = second.unwrap_or((&[], 0));
        if u.len() != n * du || (second.is_some() && du == 0) {
            return Err(invalid!("second coordinate block has the wrong shape"));
        }
        let mut t = KdTree {
            n,
            d,
            du,
            soa: Vec::new(),
            usoa: Vec::new(),
            perm: (0..n).collect(),
            pos: Vec::new(),
            nodes: Vec::new(),
            lo: Vec::new(),
            hi: Vec::new(),
            ulo: Vec::new(),
            uhi: Vec::new(),
            pair: Vec::new(),
        };
        if n > 0 {
            t.split(pts.data, u, 0, n);
        }
        t.pair = vec![T::ZERO; 4 * d * t.nodes.len()];
        for (b, nd) in t.nodes.iter().enumerate() {
            if nd.left == 0 {
                continue;
            }
            let pb = &mut t.pair[4 * d * b..4 * d * (b + 1)];
            for c in 0..d {
                pb[4 * c] = t.lo[nd.left * d + c];
                pb[4 * c + 1] = t.lo[nd.right * d + c];
                pb[4 * c + 2] = t.hi[nd.left * d + c];
                pb[4 * c + 3] = t.hi[nd.right * d + c];
            }
        }
        t.soa = vec![T::ZERO; d * (n + SCAN)];
        t.usoa = vec![0.0; du * n];
        t.pos = vec![0; n];
        for (p, &i) in t.perm.iter().enumerate() {
            t.pos[i] = p;
            for c in 0..d {
                t.soa[c * (n + SCAN) + p] = pts.data[i * d + c];
            }
            for c in 0..du {
                t.usoa[c * n + p] = u[i * du + c];
            }
        }
        Ok(t)
    }

    /// Tree order: position → original index.
    pub fn order(&self) -> &[usize] {
        &self.perm
    }

    /// Creates the node for `perm[start..end]` (boxes, then children); returns its index.
    fn split(&mut self, x: &[T], u: &[f64], start: usize, end: usize) -> usize {
        let (d, du) = (self.d, self.du);
        let me = self.nodes.len();
        self.nodes.push(Node {
            start,
            end,
            left: 0,
            right: 0,
        });
        let first = self.perm[start];
        let mut lo: Vec<T> = x[first * d..(first + 1) * d].to_vec();
        let mut hi = lo.clone();
        let mut ulo: Vec<f64> = u[first * du..(first + 1) * du].to_vec();
        let mut uhi = ulo.clone();
        for &i in &self.perm[start..end] {
            for c in 0..d {
                let v = x[i * d + c];
                if v < lo[c] {
                    lo[c] = v;
                }
                if v > hi[c] {
                    hi[c] = v;
                }
            }
            for c in 0..du {
                let v = u[i * du + c];
                ulo[c] = ulo[c].min(v);
                uhi[c] = uhi[c].max(v);
            }
        }
        let mut best = (0usize, 0.0f64);
        for c in 0..d {
            let w = hi[c].to_f64() - lo[c].to_f64();
            if w > best.1 {
                best = (c, w);
            }
        }
        for c in 0..du {
            let w = uhi[c] - ulo[c];
            if w > best.1 {
                best = (d + c, w);
            }
        }
        self.lo.extend_from_slice(&lo);
        self.hi.extend_from_slice(&hi);
        self.ulo.extend_from_slice(&ulo);
        self.uhi.extend_from_slice(&uhi);
        // A leaf when small, or when every point is equal (no split separates them).
        if end - start <= LEAF || best.1 <= 0.0 {
            return me;
        }
        let c = best.0;
        // The median, moved up to a whole number of chunks on the left.
        let mid = start
            + ((end - start) / 2)
                .next_multiple_of(CHUNK)
                .min(end - start - 1);
        self.perm[start..end].select_nth_unstable_by(mid - start, |&a, &b| {
            coord(x, d, u, du, a, c).total_cmp(&coord(x, d, u, du, b, c))
        });
        let left = self.split(x, u, start, mid);
        let right = self.split(x, u, mid, end);
        self.nodes[me].left = left;
        self.nodes[me].right = right;
        me
    }

    /// Lower bound on the computed key of any point in node `b` (see the module notes).
    #[inline(always)]
    fn lower<M: Fma>(&self, b: usize, q: &[T], qu: &[f64]) -> f64 {
        let q = &q[..self.d];
        let (lo, hi) = (
            &self.lo[b * self.d..(b + 1) * self.d],
            &self.hi[b * self.d..(b + 1) * self.d],
        );
        let mut acc = T::ZERO;
        for c in 0..self.d {
            // Branch-free: at most one term is positive, and adding zero is exact.
            let (a, e) = (lo[c] - q[c], q[c] - hi[c]);
            let t = pos(a) + pos(e);
            acc = M::ma(t, t, acc);
        }
        let mut v = acc.to_f64();
        if self.du > 0 {
            let (lo, hi) = (
                &self.ulo[b * self.du..(b + 1) * self.du],
                &self.uhi[b * self.du..(b + 1) * self.du],
            );
            let mut s = 0.0;
            for c in 0..self.du {
                let e = pos(lo[c] - qu[c]) + pos(qu[c] - hi[c]);
                s += e * e;
            }
            if s > v {
                v = s;
            }
        }
        v
    }

    /// Upper bound on the computed first-block distance of any point in node `b`.
    #[inline(always)]
    fn upper<M: Fma>(&self, b: usize, q: &[T]) -> f64 {
        let (lo, hi) = (
            &self.lo[b * self.d..(b + 1) * self.d],
            &self.hi[b * self.d..(b + 1) * self.d],
        );
        let mut acc = T::ZERO;
        for c in 0..self.d {
            let x = q[c];
            let (a, e) = (x - lo[c], hi[c] - x);
            let t = if a > e { a } else { e };
            acc = M::ma(t, t, acc);
        }
        acc.to_f64()
    }

    /// Bounds of both children of internal node `b` (first block only), each exactly what
    /// [`Self::lower`] gives, computed side by side in two lanes.
    #[inline(always)]
    fn lower_pair<M: Fma>(&self, b: usize, q: &[T]) -> (f64, f64) {
        let pb = &self.pair[4 * self.d * b..4 * self.d * (b + 1)];
        let (mut l, mut r) = (T::ZERO, T::ZERO);
        for (w, &qc) in pb.chunks_exact(4).zip(q) {
            let tl = pos(w[0] - qc) + pos(qc - w[2]);
            let tr = pos(w[1] - qc) + pos(qc - w[3]);
            l = M::ma(tl, tl, l);
            r = M::ma(tr, tr, r);
        }
        (l.to_f64(), r.to_f64())
    }

    /// First-block distances from `q` to tree positions `p0..p0 + m` (`m <= SCAN`; past
    /// `m` up to the next whole chunk the values are ignored), exactly as the engine's
    /// direct tile computes them: chunks of [`CHUNK`] points, each accumulating over the
    /// coordinates in order in registers.
    #[inline(always)]
    fn leaf_d2<M: Fma>(&self, q: &[T], p0: usize, m: usize, out: &mut [T; SCAN]) {
        let np = self.n + SCAN;
        for (j, o) in out
            .chunks_exact_mut(CHUNK)
            .take(m.div_ceil(CHUNK))
            .enumerate()
        {
            let p = p0 + j * CHUNK;
            let mut acc = [T::ZERO; CHUNK];
            for (c, &qc) in q.iter().enumerate() {
                let col: &[T; CHUNK] = self.soa[c * np + p..c * np + p + CHUNK].try_into().unwrap();
                for l in 0..CHUNK {
                    let t = qc - col[l];
                    acc[l] = M::ma(t, t, acc[l]);
                }
            }
            o.copy_from_slice(&acc);
        }
    }

    /// Inserts tree position `p` (first-block key `v`) into the sorted buffer when it is
    /// admissible and among the k smallest by (key, index). With `seeded`, a point already
    /// in the buffer is not inserted twice.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn offer(
        &self,
        mut v: f64,
        p: usize,
        qu: &[f64],
        skip: Option<usize>,
        seeded: bool,
        keys: &mut [f64],
        idx: &mut [usize],
    ) {
        let k = keys.len();
        if v > keys[k - 1] {
            return;
        }
        let j = self.perm[p];
        if skip == Some(j) {
            return;
        }
        if self.du > 0 {
            let mut s = 0.0;
            for (c, &qc) in qu.iter().enumerate() {
                let e = qc - self.usoa[c * self.n + p];
                s += e * e;
            }
            if s > v {
                v = s;
            }
        }
        // Duplicates are not neighbours; +inf never enters (as in the engine).
        if v == 0.0 || v == f64::INFINITY {
            return;
        }
        if v > keys[k - 1] || (v == keys[k - 1] && j > idx[k - 1]) {
            return;
        }
        if seeded && idx.contains(&j) {
            return;
        }
        let mut s = k - 1;
        while s > 0 && (keys[s - 1] > v || (keys[s - 1] == v && idx[s - 1] > j)) {
            keys[s] = keys[s - 1];
            idx[s] = idx[s - 1];
            s -= 1;
        }
        keys[s] = v;
        idx[s] = j;
    }

    /// The k smallest admissible keys from one query (ascending, ties by column index).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn knn_one<M: Fma>(
        &self,
        q: &[T],
        qu: &[f64],
        skip: Option<usize>,
        seed: &[usize],
        keys: &mut [f64],
        idx: &mut [usize],
        stack: &mut Vec<(usize, f64)>,
    ) {
        let k = keys.len();
        keys.fill(f64::INFINITY);
        idx.fill(usize::MAX);
        stack.clear();
        if self.n == 0 {
            return;
        }
        // Seed with candidates (the previous query's neighbours: close by in tree order) so
        // that pruning is sharp from the start. Any candidates keep the result exact.
        let np = self.n + SCAN;
        let seeded = !seed.is_empty();
        for &j in seed {
            let Some(&p) = self.pos.get(j) else { continue };
            let mut acc = T::ZERO;
            for (c, &qc) in q.iter().enumerate() {
                let t = qc - self.soa[c * np + p];
                acc = M::ma(t, t, acc);
            }
            self.offer(acc.to_f64(), p, qu, skip, seeded, keys, idx);
        }
        stack.push((0, self.lower::<M>(0, q, qu)));
        let mut buf = [T::ZERO; SCAN];
        while let Some((b, bound)) = stack.pop() {
            // Equal bounds may still hold a tie with a smaller column index.
            if bound > keys[k - 1] {
                continue;
            }
            let nd = self.nodes[b];
            if nd.left != 0 {
                let (bl, br) = if self.du == 0 {
                    self.lower_pair::<M>(b, q)
                } else {
                    (
                        self.lower::<M>(nd.left, q, qu),
                        self.lower::<M>(nd.right, q, qu),
                    )
                };
                let kth = keys[k - 1];
                let (near, far) = if bl <= br {
                    ((nd.left, bl), (nd.right, br))
                } else {
                    ((nd.right, br), (nd.left, bl))
                };
                if far.1 <= kth {
                    stack.push(far);
                }
                if near.1 <= kth {
                    stack.push(near);
                }
                continue;
            }
            let mut p0 = nd.start;
            while p0 < nd.end {
                let m = SCAN.min(nd.end - p0);
                self.leaf_d2::<M>(q, p0, m, &mut buf);
                // Most leaves hold no candidate: a branch-free scan skips them.
                let kth = keys[k - 1];
                let mut any = false;
                for &a in &buf[..m] {
                    any |= a.to_f64() <= kth;
                }
                if any {
                    for (l, &a) in buf[..m].iter().enumerate() {
                        self.offer(a.to_f64(), p0 + l, qu, skip, seeded, keys, idx);
                    }
                }
                p0 += m;
            }
        }
    }

    /// Points (other than tree position `skip`) whose first-block distance is below
    /// (`strict`) or at most `r`.
    #[inline(always)]
    fn count_one<M: Fma>(
        &self,
        q: &[T],
        r: f64,
        strict: bool,
        skip: Option<usize>,
        stack: &mut Vec<usize>,
    ) -> u64 {
        let inside = |v: f64| if strict { v < r } else { v <= r };
        stack.clear();
        if self.n == 0 {
            return 0;
        }
        stack.push(0);
        let mut count = 0u64;
        let mut buf = [T::ZERO; SCAN];
        while let Some(b) = stack.pop() {
            let lb = self.lower::<M>(b, q, &[]);
            if !inside(lb) {
                continue;
            }
            let nd = self.nodes[b];
            if inside(self.upper::<M>(b, q)) {
                let own = skip.is_some_and(|s| s >= nd.start && s < nd.end);
                count += (nd.end - nd.start - own as usize) as u64;
                continue;
            }
            if nd.left != 0 {
                stack.push(nd.right);
                stack.push(nd.left);
                continue;
            }
            let mut p0 = nd.start;
            while p0 < nd.end {
                let m = SCAN.min(nd.end - p0);
                self.leaf_d2::<M>(q, p0, m, &mut buf);
                for (l, &a) in buf[..m].iter().enumerate() {
                    count += (inside(a.to_f64()) && skip != Some(p0 + l)) as u64;
                }
                p0 += m;
            }
        }
        count
    }
}

/// A block of queries, run with the multiply-add flavour of the SIMD level in use.
trait Queries: Sync {
    type Out: Send;
    fn block<M: Fma>(&self, b: usize) -> Self::Out;
}

fn dispatch<Q: Queries>(level: Level, q: &Q, b: usize) -> Q::Out {
    struct Task<'a, Q>(&'a Q, usize);
    impl<Q: Queries> SimdTask for Task<'_, Q> {
        type Output = Q::Out;
        #[inline(always)]
        fn run<M: Fma>(self) -> Q::Out {
            self.0.block::<M>(self.1)
        }
    }
    simd::dispatch(level, Task(q, b))
}

/// Runs the query blocks in parallel with a stop check before each block.
fn run_blocks<Q: Queries>(q: &Q, n_queries: usize, stop: &AtomicBool) -> Result<Vec<Q::Out>> {
    let level = simd::level();
    let nb = n_queries.div_ceil(QUERY_BLOCK);
    threads::install(|| {
        (0..nb)
            .into_par_iter()
            .map(|b| {
                threads::check(stop)?;
                Ok(dispatch(level, q, b))
            })
            .collect::<Result<Vec<_>>>()
    })?
}

struct KnnQueries<'a, T> {
    tree: &'a KdTree<T>,
    rows: Points<'a, T>,
    urows: &'a [f64],
    order: &'a [usize],
    k: usize,
    same: bool,
}

impl<T: Float> Queries for KnnQueries<'_, T> {
    type Out = (Vec<f64>, Vec<usize>);
    #[inline(always)]
    fn block<M: Fma>(&self, b: usize) -> Self::Out {
        let (k, du) = (self.k, self.tree.du);
        let ids = &self.order[b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(self.order.len())];
        let mut keys = vec![f64::INFINITY; ids.len() * k];
        let mut idx = vec![usize::MAX; ids.len() * k];
        let mut stack = Vec::with_capacity(64);
        let mut seed = Vec::with_capacity(k + 1);
        for (t, &i) in ids.iter().enumerate() {
            let (done, rest) = idx.split_at_mut(t * k);
            seed.clear();
            if t > 0 {
                seed.extend(done[(t - 1) * k..].iter().filter(|&&j| j != usize::MAX));
                if self.same {
                    seed.push(ids[t - 1]);
                }
            }
            self.tree.knn_one::<M>(
                self.rows.row(i),
                &self.urows[i * du..(i + 1) * du],
                self.same.then_some(i),
                &seed,
                &mut keys[t * k..(t + 1) * k],
                &mut rest[..k],
                &mut stack,
            );
        }
        (keys, idx)
    }
}

/// For each row, the k smallest keys to the tree's points (ascending) and their original
/// indices; pairs at key zero are skipped, and the pair (i, i) when `same`. Rows are
/// processed in `order` (a permutation of the rows: tree order gives locality); `urows`
/// is the rows' second block when the tree has one. Rows with fewer than k admissible
/// points keep +inf and `usize::MAX`, as in the engine. Memory: the output only.
pub fn knn<T: Float>(
    tree: &KdTree<T>,
    rows: Points<'_, T>,
    urows: Option<&[f64]>,
    order: &[usize],
    k: usize,
    same: bool,
    stop: &AtomicBool,
) -> Result<(Vec<f64>, Vec<usize>)> {
    let urows = urows.unwrap_or(&[]);
    if rows.d != tree.d || urows.len() != rows.n * tree.du {
        return Err(invalid!("query points do not match the tree's dimensions"));
    }
    if k == 0 || (same && rows.n != tree.n) {
        return Err(invalid!(
            "k must be at least 1, and same=true needs one point set"
        ));
    }
    let mut seen = vec![false; rows.n];
    let mut ok = order.len() == rows.n;
    for &i in order {
        ok &= i < rows.n && !seen[i];
        if !ok {
            break;
        }
        seen[i] = true;
    }
    if !ok {
        return Err(invalid!("query order must be a permutation of the rows"));
    }
    let q = KnnQueries {
        tree,
        rows,
        urows,
        order,
        k,
        same,
    };
    let parts = run_blocks(&q, rows.n, stop)?;
    let mut d2 = vec![f64::INFINITY; rows.n * k];
    let mut idx = vec![usize::MAX; rows.n * k];
    let mut t = 0;
    for (keys, ids) in parts {
        for (kk, ii) in keys.chunks_exact(k).zip(ids.chunks_exact(k)) {
            let i = order[t];
            d2[i * k..(i + 1) * k].copy_from_slice(kk);
            idx[i * k..(i + 1) * k].copy_from_slice(ii);
            t += 1;
        }
    }
    Ok((d2, idx))
}

struct CountQueries<'a, T> {
    tree: &'a KdTree<T>,
    x: Points<'a, T>,
    r2: &'a [f64],
    strict: bool,
}

impl<T: Float> Queries for CountQueries<'_, T> {
    type Out = Vec<u64>;
    #[inline(always)]
    fn block<M: Fma>(&self, b: usize) -> Vec<u64> {
        let t = self.tree;
        let ps = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(t.n);
        let mut stack = Vec::with_capacity(64);
        ps.map(|p| {
            let i = t.perm[p];
            t.count_one::<M>(self.x.row(i), self.r2[i], self.strict, Some(p), &mut stack)
        })
        .collect()
    }
}

/// Per point of the tree's own set `x`, the number of other points with first-block
/// squared distance below (`strict`) or at most `r2[i]`. Queries run in tree order.
/// Memory: the output only.
pub fn count_within<T: Float>(
    tree: &KdTree<T>,
    x: Points<'_, T>,
    r2: &[f64],
    strict: bool,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    if x.n != tree.n || x.d != tree.d || tree.du != 0 || r2.len() != x.n {
        return Err(invalid!("points and radii must be the tree's own set"));
    }
    let q = CountQueries {
        tree,
        x,
        r2,
        strict,
    };
    let parts = run_blocks(&q, x.n, stop)?;
    let mut out = vec![0u64; x.n];
    for (p, c) in parts.into_iter().flatten().enumerate() {
        out[tree.perm[p]] = c;
    }
    Ok(out)
}

struct CountRowQueries<'a, T> {
    tree: &'a KdTree<T>,
    x: Points<'a, T>,
    lo: usize,
    r2: &'a [f64],
    strict: bool,
}

impl<T: Float> Queries for CountRowQueries<'_, T> {
    type Out = Vec<u64>;
    #[inline(always)]
    fn block<M: Fma>(&self, b: usize) -> Vec<u64> {
        let t = self.tree;
        let qs = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(self.r2.len());
        let mut stack = Vec::with_capacity(64);
        qs.map(|q| {
            let i = self.lo + q;
            t.count_one::<M>(
                self.x.row(i),
                self.r2[q],
                self.strict,
                Some(t.pos[i]),
                &mut stack,
            )
        })
        .collect()
    }
}

/// [`count_within`] for the rows `lo .. lo + r2.len()` of the tree's own set only (one
/// block of a distributed estimator): each row's count is the one [`count_within`] gives
/// it (the same tree, the same pairs). Queries run in row order. Memory: the output.
pub fn count_within_rows<T: Float>(
    tree: &KdTree<T>,
    x: Points<'_, T>,
    lo: usize,
    r2: &[f64],
    strict: bool,
    stop: &AtomicBool,
) -> Result<Vec<u64>> {
    if x.n != tree.n || x.d != tree.d || tree.du != 0 || lo + r2.len() > x.n {
        return Err(invalid!(
            "points must be the tree's own set and the rows within it"
        ));
    }
    let q = CountRowQueries {
        tree,
        x,
        lo,
        r2,
        strict,
    };
    Ok(run_blocks(&q, r2.len(), stop)?.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::pairwise::reduce_rows_with;
    use crate::core::pairwise::topk::{CountWithin, Joint, TopK};
    // `levels > 0`: few distinct values, so duplicates and tied distances everywhere.
    use crate::core::testing::tied_vec;

    fn brute<T: Float>(
        rows: Points<'_, T>,
        cols: Points<'_, T>,
        k: usize,
        same: bool,
        joint: Option<Joint<'_>>,
    ) -> (Vec<f64>, Vec<usize>) {
        let red = TopK {
            k,
            exclude_self: same,
            skip_zero: true,
            joint,
        };
        let st = reduce_rows_with(rows, cols, &red, &AtomicBool::new(false), Some(true)).unwrap();
        (
            st.iter().flat_map(|s| s.d2.clone()).collect(),
            st.iter().flat_map(|s| s.idx.clone()).collect(),
        )
    }

    fn tree_knn<T: Float>(
        rows: Points<'_, T>,
        cols: Points<'_, T>,
        k: usize,
        same: bool,
        joint: Option<Joint<'_>>,
    ) -> (Vec<f64>, Vec<usize>) {
        let stop = AtomicBool::new(false);
        let t = KdTree::build(cols, joint.map(|j| (j.cols, j.d))).unwrap();
        let order: Vec<usize> = if same {
            t.order().to_vec()
        } else {
            (0..rows.n).rev().collect()
        };
        knn(&t, rows, joint.map(|j| j.rows), &order, k, same, &stop).unwrap()
    }

    #[test]
    fn knn_and_counts_equal_brute_force_bitwise() {
        let stop = AtomicBool::new(false);
        for &d in &[1usize, 2, 5, 8, 20] {
            for &levels in &[0u64, 4] {
                let (n, m) = (600, 450);
                let x = tied_vec(d as u64 + levels, n * d, levels);
                let y = tied_vec(100 + d as u64, m * d, levels);
                let px = Points::new(&x, n, d).unwrap();
                let py = Points::new(&y, m, d).unwrap();
                for &k in &[1usize, 3, 10] {
                    assert_eq!(
                        tree_knn(px, px, k, true, None),
                        brute(px, px, k, true, None)
                    );
                    assert_eq!(
                        tree_knn(px, py, k, false, None),
                        brute(px, py, k, false, None)
                    );
                }
                // Radii equal to computed distances: points exactly on the radius.
                let (r2, _) = brute(px, px, 3, true, None);
                let r2: Vec<f64> = r2.chunks(3).map(|c| c[2]).collect();
                let t = KdTree::build(px, None).unwrap();
                for strict in [true, false] {
                    let red = CountWithin {
                        r2: &r2,
                        strict,
                        exclude_self: true,
                    };
                    let want = reduce_rows_with(px, px, &red, &stop, Some(true))
                        .unwrap()
                        .concat();
                    let got = count_within(&t, px, &r2, strict, &stop).unwrap();
                    assert_eq!(got, want, "d {d} levels {levels} strict {strict}");
                }
            }
        }
    }

    #[test]
    fn joint_knn_equals_brute_force_and_f32_too() {
        for &(dx, dy, levels) in &[(1usize, 1usize, 0u64), (1, 1, 5), (2, 3, 0), (3, 2, 3)] {
            let n = 700;
            let x = tied_vec(7 + dx as u64, n * dx, levels);
            let u = tied_vec(9 + dy as u64, n * dy, levels);
            let px = Points::new(&x, n, dx).unwrap();
            let jt = Joint {
                rows: &u,
                cols: &u,
                d: dy,
            };
            for &k in &[1usize, 3, 10] {
                assert_eq!(
                    tree_knn(px, px, k, true, Some(jt)),
                    brute(px, px, k, true, Some(jt))
                );
            }
        }
        let x32: Vec<f32> = tied_vec(5, 500 * 3, 0).iter().map(|&v| v as f32).collect();
        let p = Points::new(&x32, 500, 3).unwrap();
        assert_eq!(tree_knn(p, p, 4, true, None), brute(p, p, 4, true, None));
    }

    #[test]
    fn threads_stop_and_bad_input() {
        let (n, d) = (1000, 3);
        let x = tied_vec(11, n * d, 0);
        let px = Points::new(&x, n, d).unwrap();
        let a = tree_knn(px, px, 5, true, None);
        threads::set_num_threads(1).unwrap();
        let b = tree_knn(px, px, 5, true, None);
        threads::set_num_threads(2).unwrap();
        assert_eq!(a, b);
        let t = KdTree::build(px, None).unwrap();
        let stopped = AtomicBool::new(true);
        let order: Vec<usize> = (0..n).collect();
        assert!(knn(&t, px, None, &order, 5, true, &stopped).is_err());
        let stop = AtomicBool::new(false);
        assert!(knn(&t, px, None, &order[1..], 5, true, &stop).is_err());
        let mut bad = order.clone();
        bad[0] = 1;
        assert!(knn(&t, px, None, &bad, 5, true, &stop).is_err());
        assert!(knn(&t, px, None, &order, 0, true, &stop).is_err());
        assert!(count_within(&t, px, &[1.0], true, &stop).is_err());
        assert!(KdTree::build(px, Some((&x[..5], 1))).is_err());
        // All points equal: one oversized leaf, no neighbours at positive distance.
        let same = vec![0.5; 100];
        let ps = Points::new(&same, 100, 1).unwrap();
        let (d2, _) = tree_knn(ps, ps, 2, true, None);
        assert!(d2.iter().all(|v| v.is_infinite()));
        let c = count_within(
            &KdTree::build(ps, None).unwrap(),
            ps,
            &[0.1; 100],
            true,
            &stop,
        );
        assert_eq!(c.unwrap(), vec![99u64; 100]);
        let empty = Points::new(&same[..0], 0, d).unwrap();
        let (d2, _) = tree_knn(px, empty, 1, false, None);
        assert!(d2.iter().all(|v| v.is_infinite()));
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::core::testing::Lcg;

    #[test]
    #[ignore]
    fn time_knn_d8() {
        let (n, d) = (20000, 8);
        let mut g = Lcg::new(1);
        // Sum of centred uniforms: roughly Gaussian.
        let x: Vec<f64> = (0..n * d)
            .map(|_| (0..4).fold(0.0, |a, _| a + (g.unit() - 0.5)))
            .collect();
        let px = Points::new(&x, n, d).unwrap();
        let stop = AtomicBool::new(false);
        threads::set_num_threads(1).unwrap();
        let t0 = std::time::Instant::now();
        let t = KdTree::build(px, None).unwrap();
        let t1 = t0.elapsed();
        let order = t.order().to_vec();
        let r = knn(&t, px, None, &order, 5, true, &stop).unwrap();
        eprintln!("build {:?} total {:?} {}", t1, t0.elapsed(), r.0[7]);
    }
}
