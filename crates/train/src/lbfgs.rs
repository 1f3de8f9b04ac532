//! Limited-memory BFGS (Liu & Nocedal 1989) on a flat `f64` vector, with a strong-Wolfe or a
//! backtracking (Armijo) line search: what Gatys et al. optimise images with.
//!
//! The textbook algorithm (Nocedal & Wright, *Numerical Optimization*, 2nd ed.):
//!
//! - the search direction `d = −H·g` comes from the **two-loop recursion** (Algorithm 7.4) over the
//!   last `m` pairs `sᵢ = x_{i+1} − xᵢ`, `yᵢ = g_{i+1} − gᵢ`, with the initial matrix
//!   `H₀ = γ·I`, `γ = sᵀy / yᵀy` of the newest pair (eq. 7.20);
//! - a pair is kept only when `sᵀy > ε·yᵀy` (the curvature condition; otherwise `H` would lose
//!   positive definiteness), as L-BFGS-B does;
//! - **strong Wolfe** (Algorithms 3.5 and 3.6): bracket a step satisfying
//!   `f(x + t·d) ≤ f + c₁·t·gᵀd` and `|g(x + t·d)ᵀd| ≤ c₂·|gᵀd|`, then zoom with safeguarded cubic
//!   interpolation; **backtracking**: shrink `t` until the sufficient-decrease condition holds;
//! - the first step (no curvature pairs yet) is `−g` scaled to unit length, as L-BFGS-B does;
//!   later steps try `t = 1` first.
//!
//! **Bounds** ([`LbfgsConfig::bounds`], the same interval for every coordinate, e.g. pixel values):
//! a projected quasi-Newton step in the manner of L-BFGS-B without its Cauchy-point machinery
//! (Bertsekas 1982; Kim, Sra & Dhillon 2010). Coordinates at a bound whose gradient points
//! outwards are held fixed; the two-loop recursion runs on the gradient of the others; the line
//! search backtracks along the projected path `P(x + t·d)` until
//! `f(P(x + t·d)) ≤ f + c₁·gᵀ(P(x + t·d) − x)`; pairs use the actual step taken. It stops when the
//! projected gradient `P(x − g) − x` is below `tol_grad`. Gatys et al. optimise images this way
//! (SciPy's L-BFGS-B with pixel bounds).
//!
//! The objective is a closure `x ↦ (f(x), ∇f(x))`; one [`Lbfgs::step`] is one iteration (a new
//! direction and a line search, usually one or two evaluations), so callers can report progress,
//! save images or stop between iterations.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The line search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LineSearch {
    /// Strong Wolfe conditions with constants `0 < c1 < c2 < 1` (1e-4 and 0.9 are usual).
    StrongWolfe {
        /// Sufficient decrease.
        c1: f64,
        /// Curvature.
        c2: f64,
    },
    /// Armijo backtracking: `t ← shrink·t` until `f(x + t·d) ≤ f + c1·t·gᵀd`.
    Backtracking {
        /// Sufficient decrease.
        c1: f64,
        /// Factor in (0, 1).
        shrink: f64,
    },
}

impl Default for LineSearch {
    fn default() -> Self {
        LineSearch::StrongWolfe { c1: 1e-4, c2: 0.9 }
    }
}

/// L-BFGS options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LbfgsConfig {
    /// Curvature pairs kept (`m`; 10 in L-BFGS-B and SciPy, 100 in PyTorch).
    pub history: usize,
    /// The line search.
    pub line_search: LineSearch,
    /// Objective evaluations one line search may use.
    pub max_evals_per_iter: usize,
    /// Converged when `max |gᵢ| ≤ tol_grad`.
    pub tol_grad: f64,
    /// Converged when a step changes `f` by less than `tol_change·max(1, |f|)` or moves no
    /// coordinate by more than `tol_change`.
    pub tol_change: f64,
    /// Box constraint `lo ≤ xᵢ ≤ hi` on every coordinate (`None`: unconstrained). With bounds
    /// the line search is Armijo backtracking along the projected path (the `c1` of
    /// [`LbfgsConfig::line_search`]; strong Wolfe's halves the step, backtracking's uses `shrink`).
    #[serde(default)]
    pub bounds: Option<(f64, f64)>,
}

impl Default for LbfgsConfig {
    fn default() -> Self {
        Self {
            history: 10,
            line_search: LineSearch::default(),
            max_evals_per_iter: 20,
            tol_grad: 1e-10,
            tol_change: 1e-12,
            bounds: None,
        }
    }
}

/// Why the optimisation cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Converged {
    /// The gradient is below `tol_grad`.
    Gradient,
    /// The last step changed `f` or `x` by less than `tol_change`.
    Change,
    /// The line search found no decrease along a descent direction (after retrying along −g):
    /// the objective is flat or noisy at this scale.
    LineSearch,
}

/// What one iteration did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterReport {
    /// Objective after the iteration.
    pub f: f64,
    /// Step length taken along the direction.
    pub step: f64,
    /// Objective evaluations this iteration.
    pub evals: usize,
    /// Set when the optimiser has stopped (further [`Lbfgs::step`] calls do nothing).
    pub converged: Option<Converged>,
}

/// The objective: `x ↦ (f(x), ∇f(x))`.
pub trait Objective {
    /// Evaluates `f` and its gradient at `x` (gradient of the same length as `x`).
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)>;
}

impl<F: FnMut(&[f64]) -> Result<(f64, Vec<f64>)>> Objective for F {
    fn eval(&mut self, x: &[f64]) -> Result<(f64, Vec<f64>)> {
        self(x)
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four partial sums: fewer rounding steps and faster than one chain.
    let mut s = [0.0f64; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            s[k] += a[4 * i + k] * b[4 * i + k];
        }
    }
    let mut t = (s[0] + s[1]) + (s[2] + s[3]);
    for i in 4 * chunks..a.len() {
        t += a[i] * b[i];
    }
    t
}

/// `y ← y + a·x`.
fn axpy(a: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// A point on the line: step, value, gradient, directional derivative.
#[derive(Clone)]
struct Probe {
    t: f64,
    f: f64,
    g: Vec<f64>,
    gtd: f64,
}

/// L-BFGS state: the current point, its value and gradient, and the curvature pairs.
pub struct Lbfgs {
    cfg: LbfgsConfig,
    x: Vec<f64>,
    f: f64,
    g: Vec<f64>,
    s: VecDeque<Vec<f64>>,
    y: VecDeque<Vec<f64>>,
    rho: VecDeque<f64>,
    iterations: usize,
    evals: usize,
    converged: Option<Converged>,
}

impl std::fmt::Debug for Lbfgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Lbfgs(n = {}, f = {}, {} pairs, {} iterations, {} evaluations)",
            self.x.len(),
            self.f,
            self.s.len(),
            self.iterations,
            self.evals
        )
    }
}

impl Lbfgs {
    /// Starts at `x0` (evaluating the objective once there).
    pub fn new(cfg: LbfgsConfig, x0: Vec<f64>, obj: &mut dyn Objective) -> Result<Self> {
        let bad = |m: &str| Err(TrainError::Run(format!("L-BFGS options {cfg:?}: {m}")));
        if cfg.history == 0 {
            return bad("history must be at least 1");
        }
        if cfg.max_evals_per_iter == 0 {
            return bad("max_evals_per_iter must be at least 1");
        }
        match cfg.line_search {
            LineSearch::StrongWolfe { c1, c2 } if !(0.0 < c1 && c1 < c2 && c2 < 1.0) => {
                return bad("strong Wolfe needs 0 < c1 < c2 < 1");
            }
            LineSearch::Backtracking { c1, shrink }
                if !(0.0 < c1 && c1 < 1.0 && 0.0 < shrink && shrink < 1.0) =>
            {
                return bad("backtracking needs 0 < c1 < 1 and 0 < shrink < 1");
            }
            _ => {}
        }
        let mut x0 = x0;
        if let Some((lo, hi)) = cfg.bounds {
            if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) {
                return bad("bounds need lo < hi");
            }
            x0.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
        let (f, g) = eval(obj, &x0)?;
        if !f.is_finite() {
            return Err(TrainError::Run(format!(
                "L-BFGS: the objective is {f} at the starting point"
            )));
        }
        Ok(Self {
            cfg,
            x: x0,
            f,
            g,
            s: VecDeque::new(),
            y: VecDeque::new(),
            rho: VecDeque::new(),
            iterations: 0,
            evals: 1,
            converged: None,
        })
    }

    /// The current point.
    pub fn x(&self) -> &[f64] {
        &self.x
    }
    /// The objective at [`Lbfgs::x`].
    pub fn f(&self) -> f64 {
        self.f
    }
    /// The gradient at [`Lbfgs::x`].
    pub fn grad(&self) -> &[f64] {
        &self.g
    }
    /// Iterations done.
    pub fn iterations(&self) -> usize {
        self.iterations
    }
    /// Objective evaluations so far (including the one at the start).
    pub fn evals(&self) -> usize {
        self.evals
    }
    /// Why it stopped, if it has.
    pub fn converged(&self) -> Option<Converged> {
        self.converged
    }

    /// `−H·g` by the two-loop recursion.
    fn direction(&self) -> Vec<f64> {
        self.direction_for(&self.g)
    }

    /// `−H·v` by the two-loop recursion.
    fn direction_for(&self, v: &[f64]) -> Vec<f64> {
        let k = self.s.len();
        let mut q = v.to_vec();
        let mut alpha = vec![0.0; k];
        for i in (0..k).rev() {
            alpha[i] = self.rho[i] * dot(&self.s[i], &q);
            axpy(-alpha[i], &self.y[i], &mut q);
        }
        if k > 0 {
            let gamma = dot(&self.s[k - 1], &self.y[k - 1]) / dot(&self.y[k - 1], &self.y[k - 1]);
            q.iter_mut().for_each(|v| *v *= gamma);
        }
        for (i, a) in alpha.iter().enumerate().take(k) {
            let beta = self.rho[i] * dot(&self.y[i], &q);
            axpy(a - beta, &self.s[i], &mut q);
        }
        q.iter_mut().for_each(|v| *v = -*v);
        q
    }

    /// One iteration: a direction, a line search along it, and the curvature update.
    pub fn step(&mut self, obj: &mut dyn Objective) -> Result<IterReport> {
        if let Some(c) = self.converged {
            return Ok(IterReport {
                f: self.f,
                step: 0.0,
                evals: 0,
                converged: Some(c),
            });
        }
        if let Some((lo, hi)) = self.cfg.bounds {
            return self.step_bounded(obj, lo, hi);
        }
        if max_abs(&self.g) <= self.cfg.tol_grad {
            return Ok(self.stop(Converged::Gradient, 0.0, 0));
        }
        let mut evals = 0;
        let mut probe = None;
        // Along the L-BFGS direction, then (if that fails) along −g with the history cleared.
        for attempt in 0..2 {
            let mut d = if attempt == 0 {
                self.direction()
            } else {
                self.g.iter().map(|v| -v).collect()
            };
            let mut gtd = dot(&self.g, &d);
            if gtd.is_nan() || gtd >= 0.0 {
                // Not a descent direction (numerical trouble): fall back to steepest descent.
                self.clear_history();
                d = self.g.iter().map(|v| -v).collect();
                gtd = dot(&self.g, &d);
            }
            let t0 = if self.s.is_empty() {
                (1.0 / dot(&d, &d).sqrt()).min(1.0)
            } else {
                1.0
            };
            let (found, n) = self.line_search(obj, &d, gtd, t0)?;
            evals += n;
            if let Some(p) = found {
                probe = Some((p, d));
                break;
            }
            if self.s.is_empty() {
                break; // already steepest descent
            }
            self.clear_history();
        }
        self.evals += evals;
        self.iterations += 1;
        let Some((p, d)) = probe else {
            return Ok(self.stop(Converged::LineSearch, 0.0, evals));
        };
        // s = t·d, y = g_new − g.
        let s: Vec<f64> = d.iter().map(|v| p.t * v).collect();
        let y: Vec<f64> = p.g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let yy = dot(&y, &y);
        if sy > f64::EPSILON * yy && yy > 0.0 {
            if self.s.len() == self.cfg.history {
                self.s.pop_front();
                self.y.pop_front();
                self.rho.pop_front();
            }
            self.s.push_back(s.clone());
            self.y.push_back(y);
            self.rho.push_back(1.0 / sy);
        }
        let f_old = self.f;
        axpy(1.0, &s, &mut self.x);
        self.f = p.f;
        self.g = p.g;
        let report = IterReport {
            f: self.f,
            step: p.t,
            evals,
            converged: None,
        };
        if max_abs(&self.g) <= self.cfg.tol_grad {
            return Ok(self.stop(Converged::Gradient, p.t, evals));
        }
        if (f_old - self.f).abs() < self.cfg.tol_change * self.f.abs().max(1.0)
            || max_abs(&s) <= self.cfg.tol_change
        {
            return Ok(self.stop(Converged::Change, p.t, evals));
        }
        Ok(report)
    }

    /// `max |P(x − g) − x|`: zero exactly at a point satisfying the bound-constrained
    /// first-order conditions.
    fn projected_gradient(&self, lo: f64, hi: f64) -> f64 {
        self.x
            .iter()
            .zip(&self.g)
            .fold(0.0, |m, (x, g)| m.max(((x - g).clamp(lo, hi) - x).abs()))
    }

    /// One projected iteration (see the module docs).
    fn step_bounded(&mut self, obj: &mut dyn Objective, lo: f64, hi: f64) -> Result<IterReport> {
        if self.projected_gradient(lo, hi) <= self.cfg.tol_grad {
            return Ok(self.stop(Converged::Gradient, 0.0, 0));
        }
        let (c1, shrink) = match self.cfg.line_search {
            LineSearch::StrongWolfe { c1, .. } => (c1, 0.5),
            LineSearch::Backtracking { c1, shrink } => (c1, shrink),
        };
        // Coordinates held at a bound this iteration.
        let held: Vec<bool> = self
            .x
            .iter()
            .zip(&self.g)
            .map(|(&x, &g)| (x <= lo && g > 0.0) || (x >= hi && g < 0.0))
            .collect();
        let free_g: Vec<f64> = self
            .g
            .iter()
            .zip(&held)
            .map(|(&g, &h)| if h { 0.0 } else { g })
            .collect();
        let mut evals = 0;
        let mut accepted = None;
        for attempt in 0..2 {
            let mut d = if attempt == 0 {
                self.direction_for(&free_g)
            } else {
                free_g.iter().map(|v| -v).collect()
            };
            d.iter_mut().zip(&held).for_each(|(v, &h)| {
                if h {
                    *v = 0.0
                }
            });
            let gtd = dot(&self.g, &d);
            if gtd.is_nan() || gtd >= 0.0 {
                self.clear_history();
                d = free_g.iter().map(|v| -v).collect();
            }
            let mut t = if self.s.is_empty() {
                (1.0 / dot(&d, &d).sqrt()).min(1.0)
            } else {
                1.0
            };
            for _ in 0..self.cfg.max_evals_per_iter {
                let xt: Vec<f64> = self
                    .x
                    .iter()
                    .zip(&d)
                    .map(|(x, d)| (x + t * d).clamp(lo, hi))
                    .collect();
                let (f, g) = eval(obj, &xt)?;
                evals += 1;
                let step: Vec<f64> = xt.iter().zip(&self.x).map(|(a, b)| a - b).collect();
                let decrease = dot(&self.g, &step);
                if f.is_finite() && f < self.f && f <= self.f + c1 * decrease {
                    accepted = Some((xt, f, g, step, t));
                    break;
                }
                t *= shrink;
            }
            if accepted.is_some() || self.s.is_empty() {
                break;
            }
            self.clear_history();
        }
        self.evals += evals;
        self.iterations += 1;
        let Some((xt, f, g, s, t)) = accepted else {
            return Ok(self.stop(Converged::LineSearch, 0.0, evals));
        };
        let y: Vec<f64> = g.iter().zip(&self.g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        let yy = dot(&y, &y);
        if sy > f64::EPSILON * yy && yy > 0.0 {
            if self.s.len() == self.cfg.history {
                self.s.pop_front();
                self.y.pop_front();
                self.rho.pop_front();
            }
            self.s.push_back(s.clone());
            self.y.push_back(y);
            self.rho.push_back(1.0 / sy);
        }
        let f_old = self.f;
        self.x = xt;
        self.f = f;
        self.g = g;
        if self.projected_gradient(lo, hi) <= self.cfg.tol_grad {
            return Ok(self.stop(Converged::Gradient, t, evals));
        }
        if (f_old - self.f).abs() < self.cfg.tol_change * self.f.abs().max(1.0)
            || max_abs(&s) <= self.cfg.tol_change
        {
            return Ok(self.stop(Converged::Change, t, evals));
        }
        Ok(IterReport {
            f: self.f,
            step: t,
            evals,
            converged: None,
        })
    }

    fn stop(&mut self, why: Converged, step: f64, evals: usize) -> IterReport {
        self.converged = Some(why);
        IterReport {
            f: self.f,
            step,
            evals,
            converged: Some(why),
        }
    }

    fn clear_history(&mut self) {
        self.s.clear();
        self.y.clear();
        self.rho.clear();
    }

    fn probe(&self, obj: &mut dyn Objective, d: &[f64], t: f64) -> Result<Probe> {
        let mut x = self.x.clone();
        axpy(t, d, &mut x);
        let (f, g) = eval(obj, &x)?;
        // A non-finite value counts as "too far": it fails sufficient decrease.
        let f = if f.is_finite() { f } else { f64::INFINITY };
        let gtd = if f.is_finite() { dot(&g, d) } else { f64::NAN };
        Ok(Probe { t, f, g, gtd })
    }

    /// Returns an accepted point (or `None`) and the evaluations used.
    fn line_search(
        &self,
        obj: &mut dyn Objective,
        d: &[f64],
        gtd0: f64,
        t0: f64,
    ) -> Result<(Option<Probe>, usize)> {
        match self.cfg.line_search {
            LineSearch::Backtracking { c1, shrink } => {
                let mut t = t0;
                for n in 1..=self.cfg.max_evals_per_iter {
                    let p = self.probe(obj, d, t)?;
                    if p.f <= self.f + c1 * t * gtd0 {
                        return Ok((Some(p), n));
                    }
                    t *= shrink;
                }
                Ok((None, self.cfg.max_evals_per_iter))
            }
            LineSearch::StrongWolfe { c1, c2 } => self.strong_wolfe(obj, d, gtd0, t0, c1, c2),
        }
    }

    /// Nocedal & Wright Algorithms 3.5 (bracketing) and 3.6 (zoom).
    fn strong_wolfe(
        &self,
        obj: &mut dyn Objective,
        d: &[f64],
        gtd0: f64,
        t0: f64,
        c1: f64,
        c2: f64,
    ) -> Result<(Option<Probe>, usize)> {
        let f0 = self.f;
        let budget = self.cfg.max_evals_per_iter;
        let armijo = |p: &Probe| p.f <= f0 + c1 * p.t * gtd0;
        let curvature = |p: &Probe| p.gtd.abs() <= -c2 * gtd0;
        let start = Probe {
            t: 0.0,
            f: f0,
            g: self.g.clone(),
            gtd: gtd0,
        };
        let mut prev = start.clone();
        let mut t = t0;
        let mut evals = 0;
        // Bracketing.
        let (mut lo, mut hi) = loop {
            if evals == budget {
                return Ok((Some(prev).filter(|p| p.t > 0.0), evals));
            }
            let p = self.probe(obj, d, t)?;
            evals += 1;
            if !armijo(&p) || (evals > 1 && p.f >= prev.f) {
                break (prev, p);
            }
            if curvature(&p) {
                return Ok((Some(p), evals));
            }
            if p.gtd >= 0.0 {
                break (p, prev);
            }
            // Extrapolate: a cubic step within [t + 0.01(t − t_prev), 10t].
            let lo_b = p.t + 0.01 * (p.t - prev.t);
            let hi_b = p.t * 10.0;
            t = cubic_min(&prev, &p, lo_b, hi_b);
            prev = p;
        };
        // Zoom: `lo` satisfies sufficient decrease and has the lower value; the minimiser lies
        // between `lo` and `hi`.
        while evals < budget {
            let (a, b) = (lo.t.min(hi.t), lo.t.max(hi.t));
            if (b - a) * max_abs(d) < 1e-16 * (1.0 + max_abs(&self.x)) {
                break; // the interval is below the resolution of x
            }
            let mut t = cubic_min(&lo, &hi, a, b);
            // Safeguard: stay at least 10 % of the interval away from its ends.
            let margin = 0.1 * (b - a);
            if t - a < margin || b - t < margin {
                t = 0.5 * (a + b);
            }
            let p = self.probe(obj, d, t)?;
            evals += 1;
            if !armijo(&p) || p.f >= lo.f {
                hi = p;
            } else {
                if curvature(&p) {
                    return Ok((Some(p), evals));
                }
                if p.gtd * (hi.t - lo.t) >= 0.0 {
                    hi = lo;
                }
                lo = p;
            }
        }
        // Out of budget: the best point with sufficient decrease, if any moved.
        Ok((Some(lo).filter(|p| p.t > 0.0 && p.f < f0), evals))
    }
}

fn eval(obj: &mut dyn Objective, x: &[f64]) -> Result<(f64, Vec<f64>)> {
    let (f, g) = obj.eval(x)?;
    if g.len() != x.len() {
        return Err(TrainError::Run(format!(
            "L-BFGS: the objective returned a gradient of length {} for {} unknowns",
            g.len(),
            x.len()
        )));
    }
    Ok((f, g))
}

/// The minimiser of the cubic through two points with values and slopes, clamped to
/// `[lo, hi]`; the midpoint of the bounds when the cubic has no minimum there (N&W eq. 3.59).
fn cubic_min(p1: &Probe, p2: &Probe, lo: f64, hi: f64) -> f64 {
    let (x1, f1, g1, x2, f2, g2) = (p1.t, p1.f, p1.gtd, p2.t, p2.f, p2.gtd);
    let fallback = 0.5 * (lo + hi);
    if !(f1.is_finite() && f2.is_finite() && g1.is_finite() && g2.is_finite()) || x1 == x2 {
        // A non-finite end: bisect towards the finite one.
        return if f2.is_finite() {
            fallback
        } else {
            (x1 + 0.5 * (x2 - x1)).clamp(lo, hi)
        };
    }
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let sq = d1 * d1 - g1 * g2;
    if sq < 0.0 {
        return fallback;
    }
    let d2 = (x2 - x1).signum() * sq.sqrt();
    let t = x2 - (x2 - x1) * (g2 + d2 - d1) / (g2 - g1 + 2.0 * d2);
    if t.is_finite() {
        t.clamp(lo, hi)
    } else {
        fallback
    }
}

/// Runs up to `max_iter` iterations from `x0`; returns the final state.
pub fn minimize(
    cfg: LbfgsConfig,
    x0: Vec<f64>,
    max_iter: usize,
    obj: &mut dyn Objective,
) -> Result<Lbfgs> {
    let mut opt = Lbfgs::new(cfg, x0, obj)?;
    for _ in 0..max_iter {
        if opt.step(obj)?.converged.is_some() {
            break;
        }
    }
    Ok(opt)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extended Rosenbrock: Σ 100(x_{2i} − x_{2i−1}²)² + (1 − x_{2i−1})²; minimum 0 at all ones.
    fn rosenbrock(x: &[f64]) -> Result<(f64, Vec<f64>)> {
        let mut f = 0.0;
        let mut g = vec![0.0; x.len()];
        for i in (0..x.len()).step_by(2) {
            let (a, b) = (x[i], x[i + 1]);
            let t1 = b - a * a;
            let t2 = 1.0 - a;
            f += 100.0 * t1 * t1 + t2 * t2;
            g[i] += -400.0 * a * t1 - 2.0 * t2;
            g[i + 1] += 200.0 * t1;
        }
        Ok((f, g))
    }

    fn configs() -> Vec<LbfgsConfig> {
        vec![
            LbfgsConfig::default(),
            LbfgsConfig {
                line_search: LineSearch::Backtracking {
                    c1: 1e-4,
                    shrink: 0.5,
                },
                max_evals_per_iter: 40,
                ..LbfgsConfig::default()
            },
            LbfgsConfig {
                history: 3,
                ..LbfgsConfig::default()
            },
        ]
    }

    #[test]
    fn rosenbrock_from_the_classic_start() {
        for cfg in configs() {
            // 2-D from (−1.2, 1) and 20-D from the same pairs.
            for n in [2usize, 20] {
                let x0: Vec<f64> = (0..n)
                    .map(|i| if i % 2 == 0 { -1.2 } else { 1.0 })
                    .collect();
                let opt = minimize(cfg.clone(), x0, 2000, &mut rosenbrock).unwrap();
                let err = opt.x().iter().map(|v| (v - 1.0).abs()).fold(0.0, f64::max);
                assert!(
                    err < 1e-6 && opt.f() < 1e-12,
                    "{cfg:?} n={n}: x error {err}, f {} after {} iterations ({:?})",
                    opt.f(),
                    opt.iterations(),
                    opt.converged()
                );
                // Strong Wolfe needs few evaluations per iteration.
                if matches!(cfg.line_search, LineSearch::StrongWolfe { .. }) {
                    assert!(opt.iterations() < 200, "{} iterations", opt.iterations());
                    assert!(
                        (opt.evals() as f64) < 1.6 * opt.iterations() as f64,
                        "{} evaluations for {} iterations",
                        opt.evals(),
                        opt.iterations()
                    );
                }
            }
        }
    }

    #[test]
    fn quadratic_reaches_the_known_minimum() {
        // f = ½ xᵀAx − bᵀx with A = D + u·uᵀ (SPD, condition ≈ 10³), b = A·x*.
        let n = 60;
        let diag: Vec<f64> = (0..n)
            .map(|i| 10f64.powf(3.0 * i as f64 / (n - 1) as f64))
            .collect();
        let u: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64 - 5.0) / 5.0).collect();
        let xstar: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin()).collect();
        let ax = |x: &[f64]| -> Vec<f64> {
            let ux = dot(&u, x);
            (0..n).map(|i| diag[i] * x[i] + u[i] * ux).collect()
        };
        let b = ax(&xstar);
        let fstar = -0.5 * dot(&b, &xstar);
        let mut quad = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let a = ax(x);
            let f = 0.5 * dot(x, &a) - dot(&b, x);
            let g: Vec<f64> = a.iter().zip(&b).map(|(p, q)| p - q).collect();
            Ok((f, g))
        };
        for cfg in configs() {
            // Converge on the gradient alone: near the minimum of an ill-conditioned quadratic a
            // step may lower f by less than tol_change·|f| while x is still 1e-4 away.
            let cfg = LbfgsConfig {
                tol_change: 0.0,
                ..cfg
            };
            let opt = minimize(cfg.clone(), vec![0.0; n], 1000, &mut quad).unwrap();
            let err = opt
                .x()
                .iter()
                .zip(&xstar)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(
                // f is resolved to ~1e-12 of |f*| ≈ 2·10³ here, so along the flattest direction
                // (eigenvalue ≈ 1) x is determined to about √(2·2·10⁻⁹) ≈ 6e-5 by f alone; the
                // gradient takes it well below that.
                err < 1e-5 && (opt.f() - fstar).abs() < 1e-12 * fstar.abs(),
                "{cfg:?}: x error {err}, f {} vs {fstar}, {} iterations",
                opt.f(),
                opt.iterations()
            );
        }
        // On a 2-D quadratic with full history, BFGS with exact-enough line searches finishes
        // in a handful of iterations.
        let mut q2 = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let f = 2.0 * (x[0] - 1.0).powi(2) + 0.5 * (x[1] + 2.0).powi(2) + x[0] * x[1];
            Ok((f, vec![4.0 * (x[0] - 1.0) + x[1], (x[1] + 2.0) + x[0]]))
        };
        // ∇f = 0: 4a − 4 + b = 0, b + 2 + a = 0 → a = 2, b = −4.
        let opt = minimize(LbfgsConfig::default(), vec![0.0, 0.0], 50, &mut q2).unwrap();
        assert!((opt.x()[0] - 2.0).abs() < 1e-8 && (opt.x()[1] + 4.0).abs() < 1e-8);
        assert!(opt.iterations() <= 10, "{}", opt.iterations());
    }

    #[test]
    fn direction_is_the_inverse_hessian_on_a_quadratic() {
        // After n independent steps on f = ½ Σ aᵢxᵢ², the two-loop recursion with full history
        // reproduces H = A⁻¹ exactly (quasi-Newton property): d = −A⁻¹g.
        let a = [1.0, 4.0, 9.0];
        let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let v = (0..3).map(|i| 0.5 * a[i] * x[i] * x[i]).sum();
            Ok((v, (0..3).map(|i| a[i] * x[i]).collect()))
        };
        let mut opt = Lbfgs::new(LbfgsConfig::default(), vec![1.0, 1.0, 1.0], &mut f).unwrap();
        // Fill the history with exact pairs along the axes.
        opt.s.clear();
        opt.y.clear();
        opt.rho.clear();
        for i in 0..3 {
            let mut s = vec![0.0; 3];
            s[i] = 0.5;
            let y: Vec<f64> = (0..3).map(|k| a[k] * s[k]).collect();
            opt.rho.push_back(1.0 / dot(&s, &y));
            opt.s.push_back(s);
            opt.y.push_back(y);
        }
        let d = opt.direction();
        let want: Vec<f64> = (0..3).map(|i| -opt.g[i] / a[i]).collect();
        for (p, q) in d.iter().zip(&want) {
            assert!((p - q).abs() < 1e-12, "{d:?} vs {want:?}");
        }
    }

    #[test]
    fn stops_cleanly_and_rejects_bad_options() {
        // Already at the minimum: converges on the gradient without evaluating.
        let mut f = |x: &[f64]| -> Result<(f64, Vec<f64>)> { Ok((x[0] * x[0], vec![2.0 * x[0]])) };
        let mut opt = Lbfgs::new(LbfgsConfig::default(), vec![0.0], &mut f).unwrap();
        let r = opt.step(&mut f).unwrap();
        assert_eq!(r.converged, Some(Converged::Gradient));
        // A NaN region beyond x = 0.5 is treated as too far; the search backs off.
        let mut g = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            if x[0] > 0.5 {
                Ok((f64::NAN, vec![f64::NAN]))
            } else {
                Ok(((x[0] - 0.4).powi(2), vec![2.0 * (x[0] - 0.4)]))
            }
        };
        let opt = minimize(LbfgsConfig::default(), vec![-3.0], 100, &mut g).unwrap();
        assert!((opt.x()[0] - 0.4).abs() < 1e-6, "{:?}", opt.x());
        // A non-finite start, bad options and mismatched gradients are errors.
        let mut nan = |_: &[f64]| -> Result<(f64, Vec<f64>)> { Ok((f64::NAN, vec![0.0])) };
        assert!(Lbfgs::new(LbfgsConfig::default(), vec![0.0], &mut nan).is_err());
        let bad = LbfgsConfig {
            history: 0,
            ..LbfgsConfig::default()
        };
        assert!(Lbfgs::new(bad, vec![0.0], &mut f).is_err());
        let mut short = |_: &[f64]| -> Result<(f64, Vec<f64>)> { Ok((1.0, vec![])) };
        let e = Lbfgs::new(LbfgsConfig::default(), vec![0.0], &mut short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gradient of length 0"), "{e}");
    }

    /// Bounds: the solution satisfies the box-constrained optimality (KKT) conditions — free
    /// coordinates have zero gradient, those at the lower bound a non-negative one, those at the
    /// upper bound a non-positive one — and matches the known minimiser where there is one.
    #[test]
    fn bounded_problems_reach_the_constrained_minimum() {
        // Separable quadratic: the minimiser is the unconstrained one clamped to the box.
        let n = 40;
        let a: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64 * 3.0).collect();
        let c: Vec<f64> = (0..n).map(|i| 2.5 * ((i as f64) * 0.9).sin()).collect();
        let mut sep = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let f = (0..n).map(|i| 0.5 * a[i] * (x[i] - c[i]).powi(2)).sum();
            Ok((f, (0..n).map(|i| a[i] * (x[i] - c[i])).collect()))
        };
        for cfg in configs() {
            let cfg = LbfgsConfig {
                bounds: Some((-1.0, 1.0)),
                tol_change: 0.0,
                ..cfg
            };
            // Near the end f changes by ~1e-16 relative (the clamped coordinates' constant part
            // dominates it), so the line search resolves x to ~1e-7 and then stops.
            let opt = minimize(cfg.clone(), vec![0.3; n], 500, &mut sep).unwrap();
            for (i, (&x, &ci)) in opt.x().iter().zip(&c).enumerate() {
                let want = ci.clamp(-1.0, 1.0);
                assert!((x - want).abs() < 1e-6, "{cfg:?} x[{i}] = {x} vs {want}");
            }
        }
        // A coupled quadratic (A = D + u·uᵀ) in [0, 1]ⁿ: check the KKT conditions.
        let diag: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 / 4.0).collect();
        let u: Vec<f64> = (0..n).map(|i| ((i * 5 % 9) as f64 - 4.0) / 4.0).collect();
        let b: Vec<f64> = (0..n).map(|i| 3.0 * ((i as f64) * 1.7).cos()).collect();
        let mut quad = |x: &[f64]| -> Result<(f64, Vec<f64>)> {
            let ux = dot(&u, x);
            let ax: Vec<f64> = (0..n).map(|i| diag[i] * x[i] + u[i] * ux).collect();
            let f = 0.5 * dot(x, &ax) - dot(&b, x);
            Ok((f, ax.iter().zip(&b).map(|(p, q)| p - q).collect()))
        };
        for cfg in configs() {
            let cfg = LbfgsConfig {
                bounds: Some((0.0, 1.0)),
                tol_change: 0.0,
                tol_grad: 1e-9,
                ..cfg
            };
            let opt = minimize(cfg.clone(), vec![0.5; n], 2000, &mut quad).unwrap();
            let (_, g) = quad(opt.x()).unwrap();
            let (mut at_lo, mut at_hi) = (0, 0);
            for (i, (&x, &gi)) in opt.x().iter().zip(&g).enumerate() {
                assert!((0.0..=1.0).contains(&x));
                if x == 0.0 {
                    at_lo += 1;
                    assert!(gi > -1e-7, "{cfg:?} lower-bound x[{i}] has gradient {gi}");
                } else if x == 1.0 {
                    at_hi += 1;
                    assert!(gi < 1e-7, "{cfg:?} upper-bound x[{i}] has gradient {gi}");
                } else {
                    assert!(
                        gi.abs() < 1e-7,
                        "{cfg:?} free x[{i}] = {x} has gradient {gi}"
                    );
                }
            }
            assert!(
                at_lo > 0 && at_hi > 0,
                "both bounds should be active: {at_lo}, {at_hi}"
            );
        }
        // Rosenbrock in the box [−1.5, 0.5]²: the minimum moves to (0.5, 0.25), f = 0.25, with
        // ∂f/∂x = −1 < 0 there (x held at its upper bound, y free).
        let mut rb = rosenbrock;
        for cfg in configs() {
            let cfg = LbfgsConfig {
                bounds: Some((-1.5, 0.5)),
                ..cfg
            };
            let opt = minimize(cfg.clone(), vec![-1.2, 0.4], 2000, &mut rb).unwrap();
            assert!(
                (opt.x()[0] - 0.5).abs() < 1e-9 && (opt.x()[1] - 0.25).abs() < 1e-6,
                "{cfg:?}: {:?}",
                opt.x()
            );
            assert!((opt.f() - 0.25).abs() < 1e-10);
        }
        // A start outside the box is projected into it; lo ≥ hi is rejected.
        let opt = Lbfgs::new(
            LbfgsConfig {
                bounds: Some((-1.0, 1.0)),
                ..LbfgsConfig::default()
            },
            vec![5.0, -7.0],
            &mut rb,
        )
        .unwrap();
        assert_eq!(opt.x(), &[1.0, -1.0]);
        let bad = LbfgsConfig {
            bounds: Some((1.0, 1.0)),
            ..LbfgsConfig::default()
        };
        assert!(Lbfgs::new(bad, vec![0.0, 0.0], &mut rb).is_err());
    }
}
