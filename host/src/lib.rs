//! Lantern: a wasmtime host that gives sandboxed WebAssembly plugins safe, fast access
//! to machine-learning models.
//!
//! The contract is the WIT package in `wit/` (`lantern:ai@0.1.0`). This crate is the
//! host: embed it in a program with [`Host`], or use the `lantern` CLI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use lantern::{Host, Policy, Stdio};
//! let host = Host::builder().build()?;            // HF_* environment for downloads
//! let plugin = host.load_plugin("semantic_search.wasm".as_ref())?;
//! let policy = Policy::default().allow_model("sentence-transformers/all-MiniLM-L6-v2");
//! let output = host.run(&plugin, policy, vec!["query".into()], Stdio::Inherit).await?;
//! println!("{}", output.result.unwrap_or_else(|e| e));
//! # Ok(()) }
//! ```
//!
//! Data flows one way: a plugin call enters [`runtime`] (WIT host implementations:
//! check policy, translate types), which asks the [`registry::ModelRegistry`] for a
//! model; the registry resolves the key in the [`catalog`], awaits the [`hub`] for all
//! of the model's files at once, and loads the family (from [`families`]) on a worker
//! thread. Nothing below `runtime` knows about wasm; nothing outside `hub` knows HTTP.

pub mod allocator;
pub mod batching;
pub mod capabilities;
pub mod catalog;
pub mod device;
pub mod error;
pub mod families;
pub mod hub;
pub mod image_codec;
pub mod kernels;
pub mod memory_budget;
pub mod policy;
pub mod registry;
pub mod runtime;
pub mod streaming;

use std::path::Path;
use std::sync::Arc;

pub use capabilities::Capability;
pub use catalog::{Catalog, CatalogEntry, Family};
pub use device::DeviceChoice;
pub use error::{LanternError, LanternResult};
pub use hub::{Hub, HubConfig};
pub use policy::{DirGrant, Limit, ModelAllowList, Policy, PolicyFileError, UsageReport};
pub use registry::{Activity, ModelRegistry};
pub use runtime::{CacheOutcome, CacheSize, CompileCache, Plugin, PluginError, RunOutput, Stdio};

/// The embeddable host: one wasmtime engine and one model registry shared by every
/// plugin it runs. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Host {
    runtime: runtime::PluginRuntime,
    registry: Arc<ModelRegistry>,
}

/// Configures a [`Host`].
#[derive(Default)]
pub struct HostBuilder {
    hub: Option<HubConfig>,
    catalog: Option<Catalog>,
    memory_budget: Option<u64>,
    batch_policy: Option<batching::BatchPolicy>,
    observer: Option<registry::ActivityObserver>,
    compile_cache: Option<CompileCache>,
    compile_cache_max_bytes: Option<u64>,
    pooling: bool,
    device: DeviceChoice,
    /// `None` (the default): [`allocator::DEFAULT_ARENAS`]; `Some(None)`: left alone.
    arenas: Option<Option<usize>>,
}

impl HostBuilder {
    /// Download and cache settings; default: [`HubConfig::from_env`] (the `HF_*` variables).
    pub fn hub_config(mut self, config: HubConfig) -> Self {
        self.hub = Some(config);
        self
    }

    /// The models the host can serve; default: [`Catalog::builtin`].
    pub fn catalog(mut self, catalog: Catalog) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Bytes of model weights kept loaded; idle models beyond it are unloaded, least
    /// recently used first. Default: [`memory_budget::DEFAULT_BUDGET_BYTES`] (8 GiB).
    pub fn model_memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = Some(bytes);
        self
    }

    /// How concurrent embedding requests are merged; default [`batching::BatchPolicy::default`].
    pub fn batch_policy(mut self, policy: batching::BatchPolicy) -> Self {
        self.batch_policy = Some(policy);
        self
    }

    /// Reports downloads and image steps of every plugin's requests (progress bars,
    /// metrics). Default: none.
    pub fn observer(mut self, observer: registry::ActivityObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Keeps compiled plugins in `dir`, so loading the same plugin again skips the
    /// compile (see [`CompileCache`]; the CLI uses [`CompileCache::default_dir`]).
    /// Default: no cache, every load compiles.
    pub fn compile_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.compile_cache = Some(CompileCache::new(dir));
        self
    }

    /// Most bytes the compile cache keeps; past it, storing a new entry removes the least
    /// recently used ones. Default: [`runtime::compile_cache::DEFAULT_MAX_BYTES`] (1 GiB).
    pub fn compile_cache_max_bytes(mut self, bytes: u64) -> Self {
        self.compile_cache_max_bytes = Some(bytes);
        self
    }

    /// Allocates plugin instances from wasmtime's pooling allocator. Default: off (see
    /// BENCHMARKS.md, "Plugin start").
    pub fn pooling_allocator(mut self, pooling: bool) -> Self {
        self.pooling = pooling;
        self
    }

    /// Where models run: [`DeviceChoice::Cpu`] (the default), a CUDA device (builds with
    /// the `cuda` feature), or [`DeviceChoice::Auto`]. [`HostBuilder::build`] fails when
    /// an explicit CUDA device cannot be opened, naming why.
    pub fn device(mut self, device: DeviceChoice) -> Self {
        self.device = device;
        self
    }

    /// Caps glibc's malloc arenas for the whole process at `arenas` (see [`allocator`]);
    /// `None` leaves the allocator as the program set it. Default:
    /// `Some(`[`allocator::DEFAULT_ARENAS`]`)`, unless `MALLOC_ARENA_MAX` is set.
    pub fn allocator_arenas(mut self, arenas: Option<usize>) -> Self {
        self.arenas = Some(arenas);
        self
    }

    pub fn build(self) -> anyhow::Result<Host> {
        if let Some(arenas) = self.arenas.unwrap_or(Some(allocator::DEFAULT_ARENAS)) {
            allocator::limit_arenas(arenas);
        }
        let hub = Hub::new(self.hub.unwrap_or_else(HubConfig::from_env))?;
        let device = self.device.resolve()?;
        let registry = ModelRegistry::new(self.catalog.unwrap_or_else(Catalog::builtin), hub, device)
            .with_memory_budget(self.memory_budget.unwrap_or(memory_budget::DEFAULT_BUDGET_BYTES))
            .with_batch_policy(self.batch_policy.unwrap_or_default());
        let registry = match self.observer {
            Some(observer) => registry.with_observer(observer),
            None => registry,
        };
        let compile_cache = match (self.compile_cache, self.compile_cache_max_bytes) {
            (Some(cache), Some(bytes)) => Some(cache.with_max_bytes(bytes)),
            (cache, _) => cache,
        };
        Ok(Host { runtime: runtime::PluginRuntime::with_options(compile_cache, self.pooling)?, registry: Arc::new(registry) })
    }
}

impl Host {
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// The models, shared by every plugin; usable directly from Rust too.
    pub fn registry(&self) -> &Arc<ModelRegistry> {
        &self.registry
    }

    /// Compiles a plugin component from a file.
    pub fn load_plugin(&self, path: &Path) -> Result<Plugin, PluginError> {
        self.runtime.load_file(path)
    }

    /// Compiles a plugin component from bytes; `name` tags its logs.
    pub fn load_plugin_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        self.runtime.load_bytes(name, bytes)
    }

    /// Checks that a plugin fits the pipeline world, without running it.
    pub fn check_plugin(&self, plugin: &Plugin) -> Result<(), PluginError> {
        self.runtime.check(plugin)
    }

    /// Runs a plugin's `run(args)` in a fresh sandbox under `policy`.
    pub async fn run(&self, plugin: &Plugin, policy: Policy, args: Vec<String>, stdio: Stdio) -> Result<RunOutput, PluginError> {
        self.runtime.run(self.registry.clone(), plugin, policy, args, stdio).await
    }
}
