//! The workspace's one small seeded generator (splitmix64). Whatever must be
//! the same on every backend, platform and crate version is drawn from it on
//! the host: default centroids, random patterns and features of the
//! baselines, the pictures of `plan show`, and every epoch's data order.

/// splitmix64 (Steele, Lea and Flood 2014): a 64-bit state stepped by the
/// golden-ratio increment and mixed; one stream per seed.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed (mixed with a constant, so that seed 0 does
    /// not start at state 0).
    pub fn new(seed: u64) -> Self {
        SplitMix(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// A generator that starts at exactly `state`, unmixed.
    pub fn from_state(state: u64) -> Self {
        SplitMix(state)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, from the top 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(f64::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A uniform permutation of `0..n` (Fisher-Yates).
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_stream() {
        // splitmix64 from state 0 (the reference implementation's test vector)
        let mut r = SplitMix::from_state(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(SplitMix::new(7).next_u64(), {
            let mut r = SplitMix::from_state(7 ^ 0x5851_f42d_4c95_7f2d);
            r.next_u64()
        });
    }

    #[test]
    fn permutations_hold_every_index_once() {
        let mut p = SplitMix::new(3).permutation(50);
        p.sort_unstable();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }
}
