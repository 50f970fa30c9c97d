//! The store's resource limiter: wasmtime's `StoreLimits`, plus a record of whether a
//! memory growth was refused, so a guest that aborts after its allocation failed is
//! reported as out of memory rather than as an anonymous trap.
//!
//! It also tells the host-call count that a growth is not a host call: wasmtime runs
//! `memory.grow` and `table.grow` as calls into the runtime, which its call hook sees
//! like any import, but the memory limit, not the host-call limit, is what bounds them.

use std::sync::Arc;

use wasmtime::{ResourceLimiter, StoreLimits};

use crate::policy::RunUsage;

pub struct RunLimits {
    limits: StoreLimits,
    memory_refused: bool,
    usage: Arc<RunUsage>,
}

impl RunLimits {
    pub fn new(limits: StoreLimits, usage: Arc<RunUsage>) -> Self {
        RunLimits { limits, memory_refused: false, usage }
    }

    /// True once the plugin asked for more linear memory than it may have.
    pub fn memory_refused(&self) -> bool {
        self.memory_refused
    }
}

impl ResourceLimiter for RunLimits {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.usage.not_a_host_call();
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        self.memory_refused |= !allowed;
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_refused = true;
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.usage.not_a_host_call();
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}
