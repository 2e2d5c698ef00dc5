//! Limits on every guess: per-source throttles in this process, counters that hold across
//! processes, and the per-account login lock.
//!
//! - [`SourceLimiter`] — a keyed GCRA limiter (`governor`) in memory, for cheap per-source
//!   throttling (IP address, device, network) before any work is done. Each `kinko serve`
//!   process has its own, so a source gets the quota once per process: use it to shed load,
//!   and [`hit`] where the number must hold overall.
//! - [`hit`] — fixed-window counters in `rate_limit_windows`, one row per bucket, updated by one
//!   `INSERT … ON CONFLICT DO UPDATE … RETURNING` in the caller's transaction: the limit holds
//!   with any number of processes on one database (sign-ups per network, codes per source…).
//! - [`guess`] — the one entry point for every check of a secret (password, code, TOTP, PIN,
//!   pay code): per account, per source network (/24, /64) and per device, over [`hit`].
//! - [`record_login_failure`] / [`login_allowed`] — at most [`LOGIN_FAILURES_MAX`] failed logins
//!   per account in any rolling hour, then a lock for [`LOGIN_LOCK_MS`] (THREATS.md req. 19).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kinko_core::{ErrorCode, ErrorKind};
use kinko_ledger::StoreError;
use kinko_store::sql::{Tx, Value};

/// Whether a request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Refused; the same request may succeed after `retry_after_ms`.
    Limited {
        retry_after_ms: i64,
    },
}

impl Decision {
    pub fn is_allowed(self) -> bool {
        self == Decision::Allowed
    }
}

// ---------------------------------------------------------------------------------------------
// Per-process throttling

/// A steady rate with a burst on top: `burst` requests at once, then one every
/// `60 s / per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceQuota {
    pub per_minute: u32,
    pub burst: u32,
}

/// Login attempts from one source (IP address or device): enough for a family behind one
/// address, far too few for credential stuffing.
pub const LOGIN_PER_SOURCE: SourceQuota = SourceQuota {
    per_minute: 10,
    burst: 20,
};
/// Sign-ups from one source: docomo 口座 saw ~100 wallets a day opened from single addresses.
pub const SIGN_UP_PER_SOURCE: SourceQuota = SourceQuota {
    per_minute: 1,
    burst: 3,
};
/// One-time code tries and requests from one source.
pub const CODE_PER_SOURCE: SourceQuota = SourceQuota {
    per_minute: 10,
    burst: 10,
};
/// Keys kept in memory before idle ones are dropped (each costs some tens of bytes).
pub const SOURCE_KEYS_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitConfigError {
    #[error("a rate limit needs a non-zero rate and burst")]
    Zero,
}

impl ErrorCode for RateLimitConfigError {
    fn code(&self) -> &'static str {
        "RATE_LIMIT_CONFIG_INVALID"
    }

    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// A throttle per source key, in this process's memory.
pub struct SourceLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl SourceLimiter {
    pub fn new(quota: SourceQuota) -> Result<Self, RateLimitConfigError> {
        let per_minute = NonZeroU32::new(quota.per_minute).ok_or(RateLimitConfigError::Zero)?;
        let burst = NonZeroU32::new(quota.burst).ok_or(RateLimitConfigError::Zero)?;
        let replenish_ns = 60_000_000_000 / u64::from(per_minute.get());
        let quota = Quota::with_period(Duration::from_nanos(replenish_ns))
            .ok_or(RateLimitConfigError::Zero)?
            .allow_burst(burst);
        Ok(Self {
            limiter: RateLimiter::keyed(quota),
        })
    }

    /// Counts one request from `key` and says whether it may go ahead.
    pub fn check(&self, key: &str) -> Decision {
        if self.limiter.len() > SOURCE_KEYS_MAX {
            // Keys whose state is back to fresh carry no information: dropping them bounds
            // memory. (A flood of distinct keys can only keep what it refilled recently.)
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        match self.limiter.check_key(&key.to_owned()) {
            Ok(()) => Decision::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Decision::Limited {
                    // Rounded up so a caller that waits exactly this long is let through.
                    retry_after_ms: i64::try_from(wait.as_millis())
                        .unwrap_or(i64::MAX)
                        .saturating_add(1),
                }
            }
        }
    }

    /// Drops keys idle long enough to be back to a full burst; call it now and then.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-process windows

/// Bucket names are ours (`sign_up:ip:192.0.2.1`), never user text; the bound catches bugs.
pub const BUCKET_BYTES_MAX: usize = 200;

/// Counts one hit on `bucket` in the fixed window of `window_ms` that contains `now_ms`
/// (windows start at multiples of `window_ms` since the epoch) and allows it if the window
/// holds at most `max` hits. Runs in the caller's transaction: the count is kept only if the
/// caller commits. Refused hits count too, so hammering does not reopen the door early.
pub fn hit(
    tx: &mut dyn Tx,
    now_ms: i64,
    bucket: &str,
    window_ms: i64,
    max: i64,
) -> Result<Decision, StoreError> {
    if max <= 0 {
        return Err(StoreError::new(
            "rate limit: a maximum that is not positive",
        ));
    }
    let (stored_start, hits) = count(tx, now_ms, bucket, window_ms)?;
    if hits <= max {
        Ok(Decision::Allowed)
    } else {
        Ok(Decision::Limited {
            retry_after_ms: (stored_start + window_ms - now_ms).max(1),
        })
    }
}

/// Counts one hit on `bucket` as [`hit`] does and returns how many the window now holds, for
/// callers that answer with the count (the tries left at a code that does not exist).
pub fn hit_count(
    tx: &mut dyn Tx,
    now_ms: i64,
    bucket: &str,
    window_ms: i64,
) -> Result<i64, StoreError> {
    Ok(count(tx, now_ms, bucket, window_ms)?.1)
}

fn count(
    tx: &mut dyn Tx,
    now_ms: i64,
    bucket: &str,
    window_ms: i64,
) -> Result<(i64, i64), StoreError> {
    if window_ms <= 0 || bucket.is_empty() || bucket.len() > BUCKET_BYTES_MAX {
        return Err(StoreError::new(
            "rate limit: empty or oversized bucket, or a window or maximum that is not positive",
        ));
    }
    let window_start = now_ms - now_ms.rem_euclid(window_ms);
    // A process whose clock is a little behind must not reset a newer window: the stored
    // window only moves forward, and a hit dated in an older window counts in the newer one.
    let row = tx.query_one(
        "INSERT INTO rate_limit_windows (bucket, window_start, hits) VALUES ($1, $2, 1)
         ON CONFLICT (bucket) DO UPDATE SET
             hits = CASE WHEN rate_limit_windows.window_start >= excluded.window_start
                         THEN rate_limit_windows.hits + 1 ELSE 1 END,
             window_start = CASE WHEN rate_limit_windows.window_start >= excluded.window_start
                                 THEN rate_limit_windows.window_start
                                 ELSE excluded.window_start END
         RETURNING window_start, hits",
        &[bucket.into(), Value::Int(window_start)],
    )?;
    Ok((row.int(0)?, row.int(1)?))
}

/// Deletes windows that started before `now_ms - keep_ms` (give the longest window in use);
/// returns how many went.
pub fn purge_windows(tx: &mut dyn Tx, now_ms: i64, keep_ms: i64) -> Result<u64, StoreError> {
    tx.execute(
        "DELETE FROM rate_limit_windows WHERE window_start < $1",
        &[Value::Int(now_ms.saturating_sub(keep_ms))],
    )
}

// ---------------------------------------------------------------------------------------------
// Guesses: the one entry point for every check of a secret

/// What a guess is at. Every check of a password, a one-time code, a TOTP code, a PIN or a pay
/// code counts here before the secret is compared (docs/SECURITY.md lists them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    Password,
    Code,
    Totp,
    Pin,
    PayCode,
}

impl Guess {
    fn name(self) -> &'static str {
        match self {
            Guess::Password => "password",
            Guess::Code => "code",
            Guess::Totp => "totp",
            Guess::Pin => "pin",
            Guess::PayCode => "pay_code",
        }
    }

    /// The limits, as (window, maximum) per account, per source network and per device.
    /// The network bounds what one attacker can try across many accounts; the account bound
    /// holds only where the guesser already holds that account's session (a thief), so
    /// throttling it never locks a victim out of signing in.
    pub const fn limits(self) -> GuessLimits {
        match self {
            Guess::Password => GuessLimits {
                per_account: (15 * 60_000, 10),
                per_network: (3_600_000, 200),
                per_device: (3_600_000, 30),
            },
            Guess::Code | Guess::Totp => GuessLimits {
                per_account: (15 * 60_000, 10),
                per_network: (3_600_000, 100),
                per_device: (3_600_000, 30),
            },
            Guess::Pin | Guess::PayCode => GuessLimits {
                per_account: (3_600_000, 10),
                per_network: (3_600_000, 60),
                per_device: (3_600_000, 20),
            },
        }
    }
}

/// (window in ms, maximum guesses in it) per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuessLimits {
    pub per_account: (i64, i64),
    pub per_network: (i64, i64),
    pub per_device: (i64, i64),
}

/// Who guesses. Each part present is a bucket of its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct Guesser<'a> {
    /// The account whose secret is guessed — only where the guesser is signed in to it.
    pub account: Option<u128>,
    /// The client address (`kinko-web` takes it from trusted proxies only).
    pub ip: Option<&'a str>,
    /// A device token or id, hashed before it becomes a bucket name.
    pub device: Option<&'a str>,
}

/// The network an address belongs to, for limits that IPv6 rotation or a neighbour's address
/// cannot escape: `/24` for IPv4, `/64` for IPv6 (an IPv4-mapped IPv6 address is IPv4).
/// Text that is not an address is its own network.
pub fn network_of(ip: &str) -> String {
    match ip.trim().parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => network_v4(v4),
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => network_v4(v4),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Err(_) => ip.chars().take(64).collect(),
    }
}

fn network_v4(v4: std::net::Ipv4Addr) -> String {
    let [a, b, c, _] = v4.octets();
    format!("{a}.{b}.{c}.0/24")
}

/// A short, non-reversible name for user text (an address, a device token) in a bucket name.
pub fn key_of(device: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(device.as_bytes());
    digest
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Counts one guess of `kind` by `guesser` in every bucket it belongs to and allows it only
/// if all allow it (refused guesses count too). Call it in the transaction that checks the
/// secret, before comparing, and commit it whatever the outcome.
pub fn guess(
    tx: &mut dyn Tx,
    now_ms: i64,
    kind: Guess,
    guesser: Guesser<'_>,
) -> Result<Decision, StoreError> {
    let limits = kind.limits();
    let mut buckets: Vec<(String, (i64, i64))> = Vec::with_capacity(3);
    if let Some(account) = guesser.account {
        buckets.push((
            format!(
                "guess:{}:account:{}",
                kind.name(),
                uuid::Uuid::from_u128(account)
            ),
            limits.per_account,
        ));
    }
    if let Some(ip) = guesser.ip {
        buckets.push((
            format!("guess:{}:net:{}", kind.name(), network_of(ip)),
            limits.per_network,
        ));
    }
    if let Some(device) = guesser.device {
        buckets.push((
            format!("guess:{}:device:{}", kind.name(), key_of(device)),
            limits.per_device,
        ));
    }
    let mut decision = Decision::Allowed;
    for (bucket, (window_ms, max)) in buckets {
        if let Decision::Limited { retry_after_ms } = hit(tx, now_ms, &bucket, window_ms, max)? {
            let longest = match decision {
                Decision::Limited {
                    retry_after_ms: before,
                } => before.max(retry_after_ms),
                Decision::Allowed => retry_after_ms,
            };
            decision = Decision::Limited {
                retry_after_ms: longest,
            };
        }
    }
    Ok(decision)
}

// ---------------------------------------------------------------------------------------------
// Per-account login lock

/// Failed logins allowed per account in any rolling hour (THREATS.md req. 19).
pub const LOGIN_FAILURES_MAX: i64 = 100;
pub const LOGIN_FAILURE_WINDOW_MS: i64 = 3_600_000;
/// How long an account stays locked after its hundredth failure.
pub const LOGIN_LOCK_MS: i64 = 3_600_000;

/// Whether a login for an account may be tried at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginGate {
    Allowed,
    Locked { until_ms: i64 },
}

/// What a failed login did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    /// Counted; `failures_left` more are allowed before the lock.
    Counted { failures: i64, failures_left: i64 },
    /// This failure locked the account: send the holder the lock notice (once, now).
    JustLocked { until_ms: i64 },
    /// The account was already locked; nothing was counted.
    Locked { until_ms: i64 },
}

fn user_failures(tx: &mut dyn Tx, user_id: u128) -> Result<(i64, i64, Option<i64>), StoreError> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT failures_window_start, failures_count, locked_until
                 FROM identity_users WHERE id = $1{}",
                tx.for_update()
            ),
            &[Value::Uuid(user_id)],
        )?
        .ok_or_else(|| StoreError::new("login failure for a user that does not exist"))?;
    Ok((row.int(0)?, row.int(1)?, row.opt_int(2)?))
}

/// Whether the account may try a login now. Call it before checking the password, and do
/// not check the password of a locked account (its answer would leak through the lock).
pub fn login_allowed(tx: &mut dyn Tx, now_ms: i64, user_id: u128) -> Result<LoginGate, StoreError> {
    let row = tx
        .query_opt(
            "SELECT locked_until FROM identity_users WHERE id = $1",
            &[Value::Uuid(user_id)],
        )?
        .ok_or_else(|| StoreError::new("login check for a user that does not exist"))?;
    Ok(match row.opt_int(0)? {
        Some(until_ms) if until_ms > now_ms => LoginGate::Locked { until_ms },
        _ => LoginGate::Allowed,
    })
}

/// Counts a failed login in the caller's transaction (commit it even though the login fails).
///
/// The count is of a *run* of failures: it restarts only after an hour with no failure. In
/// `identity_users`, `failures_window_start` holds the time of the run's latest failure and
/// `failures_count` its length. Every failure of the past hour is in the run, so the count
/// never undercounts a rolling hour and the hundredth failure within any hour locks the account
/// — a fixed window would let 99 failures at the end of one hour and 99 at the start of the next
/// through. The price: an attacker trying slower than once an hour, without pause, also ends
/// up locking the account, as a faster one could anyway.
///
/// A successful login does not reset the count: if it did, an attacker could keep guessing
/// while the holder logs in.
pub fn record_login_failure(
    tx: &mut dyn Tx,
    now_ms: i64,
    user_id: u128,
) -> Result<LockState, StoreError> {
    let (last_failure_ms, failures, locked_until) = user_failures(tx, user_id)?;
    if let Some(until_ms) = locked_until.filter(|until_ms| *until_ms > now_ms) {
        return Ok(LockState::Locked { until_ms });
    }
    let failures = if now_ms - last_failure_ms >= LOGIN_FAILURE_WINDOW_MS {
        1
    } else {
        failures + 1
    };
    let state = if failures >= LOGIN_FAILURES_MAX {
        LockState::JustLocked {
            until_ms: now_ms + LOGIN_LOCK_MS,
        }
    } else {
        LockState::Counted {
            failures,
            failures_left: LOGIN_FAILURES_MAX - failures,
        }
    };
    let locked_until = match state {
        LockState::JustLocked { until_ms } => Value::Int(until_ms),
        // An expired lock is cleared so that the column says what it means.
        _ => Value::Null,
    };
    tx.execute(
        "UPDATE identity_users
         SET failures_window_start = $2, failures_count = $3, locked_until = $4
         WHERE id = $1",
        &[
            Value::Uuid(user_id),
            Value::Int(now_ms),
            Value::Int(failures),
            locked_until,
        ],
    )?;
    if let LockState::JustLocked { .. } = state {
        tracing::warn!(
            user_id = %uuid::Uuid::from_u128(user_id),
            "account locked after repeated login failures"
        );
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use kinko_store::sql::Database;

    use super::*;
    use crate::notify::testing::{both, database, insert_user};

    both!(
        a_window_allows_max_hits_then_limits,
        the_next_window_starts_afresh,
        concurrent_hits_never_exceed_the_maximum,
        a_lagging_clock_does_not_reset_a_window,
        the_hundredth_failure_locks_the_account_for_an_hour,
        an_hour_without_failures_restarts_the_count,
        failures_straddling_an_hour_boundary_still_lock,
        purge_removes_old_windows,
        guesses_are_limited_per_account_network_and_device,
    );

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network_of("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(network_of("::ffff:192.0.2.77"), "192.0.2.0/24");
        assert_eq!(network_of("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            network_of("2001:db8:1:2:ffff::9"),
            network_of("2001:db8:1:2::1")
        );
        assert_ne!(network_of("2001:db8:1:3::1"), network_of("2001:db8:1:2::1"));
        assert_eq!(network_of("not an address"), "not an address");
    }

    fn guess_committed(
        database: &Database,
        now_ms: i64,
        kind: Guess,
        guesser: Guesser<'_>,
    ) -> Decision {
        database
            .transaction(|tx: &mut dyn Tx| guess(tx, now_ms, kind, guesser))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn guesses_are_limited_per_account_network_and_device(backend: &str) {
        let (database, _dir) = database(backend);
        let (window_ms, account_max) = Guess::Password.limits().per_account;
        // One account, guessed from addresses that rotate within one /64 and devices that
        // change every time: the account bound still holds.
        for index in 0..account_max {
            let ip = format!("2001:db8:1:2::{index:x}");
            let device = format!("device-{index}");
            let guesser = Guesser {
                account: Some(7),
                ip: Some(&ip),
                device: Some(&device),
            };
            assert!(guess_committed(&database, T0_MS, Guess::Password, guesser).is_allowed());
        }
        let guesser = Guesser {
            account: Some(7),
            ip: Some("2001:db8:9::1"),
            device: None,
        };
        assert!(matches!(
            guess_committed(&database, T0_MS, Guess::Password, guesser),
            Decision::Limited { retry_after_ms } if retry_after_ms > 0 && retry_after_ms <= window_ms
        ));
        // Another kind of guess has buckets of its own.
        assert!(guess_committed(&database, T0_MS, Guess::Totp, guesser).is_allowed());
        // Many accounts from one /24: the network bound holds whatever the account or device.
        let (_, network_max) = Guess::Pin.limits().per_network;
        for index in 0..network_max {
            let ip = format!("198.51.100.{}", index % 250);
            let guesser = Guesser {
                account: Some(1_000 + u128::try_from(index).unwrap_or(0)),
                ip: Some(&ip),
                device: None,
            };
            assert!(guess_committed(&database, T0_MS, Guess::Pin, guesser).is_allowed());
        }
        let neighbour = Guesser {
            account: Some(99),
            ip: Some("198.51.100.251"),
            device: None,
        };
        assert!(!guess_committed(&database, T0_MS, Guess::Pin, neighbour).is_allowed());
        let elsewhere = Guesser {
            account: Some(99),
            ip: Some("203.0.113.1"),
            device: None,
        };
        assert!(guess_committed(&database, T0_MS, Guess::Pin, elsewhere).is_allowed());
        // One device across addresses.
        let (_, device_max) = Guess::Code.limits().per_device;
        for index in 0..device_max {
            let ip = format!("10.{index}.0.1");
            let guesser = Guesser {
                account: None,
                ip: Some(&ip),
                device: Some("one phone"),
            };
            assert!(guess_committed(&database, T0_MS, Guess::Code, guesser).is_allowed());
        }
        let guesser = Guesser {
            account: None,
            ip: Some("10.200.0.1"),
            device: Some("one phone"),
        };
        assert!(!guess_committed(&database, T0_MS, Guess::Code, guesser).is_allowed());
    }

    /// A whole number of minutes since the epoch, so windows of a minute start at T0.
    const T0_MS: i64 = 1_749_999_960_000;
    const MINUTE_MS: i64 = 60_000;

    fn hit_committed(
        database: &Database,
        now_ms: i64,
        bucket: &str,
        window_ms: i64,
        max: i64,
    ) -> Decision {
        database
            .transaction(|tx: &mut dyn Tx| hit(tx, now_ms, bucket, window_ms, max))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn a_window_allows_max_hits_then_limits(backend: &str) {
        let (database, _dir) = database(backend);
        // T0 is a multiple of a minute: the window runs [T0, T0 + 1 min).
        assert_eq!(T0_MS % MINUTE_MS, 0);
        for offset_ms in 0..5 {
            assert_eq!(
                hit_committed(
                    &database,
                    T0_MS + offset_ms,
                    "sign_up:ip:192.0.2.1",
                    MINUTE_MS,
                    5
                ),
                Decision::Allowed
            );
        }
        assert_eq!(
            hit_committed(
                &database,
                T0_MS + 10_000,
                "sign_up:ip:192.0.2.1",
                MINUTE_MS,
                5
            ),
            Decision::Limited {
                retry_after_ms: 50_000
            }
        );
        // Buckets are independent.
        assert_eq!(
            hit_committed(
                &database,
                T0_MS + 10_000,
                "sign_up:ip:192.0.2.2",
                MINUTE_MS,
                5
            ),
            Decision::Allowed
        );
        // A hit in a rolled-back transaction is not counted.
        let rolled_back: Result<Decision, StoreError> = database.transaction(|tx: &mut dyn Tx| {
            hit(tx, T0_MS, "sign_up:ip:192.0.2.3", MINUTE_MS, 1)?;
            Err(StoreError::new("the sign-up failed"))
        });
        assert!(rolled_back.is_err());
        assert_eq!(
            hit_committed(&database, T0_MS, "sign_up:ip:192.0.2.3", MINUTE_MS, 1),
            Decision::Allowed
        );
        // Nonsense limits are refused, not treated as "no limit".
        for (window_ms, max, bucket) in [(0, 5, "b"), (MINUTE_MS, 0, "b"), (MINUTE_MS, 5, "")] {
            let outcome =
                database.transaction(|tx: &mut dyn Tx| hit(tx, T0_MS, bucket, window_ms, max));
            assert!(outcome.is_err());
        }
    }

    fn the_next_window_starts_afresh(backend: &str) {
        let (database, _dir) = database(backend);
        for _ in 0..3 {
            hit_committed(&database, T0_MS + 59_999, "b", MINUTE_MS, 3);
        }
        assert!(!hit_committed(&database, T0_MS + 59_999, "b", MINUTE_MS, 3).is_allowed());
        for _ in 0..3 {
            assert!(hit_committed(&database, T0_MS + MINUTE_MS, "b", MINUTE_MS, 3).is_allowed());
        }
        assert!(!hit_committed(&database, T0_MS + MINUTE_MS + 1, "b", MINUTE_MS, 3).is_allowed());
    }

    fn concurrent_hits_never_exceed_the_maximum(backend: &str) {
        let (database, _dir) = database(backend);
        let allowed = std::sync::atomic::AtomicI64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..10 {
                        if hit_committed(&database, T0_MS + 1, "codes:ip:192.0.2.9", MINUTE_MS, 25)
                            .is_allowed()
                        {
                            allowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.load(std::sync::atomic::Ordering::SeqCst), 25);
    }

    fn a_lagging_clock_does_not_reset_a_window(backend: &str) {
        let (database, _dir) = database(backend);
        assert!(hit_committed(&database, T0_MS + MINUTE_MS, "b", MINUTE_MS, 2).is_allowed());
        // Another process, 1 ms behind, still in the previous window: counted in the newer one.
        assert!(hit_committed(&database, T0_MS + MINUTE_MS - 1, "b", MINUTE_MS, 2).is_allowed());
        assert!(!hit_committed(&database, T0_MS + MINUTE_MS + 1, "b", MINUTE_MS, 2).is_allowed());
    }

    fn purge_removes_old_windows(backend: &str) {
        let (database, _dir) = database(backend);
        hit_committed(&database, T0_MS, "old", MINUTE_MS, 5);
        hit_committed(&database, T0_MS + 10 * MINUTE_MS, "new", MINUTE_MS, 5);
        let purged = database
            .transaction(|tx: &mut dyn Tx| purge_windows(tx, T0_MS + 10 * MINUTE_MS, 5 * MINUTE_MS))
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(purged, 1);
    }

    fn fail(database: &Database, now_ms: i64, user: u128) -> LockState {
        database
            .transaction(|tx: &mut dyn Tx| record_login_failure(tx, now_ms, user))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn gate(database: &Database, now_ms: i64, user: u128) -> LoginGate {
        database
            .transaction(|tx: &mut dyn Tx| login_allowed(tx, now_ms, user))
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn the_hundredth_failure_locks_the_account_for_an_hour(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        let bystander = insert_user(&database, T0_MS);
        for failures in 1..LOGIN_FAILURES_MAX {
            assert_eq!(
                fail(&database, T0_MS + failures, user),
                LockState::Counted {
                    failures,
                    failures_left: LOGIN_FAILURES_MAX - failures
                }
            );
        }
        assert_eq!(gate(&database, T0_MS + 200, user), LoginGate::Allowed);
        let until_ms = T0_MS + 300 + LOGIN_LOCK_MS;
        assert_eq!(
            fail(&database, T0_MS + 300, user),
            LockState::JustLocked { until_ms }
        );
        assert_eq!(
            gate(&database, T0_MS + 301, user),
            LoginGate::Locked { until_ms }
        );
        assert_eq!(
            fail(&database, T0_MS + 302, user),
            LockState::Locked { until_ms }
        );
        assert_eq!(
            gate(&database, until_ms - 1, user),
            LoginGate::Locked { until_ms }
        );
        assert_eq!(gate(&database, T0_MS + 301, bystander), LoginGate::Allowed);
        // The lock ends on time, and the count starts again.
        assert_eq!(gate(&database, until_ms, user), LoginGate::Allowed);
        assert_eq!(
            fail(&database, until_ms, user),
            LockState::Counted {
                failures: 1,
                failures_left: LOGIN_FAILURES_MAX - 1
            }
        );
    }

    fn an_hour_without_failures_restarts_the_count(backend: &str) {
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        for offset_ms in 0..50 {
            fail(&database, T0_MS + offset_ms, user);
        }
        assert_eq!(
            fail(&database, T0_MS + 49 + LOGIN_FAILURE_WINDOW_MS, user),
            LockState::Counted {
                failures: 1,
                failures_left: LOGIN_FAILURES_MAX - 1
            }
        );
    }

    fn failures_straddling_an_hour_boundary_still_lock(backend: &str) {
        // One failure at T0, 60 late in that hour and 40 early in the next: the last 100 fall
        // within one hour, so the account must be locked by then. (A window fixed at the first
        // failure would have restarted at T0 + 60 min and counted only 40.)
        let (database, _dir) = database(backend);
        let user = insert_user(&database, T0_MS);
        fail(&database, T0_MS, user);
        for index in 0..60 {
            fail(&database, T0_MS + 59 * MINUTE_MS + index * 500, user);
        }
        let next_hour_ms = T0_MS + 61 * MINUTE_MS;
        let locked_at = (0..40).find(|index| {
            matches!(
                fail(&database, next_hour_ms + index * 1_000, user),
                LockState::JustLocked { .. }
            )
        });
        assert!(
            locked_at.is_some(),
            "100 failures within an hour did not lock the account"
        );
    }

    #[test]
    fn the_source_limiter_refuses_after_the_burst() {
        let limiter = SourceLimiter::new(SourceQuota {
            per_minute: 1,
            burst: 3,
        })
        .unwrap_or_else(|error| panic!("{error}"));
        for _ in 0..3 {
            assert_eq!(limiter.check("ip:192.0.2.1"), Decision::Allowed);
        }
        match limiter.check("ip:192.0.2.1") {
            Decision::Limited { retry_after_ms } => {
                assert!((1..=60_001).contains(&retry_after_ms), "{retry_after_ms}");
            }
            Decision::Allowed => panic!("the fourth request in a burst of three was allowed"),
        }
        // Another source is not affected.
        assert_eq!(limiter.check("ip:192.0.2.2"), Decision::Allowed);
        assert!(
            SourceLimiter::new(SourceQuota {
                per_minute: 0,
                burst: 3
            })
            .is_err()
        );
        for quota in [LOGIN_PER_SOURCE, SIGN_UP_PER_SOURCE, CODE_PER_SOURCE] {
            assert!(SourceLimiter::new(quota).is_ok());
        }
    }
}
