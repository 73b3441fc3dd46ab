//! Limits that keep one peer or one API token from hurting the others: token buckets for
//! rates and daily byte budgets, and the limits' configured values.
//!
//! Pure code: the time is passed in, so every rule is tested without a clock.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket: holds at most `capacity` tokens, refills at `per_second`, starts full.
/// Taking more than is there is refused and takes nothing.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(capacity: u64, per_second: f64, now: Instant) -> TokenBucket {
        TokenBucket {
            capacity: capacity as f64,
            per_second,
            tokens: capacity as f64,
            last: now,
        }
    }

    /// A bucket for a daily budget: `per_day` tokens, refilled evenly over a day.
    pub fn per_day(per_day: u64, now: Instant) -> TokenBucket {
        TokenBucket::new(per_day, per_day as f64 / 86_400.0, now)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = self.last.max(now);
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, n: u64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens, or all there are if fewer (for usage counted after the fact).
    pub fn take_saturating(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens - n as f64).max(0.0);
    }

    /// Whether at least one token is there.
    pub fn has_room(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= 1.0
    }
}

/// Limits on each federation peer (enforced at the national hub on links from cities and county
/// hubs, and at a county hub on links from its cities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerLimits {
    /// Sustained frames per second a peer may send.
    pub frames_per_second: u64,
    /// Frames a peer may send at once above the sustained rate.
    pub frame_burst: u64,
    /// Bytes of frames a peer may send per day (a bucket refilled evenly over the day).
    pub bytes_per_day: u64,
    /// After a peer was cut off for a rate or byte limit, new links from it are refused this long.
    pub cooldown: Duration,
    /// Links a peer may open per minute, sustained (reconnects).
    pub links_per_minute: u64,
    /// Links a peer may open at once above the sustained rate.
    pub link_burst: u64,
    /// Bytes of frames this node may send a peer per day: a few bytes of requests must not buy
    /// an unbounded amount of answers.
    pub bytes_sent_per_day: u64,
    /// Bytes queued for a peer that does not read, before its link is closed.
    pub outbox_bytes: usize,
    /// Frames queued for a peer that does not read, before its link is closed.
    pub outbox_frames: usize,
    /// A county hub carries its cities' traffic on one link: at the national hub its frame
    /// rate, burst and daily bytes (received and sent) are this many cities' worth.
    pub county_budget_cities: u64,
}

impl PeerLimits {
    /// The rate and byte limits for a peer carrying `weight` cities' traffic (1 for a city);
    /// the cool-down, the reconnect rate and the outbox bounds are per link and stay as they are.
    fn weighted(&self, weight: u64) -> PeerLimits {
        PeerLimits {
            frames_per_second: self.frames_per_second.saturating_mul(weight),
            frame_burst: self.frame_burst.saturating_mul(weight),
            bytes_per_day: self.bytes_per_day.saturating_mul(weight),
            bytes_sent_per_day: self.bytes_sent_per_day.saturating_mul(weight),
            ..self.clone()
        }
    }
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            frames_per_second: 1_000,
            frame_burst: 20_000,
            bytes_per_day: 8 * 1024 * 1024 * 1024,
            cooldown: Duration::from_secs(10),
            links_per_minute: 6,
            link_burst: 20,
            bytes_sent_per_day: 8 * 1024 * 1024 * 1024,
            outbox_bytes: 64 * 1024 * 1024,
            outbox_frames: 100_000,
            county_budget_cities: 50,
        }
    }
}

/// Why a peer or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error(
        "frame rate limit exceeded: more than {per_second} frames per second (burst {burst}) \
         (limits.peer_frames_per_second{})", weight_note(*weight)
    )]
    FrameRate {
        per_second: u64,
        burst: u64,
        weight: u64,
    },
    #[error(
        "daily byte limit exceeded: more than {per_day} bytes per day (limits.peer_bytes_per_day{})",
        weight_note(*weight)
    )]
    BytesPerDay { per_day: u64, weight: u64 },
    #[error("cut off for exceeding a limit; try again in {seconds} s")]
    CoolingDown { seconds: u64 },
    #[error(
        "too many links: more than {per_minute} new links per minute (burst {burst}) \
         (limits.peer_links_per_minute); reconnect with backoff"
    )]
    LinkRate { per_minute: u64, burst: u64 },
    #[error(
        "daily byte limit exceeded: this node sent the peer more than {per_day} bytes in the \
         last day (limits.peer_bytes_sent_per_day{})", weight_note(*weight)
    )]
    BytesSentPerDay { per_day: u64, weight: u64 },
    #[error(
        "request rate limit exceeded: more than {per_second} requests per second (burst {burst}) \
         for this API token (limits.api_requests_per_second)"
    )]
    RequestRate { per_second: u64, burst: u64 },
    #[error(
        "daily byte limit exceeded: this API token moved more than {per_day} bytes in the last \
         day (limits.api_bytes_per_day)"
    )]
    TokenBytesPerDay { per_day: u64 },
}

/// How a peer's limit was derived from the configured one, for the error message: nothing for a
/// city, the multiplier for a county hub.
fn weight_note(weight: u64) -> String {
    if weight == 1 {
        String::new()
    } else {
        format!(" × {weight} for a county hub, limits.county_budget_cities")
    }
}

impl LimitExceeded {
    /// A short name of the limit, for metrics.
    pub fn name(&self) -> &'static str {
        match self {
            LimitExceeded::FrameRate { .. } => "peer_frames_per_second",
            LimitExceeded::BytesPerDay { .. } => "peer_bytes_per_day",
            LimitExceeded::CoolingDown { .. } => "peer_cooldown",
            LimitExceeded::LinkRate { .. } => "peer_links_per_minute",
            LimitExceeded::BytesSentPerDay { .. } => "peer_bytes_sent_per_day",
            LimitExceeded::RequestRate { .. } => "api_requests_per_second",
            LimitExceeded::TokenBytesPerDay { .. } => "api_bytes_per_day",
        }
    }
}

struct PeerBudget {
    /// This peer's limits: the configured ones, weighted for a county hub.
    limits: PeerLimits,
    weight: u64,
    frames: TokenBucket,
    bytes: TokenBucket,
    links: TokenBucket,
    bytes_sent: TokenBucket,
    blocked_until: Option<Instant>,
}

/// The budgets of every peer, kept across its links (a reconnect does not refill them). Each
/// peer's budget is weighted by how many cities' traffic it carries ([`PeerBudgets::weighing`]).
pub struct PeerBudgets<K> {
    limits: PeerLimits,
    weigh: Box<dyn Fn(&K) -> u64 + Send>,
    budgets: HashMap<K, PeerBudget>,
}

impl<K: Eq + Hash + Clone> PeerBudgets<K> {
    /// Budgets of one city's worth for every peer.
    pub fn new(limits: PeerLimits) -> PeerBudgets<K> {
        PeerBudgets {
            limits,
            weigh: Box::new(|_| 1),
            budgets: HashMap::new(),
        }
    }

    /// Budgets weighted by `weigh`: how many cities' traffic a peer carries (at least 1).
    pub fn weighing(mut self, weigh: impl Fn(&K) -> u64 + Send + 'static) -> PeerBudgets<K> {
        self.weigh = Box::new(weigh);
        self
    }

    pub fn limits(&self) -> &PeerLimits {
        &self.limits
    }

    fn budget(&mut self, peer: &K, now: Instant) -> &mut PeerBudget {
        let (limits, weigh) = (&self.limits, &self.weigh);
        self.budgets.entry(peer.clone()).or_insert_with(|| {
            let weight = weigh(peer).max(1);
            let limits = limits.weighted(weight);
            PeerBudget {
                frames: TokenBucket::new(limits.frame_burst, limits.frames_per_second as f64, now),
                bytes: TokenBucket::per_day(limits.bytes_per_day, now),
                links: TokenBucket::new(
                    limits.link_burst,
                    limits.links_per_minute as f64 / 60.0,
                    now,
                ),
                bytes_sent: TokenBucket::per_day(limits.bytes_sent_per_day, now),
                blocked_until: None,
                limits,
                weight,
            }
        })
    }

    /// Whether `peer` may open a link now.
    pub fn admit(&mut self, peer: &K, now: Instant) -> Result<(), LimitExceeded> {
        let budget = self.budget(peer, now);
        let (limits, weight) = (budget.limits.clone(), budget.weight);
        if let Some(until) = budget.blocked_until {
            if now < until {
                let seconds = until.duration_since(now).as_secs().max(1);
                return Err(LimitExceeded::CoolingDown { seconds });
            }
            budget.blocked_until = None;
        }
        if !budget.bytes.has_room(now) {
            return Err(LimitExceeded::BytesPerDay {
                per_day: limits.bytes_per_day,
                weight,
            });
        }
        if !budget.bytes_sent.has_room(now) {
            return Err(LimitExceeded::BytesSentPerDay {
                per_day: limits.bytes_sent_per_day,
                weight,
            });
        }
        if !budget.links.try_take(1, now) {
            return Err(LimitExceeded::LinkRate {
                per_minute: limits.links_per_minute,
                burst: limits.link_burst,
            });
        }
        Ok(())
    }

    /// Charges `bytes` this node sends `peer`; an error means the peer is over its daily
    /// budget of answers, and is cut off for the cool-down. What was sent is counted even then
    /// (the frames are already queued).
    pub fn charge_sent(
        &mut self,
        peer: &K,
        bytes: usize,
        now: Instant,
    ) -> Result<(), LimitExceeded> {
        let budget = self.budget(peer, now);
        if budget.bytes_sent.try_take(bytes as u64, now) {
            return Ok(());
        }
        budget.bytes_sent.take_saturating(bytes as u64, now);
        budget.blocked_until = Some(now + budget.limits.cooldown);
        Err(LimitExceeded::BytesSentPerDay {
            per_day: budget.limits.bytes_sent_per_day,
            weight: budget.weight,
        })
    }

    /// Charges one received frame of `bytes` to `peer`; an error cuts the peer off for the
    /// cool-down.
    pub fn charge(&mut self, peer: &K, bytes: usize, now: Instant) -> Result<(), LimitExceeded> {
        let budget = self.budget(peer, now);
        let (limits, weight) = (budget.limits.clone(), budget.weight);
        let refused = if !budget.frames.try_take(1, now) {
            Some(LimitExceeded::FrameRate {
                per_second: limits.frames_per_second,
                burst: limits.frame_burst,
                weight,
            })
        } else if !budget.bytes.try_take(bytes as u64, now) {
            Some(LimitExceeded::BytesPerDay {
                per_day: limits.bytes_per_day,
                weight,
            })
        } else {
            None
        };
        match refused {
            Some(err) => {
                budget.blocked_until = Some(now + budget.limits.cooldown);
                Err(err)
            }
            None => Ok(()),
        }
    }
}

/// Request-rate buckets and daily byte budgets per API token (keyed by the token's hash).
pub struct TokenRates {
    per_second: u64,
    burst: u64,
    bytes_per_day: u64,
    buckets: HashMap<String, TokenBucket>,
    bytes: HashMap<String, TokenBucket>,
}

impl TokenRates {
    pub fn new(per_second: u64, burst: u64, bytes_per_day: u64) -> TokenRates {
        TokenRates {
            per_second,
            burst,
            bytes_per_day,
            buckets: HashMap::new(),
            bytes: HashMap::new(),
        }
    }

    /// Counts `n` bytes a request of `token` moved (request and response bodies). A request
    /// is not cut in the middle; the token's next requests are refused once its budget is
    /// spent, until it refills.
    pub fn count_bytes(&mut self, token: &str, n: u64, now: Instant) {
        let per_day = self.bytes_per_day;
        self.bytes
            .entry(token.to_string())
            .or_insert_with(|| TokenBucket::per_day(per_day, now))
            .take_saturating(n, now);
    }

    /// Charges one request to `token`: refused if the token is over its request rate or has
    /// spent its daily bytes.
    pub fn charge(&mut self, token: &str, now: Instant) -> Result<(), LimitExceeded> {
        if let Some(bytes) = self.bytes.get_mut(token) {
            if !bytes.has_room(now) {
                return Err(LimitExceeded::TokenBytesPerDay {
                    per_day: self.bytes_per_day,
                });
            }
        }
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = self
            .buckets
            .entry(token.to_string())
            .or_insert_with(|| TokenBucket::new(burst, per_second as f64, now));
        if bucket.try_take(1, now) {
            Ok(())
        } else {
            Err(LimitExceeded::RequestRate { per_second, burst })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 5.0, t0);
        assert!((0..10).all(|_| bucket.try_take(1, t0)));
        assert!(!bucket.try_take(1, t0), "the burst is used up");
        let t1 = t0 + Duration::from_millis(400);
        assert!(bucket.try_take(2, t1), "0.4 s at 5/s refills two");
        assert!(!bucket.try_take(1, t1));
        let t2 = t1 + Duration::from_secs(100);
        assert!(bucket.try_take(10, t2), "refills up to the capacity");
        assert!(!bucket.try_take(1, t2), "and no further");
        assert!(
            !bucket.try_take(11, t2 + Duration::from_secs(100)),
            "more than capacity never"
        );
    }

    #[test]
    fn a_daily_budget_refills_over_the_day() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::per_day(86_400, t0);
        assert!(bucket.try_take(86_400, t0));
        assert!(!bucket.has_room(t0));
        assert!(bucket.try_take(60, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_flooding_peer_is_cut_off_and_cools_down_while_others_go_on() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            frames_per_second: 10,
            frame_burst: 20,
            bytes_per_day: 1_000_000,
            cooldown: Duration::from_secs(5),
            ..PeerLimits::default()
        };
        let mut budgets = PeerBudgets::new(limits);
        let refused = (0..100)
            .map(|_| budgets.charge(&"flood", 10, t0))
            .position(|r| r.is_err())
            .unwrap();
        assert_eq!(refused, 20);
        assert_eq!(
            budgets.admit(&"flood", t0 + Duration::from_secs(1)),
            Err(LimitExceeded::CoolingDown { seconds: 4 })
        );
        assert!(budgets.admit(&"flood", t0 + Duration::from_secs(6)).is_ok());
        assert!((0..20).all(|_| budgets.charge(&"honest", 10, t0).is_ok()));
        let err = budgets.charge(&"big", 2_000_000, t0).unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::BytesPerDay {
                per_day: 1_000_000,
                weight: 1
            }
        );
        assert!(err.to_string().contains("1000000 bytes per day"));
    }

    #[test]
    fn reconnects_and_bytes_sent_are_budgeted_per_peer() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            links_per_minute: 6,
            link_burst: 3,
            bytes_sent_per_day: 1_000,
            cooldown: Duration::from_secs(5),
            ..PeerLimits::default()
        };
        let mut budgets = PeerBudgets::new(limits);
        assert!((0..3).all(|_| budgets.admit(&"a", t0).is_ok()));
        let err = budgets.admit(&"a", t0).unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::LinkRate {
                per_minute: 6,
                burst: 3
            }
        );
        assert!(err.to_string().contains("limits.peer_links_per_minute"));
        assert!(
            budgets.admit(&"b", t0).is_ok(),
            "another peer is unaffected"
        );
        assert!(
            budgets.admit(&"a", t0 + Duration::from_secs(10)).is_ok(),
            "one link per 10 s refills"
        );
        assert!(budgets.charge_sent(&"b", 900, t0).is_ok());
        let err = budgets.charge_sent(&"b", 200, t0).unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::BytesSentPerDay {
                per_day: 1_000,
                weight: 1
            }
        );
        assert!(matches!(
            budgets.admit(&"b", t0 + Duration::from_secs(1)),
            Err(LimitExceeded::CoolingDown { .. })
        ));
        assert!(
            matches!(
                budgets.admit(&"b", t0 + Duration::from_secs(6)),
                Err(LimitExceeded::BytesSentPerDay { .. })
            ),
            "still over its daily answers after the cool-down"
        );
    }

    #[test]
    fn a_county_hub_has_the_budget_of_as_many_cities_as_configured() {
        let t0 = Instant::now();
        let limits = PeerLimits {
            frames_per_second: 10,
            frame_burst: 20,
            bytes_per_day: 1_000,
            bytes_sent_per_day: 1_000,
            county_budget_cities: 3,
            ..PeerLimits::default()
        };
        let mut budgets = PeerBudgets::new(limits.clone()).weighing(move |peer: &&str| {
            if peer.starts_with("county") {
                limits.county_budget_cities
            } else {
                1
            }
        });
        let first_refused = |budgets: &mut PeerBudgets<&str>, peer| {
            (0..1_000)
                .map(|_| budgets.charge(&peer, 1, t0))
                .position(|r| r.is_err())
                .unwrap()
        };
        let first_refusal_of = |budgets: &mut PeerBudgets<&str>, peer| {
            (0..1_000)
                .find_map(|_| budgets.charge(&peer, 1, t0).err())
                .unwrap()
        };
        assert_eq!(first_refused(&mut budgets, "city"), 20);
        assert_eq!(first_refused(&mut budgets, "county"), 60);
        let err = first_refusal_of(&mut budgets, "county-a");
        assert_eq!(
            err,
            LimitExceeded::FrameRate {
                per_second: 30,
                burst: 60,
                weight: 3
            }
        );
        // Daily bytes, received and sent, are weighted too; the message names both settings.
        let err = budgets.charge(&"county-b", 3_001, t0).unwrap_err();
        assert_eq!(
            err,
            LimitExceeded::BytesPerDay {
                per_day: 3_000,
                weight: 3
            }
        );
        assert!(
            err.to_string()
                .contains("3000 bytes per day (limits.peer_bytes_per_day × 3 for a county hub, limits.county_budget_cities)"),
            "{err}"
        );
        assert!(budgets.charge_sent(&"county-c", 2_500, t0).is_ok());
        assert!(budgets.charge_sent(&"city-c", 2_500, t0).is_err());
        // Reconnects are per link: a county hub gets no more than a city.
        let links = |budgets: &mut PeerBudgets<&str>, peer| {
            (0..100)
                .take_while(|_| budgets.admit(&peer, t0).is_ok())
                .count()
        };
        assert_eq!(
            links(&mut budgets, "county-d"),
            links(&mut budgets, "city-d")
        );
    }

    #[test]
    fn tokens_have_their_own_request_rates() {
        let t0 = Instant::now();
        let mut rates = TokenRates::new(1, 3, 1_000_000);
        assert!((0..3).all(|_| rates.charge("a", t0).is_ok()));
        let err = rates.charge("a", t0).unwrap_err();
        assert!(err.to_string().contains("1 requests per second (burst 3)"));
        assert!(rates.charge("b", t0).is_ok(), "another token is unaffected");
        assert!(rates.charge("a", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn a_token_that_spent_its_daily_bytes_is_refused_until_they_refill() {
        let t0 = Instant::now();
        let mut rates = TokenRates::new(1_000, 1_000, 86_400);
        rates.count_bytes("a", 50_000, t0);
        assert!(rates.charge("a", t0).is_ok(), "budget left");
        rates.count_bytes("a", 50_000, t0);
        let err = rates.charge("a", t0).unwrap_err();
        assert_eq!(err, LimitExceeded::TokenBytesPerDay { per_day: 86_400 });
        assert!(err.to_string().contains("limits.api_bytes_per_day"));
        assert!(rates.charge("b", t0).is_ok(), "another token is unaffected");
        assert!(
            rates.charge("a", t0 + Duration::from_secs(2)).is_ok(),
            "one byte per second refills"
        );
    }
}
