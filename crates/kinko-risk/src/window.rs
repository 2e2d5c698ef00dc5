//! Windowed counters in bounded memory.
//!
//! A [`Series`] keeps counts and sums in time buckets: minutes for the last two hours, hours
//! for the last two days, days up to [`HORIZON_S`]. A subject with one event holds one bucket;
//! a busy one (a bank, a merchant) at most [`COMPACT_AT`], whatever its traffic. A window query
//! counts every bucket that overlaps the window, so a sum may include events just older than
//! the window — at most a minute's worth for windows up to an hour, an hour's for windows up
//! to a day, a day's beyond — and never misses one inside it: limits err on the strict side.
//!
//! A [`Distinct`] keeps the last time each member was seen (senders to one receiver, accounts
//! tried from one network), at most [`DISTINCT_MAX`] members: a count saturates there, which is
//! far above any threshold a rule uses.

/// The longest window a rule may use: 31 days.
pub const HORIZON_S: u64 = 31 * 86_400;
/// Members kept per distinct set; counts saturate here.
pub const DISTINCT_MAX: usize = 64;
/// Buckets before a series compacts; after compaction it holds at most 120 + 48 + 32.
pub const COMPACT_AT: usize = 256;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    start_s: u64,
    span_s: u32,
    count: u32,
    sum: i64,
}

#[derive(Clone, Debug, Default)]
pub struct Series {
    buckets: Vec<Bucket>,
}

/// A window's totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Totals {
    pub count: i64,
    pub sum: i64,
}

impl Series {
    /// Adds one event. Amounts saturate rather than wrap (a sum at `i64::MAX` is over any
    /// limit anyway).
    pub fn add(&mut self, at_s: u64, amount: i64) {
        let minute = at_s - at_s % 60;
        match self.buckets.last_mut() {
            Some(last) if last.start_s <= at_s && at_s < last.start_s + u64::from(last.span_s) => {
                last.count = last.count.saturating_add(1);
                last.sum = last.sum.saturating_add(amount);
            }
            Some(last) if last.start_s > at_s => {
                // Out of order (another process's event arrived late): find its bucket.
                let position = self
                    .buckets
                    .partition_point(|bucket| bucket.start_s <= at_s);
                let holder = position
                    .checked_sub(1)
                    .and_then(|index| self.buckets.get_mut(index))
                    .filter(|bucket| at_s < bucket.start_s + u64::from(bucket.span_s));
                match holder {
                    Some(bucket) => {
                        bucket.count = bucket.count.saturating_add(1);
                        bucket.sum = bucket.sum.saturating_add(amount);
                    }
                    None => self.buckets.insert(
                        position,
                        Bucket {
                            start_s: minute,
                            span_s: 60,
                            count: 1,
                            sum: amount,
                        },
                    ),
                }
            }
            _ => self.buckets.push(Bucket {
                start_s: minute,
                span_s: 60,
                count: 1,
                sum: amount,
            }),
        }
        if self.buckets.len() > COMPACT_AT {
            self.compact(at_s);
        }
    }

    /// Totals of the buckets overlapping `(now_s - window_s, now_s]`.
    pub fn totals(&self, now_s: u64, window_s: u64) -> Totals {
        let from_s = now_s.saturating_sub(window_s);
        let mut totals = Totals::default();
        for bucket in self.buckets.iter().rev() {
            if bucket.start_s + u64::from(bucket.span_s) <= from_s {
                break;
            }
            if bucket.start_s <= now_s {
                totals.count = totals.count.saturating_add(i64::from(bucket.count));
                totals.sum = totals.sum.saturating_add(bucket.sum);
            }
        }
        totals
    }

    /// The newest event's bucket start, for eviction.
    pub fn newest_s(&self) -> u64 {
        self.buckets.last().map_or(0, |bucket| bucket.start_s)
    }

    #[cfg(test)]
    fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Drops buckets past the horizon and merges old minutes into hours, old hours into days.
    fn compact(&mut self, now_s: u64) {
        let mut merged: Vec<Bucket> = Vec::with_capacity(self.buckets.len());
        for bucket in self.buckets.drain(..) {
            let age_s = now_s.saturating_sub(bucket.start_s);
            if age_s > HORIZON_S {
                continue;
            }
            let span_s: u32 = if age_s > 2 * 86_400 {
                86_400
            } else if age_s > 2 * 3_600 {
                3_600
            } else {
                bucket.span_s
            };
            let span_s = span_s.max(bucket.span_s);
            let start_s = bucket.start_s - bucket.start_s % u64::from(span_s);
            match merged.last_mut() {
                Some(last) if last.start_s == start_s && last.span_s == span_s => {
                    last.count = last.count.saturating_add(bucket.count);
                    last.sum = last.sum.saturating_add(bucket.sum);
                }
                _ => merged.push(Bucket {
                    start_s,
                    span_s,
                    count: bucket.count,
                    sum: bucket.sum,
                }),
            }
        }
        self.buckets = merged;
    }
}

/// Distinct members seen, each with the last time it was seen.
#[derive(Clone, Debug, Default)]
pub struct Distinct {
    members: Vec<(u128, u64)>,
}

impl Distinct {
    pub fn add(&mut self, member: u128, at_s: u64) {
        if let Some(entry) = self.members.iter_mut().find(|entry| entry.0 == member) {
            entry.1 = entry.1.max(at_s);
            return;
        }
        if self.members.len() < DISTINCT_MAX {
            self.members.push((member, at_s));
            return;
        }
        // Full: the member seen longest ago makes room.
        if let Some(oldest) = self.members.iter_mut().min_by_key(|entry| entry.1)
            && oldest.1 < at_s
        {
            *oldest = (member, at_s);
        }
    }

    pub fn count(&self, now_s: u64, window_s: u64) -> i64 {
        let from_s = now_s.saturating_sub(window_s);
        let seen = self
            .members
            .iter()
            .filter(|entry| entry.1 > from_s && entry.1 <= now_s)
            .count();
        i64::try_from(seen).unwrap_or(i64::MAX)
    }

    pub fn newest_s(&self) -> u64 {
        self.members.iter().map(|entry| entry.1).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_what_is_inside_and_drops_what_is_far_outside() {
        let mut series = Series::default();
        let start = 1_800_000_000;
        series.add(start, 100);
        series.add(start + 30, 200);
        series.add(start + 7_200, 50);
        let now = start + 7_200;
        assert_eq!(series.totals(now, 600), Totals { count: 1, sum: 50 });
        assert_eq!(series.totals(now, 86_400), Totals { count: 3, sum: 350 });
        assert_eq!(series.totals(now + 40 * 86_400, 86_400), Totals::default());
    }

    #[test]
    fn a_busy_series_stays_bounded_and_keeps_its_totals() {
        let mut series = Series::default();
        let start = 1_800_000_000;
        // One event a minute for 40 days.
        for minute in 0..(40 * 1_440) {
            series.add(start + minute * 60, 1);
        }
        assert!(
            series.bucket_count() <= COMPACT_AT,
            "{}",
            series.bucket_count()
        );
        let now = start + 40 * 86_400 - 60;
        let day = series.totals(now, 86_400);
        assert!((1_440..=1_440 + 60).contains(&day.count), "{day:?}");
        let hour = series.totals(now, 3_600);
        assert!((60..=61).contains(&hour.count), "{hour:?}");
    }

    #[test]
    fn late_events_land_in_their_bucket() {
        let mut series = Series::default();
        series.add(10_000, 1);
        series.add(20_000, 1);
        series.add(10_010, 5);
        series.add(15_000, 7);
        assert_eq!(series.totals(20_000, 20_000).sum, 14);
        assert_eq!(series.totals(15_100, 200).sum, 7);
    }

    #[test]
    fn distinct_members_count_once_and_saturate() {
        let mut distinct = Distinct::default();
        for member in 0..100_u128 {
            distinct.add(member % 70, 1_000 + u64::try_from(member).unwrap_or(0));
        }
        assert_eq!(distinct.count(2_000, 10_000), 64);
        assert_eq!(distinct.count(1_099, 10), 10);
    }
}
