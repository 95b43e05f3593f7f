//! The login throttle. Failed logins are counted per username and per client address; from the 5th consecutive
//! failure on either, further attempts are refused (429, `Retry-After`) until 2^(failures-5) seconds (at most
//! 15 minutes) have passed since the last failure. A success clears the username's count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::Error;

const FREE_FAILURES: u32 = 4;
const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
const MAX_TRACKED: usize = 100_000;

/// Counts failed logins per key (username or address).
#[derive(Debug, Default)]
pub struct Throttle(Mutex<HashMap<String, (u32, Instant)>>);

impl Throttle {
    /// Refuses while any of `keys` is locked.
    pub fn check(&self, keys: &[String]) -> Result<(), Error> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for key in keys {
            if let Some((failures, last)) = map.get(key)
                && let Some(lock) = lock_for(*failures)
            {
                let elapsed = last.elapsed();
                if elapsed < lock {
                    return Err(Error::TooManyAttempts((lock - elapsed).as_secs().max(1)));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[String]) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Random usernames must not grow the map without bound: forget failures older than the longest lock.
        if map.len() >= MAX_TRACKED {
            map.retain(|_, (_, last)| last.elapsed() < MAX_LOCK);
        }
        for key in keys {
            let entry = map.entry(key.clone()).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
        }
    }

    pub fn succeeded(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

fn lock_for(failures: u32) -> Option<Duration> {
    (failures > FREE_FAILURES).then(|| {
        let exponent = (failures - FREE_FAILURES - 1).min(10);
        Duration::from_secs(1u64 << exponent).min(MAX_LOCK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_locks_after_repeated_failures() {
        let throttle = Throttle::default();
        let keys = vec!["user:ada".to_owned()];
        for _ in 0..FREE_FAILURES + 1 {
            assert!(throttle.check(&keys).is_ok());
            throttle.failed(&keys);
        }
        assert!(matches!(
            throttle.check(&keys),
            Err(Error::TooManyAttempts(_))
        ));
        throttle.succeeded("user:ada");
        assert!(throttle.check(&keys).is_ok());
        assert_eq!(lock_for(5), Some(Duration::from_secs(1)));
        assert_eq!(lock_for(7), Some(Duration::from_secs(4)));
        assert_eq!(lock_for(40), Some(MAX_LOCK));
        assert_eq!(lock_for(4), None);
    }
}
