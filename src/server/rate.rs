//! The token bucket: the one flood-control primitive. The server uses it to
//! refuse packages past a client's allowed rate; the terminal client uses
//! the same bucket to pace its own sending below that rate, so a paste or a
//! script is slowed down instead of refused.
//!
//! It reads tokio's clock (not the OS clock directly) so that it follows
//! `tokio::time::pause` in tests like every other deadline in the crate.

use std::time::Duration;

use tokio::time::Instant;

/// `rate` tokens per second, up to `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens added per second; 0 means no limit at all.
    rate: f64,
    /// Most tokens the bucket holds.
    burst: f64,
    /// Tokens available at `updated`.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` 0 disables the limit; `burst` is at least 1.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate: f64::from(rate),
            burst,
            tokens: burst,
            updated: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.updated).as_secs_f64();
        self.updated = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Takes a token if one is available now.
    pub fn try_take(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        self.refill();
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits until a token is available, then takes it.
    pub async fn take(&mut self) {
        while !self.try_take() {
            let missing = 1.0 - self.tokens;
            tokio::time::sleep(Duration::from_secs_f64(missing / self.rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_rate() {
        let mut b = TokenBucket::new(10, 3);
        assert!(b.try_take() && b.try_take() && b.try_take());
        assert!(!b.try_take(), "burst exhausted");
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(b.try_take(), "one token per 100 ms");
        assert!(!b.try_take());
        // Saved tokens never exceed the burst.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(b.try_take() && b.try_take() && b.try_take());
        assert!(!b.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn take_waits_for_the_next_token() {
        let mut b = TokenBucket::new(4, 1);
        let start = Instant::now();
        b.take().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        b.take().await;
        b.take().await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_millis(510),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited() {
        let mut b = TokenBucket::new(0, 1);
        for _ in 0..10_000 {
            assert!(b.try_take());
        }
        b.take().await;
    }
}
