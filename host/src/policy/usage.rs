//! What one plugin run has used of its per-run limits (host calls, generated tokens,
//! embedding inputs), and the refusals it has been told about.
//!
//! One `RunUsage` lives as long as one run. The runtime shares it (behind an `Arc`) with
//! the futures of that run's host calls, so counters are atomics; the calls of one run
//! are serialised by its store anyway, so there is no race between check and charge.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::limits::{Limit, Refusal};
use super::Policy;
use crate::error::{LanternError, LanternResult};

/// A run's consumption, reported in [`RunOutput`](crate::RunOutput).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Calls into `lantern:ai` interfaces (refused ones included).
    pub host_calls: u64,
    /// Tokens charged to the run: generated ones, plus the whole request of a generation
    /// dropped before it finished (the host cannot tell how far it got).
    pub generated_tokens: u64,
    /// Texts and images handed to embedding models.
    pub embed_inputs: u64,
    /// CPU time of the run on the host's async threads (the guest's own code and the
    /// host's glue; not model work on worker threads, not waiting).
    pub cpu_time: Duration,
}

pub struct RunUsage {
    /// The plugin's name, tagged on refusal log lines.
    plugin: String,
    host_calls: AtomicU64,
    generated_tokens: AtomicU64,
    embed_inputs: AtomicU64,
    /// Limits already logged: a plugin that keeps hitting one limit gets one warning,
    /// not a line per call (the later ones are logged at debug level).
    logged: Mutex<BTreeSet<Limit>>,
}

impl RunUsage {
    pub fn new(plugin: &str) -> Self {
        RunUsage {
            plugin: plugin.to_string(),
            host_calls: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            embed_inputs: AtomicU64::new(0),
            logged: Mutex::new(BTreeSet::new()),
        }
    }

    /// Logs `refusal` (one warning per limit per run, naming the flag and the policy key
    /// that raise it) and turns it into the plugin's `limit-exceeded` error.
    pub fn refuse(&self, refusal: Refusal) -> LanternError {
        let first = self.logged.lock().map(|mut logged| logged.insert(refusal.limit)).unwrap_or(true);
        let plugin = self.plugin.as_str();
        let (flag, key) = (refusal.limit.flag(), refusal.limit.key());
        if first {
            tracing::warn!(plugin, limit = key, flag, "refused: {refusal}");
        } else {
            tracing::debug!(plugin, limit = key, flag, "refused again: {refusal}");
        }
        refusal.into()
    }

    /// Counts one call into a `lantern:ai` interface; refuses it past `max_host_calls`.
    pub fn host_call(&self, policy: &Policy) -> LanternResult<()> {
        let count = self.host_calls.fetch_add(1, Ordering::Relaxed) + 1;
        if count > policy.max_host_calls {
            return Err(self.refuse(Limit::HostCalls.refusal(format!(
                "this run has made {} host calls; the limit is {}",
                count - 1,
                policy.max_host_calls
            ))));
        }
        Ok(())
    }

    /// Charges `tokens` (a generation's `max-tokens`) to the run up front, so the run's
    /// budget holds however the generation ends; [`Self::settle_tokens`] gives back what
    /// was not generated.
    pub fn reserve_tokens(&self, policy: &Policy, tokens: u64) -> LanternResult<()> {
        let limit = policy.max_generated_tokens_per_run;
        let charged = self.generated_tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(tokens).filter(|total| *total <= limit)
        });
        charged.map(|_| ()).map_err(|used| {
            self.refuse(Limit::GeneratedTokensPerRun.refusal(format!(
                "a generation of up to {tokens} tokens after {used} already charged to this run is over its limit of {limit}"
            )))
        })
    }

    /// A generation that reserved `reserved` tokens finished after `generated`.
    pub fn settle_tokens(&self, reserved: u64, generated: u64) {
        let unused = reserved.saturating_sub(generated);
        let _ = self.generated_tokens.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| Some(used.saturating_sub(unused)));
    }

    /// Charges `count` embedding inputs (texts or images) to the run.
    pub fn embed_inputs(&self, policy: &Policy, count: u64) -> LanternResult<()> {
        let limit = policy.max_embed_inputs_per_run;
        let charged = self.embed_inputs.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(count).filter(|total| *total <= limit)
        });
        charged.map(|_| ()).map_err(|used| {
            self.refuse(Limit::EmbedInputsPerRun.refusal(format!(
                "{count} more inputs after {used} embedded in this run is over its limit of {limit}"
            )))
        })
    }

    /// What the run has used so far (`cpu_time` is the runtime's to fill in).
    pub fn report(&self) -> UsageReport {
        UsageReport {
            host_calls: self.host_calls.load(Ordering::Relaxed),
            generated_tokens: self.generated_tokens.load(Ordering::Relaxed),
            embed_inputs: self.embed_inputs.load(Ordering::Relaxed),
            cpu_time: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_run_budgets_add_up_and_refunds_return_what_was_not_used() {
        let policy = Policy { max_generated_tokens_per_run: 100, max_embed_inputs_per_run: 5, max_host_calls: 2, ..Policy::default() };
        let usage = RunUsage::new("test");
        usage.reserve_tokens(&policy, 60).unwrap();
        assert!(matches!(usage.reserve_tokens(&policy, 60), Err(LanternError::LimitExceeded(_))));
        usage.settle_tokens(60, 10);
        usage.reserve_tokens(&policy, 60).unwrap();
        assert_eq!(usage.report().generated_tokens, 70);

        usage.embed_inputs(&policy, 5).unwrap();
        let Err(LanternError::LimitExceeded(message)) = usage.embed_inputs(&policy, 1) else { panic!() };
        assert!(message.contains("--max-embed-inputs-per-run") && message.contains("limits.max_embed_inputs_per_run"), "{message}");

        usage.host_call(&policy).unwrap();
        usage.host_call(&policy).unwrap();
        assert!(usage.host_call(&policy).is_err());
    }
}
