//! Retrying transient failures: exponential backoff with jitter, `Retry-After` honoured.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::HubError;

/// How many times, and how patiently, a failed request is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included. A try that made progress resets the count.
    pub attempts: u32,
    /// Delay before the first retry; doubles with each further one.
    pub base_delay: Duration,
    /// Longest delay between tries (a server's `Retry-After` may ask for more, up to a minute).
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 6, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10) }
    }
}

/// Tries of one request or byte range in all, progress or not, per try the policy allows
/// without progress.
const MOST_TRIES_PER_ATTEMPT: u32 = 8;

/// The longest `Retry-After` obeyed, so a confused server cannot park a download for hours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RetryPolicy {
    /// The most tries of one byte range in all, progress or not: a link that delivers a
    /// little before every drop keeps a download going, but not for ever.
    pub fn most_tries(&self) -> u32 {
        self.attempts.max(1).saturating_mul(MOST_TRIES_PER_ATTEMPT)
    }

    /// The wait before retry number `retry` (1 for the first retry): a random point in the
    /// upper half of the exponential step (so clients that failed together spread out),
    /// or the server's `Retry-After` if that is longer.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let step = self.base_delay.saturating_mul(1u32 << exponent).min(self.max_delay);
        let jittered = step / 2 + step.mul_f64(random_fraction() / 2.0);
        match retry_after {
            Some(asked) => asked.min(MAX_RETRY_AFTER).max(jittered),
            None => jittered,
        }
    }
}

/// A number in [0, 1) from the standard library's per-process random hash keys.
fn random_fraction() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// How one try ended, when it did not succeed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Worth trying again (after `retry_after`, if the server said).
    Transient { error: HubError, retry_after: Option<Duration> },
    /// Trying again cannot help (not found, access denied, bad response).
    Permanent(HubError),
}

impl Failure {
    pub(super) fn transient(url: &str, message: impl Into<String>) -> Self {
        Failure::Transient { error: HubError::Http { url: url.to_string(), message: message.into() }, retry_after: None }
    }

    /// A failure of reqwest itself: everything but a malformed request is a network
    /// problem that a new connection may not have.
    pub(super) fn from_reqwest(url: &str, error: &reqwest::Error) -> Self {
        let error_text = describe(error);
        if error.is_builder() {
            Failure::Permanent(HubError::Http { url: url.to_string(), message: error_text })
        } else {
            Failure::transient(url, error_text)
        }
    }
}

/// A reqwest error with its causes, which hold the useful part ("connection reset").
pub(super) fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// True for statuses that say "try again later": timeouts, rate limits, server errors.
pub(super) fn is_transient_status(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429) || status.is_server_error()
}

/// The `Retry-After` of a response, in seconds (the HTTP-date form is rare on the Hub and ignored).
pub(super) fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let value = response.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Runs `attempt` until it succeeds, fails permanently, or has failed `policy.attempts` times.
pub(super) async fn with_retries<T, F, Fut>(policy: &RetryPolicy, mut attempt: F) -> Result<T, HubError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut failures = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(Failure::Permanent(error)) => return Err(error),
            Err(Failure::Transient { error, retry_after }) => {
                failures += 1;
                if failures >= policy.attempts.max(1) {
                    return Err(error.after_tries(failures));
                }
                let delay = policy.delay(failures, retry_after);
                tracing::debug!(%error, ?delay, failures, "transient failure; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_the_cap_and_honour_retry_after() {
        let policy = RetryPolicy { attempts: 6, base_delay: Duration::from_millis(200), max_delay: Duration::from_secs(1) };
        for _ in 0..50 {
            let first = policy.delay(1, None);
            assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(200), "{first:?}");
            let third = policy.delay(3, None);
            assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(800), "{third:?}");
            let tenth = policy.delay(10, None);
            assert!(tenth >= Duration::from_millis(500) && tenth <= Duration::from_secs(1), "{tenth:?}");
        }
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600))), MAX_RETRY_AFTER);
    }
}
