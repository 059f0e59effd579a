//! What every bench binary prints the same way: nearest-rank percentiles of a sample in
//! microseconds, a one-line summary, a target's verdict ("met" / "NOT met"), the machine's
//! load average beside the figures, and a two-sided Mann-Whitney U test for comparing two
//! samples taken in the same run.

pub use speckit_engine::units::percentile;

/// Percentiles of a sample of microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub min_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Summary {
    /// The summary of a non-empty sample (any order).
    pub fn of(sample: &[u64]) -> Self {
        let mut s = sample.to_vec();
        s.sort_unstable();
        Self {
            count: s.len(),
            p50_us: percentile(&s, 50.0),
            p95_us: percentile(&s, 95.0),
            p99_us: percentile(&s, 99.0),
            min_us: s[0],
            max_us: s[s.len() - 1],
            mean_us: s.iter().sum::<u64>() as f64 / s.len() as f64,
        }
    }

    /// Prints `label  n=…  p50 … ms  p95 …` on one line and returns the summary.
    pub fn print(label: &str, sample: &[u64]) -> Self {
        let s = Self::of(sample);
        let ms = |us: u64| us as f64 / 1000.0;
        println!(
            "  {label:<48} n={:<5} p50 {:>8.3} ms  p95 {:>8.3} ms  p99 {:>8.3} ms  mean {:>8.3} ms  min {:>8.3}  max {:>8.3}",
            s.count,
            ms(s.p50_us),
            ms(s.p95_us),
            ms(s.p99_us),
            s.mean_us / 1000.0,
            ms(s.min_us),
            ms(s.max_us)
        );
        s
    }
}

/// `met` or `NOT met`, as every bench prints a target's outcome.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// The first three fields of `/proc/loadavg` ("1.02 0.87 0.60"), or why it is unknown.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Complementary error function (Numerical Recipes `erfcc`, fractional error < 1.2e-7
/// everywhere, so tiny p-values keep their magnitude).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// A two-sided Mann-Whitney U test of sample `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of `a`: the pairs where `a`'s value is above `b`'s (ties count half).
    pub u: f64,
    pub z: f64,
    /// Two-sided p-value (normal approximation with tie and continuity corrections).
    pub p: f64,
    /// The probability that a value of `a` is below one of `b`.
    pub a_below_b: f64,
}

/// Mann-Whitney U test of `a` against `b` (both non-empty).
pub fn mann_whitney(a: &[u64], b: &[u64]) -> MannWhitney {
    let mut all: Vec<(u64, bool)> = a
        .iter()
        .map(|&v| (v, true))
        .chain(b.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by_key(|x| x.0);
    let n = all.len();
    let (mut rank_sum_a, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let average_rank = (i + j) as f64 / 2.0 + 1.0;
        let ties = (j - i + 1) as f64;
        tie_term += ties * ties * ties - ties;
        rank_sum_a += all[i..=j].iter().filter(|x| x.1).count() as f64 * average_rank;
        i = j + 1;
    }
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let u = rank_sum_a - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let nf = n as f64;
    let sigma = (n1 * n2 / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)))).sqrt();
    let delta = u - mean;
    let z = (delta - 0.5 * delta.signum()) / sigma;
    let p = erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0);
    MannWhitney {
        u,
        z,
        p,
        a_below_b: 1.0 - u / (n1 * n2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the same normal approximation computed independently in Python with
    /// `math.erfc` (p = 0.080856 and 0.183150; U counted by hand).
    #[test]
    fn mann_whitney_matches_an_independent_computation() {
        let t = mann_whitney(&[1, 2, 3], &[4, 5, 6]);
        assert_eq!(t.u, 0.0);
        assert!((t.p - 0.080_856).abs() < 1e-5, "p = {}", t.p);
        let t = mann_whitney(&[1, 2, 2, 5], &[2, 4, 6, 7]);
        assert_eq!(t.u, 3.0);
        assert!((t.p - 0.183_150).abs() < 1e-5, "p = {}", t.p);
        assert!((erfc(1.0) - 0.157_299_207).abs() < 1e-7);
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentile(&[1, 2, 3, 4], 50.0), 2);
        assert_eq!(percentile(&[1, 2, 3, 4], 95.0), 4);
        assert_eq!(percentile(&[7], 1.0), 7);
        let s = Summary::of(&[4, 1, 3, 2]);
        assert_eq!((s.min_us, s.max_us, s.p50_us), (1, 4, 2));
        assert_eq!(s.mean_us, 2.5);
    }
}
