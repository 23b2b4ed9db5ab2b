//! Per-token rate limiting of the SCIM API: a token bucket (GCRA, `governor`) keyed by the
//! caller's token id. A request over the limit gets 429 with `Retry-After` and an RFC 7644
//! §3.12 error body; Okta and Entra ID both back off on it. The quota can be replaced while
//! running (SIGHUP); buckets start full again then.
//!
//! Owns: the buckets and the decision. Must not touch: the store, the response format.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitConfig;

/// The limiter shared by every request; cheap to clone.
#[derive(Clone, Default)]
pub struct RateLimits {
    inner: Arc<RwLock<Option<Arc<Limiter>>>>,
}

struct Limiter {
    buckets: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.current().is_some() { "RateLimits(on)" } else { "RateLimits(off)" })
    }
}

impl RateLimits {
    pub fn new(cfg: &RateLimitConfig) -> RateLimits {
        let r = RateLimits::default();
        r.configure(cfg);
        r
    }

    /// Replace the quota (`requests_per_second == 0` turns the limit off).
    pub fn configure(&self, cfg: &RateLimitConfig) {
        let limiter = match (NonZeroU32::new(cfg.requests_per_second), NonZeroU32::new(cfg.burst.max(1))) {
            (Some(rate), Some(burst)) => Some(Arc::new(Limiter {
                buckets: governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
                clock: DefaultClock::default(),
            })),
            _ => None,
        };
        if let Ok(mut cur) = self.inner.write() {
            *cur = limiter;
        }
    }

    fn current(&self) -> Option<Arc<Limiter>> {
        self.inner.read().ok().and_then(|l| l.clone())
    }

    /// Take one request from `token_id`'s bucket: `Err(wait)` when it is empty, with how
    /// long until the next request would be allowed.
    pub fn check(&self, token_id: &str) -> Result<(), Duration> {
        let Some(l) = self.current() else { return Ok(()) };
        let key = token_id.to_string();
        let result = l.buckets.check_key(&key).map_err(|not_until| not_until.wait_time_from(l.clock.now()));
        // Full buckets carry no information; drop them now and then so that revoked tokens
        // do not accumulate (cheap: one map scan per thousand-odd keys checked).
        if l.buckets.len() > 1024 {
            l.buckets.retain_recent();
        }
        result
    }
}

/// `Retry-After` in whole seconds, rounded up (RFC 9110 §10.2.3 has no fractions), at least 1.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_per_token_and_reconfigurable() {
        let r = RateLimits::new(&RateLimitConfig { requests_per_second: 1, burst: 2 });
        assert!(r.check("a").is_ok());
        assert!(r.check("a").is_ok());
        let wait = r.check("a").expect_err("the third request of a burst of 2 is over the limit");
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(r.check("b").is_ok(), "another token has its own bucket");
        r.configure(&RateLimitConfig { requests_per_second: 0, burst: 0 });
        for _ in 0..100 {
            assert!(r.check("a").is_ok(), "0 turns the limit off");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
    }
}
