//! Faults drawn at random per request, the way a flaky link and an overloaded hub mix
//! them: connection resets, server errors, rate limits, truncated bodies, flipped bytes
//! and stalls, each striking at a random byte of the body.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A share of requests that fail, each in a randomly chosen way.
#[derive(Clone, Debug)]
pub struct RandomFaults {
    /// The chance that a request is hit, from 0 to 1.
    pub rate: f64,
    /// Seed of the draws (which request gets which fault still depends on arrival order).
    pub seed: u64,
    /// How long a stall holds the connection silent (longer than a client's stall timeout
    /// makes it give up on the connection).
    pub stall: Duration,
    /// The `Retry-After` of an injected 429, in seconds.
    pub retry_after_secs: u64,
}

/// One fault, as drawn for one request. Offsets count from the start of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Injected {
    Reset { after: u64 },
    ServerError { code: u16 },
    TooManyRequests,
    Truncate { after: u64 },
    FlipByte { at: u64 },
    Stall { after: u64 },
}

impl Injected {
    /// The kind's name, as [`crate::Stats::injected_faults`] counts it.
    pub fn kind(&self) -> &'static str {
        match self {
            Injected::Reset { .. } => "reset",
            Injected::ServerError { .. } => "5xx",
            Injected::TooManyRequests => "429",
            Injected::Truncate { .. } => "truncated",
            Injected::FlipByte { .. } => "flipped byte",
            Injected::Stall { .. } => "stall",
        }
    }
}

/// A splitmix64 generator shared by the request handlers.
#[derive(Debug, Default)]
pub struct Dice(AtomicU64);

impl Dice {
    pub fn reseed(&self, seed: u64) {
        self.0.store(seed, Ordering::Relaxed);
    }

    fn next(&self) -> u64 {
        let mut z = self.0.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next() % bound
        }
    }

    fn chance(&self, rate: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < rate
    }
}

/// The fault for one request, if it is hit. `body_length` is the length of the body the
/// request would get (`None` for a HEAD): requests without body bytes can only be hit by
/// an error status.
pub fn draw(faults: &RandomFaults, dice: &Dice, body_length: Option<u64>) -> Option<Injected> {
    if !dice.chance(faults.rate) {
        return None;
    }
    let length = body_length.unwrap_or(0);
    let kinds = if length == 0 { 2 } else { 6 };
    let at = dice.below(length);
    Some(match dice.below(kinds) {
        0 => Injected::ServerError { code: [500, 502, 503][dice.below(3) as usize] },
        1 => Injected::TooManyRequests,
        2 => Injected::Reset { after: at },
        3 => Injected::Truncate { after: at },
        4 => Injected::FlipByte { at },
        _ => Injected::Stall { after: at },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn about_the_asked_share_of_requests_is_hit_with_every_kind() {
        let faults = RandomFaults { rate: 0.3, seed: 7, stall: Duration::from_secs(1), retry_after_secs: 1 };
        let dice = Dice::default();
        dice.reseed(faults.seed);
        let drawn: Vec<Injected> = (0..10_000).filter_map(|_| draw(&faults, &dice, Some(1000))).collect();
        assert!((2700..3300).contains(&drawn.len()), "{}", drawn.len());
        for kind in ["reset", "5xx", "429", "truncated", "flipped byte", "stall"] {
            assert!(drawn.iter().filter(|f| f.kind() == kind).count() > 300, "{kind}");
        }
        assert!(drawn.iter().all(|f| !matches!(f, Injected::FlipByte { at } if *at >= 1000)));
        let heads: Vec<Injected> = (0..1000).filter_map(|_| draw(&faults, &dice, None)).collect();
        assert!(heads.iter().all(|f| matches!(f, Injected::ServerError { .. } | Injected::TooManyRequests)));
    }
}
