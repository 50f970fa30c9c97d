//! What one plugin instance's store holds: its WASI context (no ambient authority), its
//! resource table, its limits, its policy and the shared model registry.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::RunLimits;
use crate::policy::Policy;
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
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
