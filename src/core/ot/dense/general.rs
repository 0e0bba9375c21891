//! The general solver's half-steps (log-sum-exp or kernel form) and its workspace: the
//! iterations of [`super::solve`] at one ε.

use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use super::bodies::{build_kernel, col_dot, col_dot_acc, lse_rows, row_dot};
use super::relax::Relax;
use super::{Method, Problem, TINY};
use crate::core::error::Result;
use crate::core::simd::{self, Level};
use crate::core::threads;

/// Rows per parallel task in the row passes.
const ROWS: usize = 16;
/// Columns per parallel task in the column pass.
const COLS: usize = 256;
/// Rows per parallel task of the fused sweep (each task keeps a partial column sum).
const SWEEP_ROWS: usize = 64;
/// Scalings larger than e^30 (or smaller than e^-30) are absorbed into the potentials.
const ABSORB: f64 = 30.0;

/// Fixed-partition loop over chunks of `out`, in parallel or not.
fn for_chunks(
    out: &mut [f64],
    chunk: usize,
    parallel: bool,
    stop: &AtomicBool,
    f: impl Fn(usize, &mut [f64]) + Sync + Send,
) -> Result<()> {
    if parallel && out.len() > chunk {
        threads::install(|| {
            out.par_chunks_mut(chunk)
                .enumerate()
                .try_for_each(|(b, o)| {
                    threads::check(stop)?;
                    f(b, o);
                    Ok(())
                })
        })?
    } else {
        for (b, o) in out.chunks_mut(chunk).enumerate() {
            threads::check(stop)?;
            f(b, o);
        }
        Ok(())
    }
}

/// Natural log of the weights (−inf for zero weights).
fn logs(w: &[f64]) -> Vec<f64> {
    w.iter().map(|x| x.ln()).collect()
}

/// `ln Σ_i exp(h_i - c_{i,j}/ε)` down column j of a row-major n×m matrix (strided; rare).
fn lse_column(c: &[f64], m: usize, j: usize, h: &[f64], inv_eps: f64) -> f64 {
    let mx = h
        .iter()
        .enumerate()
        .map(|(i, &hi)| hi - c[i * m + j] * inv_eps)
        .fold(f64::NEG_INFINITY, f64::max);
    if mx == f64::NEG_INFINITY {
        return mx;
    }
    let s: f64 = h
        .iter()
        .enumerate()
        .map(|(i, &hi)| (hi - c[i * m + j] * inv_eps - mx).exp())
        .sum();
    mx + s.ln()
}

/// One side of the problem as a half-step sees it.
struct Side<'a> {
    /// This side's weights and their logs.
    w: &'a [f64],
    /// KL relaxation of this side's marginal.
    rho: f64,
}

impl Side<'_> {
    /// λ = ρ/(ρ+ε) (1 when balanced).
    fn lambda(&self, eps: f64) -> f64 {
        if self.rho.is_infinite() {
            1.0
        } else {
            self.rho / (self.rho + eps)
        }
    }

    /// Given the current potential `x_i` and `lse_i = ln Σ_j w'_j e^{(y_j - C_ij)/ε}`,
    /// returns (residual, Sinkhorn target for x_i).
    #[inline]
    fn step(&self, i: usize, x: f64, lse: f64, eps: f64, lambda: f64) -> (f64, f64) {
        let w = self.w[i];
        let target = -lambda * eps * lse;
        if w == 0.0 {
            return (0.0, target);
        }
        let res = if self.rho.is_infinite() {
            w * (x / eps + lse).exp_m1().abs()
        } else {
            w * ((x / eps + lse).exp() - (-x / self.rho).exp()).abs()
        };
        (res, target)
    }
}

/// Buffers of one solve.
pub(super) struct Workspace<'s> {
    method: Method,
    parallel: bool,
    stop: &'s AtomicBool,
    level: Level,
    loga: Vec<f64>,
    logb: Vec<f64>,
    /// Log method: the transposed cost.
    ct: Vec<f64>,
    /// Kernel method: K̃ and the split potentials.
    kern: Vec<f64>,
    ft: Vec<f64>,
    gt: Vec<f64>,
    lu: Vec<f64>,
    lv: Vec<f64>,
    /// Per-row (per-column) sums or log-sums, and candidate updates.
    sbuf: Vec<f64>,
    tbuf: Vec<f64>,
    fnew: Vec<f64>,
    sweep_err: f64,
}

impl<'s> Workspace<'s> {
    pub(super) fn new(
        p: &Problem<'_>,
        method: Method,
        parallel: bool,
        stop: &'s AtomicBool,
    ) -> Result<Self> {
        let (n, m) = (p.n(), p.m());
        let mut ct = Vec::new();
        let mut kern = Vec::new();
        if method == Method::Log {
            ct = vec![0.0; n * m];
            for_chunks(&mut ct, COLS * n, parallel, stop, |b, o| {
                for (jj, col) in o.chunks_mut(n).enumerate() {
                    let j = b * COLS + jj;
                    for (i, x) in col.iter_mut().enumerate() {
                        *x = p.cost[i * m + j];
                    }
                }
            })?;
        } else {
            kern = vec![0.0; n * m];
        }
        Ok(Workspace {
            method,
            parallel,
            stop,
            level: simd::level(),
            loga: logs(p.a),
            logb: logs(p.b),
            ct,
            kern,
            ft: vec![0.0; n],
            gt: vec![0.0; m],
            lu: vec![0.0; n],
            lv: vec![0.0; m],
            sbuf: vec![0.0; n],
            tbuf: vec![0.0; m],
            fnew: vec![0.0; n],
            sweep_err: 0.0,
        })
    }

    /// Exact log-sums: `out_i = ln Σ_j exp(y_j/ε + ln w_j - C_ij/ε)` for every row of `c`.
    fn lse_pass(
        &self,
        c: &[f64],
        y: &[f64],
        logw: &[f64],
        eps: f64,
        out: &mut [f64],
    ) -> Result<()> {
        let m = y.len();
        let h: Vec<f64> = y.iter().zip(logw).map(|(yj, lw)| yj / eps + lw).collect();
        let level = self.level;
        for_chunks(out, ROWS, self.parallel, self.stop, |b, o| {
            let mut buf = vec![0.0; m];
            let r0 = b * ROWS;
            lse_rows(
                level,
                &c[r0 * m..(r0 + o.len()) * m],
                &h,
                1.0 / eps,
                &mut buf,
                o,
            );
        })
    }

    /// Builds K̃ from the current f̃, g̃.
    fn rebuild(&mut self, p: &Problem<'_>, eps: f64) -> Result<()> {
        let m = p.m();
        let fe: Vec<f64> = self.ft.iter().map(|x| x / eps).collect();
        let ge: Vec<f64> = self.gt.iter().map(|x| x / eps).collect();
        let level = self.level;
        let cost = p.cost;
        for_chunks(
            &mut self.kern,
            ROWS * m,
            self.parallel,
            self.stop,
            |b, o| {
                let r0 = b * ROWS;
                let nr = o.len() / m;
                build_kernel(
                    level,
                    &cost[r0 * m..(r0 + nr) * m],
                    &fe[r0..r0 + nr],
                    &ge,
                    1.0 / eps,
                    o,
                );
            },
        )
    }

    /// Runs at most `budget` iterations at this ε. Returns (iterations, error, converged).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &mut self,
        p: &Problem<'_>,
        eps: f64,
        f: &mut Vec<f64>,
        g: &mut [f64],
        budget: usize,
        tol: f64,
        omega: f64,
        final_stage: bool,
    ) -> Result<(usize, f64, bool)> {
        let rows = Side {
            w: p.a,
            rho: p.rho_a,
        };
        let cols = Side {
            w: p.b,
            rho: p.rho_b,
        };
        let (la, lb) = (rows.lambda(eps), cols.lambda(eps));
        let mut relax = Relax::new(omega);
        if self.method == Method::Kernel {
            self.absorb(p, eps, f, g)?;
        }
        let mut err = f64::INFINITY;
        let mut it = 0;
        // Column residual of the current plan (infinite until a column step has run).
        let mut e_cols = f64::INFINITY;
        while it < budget {
            // Row half-step, with the row residual of the current plan. The kernel form
            // also accumulates the column sums of the new rows in the same sweep.
            let w = relax.omega;
            let fused = self.method == Method::Kernel && self.sweep(p, eps, f, g, w, la)?;
            let mut e_rows = 0.0;
            if fused {
                e_rows = self.sweep_err;
            } else {
                self.row_sums(p, eps, g)?;
                for i in 0..p.n() {
                    let (r, t) = rows.step(i, f[i], self.sbuf[i], eps, la);
                    e_rows += r;
                    self.fnew[i] = (1.0 - w) * f[i] + w * t;
                }
            }
            if e_cols.is_finite() {
                err = e_rows + e_cols;
                relax.observe(err);
                if final_stage && err <= tol {
                    return Ok((it, err, true));
                }
            }
            std::mem::swap(f, &mut self.fnew);
            // Column half-step, then the column residual of the new plan (its sums use f).
            if !fused {
                self.col_sums(p, eps, f)?;
            }
            let w = relax.omega;
            e_cols = 0.0;
            for j in 0..p.m() {
                let (_, t) = cols.step(j, g[j], self.tbuf[j], eps, lb);
                let y = (1.0 - w) * g[j] + w * t;
                e_cols += cols.step(j, y, self.tbuf[j], eps, lb).0;
                g[j] = y;
            }
            it += 1;
            if self.method == Method::Kernel {
                self.sync_scalings(p, eps, f, g)?;
            }
        }
        Ok((it, err, false))
    }

    /// Kernel form, one sweep over K̃: row sums, new row potentials (into `fnew`, with the
    /// residual in `sweep_err`) and the column log-sums of the new plan (into `tbuf`).
    /// Returns false (nothing usable computed) when a row sum underflowed or a scaling
    /// left the safe range; the caller then takes the exact two-pass route.
    fn sweep(
        &mut self,
        p: &Problem<'_>,
        eps: f64,
        f: &[f64],
        g: &[f64],
        w: f64,
        la: f64,
    ) -> Result<bool> {
        let (n, m) = (p.n(), p.m());
        let wv: Vec<f64> = (0..m)
            .map(|j| p.b[j] * ((g[j] - self.gt[j]) / eps).exp())
            .collect();
        let rows = Side {
            w: p.a,
            rho: p.rho_a,
        };
        let (level, kern, ft) = (self.level, &self.kern, &self.ft);
        let mut fnew = std::mem::take(&mut self.fnew);
        let body = |b: usize, fo: &mut [f64]| -> Result<(f64, Vec<f64>, bool)> {
            threads::check(self.stop)?;
            let r0 = b * SWEEP_ROWS;
            let nr = fo.len();
            let mut s = vec![0.0; nr];
            let k = &kern[r0 * m..(r0 + nr) * m];
            row_dot(level, k, m, &wv, &mut s);
            let mut wu = vec![0.0; nr];
            let mut res = 0.0;
            for (ii, si) in s.iter().enumerate() {
                let i = r0 + ii;
                if !(*si > TINY && si.is_finite()) {
                    return Ok((0.0, Vec::new(), false));
                }
                let lse = si.ln() - ft[i] / eps;
                let (r, t) = rows.step(i, f[i], lse, eps, la);
                res += r;
                let x = (1.0 - w) * f[i] + w * t;
                fo[ii] = x;
                let lu = (x - ft[i]) / eps;
                if !(lu.abs() <= 600.0) {
                    return Ok((0.0, Vec::new(), false));
                }
                wu[ii] = p.a[i] * lu.exp();
            }
            let mut part = vec![0.0; m];
            col_dot_acc(level, k, m, &wu, &mut part);
            Ok((res, part, true))
        };
        let parts: Vec<(f64, Vec<f64>, bool)> = if self.parallel && n > SWEEP_ROWS {
            threads::install(|| {
                fnew[..n]
                    .par_chunks_mut(SWEEP_ROWS)
                    .enumerate()
                    .map(|(b, fo)| body(b, fo))
                    .collect::<Result<Vec<_>>>()
            })??
        } else {
            fnew[..n]
                .chunks_mut(SWEEP_ROWS)
                .enumerate()
                .map(|(b, fo)| body(b, fo))
                .collect::<Result<Vec<_>>>()?
        };
        self.fnew = fnew;
        if parts.iter().any(|x| !x.2) {
            return Ok(false);
        }
        let mut t = vec![0.0; m];
        let mut err = 0.0;
        for (r, part, _) in &parts {
            err += r;
            for (a, x) in t.iter_mut().zip(part) {
                *a += x;
            }
        }
        self.sweep_err = err;
        self.col_logs(p, eps, &self.fnew, &mut t);
        self.tbuf = t;
        Ok(true)
    }

    /// Sets `sbuf_i = ln Σ_j b_j e^{(g_j - C_ij)/ε}`.
    fn row_sums(&mut self, p: &Problem<'_>, eps: f64, g: &[f64]) -> Result<()> {
        let (n, m) = (p.n(), p.m());
        let mut s = std::mem::take(&mut self.sbuf);
        if self.method == Method::Log {
            self.lse_pass(p.cost, g, &self.logb, eps, &mut s)?;
        } else {
            let wv: Vec<f64> = (0..m).map(|j| p.b[j] * self.lv[j].exp()).collect();
            let level = self.level;
            let kern = &self.kern;
            for_chunks(&mut s, ROWS, self.parallel, self.stop, |b, o| {
                let r0 = b * ROWS;
                row_dot(level, &kern[r0 * m..(r0 + o.len()) * m], m, &wv, o);
            })?;
            for i in 0..n {
                let si = s[i];
                s[i] = if si > TINY && si.is_finite() {
                    si.ln() - self.ft[i] / eps
                } else {
                    // Underflow: recompute this row exactly.
                    let h: Vec<f64> = g
                        .iter()
                        .zip(&self.logb)
                        .map(|(y, lw)| y / eps + lw)
                        .collect();
                    let mut buf = vec![0.0; m];
                    let mut o = [0.0];
                    lse_rows(
                        self.level,
                        &p.cost[i * m..(i + 1) * m],
                        &h,
                        1.0 / eps,
                        &mut buf,
                        &mut o,
                    );
                    o[0]
                };
            }
        }
        self.sbuf = s;
        Ok(())
    }

    /// Sets `tbuf_j = ln Σ_i a_i e^{(f_i - C_ij)/ε}`.
    fn col_sums(&mut self, p: &Problem<'_>, eps: f64, f: &[f64]) -> Result<()> {
        let (n, m) = (p.n(), p.m());
        let mut t = std::mem::take(&mut self.tbuf);
        if self.method == Method::Log {
            self.lse_pass(&self.ct, f, &self.loga, eps, &mut t)?;
        } else {
            // Scalings from the new f: u = e^{(f - f̃)/ε}.
            let wu: Vec<f64> = (0..n)
                .map(|i| p.a[i] * ((f[i] - self.ft[i]) / eps).exp())
                .collect();
            let level = self.level;
            let kern = &self.kern;
            for_chunks(&mut t, COLS, self.parallel, self.stop, |b, o| {
                col_dot(level, kern, m, b * COLS, &wu, o);
            })?;
            self.col_logs(p, eps, f, &mut t);
        }
        self.tbuf = t;
        Ok(())
    }

    /// Kernel form: turns the column sums `t_j = Σ_i a_i u_i K̃_ij` (u from `f`) into
    /// `ln Σ_i a_i e^{(f_i - C_ij)/ε}`, exactly in the log domain where a sum underflowed.
    fn col_logs(&self, p: &Problem<'_>, eps: f64, f: &[f64], t: &mut [f64]) {
        let m = p.m();
        let h: Vec<f64> = f
            .iter()
            .zip(&self.loga)
            .map(|(x, lw)| x / eps + lw)
            .collect();
        for j in 0..m {
            let tj = t[j];
            t[j] = if tj > TINY && tj.is_finite() {
                tj.ln() - self.gt[j] / eps
            } else {
                lse_column(p.cost, m, j, &h, 1.0 / eps)
            };
        }
    }

    /// Updates the scalings from f, g; absorbs them when they grow large.
    fn sync_scalings(&mut self, p: &Problem<'_>, eps: f64, f: &[f64], g: &[f64]) -> Result<()> {
        let mut big = false;
        for (i, &x) in f.iter().enumerate() {
            self.lu[i] = (x - self.ft[i]) / eps;
            big |= !(self.lu[i].abs() <= ABSORB);
        }
        for (j, &y) in g.iter().enumerate() {
            self.lv[j] = (y - self.gt[j]) / eps;
            big |= !(self.lv[j].abs() <= ABSORB);
        }
        if big {
            self.absorb(p, eps, f, g)?;
        }
        Ok(())
    }

    fn absorb(&mut self, p: &Problem<'_>, eps: f64, f: &[f64], g: &[f64]) -> Result<()> {
        self.ft.copy_from_slice(f);
        self.gt.copy_from_slice(g);
        self.lu.fill(0.0);
        self.lv.fill(0.0);
        self.rebuild(p, eps)
    }
}
