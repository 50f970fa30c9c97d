//! What one plugin run has used of its per-run limits (host calls, generated tokens,
//! embedding inputs), and the refusals it has been told about.
//!
//! One `RunUsage` lives as long as one run. The runtime shares it (behind an `Arc`) with
//! the futures of that run's host calls, so counters are atomics; the calls of one run
//! are serialised by its store anyway, so there is no race between check and charge.
//!
//! Host calls are counted in one place, the store's call hook (`runtime/mod.rs`), which
//! wasmtime runs on every call from the guest into the host: WASI imports and
//! `lantern:ai` ones alike, so a plugin cannot flood the host through `wasi:clocks` or
//! stdout instead. The hook cannot tell which import is called, so the call that goes
//! over the limit is only marked: a `lantern:ai` call that can fail refuses itself with
//! the typed `limit-exceeded` error ([`RunUsage::host_call`]); any other call (WASI, or
//! one with no error to return) ends the run when it returns
//! ([`RunUsage::host_call_returned`]).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::limits::{Limit, Refusal};
use super::Policy;
use crate::error::{LanternError, LanternResult};

/// A run's consumption, reported in [`RunOutput`](crate::RunOutput).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Calls from the plugin into the host: `lantern:ai` and WASI imports alike (refused
    /// calls included), and drops of resources the host handed out (each counts as two:
    /// wasmtime runs a drop as a call into the runtime, then one into the host). The
    /// runtime's own epoch ticks and memory growth are not calls.
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
    /// Host calls under way: a host call can lead to nested ones (lowering its result
    /// runs the guest's allocator, which may grow memory).
    open_host_calls: AtomicU32,
    /// The nesting depth of the open host call that went over `max_host_calls` and has
    /// been neither refused nor ended yet; 0 when there is none.
    over_limit_call: AtomicU32,
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
            open_host_calls: AtomicU32::new(0),
            over_limit_call: AtomicU32::new(0),
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

    /// The call hook, as the guest calls into the host: counts the call, and marks it
    /// when it is past `limit` (see the module's comment for what then happens to it).
    ///
    /// This runs on every host call, so it is cheap: a plain load and store per counter
    /// rather than a locked read-modify-write, which is safe because only the run's own
    /// store writes them (its hook and its host calls, one at a time).
    pub fn host_call_entered(&self, limit: u64) {
        let depth = self.open_host_calls.load(Ordering::Relaxed) + 1;
        self.open_host_calls.store(depth, Ordering::Relaxed);
        let count = self.host_calls.load(Ordering::Relaxed) + 1;
        self.host_calls.store(count, Ordering::Relaxed);
        // An outer call already marked ends the run anyway; keep its mark.
        if count > limit && self.over_limit_call.load(Ordering::Relaxed) == 0 {
            self.over_limit_call.store(depth, Ordering::Relaxed);
        }
    }

    /// The call hook, as the innermost host call returns to the guest: `Err` (logged once)
    /// when that call went over `limit` and did not refuse itself, a WASI call or one that
    /// has no error to return; the runtime ends the run with it.
    pub fn host_call_returned(&self, limit: u64) -> LanternResult<()> {
        let depth = self.open_host_calls.load(Ordering::Relaxed);
        self.open_host_calls.store(depth.saturating_sub(1), Ordering::Relaxed);
        if depth != 0 && self.over_limit_call.load(Ordering::Relaxed) == depth {
            self.over_limit_call.store(0, Ordering::Relaxed);
            return Err(self.host_calls_refusal(limit));
        }
        Ok(())
    }

    /// The innermost open "host call" is the runtime's own, not one the plugin made (an
    /// epoch tick, which comes with time, or memory growth, which the memory limit bounds):
    /// it is not counted. Outside any host call (instantiation) there is nothing to take back.
    pub fn not_a_host_call(&self) {
        let depth = self.open_host_calls.load(Ordering::Relaxed);
        if depth == 0 {
            return;
        }
        let count = self.host_calls.load(Ordering::Relaxed);
        self.host_calls.store(count.saturating_sub(1), Ordering::Relaxed);
        if self.over_limit_call.load(Ordering::Relaxed) == depth {
            self.over_limit_call.store(0, Ordering::Relaxed);
        }
    }

    /// Asked by each `lantern:ai` call that can fail, first thing: `Err`, the typed refusal
    /// (logged once), when this call is the one the call hook found past `max_host_calls`.
    /// It does not count the call: the hook did.
    pub fn host_call(&self, policy: &Policy) -> LanternResult<()> {
        let depth = self.open_host_calls.load(Ordering::Relaxed);
        if depth != 0 && self.over_limit_call.load(Ordering::Relaxed) == depth {
            self.over_limit_call.store(0, Ordering::Relaxed);
            return Err(self.host_calls_refusal(policy.max_host_calls));
        }
        Ok(())
    }

    fn host_calls_refusal(&self, limit: u64) -> LanternError {
        let made = self.host_calls.load(Ordering::Relaxed).saturating_sub(1);
        self.refuse(Limit::HostCalls.refusal(format!(
            "this run has made {made} host calls (WASI calls included); the limit is {limit}"
        )))
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
        let policy = Policy { max_generated_tokens_per_run: 100, max_embed_inputs_per_run: 5, ..Policy::default() };
        let usage = RunUsage::new("test");
        usage.reserve_tokens(&policy, 60).unwrap();
        assert!(matches!(usage.reserve_tokens(&policy, 60), Err(LanternError::LimitExceeded(_))));
        usage.settle_tokens(60, 10);
        usage.reserve_tokens(&policy, 60).unwrap();
        assert_eq!(usage.report().generated_tokens, 70);

        usage.embed_inputs(&policy, 5).unwrap();
        let Err(LanternError::LimitExceeded(message)) = usage.embed_inputs(&policy, 1) else { panic!() };
        assert!(message.contains("--max-embed-inputs-per-run") && message.contains("limits.max_embed_inputs_per_run"), "{message}");
    }

    /// One host call as the runtime's call hook brackets it, with `body` as the host function.
    fn call(usage: &RunUsage, limit: u64, body: impl FnOnce()) -> LanternResult<()> {
        usage.host_call_entered(limit);
        body();
        usage.host_call_returned(limit)
    }

    #[test]
    fn host_calls_past_the_limit_are_refused_typed_or_end_the_run() {
        let policy = Policy { max_host_calls: 2, ..Policy::default() };
        let usage = RunUsage::new("test");
        let answered = std::cell::Cell::new(None);
        let lantern_call = || answered.set(Some(usage.host_call(&policy).is_ok()));
        // Two calls of any kind are within the limit.
        call(&usage, 2, || {}).unwrap();
        call(&usage, 2, lantern_call).unwrap();
        assert_eq!(answered.get(), Some(true));
        // The third, a `lantern:ai` call: refused typed, and the run goes on.
        call(&usage, 2, lantern_call).unwrap();
        assert_eq!(answered.get(), Some(false));
        // The fourth, a WASI call: nothing refuses it, so it ends the run as it returns.
        let Err(LanternError::LimitExceeded(message)) = call(&usage, 2, || {}) else { panic!() };
        assert!(message.contains("made 3 host calls") && message.contains("--max-host-calls"), "{message}");
        assert_eq!(usage.report().host_calls, 4);
    }

    #[test]
    fn the_runtime_s_own_exits_are_not_host_calls() {
        let usage = RunUsage::new("test");
        // Instantiation grows memory outside any host call: nothing to take back.
        usage.not_a_host_call();
        // An epoch tick past the limit is not a call, and does not end the run.
        usage.host_call_entered(1);
        usage.not_a_host_call();
        usage.host_call_returned(1).unwrap();
        assert_eq!(usage.report().host_calls, 0);
        // A lantern:ai call within the limit whose result lowering grows memory.
        usage.host_call_entered(1);
        usage.host_call(&Policy { max_host_calls: 1, ..Policy::default() }).unwrap();
        usage.host_call_entered(1);
        usage.not_a_host_call();
        usage.host_call_returned(1).unwrap();
        usage.host_call_returned(1).unwrap();
        // A WASI call past the limit whose result lowering grows memory: the outer call,
        // not the growth, ends the run.
        usage.host_call_entered(1);
        usage.host_call_entered(1);
        usage.not_a_host_call();
        usage.host_call_returned(1).unwrap();
        assert!(usage.host_call_returned(1).is_err());
        assert_eq!(usage.report().host_calls, 2);
    }
}
