//! What one plugin instance's store holds: its WASI context (no ambient authority), its
//! resource table, its limits, its policy and the shared model registry.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::RunLimits;
use crate::error::LanternResult;
use crate::policy::{Policy, RunUsage};
use crate::registry::ModelRegistry;

pub struct PluginState {
    /// The plugin's name (file stem), tagged on its log lines.
    pub plugin: String,
    pub policy: Arc<Policy>,
    pub registry: Arc<ModelRegistry>,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: RunLimits,
    /// Generation streams this plugin holds (bounded by policy).
    pub open_generations: usize,
    /// What this run has used of its per-run limits.
    pub usage: Arc<RunUsage>,
    /// Tokens reserved by each open text stream (by resource handle), given back as
    /// the stream reports how many it generated.
    pub token_reservations: std::collections::HashMap<u32, u64>,
}

/// The trap that ends a run when a host call goes over the run's host-call limit and
/// has no error to return it as (a WASI call, logging, `allowed`); the runtime reports
/// it as [`PluginError::LimitExceeded`](super::PluginError::LimitExceeded).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitTrap(pub String);

impl LimitTrap {
    /// The trap for a refusal that has no other way to reach the plugin.
    pub fn from_refusal(error: crate::error::LanternError) -> wasmtime::Error {
        let message = match error {
            crate::error::LanternError::LimitExceeded(message) => message,
            other => other.to_string(),
        };
        wasmtime::Error::new(LimitTrap(message))
    }
}

impl PluginState {
    /// Asked first by a `lantern:ai` call that can fail: `Err` is the typed refusal of
    /// the call that went over the run's host-call limit. The call was counted by the
    /// store's call hook, with every other host call (see `policy/usage.rs`).
    pub fn host_call(&self) -> LanternResult<()> {
        self.usage.host_call(&self.policy)
    }

    /// The same for a call that cannot return an error: past the limit it ends the run
    /// before doing anything (the call hook would end it as it returns anyway).
    pub fn infallible_host_call(&self) -> wasmtime::Result<()> {
        self.host_call().map_err(LimitTrap::from_refusal)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
