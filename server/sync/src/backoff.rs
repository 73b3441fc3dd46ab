//! Reconnect delays: exponential backoff with full jitter, with the randomness passed in.

use std::time::Duration;

/// Delays between reconnect attempts: attempt `n` waits a random time in
/// `[0, min(max, base · 2^n)]`; a link that stayed up resets the count.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base` and never above `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt; `unit` is a uniform random number in `[0, 1)`.
    pub fn next_delay(&mut self, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The link came up and did useful work: start again from `base`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<u128> = (0..8)
            .map(|_| backoff.next_delay(0.999_999).as_millis())
            .collect();
        assert_eq!(ceilings, vec![99, 199, 399, 799, 1599, 1999, 1999, 1999]);
        assert_eq!(backoff.next_delay(0.0), Duration::ZERO);
        backoff.reset();
        assert!(backoff.next_delay(0.999_999) < Duration::from_millis(100));
    }
}
