//! Careful summation: a Neumaier accumulator for long sums of f64 terms and a small
//! double-double type for the few combinations where large terms cancel.

use std::ops::{Add, Div, Mul, Neg, Sub};

/// Compensated (Neumaier-style, branch-free two-sum) summation: the running sum and the sum of its rounding errors.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Acc {
    s: f64,
    c: f64,
}

impl Acc {
    /// Adds one term.
    #[inline(always)]
    pub fn add(&mut self, x: f64) {
        // Branch-free two-sum: the exact rounding error of s + x, whichever is larger.
        let (t, e) = two_sum(self.s, x);
        self.c += e;
        self.s = t;
    }

    /// Adds another accumulator (its sum, then its error term).
    #[inline(always)]
    pub fn merge(&mut self, o: &Acc) {
        self.add(o.s);
        self.add(o.c);
    }

    /// Negates the sum (exactly).
    #[inline(always)]
    pub fn negate(&mut self) {
        self.s = -self.s;
        self.c = -self.c;
    }

    /// The compensated sum.
    #[inline(always)]
    pub fn value(&self) -> f64 {
        self.s + self.c
    }

    /// The sum as a double-double (keeps the error term).
    pub fn dd(&self) -> Dd {
        Dd::from(self.s).add_f64(self.c)
    }
}

/// An unevaluated sum hi + lo with |lo| <= ulp(hi)/2: about 106 bits of precision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dd {
    /// Leading part.
    pub hi: f64,
    /// Trailing part.
    pub lo: f64,
}

#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

#[inline(always)]
fn split(a: f64) -> (f64, f64) {
    // Dekker's split: hi holds the top 26 bits, so products of halves are exact.
    let t = 134_217_729.0 * a;
    let hi = t - (t - a);
    (hi, a - hi)
}

/// a·b as an exact sum p + e (without relying on a hardware fma).
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    (p, ((ah * bh - p) + ah * bl + al * bh) + al * bl)
}

impl Add for Dd {
    type Output = Dd;
    #[inline(always)]
    fn add(self, o: Dd) -> Dd {
        let (s, e) = two_sum(self.hi, o.hi);
        let (t, f) = two_sum(self.lo, o.lo);
        let (s, e) = two_sum(s, e + t);
        Dd::norm(s, e + f)
    }
}

impl Neg for Dd {
    type Output = Dd;
    #[inline(always)]
    fn neg(self) -> Dd {
        Dd {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl Sub for Dd {
    type Output = Dd;
    #[inline(always)]
    fn sub(self, o: Dd) -> Dd {
        self + (-o)
    }
}

impl Mul for Dd {
    type Output = Dd;
    #[inline(always)]
    fn mul(self, o: Dd) -> Dd {
        let (p, e) = two_prod(self.hi, o.hi);
        Dd::norm(p, e + (self.hi * o.lo + self.lo * o.hi))
    }
}

impl Div for Dd {
    type Output = Dd;
    /// self / o, to about 104 bits.
    fn div(self, o: Dd) -> Dd {
        let q1 = self.hi / o.hi;
        let r = self - o.mul_f64(q1);
        let q2 = r.hi / o.hi;
        let r = r - o.mul_f64(q2);
        let q3 = r.hi / o.hi;
        Dd::norm(q1, q2).add_f64(q3)
    }
}

impl From<f64> for Dd {
    fn from(x: f64) -> Dd {
        Dd { hi: x, lo: 0.0 }
    }
}

impl Dd {
    #[inline(always)]
    fn norm(hi: f64, lo: f64) -> Dd {
        let (h, l) = two_sum(hi, lo);
        Dd { hi: h, lo: l }
    }

    /// self + x.
    #[inline(always)]
    pub fn add_f64(self, x: f64) -> Dd {
        let (s, e) = two_sum(self.hi, x);
        Dd::norm(s, e + self.lo)
    }

    /// self · x.
    #[inline(always)]
    pub fn mul_f64(self, x: f64) -> Dd {
        self.mul(Dd::from(x))
    }

    /// Exact product of two f64 as a double-double.
    #[inline(always)]
    pub fn prod(a: f64, b: f64) -> Dd {
        let (p, e) = two_prod(a, b);
        Dd { hi: p, lo: e }
    }

    /// Nearest f64.
    #[inline(always)]
    pub fn to_f64(self) -> f64 {
        self.hi + self.lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neumaier_recovers_cancelled_terms() {
        let mut a = Acc::default();
        for x in [1e16, 1.0, -1e16, 1.0] {
            a.add(x);
        }
        assert_eq!(a.value(), 2.0);
        let mut b = Acc::default();
        b.add(3.0);
        b.merge(&a);
        assert_eq!(b.value(), 5.0);
    }

    #[test]
    fn double_double_is_exact_on_big_integers() {
        // (2^40 + 1)^2 = 2^80 + 2^41 + 1 needs 81 bits.
        let a = Dd::prod(1099511627777.0, 1099511627777.0);
        let b = a.sub(Dd::from(2f64.powi(80)));
        assert_eq!(b.to_f64(), 2f64.powi(41) + 1.0);
        let q = Dd::from(1.0).div(Dd::from(3.0));
        let back = q.mul_f64(3.0).sub(Dd::from(1.0));
        assert!(back.to_f64().abs() < 1e-30);
    }
}
