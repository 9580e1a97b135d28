//! Quotas and rate limits per project: their names, the values in force, token buckets.
//!
//! This module is the vocabulary every layer shares (docs/api.md, "Quotas and rate limits"):
//! [`Limit`] names each limit once — its knob is `limits.<name>` (settings), its key in a
//! `PUT /v2/projects/{id}/limits` body and in the config file's `[limits.projects.<id>]` tables,
//! and its label in `/metrics`. It depends on nothing in the crate: callers pass the time in.
//!
//! Every value is a count (or bytes, or a rate per second) where 0 means unlimited.

use std::collections::BTreeMap;

/// One quota or rate limit. The order is the order of docs, bodies and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Limit {
    QueuesPerProject,
    MessagesPerQueue,
    BytesPerQueue,
    MessagesPerProject,
    BytesPerProject,
    RequestsPerSecondPerProject,
    RequestsPerSecondPerCredential,
    LongPollsPerProject,
}

/// How many limits there are.
pub const LIMITS: usize = 8;

impl Limit {
    pub const ALL: [Limit; LIMITS] = [
        Limit::QueuesPerProject,
        Limit::MessagesPerQueue,
        Limit::BytesPerQueue,
        Limit::MessagesPerProject,
        Limit::BytesPerProject,
        Limit::RequestsPerSecondPerProject,
        Limit::RequestsPerSecondPerCredential,
        Limit::LongPollsPerProject,
    ];

    /// The name of the limit: `limits.<name>` is its knob.
    pub const fn name(self) -> &'static str {
        match self {
            Limit::QueuesPerProject => "queues_per_project",
            Limit::MessagesPerQueue => "messages_per_queue",
            Limit::BytesPerQueue => "bytes_per_queue",
            Limit::MessagesPerProject => "messages_per_project",
            Limit::BytesPerProject => "bytes_per_project",
            Limit::RequestsPerSecondPerProject => "requests_per_second_per_project",
            Limit::RequestsPerSecondPerCredential => "requests_per_second_per_credential",
            Limit::LongPollsPerProject => "long_polls_per_project",
        }
    }

    /// Its knob's key, `limits.<name>`.
    pub const fn knob(self) -> &'static str {
        match self {
            Limit::QueuesPerProject => "limits.queues_per_project",
            Limit::MessagesPerQueue => "limits.messages_per_queue",
            Limit::BytesPerQueue => "limits.bytes_per_queue",
            Limit::MessagesPerProject => "limits.messages_per_project",
            Limit::BytesPerProject => "limits.bytes_per_project",
            Limit::RequestsPerSecondPerProject => "limits.requests_per_second_per_project",
            Limit::RequestsPerSecondPerCredential => "limits.requests_per_second_per_credential",
            Limit::LongPollsPerProject => "limits.long_polls_per_project",
        }
    }

    /// The limit called `name`.
    pub fn from_name(name: &str) -> Option<Limit> {
        Limit::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether exceeding it is a rate (429 with `Retry-After`) rather than a quota (403).
    pub const fn is_rate(self) -> bool {
        matches!(self, Limit::RequestsPerSecondPerProject | Limit::RequestsPerSecondPerCredential)
    }

    /// The largest value it takes (its knob's range and the check of bodies agree).
    pub const fn max(self) -> u64 {
        match self {
            Limit::BytesPerQueue | Limit::BytesPerProject => 1 << 50,
            Limit::RequestsPerSecondPerProject | Limit::RequestsPerSecondPerCredential => 10_000_000,
            _ => 1 << 40,
        }
    }
}

/// The value of every limit for one project; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitSet([u64; LIMITS]);

impl LimitSet {
    pub const UNLIMITED: LimitSet = LimitSet([0; LIMITS]);

    pub fn new(values: [u64; LIMITS]) -> Self {
        LimitSet(values)
    }

    pub fn get(&self, limit: Limit) -> u64 {
        self.0[limit as usize]
    }

    /// The limit's value when set (not 0).
    pub fn of(&self, limit: Limit) -> Option<u64> {
        Some(self.get(limit)).filter(|&v| v > 0)
    }

    /// These values with `overrides` on top.
    pub fn with(mut self, overrides: &Overrides) -> Self {
        for limit in Limit::ALL {
            if let Some(v) = overrides.get(limit) {
                self.0[limit as usize] = v;
            }
        }
        self
    }

    /// The quotas a post checks on the queue's owner.
    pub fn store_quota(&self, may_create_queue: bool) -> StoreQuota {
        StoreQuota {
            messages_per_queue: self.of(Limit::MessagesPerQueue),
            bytes_per_queue: self.of(Limit::BytesPerQueue),
            messages_per_project: self.of(Limit::MessagesPerProject),
            bytes_per_project: self.of(Limit::BytesPerProject),
            may_create_queue,
        }
    }
}

/// Some limits of one project, set apart from the defaults (by the config file or a `PUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Overrides([Option<u64>; LIMITS]);

impl Overrides {
    pub fn get(&self, limit: Limit) -> Option<u64> {
        self.0[limit as usize]
    }

    /// Sets `limit` to `value`, which must not be above [`Limit::max`].
    pub fn set(&mut self, limit: Limit, value: u64) -> Result<(), OverrideError> {
        if value > limit.max() {
            return Err(OverrideError::OutOfRange { limit, value });
        }
        self.0[limit as usize] = Some(value);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }

    /// The limits set, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Limit, u64)> + '_ {
        Limit::ALL.into_iter().filter_map(|l| self.get(l).map(|v| (l, v)))
    }

    /// From `(name, value)` pairs: an unknown name, a value that is not a non-negative integer
    /// or one above the limit's maximum is refused by name.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<u64>)>) -> Result<Self, OverrideError> {
        let mut out = Overrides::default();
        for (name, value) in pairs {
            let limit = Limit::from_name(name).ok_or_else(|| OverrideError::Unknown(name.to_owned()))?;
            out.set(limit, value.ok_or(OverrideError::NotCount(limit))?)?;
        }
        Ok(out)
    }
}

/// Why a set of overrides was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error("`{0}` is not a limit; limits are: {names}", names = names())]
    Unknown(String),
    #[error("`{}` must be a non-negative integer (0 means unlimited)", .0.name())]
    NotCount(Limit),
    #[error("`{}` = {value} is above its maximum {}", limit.name(), limit.max())]
    OutOfRange { limit: Limit, value: u64 },
}

/// Every limit's name, comma-separated (for error messages).
pub fn names() -> String {
    Limit::ALL.map(Limit::name).join(", ")
}

/// The quotas a post checks on the queue's owner, where the queue's figures are exact and the
/// project's are this shard's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreQuota {
    pub messages_per_queue: Option<u64>,
    pub bytes_per_queue: Option<u64>,
    pub messages_per_project: Option<u64>,
    pub bytes_per_project: Option<u64>,
    /// Whether a post may create its queue; false while `queues_per_project` is set, so that the
    /// API counts the project's queues first.
    pub may_create_queue: bool,
}

impl StoreQuota {
    pub const UNLIMITED: StoreQuota = StoreQuota {
        messages_per_queue: None,
        bytes_per_queue: None,
        messages_per_project: None,
        bytes_per_project: None,
        may_create_queue: true,
    };

    /// Whether the project-wide figures are needed at all.
    pub fn counts_project(&self) -> bool {
        self.messages_per_project.is_some() || self.bytes_per_project.is_some()
    }

    /// Checks that `held` (messages, bytes) plus `adding` stays within the queue's quotas, then
    /// within the project's (`project` is only read when a project quota is set).
    pub fn check(
        &self,
        queue: (u64, u64),
        project: impl FnOnce() -> (u64, u64),
        adding: (u64, u64),
    ) -> Result<(), Refused> {
        let over = |held: u64, add: u64, limit: Option<u64>| limit.filter(|&l| held.saturating_add(add) > l);
        let checks = [
            (Limit::MessagesPerQueue, queue.0, adding.0, self.messages_per_queue),
            (Limit::BytesPerQueue, queue.1, adding.1, self.bytes_per_queue),
        ];
        for (limit, held, add, value) in checks {
            if let Some(value) = over(held, add, value) {
                return Err(Refused::Quota { limit, value });
            }
        }
        if self.counts_project() {
            let (messages, bytes) = project();
            let checks = [
                (Limit::MessagesPerProject, messages, adding.0, self.messages_per_project),
                (Limit::BytesPerProject, bytes, adding.1, self.bytes_per_project),
            ];
            for (limit, held, add, value) in checks {
                if let Some(value) = over(held, add, value) {
                    return Err(Refused::Quota { limit, value });
                }
            }
        }
        Ok(())
    }
}

/// A request refused by a limit: the API answers 403 `quota_exceeded` or 429 with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("quota `{}` of {value} exceeded", limit.name())]
    Quota { limit: Limit, value: u64 },
    #[error("rate limit `{}` of {value} per second exceeded", limit.name())]
    Rate { limit: Limit, value: u64, retry_after_s: u32 },
}

impl Refused {
    pub fn limit(&self) -> Limit {
        match self {
            Refused::Quota { limit, .. } | Refused::Rate { limit, .. } => *limit,
        }
    }
}

/// The limits of every project: the defaults, the config file's overrides and those set by
/// `PUT` (which win). Each shard holds a copy; a change reaches every copy through the mesh.
#[derive(Debug, Clone, Default)]
pub struct Table {
    defaults: LimitSet,
    configured: BTreeMap<String, Overrides>,
    stored: BTreeMap<String, Overrides>,
    /// Effective limits of each project that has overrides, so a request looks up one map.
    effective: ahash::AHashMap<Box<str>, LimitSet>,
}

impl Table {
    pub fn new(
        defaults: LimitSet,
        configured: BTreeMap<String, Overrides>,
        stored: BTreeMap<String, Overrides>,
    ) -> Self {
        let mut table = Table { defaults, configured, stored, effective: Default::default() };
        let projects: Vec<String> = table.configured.keys().chain(table.stored.keys()).cloned().collect();
        for project in projects {
            table.refresh(&project);
        }
        table
    }

    /// The limits in force for `project`: one hash lookup, and none while no project has overrides.
    pub fn limits(&self, project: &str) -> LimitSet {
        if self.effective.is_empty() {
            return self.defaults;
        }
        self.effective.get(project).copied().unwrap_or(self.defaults)
    }

    /// The overrides set by `PUT` for `project` (empty when none).
    pub fn stored(&self, project: &str) -> Overrides {
        self.stored.get(project).copied().unwrap_or_default()
    }

    /// Every override set by `PUT`, for the file that keeps them.
    pub fn stored_all(&self) -> &BTreeMap<String, Overrides> {
        &self.stored
    }

    /// Replaces the `PUT` overrides of `project` (empty ones remove them).
    pub fn set_stored(&mut self, project: &str, overrides: Overrides) {
        if overrides.is_empty() {
            self.stored.remove(project);
        } else {
            self.stored.insert(project.to_owned(), overrides);
        }
        self.refresh(project);
    }

    fn refresh(&mut self, project: &str) {
        let configured = self.configured.get(project);
        let stored = self.stored.get(project);
        if configured.is_none() && stored.is_none() {
            self.effective.remove(project);
            return;
        }
        let mut set = self.defaults;
        for overrides in [configured, stored].into_iter().flatten() {
            set = set.with(overrides);
        }
        self.effective.insert(project.into(), set);
    }
}

/// A token bucket holding one second's worth of tokens, counted in thousandths so that the
/// arithmetic stays in integers.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: u64, now_ms: u64) -> Self {
        Bucket { milli_tokens: rate.saturating_mul(1000), at_ms: now_ms }
    }

    fn refill(&mut self, rate: u64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        self.milli_tokens =
            self.milli_tokens.saturating_add(elapsed.saturating_mul(rate)).min(rate.saturating_mul(1000));
        self.at_ms = self.at_ms.max(now_ms);
    }

    /// Takes one token, or says in how many whole seconds one will be there (at least 1).
    pub fn take(&mut self, rate: u64, now_ms: u64) -> Result<(), u32> {
        debug_assert!(rate > 0, "a bucket without a rate");
        self.refill(rate, now_ms);
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            return Ok(());
        }
        let wait_ms = (1000 - self.milli_tokens).div_ceil(rate.max(1));
        Err(u32::try_from(wait_ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1))
    }

    /// Whether it has refilled completely (then it is the same as no bucket at all).
    fn is_full(&self, rate: u64, now_ms: u64) -> bool {
        let mut b = *self;
        b.refill(rate, now_ms);
        b.milli_tokens >= rate.saturating_mul(1000)
    }
}

/// Most buckets one [`RateLimiter`] holds: bounds its memory whatever keys clients send.
pub const MAX_BUCKETS: usize = 65_536;

/// Token buckets by key (a hash of a project id or a credential) on one shard.
#[derive(Debug)]
pub struct RateLimiter {
    hasher: ahash::RandomState,
    buckets: ahash::AHashMap<u64, Bucket>,
    capacity: usize,
    /// When a full table last looked for refilled buckets: at most once a second, so that a flood
    /// of new keys costs one pass per second, not one per request.
    swept_ms: Option<u64>,
}

impl RateLimiter {
    pub fn new(capacity: usize) -> Self {
        RateLimiter { hasher: ahash::RandomState::new(), buckets: Default::default(), capacity, swept_ms: None }
    }

    /// The key of some bytes (a project id, a token).
    pub fn key(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(bytes)
    }

    /// Takes a token from the bucket of `key` at `rate` per second, or says how long to wait. When
    /// the table is full, buckets that refilled are dropped (they mean nothing), looked for at
    /// most once a second; if none did, the request waits a second rather than going unlimited.
    pub fn take(&mut self, key: u64, rate: u64, now_ms: u64) -> Result<(), u32> {
        if let Some(bucket) = self.buckets.get_mut(&key) {
            return bucket.take(rate, now_ms);
        }
        if self.buckets.len() >= self.capacity {
            if self.swept_ms.is_some_and(|at| now_ms < at.saturating_add(1000)) {
                return Err(1);
            }
            self.swept_ms = Some(now_ms);
            self.buckets.retain(|_, b| !b.is_full(rate, now_ms));
            if self.buckets.len() >= self.capacity {
                return Err(1);
            }
        }
        let mut bucket = Bucket::full(rate, now_ms);
        let taken = bucket.take(rate, now_ms);
        self.buckets.insert(key, bucket);
        taken
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        for limit in Limit::ALL {
            assert_eq!(Limit::from_name(limit.name()), Some(limit));
            assert_eq!(Limit::ALL[limit as usize], limit);
            assert_eq!(limit.knob().strip_prefix("limits."), Some(limit.name()));
        }
        assert_eq!(Limit::from_name("queues"), None);
    }

    #[test]
    fn a_bucket_gives_a_second_of_tokens_then_refills_at_its_rate() {
        let mut b = Bucket::full(3, 1_000);
        for _ in 0..3 {
            b.take(3, 1_000).unwrap();
        }
        assert_eq!(b.take(3, 1_000), Err(1));
        // A third of a second brings one token back.
        b.take(3, 1_334).unwrap();
        assert!(b.take(3, 1_334).is_err());
        // A slow rate says how many seconds to wait.
        let mut slow = Bucket::full(1, 0);
        slow.take(1, 0).unwrap();
        assert_eq!(slow.take(1, 0), Err(1));
        // A clock going back never adds tokens.
        assert!(slow.take(1, 0).is_err());
    }

    #[test]
    fn a_full_limiter_drops_refilled_buckets_and_otherwise_refuses() {
        let mut r = RateLimiter::new(2);
        r.take(1, 1, 0).unwrap();
        r.take(2, 1, 0).unwrap();
        assert_eq!(r.take(3, 1, 0), Err(1), "no bucket refilled: no room");
        assert_eq!(r.take(3, 1, 500), Err(1), "one look a second");
        r.take(3, 1, 1_000).unwrap();
        assert!(r.len() <= 2);
    }

    #[test]
    fn put_overrides_win_over_configured_ones_over_defaults() {
        let defaults = LimitSet::new([1, 2, 3, 4, 5, 6, 7, 8]);
        let mut configured = Overrides::default();
        configured.set(Limit::QueuesPerProject, 10).unwrap();
        configured.set(Limit::MessagesPerQueue, 20).unwrap();
        let mut table = Table::new(defaults, [("p".to_owned(), configured)].into(), BTreeMap::new());
        assert_eq!(table.limits("p").get(Limit::QueuesPerProject), 10);
        assert_eq!(table.limits("other"), defaults);
        let mut put = Overrides::default();
        put.set(Limit::QueuesPerProject, 0).unwrap();
        table.set_stored("p", put);
        assert_eq!(table.limits("p").get(Limit::QueuesPerProject), 0);
        assert_eq!(table.limits("p").get(Limit::MessagesPerQueue), 20);
        table.set_stored("p", Overrides::default());
        assert_eq!(table.limits("p").get(Limit::QueuesPerProject), 10);
        assert!(table.stored_all().is_empty());
    }

    #[test]
    fn overrides_refuse_unknown_names_and_values_out_of_range() {
        assert!(matches!(Overrides::from_pairs([("nope", Some(1))]), Err(OverrideError::Unknown(_))));
        assert!(matches!(
            Overrides::from_pairs([("queues_per_project", None)]),
            Err(OverrideError::NotCount(Limit::QueuesPerProject))
        ));
        assert!(Overrides::from_pairs([("queues_per_project", Some(u64::MAX))]).is_err());
        let o = Overrides::from_pairs([("bytes_per_queue", Some(5))]).unwrap();
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![(Limit::BytesPerQueue, 5)]);
    }

    #[test]
    fn store_quota_checks_the_queue_then_the_project() {
        let q = LimitSet::new([0, 2, 100, 3, 0, 0, 0, 0]).store_quota(true);
        q.check((1, 10), || (1, 10), (1, 5)).unwrap();
        assert_eq!(
            q.check((2, 10), || panic!("the queue refuses first"), (1, 5)),
            Err(Refused::Quota { limit: Limit::MessagesPerQueue, value: 2 })
        );
        assert_eq!(
            q.check((0, 0), || (3, 0), (1, 1)),
            Err(Refused::Quota { limit: Limit::MessagesPerProject, value: 3 })
        );
        assert_eq!(
            q.check((0, 99), || (0, 0), (1, 2)),
            Err(Refused::Quota { limit: Limit::BytesPerQueue, value: 100 })
        );
        StoreQuota::UNLIMITED.check((u64::MAX, u64::MAX), || panic!("unlimited reads nothing"), (1, 1)).unwrap();
    }
}
