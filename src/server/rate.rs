//! The token bucket: the one flood-control primitive. The server uses it to
//! decide when to stop reading a client that sends faster than its allowed
//! rate (and when to start again: [`TokenBucket::ready_at`]); the terminal
//! client uses the same bucket to pace its own sending below that rate, so
//! it never has to be held back.
//!
//! It reads tokio's clock (not the OS clock directly) so that it follows
//! `tokio::time::pause` in tests like every other deadline in the crate.

use std::time::Duration;

use tokio::time::Instant;

/// What counts as a whole token: refilling in small steps adds up float
/// errors, and a token that is 0.9999999999 full at the instant it was due
/// would otherwise cost another wake-up.
const WHOLE: f64 = 1.0 - 1e-9;

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
        if self.tokens >= WHOLE {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }

    /// `None` when a token is available now (nothing is taken), otherwise
    /// when the next whole token is due.
    pub fn ready_at(&mut self) -> Option<Instant> {
        if self.rate <= 0.0 {
            return None;
        }
        self.refill();
        if self.tokens >= WHOLE {
            return None;
        }
        let missing = 1.0 - self.tokens;
        Some(self.updated + Duration::from_secs_f64(missing / self.rate))
    }

    /// Waits until a token is available, then takes it.
    pub async fn take(&mut self) {
        while !self.try_take() {
            if let Some(at) = self.ready_at() {
                tokio::time::sleep_until(at).await;
            }
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
    async fn ready_at_says_when_the_next_token_is_due() {
        let mut b = TokenBucket::new(4, 2);
        let start = Instant::now();
        assert_eq!(b.ready_at(), None, "a full bucket is ready");
        assert_eq!(b.ready_at(), None, "asking takes nothing");
        assert!(b.try_take() && b.try_take());
        assert_eq!(b.ready_at(), Some(start + Duration::from_millis(250)));
        tokio::time::advance(Duration::from_millis(100)).await;
        let due = b.ready_at().unwrap();
        let error = due.max(start + Duration::from_millis(250))
            - due.min(start + Duration::from_millis(250));
        assert!(error < Duration::from_micros(10), "due {:?}", due - start);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(b.ready_at(), None);
        assert!(b.try_take());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_rate_is_unlimited() {
        let mut b = TokenBucket::new(0, 1);
        for _ in 0..10_000 {
            assert!(b.try_take());
        }
        b.take().await;
        assert_eq!(b.ready_at(), None);
    }
}
