//! The limits a policy sets, each with the CLI flag and the policy-file key that raise
//! it, so every refusal can tell the user exactly what to change.

use crate::error::LanternError;

/// One limit of a [`Policy`](super::Policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    Memory,
    Timeout,
    CpuBudget,
    EmbedInputs,
    EmbedInputsPerRun,
    InputBytes,
    GeneratedTokens,
    GeneratedTokensPerRun,
    OpenGenerations,
    ImageSide,
    ImageSteps,
    ImagesPerCall,
    ImageBytes,
    DecodedSide,
    HostCalls,
}

impl Limit {
    /// The `lantern run` flag that sets it.
    pub fn flag(self) -> &'static str {
        match self {
            Limit::Memory => "--max-memory-mib",
            Limit::Timeout => "--timeout",
            Limit::CpuBudget => "--cpu-budget",
            Limit::EmbedInputs => "--max-embed-inputs",
            Limit::EmbedInputsPerRun => "--max-embed-inputs-per-run",
            Limit::InputBytes => "--max-input-bytes",
            Limit::GeneratedTokens => "--max-generated-tokens",
            Limit::GeneratedTokensPerRun => "--max-generated-tokens-per-run",
            Limit::OpenGenerations => "--max-open-generations",
            Limit::ImageSide => "--max-image-side",
            Limit::ImageSteps => "--max-image-steps",
            Limit::ImagesPerCall => "--max-images-per-call",
            Limit::ImageBytes => "--max-image-bytes",
            Limit::DecodedSide => "--max-decoded-side",
            Limit::HostCalls => "--max-host-calls",
        }
    }

    /// Its key in a policy file (under `[limits]`).
    pub fn key(self) -> &'static str {
        match self {
            Limit::Memory => "limits.max_memory_mib",
            Limit::Timeout => "limits.timeout_seconds",
            Limit::CpuBudget => "limits.cpu_budget_seconds",
            Limit::EmbedInputs => "limits.max_embed_inputs",
            Limit::EmbedInputsPerRun => "limits.max_embed_inputs_per_run",
            Limit::InputBytes => "limits.max_input_bytes",
            Limit::GeneratedTokens => "limits.max_generated_tokens",
            Limit::GeneratedTokensPerRun => "limits.max_generated_tokens_per_run",
            Limit::OpenGenerations => "limits.max_open_generations",
            Limit::ImageSide => "limits.max_image_side",
            Limit::ImageSteps => "limits.max_image_steps",
            Limit::ImagesPerCall => "limits.max_images_per_call",
            Limit::ImageBytes => "limits.max_image_bytes",
            Limit::DecodedSide => "limits.max_decoded_side",
            Limit::HostCalls => "limits.max_host_calls",
        }
    }

    /// "raise it with ..." — the tail of every refusal of this limit.
    pub fn how_to_raise(self) -> String {
        format!("raise it with lantern run {} or `{}` in a policy file", self.flag(), self.key())
    }

    /// The refusal of a request that went over this limit; `detail` says what was asked.
    pub fn refusal(self, detail: impl Into<String>) -> Refusal {
        Refusal { limit: self, detail: detail.into() }
    }
}

/// A request refused by a limit: which limit, and what was asked. The runtime logs it
/// once (see [`RunUsage::refuse`](super::RunUsage::refuse)) and hands the plugin the
/// `limit-exceeded` error it converts into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub limit: Limit,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.limit.how_to_raise())
    }
}

impl From<Refusal> for LanternError {
    fn from(refusal: Refusal) -> Self {
        LanternError::LimitExceeded(refusal.to_string())
    }
}
