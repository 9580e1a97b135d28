//! Queue choice: uniform, or Zipf-skewed so that a few hot queues get most of the traffic
//! (the realistic case, and the one that stresses a sharded server's owner cores).

use crate::cli::Dist;

/// Samples an index in `0..n`.
#[derive(Debug, Clone)]
pub enum Sampler {
    Uniform(usize),
    /// Cumulative probabilities, `cdf[i]` = P(X <= i); the last entry is 1.
    Zipf(Vec<f64>),
}

impl Sampler {
    /// `n` must be at least 1.
    pub fn new(dist: Dist, n: usize) -> Sampler {
        let n = n.max(1);
        match dist {
            Dist::Uniform => Sampler::Uniform(n),
            Dist::Zipf(s) => {
                // P(i) ∝ 1 / (i+1)^s. The CDF is precomputed once: sampling is then a binary
                // search, O(log n) with no floating-point pow per request.
                let weights: Vec<f64> = (1..=n).map(|k| (k as f64).powf(-s)).collect();
                let total: f64 = weights.iter().sum();
                let mut acc = 0.0;
                let mut cdf: Vec<f64> = weights
                    .iter()
                    .map(|w| {
                        acc += w / total;
                        acc
                    })
                    .collect();
                if let Some(last) = cdf.last_mut() {
                    *last = 1.0;
                }
                Sampler::Zipf(cdf)
            }
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Sampler::Uniform(n) => *n,
            Sampler::Zipf(cdf) => cdf.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        match self {
            Sampler::Uniform(n) => rng.usize(..*n),
            Sampler::Zipf(cdf) => {
                let u = rng.f64();
                cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn histogram(s: &Sampler, draws: usize) -> Vec<usize> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut h = vec![0usize; s.len()];
        for _ in 0..draws {
            h[s.sample(&mut rng)] += 1;
        }
        h
    }

    #[test]
    fn zipf_matches_theory() {
        let n = 10;
        let s = Sampler::new(Dist::Zipf(1.0), n);
        let draws = 200_000;
        let h = histogram(&s, draws);
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        for (i, count) in h.iter().enumerate() {
            let expect = draws as f64 / ((i + 1) as f64 * harmonic);
            let err = (*count as f64 - expect).abs() / expect;
            assert!(err < 0.05, "rank {i}: {count} vs {expect:.0}");
        }
        // Strictly more popular towards rank 0.
        assert!(h.windows(2).all(|w| w[0] > w[1]), "{h:?}");
    }

    #[test]
    fn zipf_steeper_exponent_is_more_skewed() {
        let mild = histogram(&Sampler::new(Dist::Zipf(0.5), 100), 50_000);
        let steep = histogram(&Sampler::new(Dist::Zipf(2.0), 100), 50_000);
        assert!(steep[0] > mild[0] * 2);
        // s=2: P(0) = 1/zeta_100(2) ≈ 0.61
        let p0 = steep[0] as f64 / 50_000.0;
        assert!((p0 - 0.61).abs() < 0.02, "{p0}");
    }

    #[test]
    fn uniform_covers_everything_evenly() {
        let h = histogram(&Sampler::new(Dist::Uniform, 8), 80_000);
        for c in h {
            assert!((9_000..11_000).contains(&c), "{c}");
        }
    }

    #[test]
    fn single_item() {
        let mut rng = fastrand::Rng::with_seed(1);
        for d in [Dist::Uniform, Dist::Zipf(1.5)] {
            let s = Sampler::new(d, 1);
            assert!((0..100).all(|_| s.sample(&mut rng) == 0));
        }
        assert_eq!(Sampler::new(Dist::Uniform, 0).len(), 1);
    }
}
