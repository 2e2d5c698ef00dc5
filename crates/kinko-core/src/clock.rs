//! Time as the domains see it. Everything that reads the time takes a `Clock` so tests can
//! move it (pending-transfer expiry, code lifetimes, cool-off periods).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in nanoseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ns(&self) -> u64;

    fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        // A clock before 1970 is a broken machine; report the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
            })
    }
}

/// A clock that only moves when told to. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
}

impl ManualClock {
    pub fn new(start_ns: u64) -> Self {
        Self {
            now_ns: Arc::new(AtomicU64::new(start_ns)),
        }
    }

    /// Starts at the current system time, so ids and timestamps look realistic.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_ns())
    }

    pub fn advance_ms(&self, delta_ms: u64) {
        self.now_ns
            .fetch_add(delta_ms.saturating_mul(1_000_000), Ordering::SeqCst);
    }

    pub fn set_ns(&self, now_ns: u64) {
        self.now_ns.store(now_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let clock = ManualClock::new(1_000_000_000);
        let shared = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        shared.advance_ms(250);
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(clock.now_ns(), shared.now_ns());
    }

    #[test]
    fn system_clock_is_after_2020() {
        // 2020-01-01T00:00:00Z in ms.
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
    }
}
