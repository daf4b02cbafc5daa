//! Rate limits per API key: a token bucket of `--rate-limit N` requests per second, with
//! bursts of 2 × N, kept by each node for the calls it serves (so with several nodes a
//! key may make N per second on each). Every authenticated answer says where the key
//! stands (`X-RateLimit-Limit`, `-Remaining`, `-Reset`); one over the limit is a 429
//! with `Retry-After`.

use std::num::NonZeroU32;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::domain::ids::ApiKeyId;

type Limiter =
    RateLimiter<ApiKeyId, DashMapStateStore<ApiKeyId>, DefaultClock, StateInformationMiddleware>;

/// Past this many keys, those whose bucket is full again are forgotten.
const FORGET_AFTER: usize = 10_000;

pub struct RateLimits {
    /// `None` when there is no limit.
    limiter: Option<Limiter>,
    per_second: u32,
}

/// Where a key stands after a call: for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset: u64,
}

/// A call over the limit.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub standing: Standing,
    /// Whole seconds until a call would pass.
    pub retry_after: u64,
}

impl RateLimits {
    pub fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
            RateLimiter::dashmap(Quota::per_second(rate).allow_burst(burst))
                .with_middleware::<StateInformationMiddleware>()
        });
        Self {
            limiter,
            per_second,
        }
    }

    /// Takes one call from `key`'s bucket. `Ok(None)` when there is no limit.
    pub fn check(&self, key: ApiKeyId) -> Result<Option<Standing>, Refused> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        if limiter.len() > FORGET_AFTER {
            limiter.retain_recent();
        }
        let burst = self.per_second.saturating_mul(2);
        let standing = |remaining: u32| Standing {
            limit: self.per_second,
            remaining,
            reset: (burst - remaining.min(burst)).div_ceil(self.per_second) as u64,
        };
        match limiter.check_key(&key) {
            Ok(state) => Ok(Some(standing(state.remaining_burst_capacity()))),
            Err(not_until) => {
                let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
                Err(Refused {
                    standing: standing(0),
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }
}

impl Standing {
    pub fn write(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit as u64),
            ("x-ratelimit-remaining", self.remaining as u64),
            ("x-ratelimit-reset", self.reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_waits_and_others_are_not_held() {
        let limits = RateLimits::new(5);
        let (a, b) = (ApiKeyId::new(), ApiKeyId::new());
        for left in (0..10).rev() {
            assert_eq!(limits.check(a).unwrap().unwrap().remaining, left);
        }
        let refused = limits.check(a).unwrap_err();
        assert_eq!(refused.retry_after, 1);
        assert_eq!(refused.standing.remaining, 0);
        assert_eq!(refused.standing.reset, 2);
        assert_eq!(limits.check(b).unwrap().unwrap().remaining, 9);
        assert!(RateLimits::new(0).check(a).unwrap().is_none());
    }
}
