//! Unguessable values from the operating system's CSPRNG (`getrandom(2)`): claim secrets, token
//! ids and signing keys. Anything an attacker could use as a capability comes from here, never
//! from `fastrand` or the clock.

/// The operating system could not give random bytes (only on a broken or very early system).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed: {0}")]
pub struct RandomError(getrandom::Error);

/// Fills `out` with random bytes.
pub fn fill(out: &mut [u8]) -> Result<(), RandomError> {
    getrandom::fill(out).map_err(RandomError)
}

/// 64 random bits.
pub fn u64() -> Result<u64, RandomError> {
    getrandom::u64().map_err(RandomError)
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_differ() {
        let (a, b) = (super::u64().unwrap(), super::u64().unwrap());
        assert_ne!(a, b, "two draws of 64 random bits collided");
        let mut buf = [0u8; 32];
        super::fill(&mut buf).unwrap();
        assert_ne!(buf, [0u8; 32]);
    }
}
