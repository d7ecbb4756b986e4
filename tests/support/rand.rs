//! One seeded PRNG for tests that pick at random but must replay.

/// The seed in `env_var` when set (so a failure replays with the printed seed), else
/// `default`.
pub fn seed_from_env(env_var: &str, default: u64) -> u64 {
    std::env::var(env_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: deterministic, dependency-free, good enough to pick kill points and fuzz bytes.
pub struct Prng(pub u64);

impl Prng {
    /// A generator seeded with `seed` (never 0, which xorshift cannot leave).
    pub fn new(seed: u64) -> Prng {
        Prng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
