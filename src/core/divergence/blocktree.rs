//! An exact kd-tree over points made of coordinate blocks, for the kNN conditional mutual
//! information: the key between two points is the max over blocks of the blocks' squared
//! Euclidean distances (the joint space (x, y, z) of `cmi`, or z alone).
//!
//! Exactness: a block's squared distance is summed in coordinate order from 0.0, unfused,
//! as `f64` (`t = q − p; s += t·t`), exactly as `cmi`'s brute force computes it, so keys
//! are bitwise the brute-force keys. Box bounds are computed the same way from the box
//! faces; rounding is monotone, so a box's lower bound never exceeds (and its upper bound
//! is never below) the computed key of any point inside it, and pruning drops no point.
//! Neighbours are ordered by (key, original index), so ties resolve as brute force does.
//!
//! Built once per point set: median splits on the widest coordinate, leaves of at most
//! [`LEAF`] points (more only when all of a leaf's points are equal), points stored
//! coordinate-major in tree order (a leaf's keys are computed for LEAF points at once,
//! each point's arithmetic unchanged), a bounding box per node. Memory: the tree-ordered
//! copy ((n + LEAF)·d values), the permutation, and two boxes per node (about 4n/LEAF
//! nodes · d).

use super::cmi::Block;

/// Most points in a leaf (unless all of them coincide).
pub const LEAF: usize = 32;

#[derive(Clone, Copy, Debug)]
struct Node {
    start: usize,
    end: usize,
    /// 0 for a leaf (the root is node 0, never a child).
    left: usize,
    right: usize,
}

/// The tree. Positions are tree order; `perm[p]` is the original index at position p.
pub struct BlockTree {
    n: usize,
    d: usize,
    dims: Vec<usize>,
    /// Coordinate c of tree position p at `soa[c * (n + LEAF) + p]` (padded with zeros).
    soa: Vec<f64>,
    perm: Vec<usize>,
    nodes: Vec<Node>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

/// max(v, 0).
#[inline(always)]
fn pos(v: f64) -> f64 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

impl BlockTree {
    /// Builds the tree over the rows formed by the blocks side by side (row i of the point
    /// set is the concatenation of every block's row `rows(b)[i]`, where `rows(b)` maps
    /// row i to the block's row, for a permuted x).
    pub fn build(blocks: &[(Block<'_>, Option<&[u32]>)]) -> BlockTree {
        let dims: Vec<usize> = blocks.iter().map(|(b, _)| b.d).collect();
        let d: usize = dims.iter().sum();
        let n = blocks.first().map_or(0, |(b, _)| b.data.len() / b.d.max(1));
        // Row-major gathered copy in original order.
        let mut flat = vec![0.0; n * d];
        let mut off = 0;
        for (b, map) in blocks {
            for i in 0..n {
                let r = map.map_or(i, |m| m[i] as usize);
                flat[i * d + off..i * d + off + b.d]
                    .copy_from_slice(&b.data[r * b.d..(r + 1) * b.d]);
            }
            off += b.d;
        }
        let mut t = BlockTree {
            n,
            d,
            dims,
            soa: Vec::new(),
            perm: (0..n).collect(),
            nodes: Vec::new(),
            lo: Vec::new(),
            hi: Vec::new(),
        };
        if n > 0 {
            t.split(&flat, 0, n);
        }
        let np = n + LEAF;
        let mut soa = vec![0.0; d * np];
        for (p, &i) in t.perm.iter().enumerate() {
            for c in 0..d {
                soa[c * np + p] = flat[i * d + c];
            }
        }
        t.soa = soa;
        t
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Tree position → original index.
    pub fn order(&self) -> &[usize] {
        &self.perm
    }

    /// Copies the coordinates at tree position p into `q` (length d).
    #[inline(always)]
    pub fn row_into(&self, p: usize, q: &mut Vec<f64>) {
        let np = self.n + LEAF;
        q.clear();
        q.extend((0..self.d).map(|c| self.soa[c * np + p]));
    }

    /// Keys from `q` to tree positions `p0..p0 + LEAF` (past a leaf's end the values are
    /// ignored), each block's squared distance summed in coordinate order from 0.0
    /// (unfused) and the max taken over blocks, as `cmi`'s brute force does. Fixed width, so the lanes vectorise.
    #[inline(always)]
    fn leaf_keys(&self, q: &[f64], p0: usize, out: &mut [f64; LEAF]) {
        let np = self.n + LEAF;
        let mut m = [0.0f64; LEAF];
        let mut off = 0;
        for &db in &self.dims {
            let mut s = [0.0f64; LEAF];
            for (c, &qc) in q.iter().enumerate().skip(off).take(db) {
                let col = &self.soa[c * np + p0..c * np + p0 + LEAF];
                for l in 0..LEAF {
                    let t = qc - col[l];
                    s[l] += t * t;
                }
            }
            for l in 0..LEAF {
                // Keys are finite and non-negative: a plain comparison is the max.
                if s[l] > m[l] {
                    m[l] = s[l];
                }
            }
            off += db;
        }
        *out = m;
    }

    fn split(&mut self, flat: &[f64], start: usize, end: usize) -> usize {
        let d = self.d;
        let me = self.nodes.len();
        self.nodes.push(Node {
            start,
            end,
            left: 0,
            right: 0,
        });
        let first = self.perm[start];
        let mut lo = flat[first * d..(first + 1) * d].to_vec();
        let mut hi = lo.clone();
        for &i in &self.perm[start..end] {
            for c in 0..d {
                let v = flat[i * d + c];
                lo[c] = lo[c].min(v);
                hi[c] = hi[c].max(v);
            }
        }
        let mut best = (0usize, 0.0f64);
        for c in 0..d {
            let w = hi[c] - lo[c];
            if w > best.1 {
                best = (c, w);
            }
        }
        self.lo.extend_from_slice(&lo);
        self.hi.extend_from_slice(&hi);
        if end - start <= LEAF || best.1 <= 0.0 {
            return me;
        }
        let c = best.0;
        let mid = start + (end - start) / 2;
        self.perm[start..end].select_nth_unstable_by(mid - start, |&a, &b| {
            flat[a * d + c].total_cmp(&flat[b * d + c])
        });
        let left = self.split(flat, start, mid);
        let right = self.split(flat, mid, end);
        self.nodes[me].left = left;
        self.nodes[me].right = right;
        me
    }

    /// Lower bound on the key from `q` to any point of node `b`.
    #[inline(always)]
    fn lower(&self, b: usize, q: &[f64]) -> f64 {
        let (lo, hi) = (
            &self.lo[b * self.d..(b + 1) * self.d],
            &self.hi[b * self.d..(b + 1) * self.d],
        );
        let mut m = 0.0f64;
        let mut off = 0;
        for &db in &self.dims {
            let mut s = 0.0;
            for c in off..off + db {
                // At most one term is positive, and adding zero is exact.
                let t = pos(lo[c] - q[c]) + pos(q[c] - hi[c]);
                s += t * t;
            }
            m = m.max(s);
            off += db;
        }
        m
    }

    /// The k smallest keys from tree position `p` to the other points (ascending, ties by
    /// original index) and their original indices; keys equal to zero are skipped when
    /// `skip_zero`. Missing neighbours keep +inf and `usize::MAX`.
    #[allow(clippy::too_many_arguments)]
    pub fn knn(
        &self,
        p: usize,
        skip_zero: bool,
        keys: &mut [f64],
        idx: &mut [usize],
        stack: &mut Vec<(usize, f64)>,
        qbuf: &mut Vec<f64>,
    ) {
        let k = keys.len();
        keys.fill(f64::INFINITY);
        idx.fill(usize::MAX);
        stack.clear();
        if self.n == 0 || k == 0 {
            return;
        }
        self.row_into(p, qbuf);
        let q = &qbuf[..];
        let mut buf = [0.0f64; LEAF];
        stack.push((0, self.lower(0, q)));
        while let Some((b, bound)) = stack.pop() {
            // Equal bounds may still hold a tie with a smaller index.
            if bound > keys[k - 1] {
                continue;
            }
            let nd = self.nodes[b];
            if nd.left != 0 {
                let bl = self.lower(nd.left, q);
                let br = self.lower(nd.right, q);
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
                let m = LEAF.min(nd.end - p0);
                self.leaf_keys(q, p0, &mut buf);
                let kth = keys[k - 1];
                let mut any = false;
                for &a in &buf {
                    any |= a <= kth;
                }
                if any {
                    for (l, &v) in buf[..m].iter().enumerate() {
                        let s = p0 + l;
                        if s == p || v > keys[k - 1] || (skip_zero && v == 0.0) {
                            continue;
                        }
                        let j = self.perm[s];
                        if v == keys[k - 1] && j > idx[k - 1] {
                            continue;
                        }
                        let mut t = k - 1;
                        while t > 0 && (keys[t - 1] > v || (keys[t - 1] == v && idx[t - 1] > j)) {
                            keys[t] = keys[t - 1];
                            idx[t] = idx[t - 1];
                            t -= 1;
                        }
                        keys[t] = v;
                        idx[t] = j;
                    }
                }
                p0 += m;
            }
        }
    }

    /// Calls `f(s)` for every tree position s ≠ p whose key from position p is below `r`
    /// (`strict`) or at most `r`.
    #[inline(always)]
    pub fn within(
        &self,
        p: usize,
        r: f64,
        strict: bool,
        stack: &mut Vec<usize>,
        qbuf: &mut Vec<f64>,
        mut f: impl FnMut(usize),
    ) {
        let inside = |v: f64| if strict { v < r } else { v <= r };
        stack.clear();
        if self.n == 0 {
            return;
        }
        self.row_into(p, qbuf);
        let q = &qbuf[..];
        let mut buf = [0.0f64; LEAF];
        stack.push(0);
        while let Some(b) = stack.pop() {
            if !inside(self.lower(b, q)) {
                continue;
            }
            let nd = self.nodes[b];
            if nd.left != 0 {
                stack.push(nd.right);
                stack.push(nd.left);
                continue;
            }
            let mut p0 = nd.start;
            while p0 < nd.end {
                let m = LEAF.min(nd.end - p0);
                self.leaf_keys(q, p0, &mut buf);
                for (l, &v) in buf[..m].iter().enumerate() {
                    if inside(v) && p0 + l != p {
                        f(p0 + l);
                    }
                }
                p0 += m;
            }
        }
    }
}
