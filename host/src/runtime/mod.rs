//! wasmtime: the engine, the linker, plugin components and their sandboxed runs.
//!
//! Each `run` gets a fresh store: WASI with no preopened directories, no network, no
//! environment (unless the policy grants them), a memory limit, and epoch interruption
//! that makes a busy guest yield to the async runtime every tick, so a plugin stuck in a
//! loop cannot starve other plugins, and a timeout can stop it.

pub mod bindings;
mod cpu;
mod host_embeddings;
mod host_generation;
mod host_images;
mod host_logging;
mod host_models;
pub mod inspect;
mod state;
pub mod streams;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::policy::{Limit, Policy, RunUsage, UsageReport};
use crate::registry::ModelRegistry;
pub use state::PluginState;
use state::LimitTrap;

/// How often the epoch advances; a running guest yields to the runtime at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most bytes of stdout/stderr kept when a run captures them.
const CAPTURE_LIMIT: usize = 16 << 20;

/// Why a plugin could not be loaded or run.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("{path} is not a valid WebAssembly component: {message}")]
    InvalidComponent { path: String, message: String },
    #[error("the plugin does not fit the lantern:ai/pipeline world: {0}")]
    WorldMismatch(String),
    #[error("cannot grant directory {path}: {message}")]
    Grant { path: String, message: String },
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin ran past its time limit of {0:?} (raise it with lantern run --timeout or `limits.timeout_seconds` in a policy file)")]
    Timeout(Duration),
    /// A limit that ends the run rather than refusing one call: the CPU budget, or the
    /// host-call limit reached by a call that has no error to return.
    #[error("the plugin went over a limit: {0}")]
    LimitExceeded(String),
}

/// Where a plugin's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stdio {
    /// The host process's own stdin/stdout/stderr (the CLI).
    #[default]
    Inherit,
    /// Kept in memory and returned in [`RunOutput`] (tests, embedding programs).
    Capture,
}

/// What a finished run produced.
#[derive(Debug)]
pub struct RunOutput {
    /// The plugin's own answer: `Ok(text)` or the `Err(text)` it returned.
    pub result: Result<String, String>,
    /// Captured stdout/stderr (empty unless [`Stdio::Capture`]).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// What the run used of its per-run limits.
    pub usage: UsageReport,
}

/// A compiled plugin, ready to run any number of times.
#[derive(Clone)]
pub struct Plugin {
    name: String,
    component: Component,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn component(&self) -> &Component {
        &self.component
    }
}

/// Advances the engine's epoch from a thread of its own until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lantern-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch thread");
        EpochTicker { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The wasmtime side of the host: one engine and linker for all plugins.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    pub fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Pipeline::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(PluginRuntime { engine, linker, _ticker: ticker })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a plugin from its bytes. `name` tags its log lines.
    pub fn load_bytes(&self, name: &str, bytes: &[u8]) -> Result<Plugin, PluginError> {
        let invalid = |message: String| PluginError::InvalidComponent { path: name.to_string(), message };
        if wasmparser_is_core_module(bytes) {
            return Err(invalid(
                "this is a core WebAssembly module, not a component; build the plugin for the wasm32-wasip2 \
                 target (or wrap it with `wasm-tools component new`)"
                    .into(),
            ));
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
        Ok(Plugin { name: name.to_string(), component })
    }

    /// Reads and compiles a plugin file.
    pub fn load_file(&self, path: &Path) -> Result<Plugin, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::InvalidComponent {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        })?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin".into());
        self.load_bytes(&name, &bytes).map_err(|error| match error {
            PluginError::InvalidComponent { message, .. } => {
                PluginError::InvalidComponent { path: path.display().to_string(), message }
            }
            other => other,
        })
    }

    /// Checks that every import of `plugin` is one this host provides and that it
    /// exports `run` with the pipeline world's signature, without running it.
    pub fn check(&self, plugin: &Plugin) -> Result<(), PluginError> {
        let pre = self
            .linker
            .instantiate_pre(&plugin.component)
            .map_err(|e| PluginError::WorldMismatch(format!("{e:#}")))?;
        bindings::PipelinePre::new(pre).map_err(|e| PluginError::WorldMismatch(format!("{e:#}")))?;
        Ok(())
    }

    /// Runs `plugin`'s `run` export with `args` under `policy`.
    pub async fn run(
        &self,
        registry: Arc<ModelRegistry>,
        plugin: &Plugin,
        policy: Policy,
        args: Vec<String>,
        stdio: Stdio,
    ) -> Result<RunOutput, PluginError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[plugin.name.clone()]).args(&args);
        for (key, value) in &policy.env {
            wasi.env(key, value);
        }
        for grant in &policy.dirs {
            let perms = if grant.writable { FsPerms::ReadWrite } else { FsPerms::ReadOnly };
            wasi.preopened_dir(&grant.host_path, &grant.guest_path, perms).map_err(|e| {
                PluginError::Grant { path: grant.host_path.display().to_string(), message: e.to_string() }
            })?;
        }
        let captured = match stdio {
            Stdio::Inherit => {
                wasi.inherit_stdin().inherit_stdout().inherit_stderr();
                None
            }
            Stdio::Capture => {
                let (out, err) = (MemoryOutputPipe::new(CAPTURE_LIMIT), MemoryOutputPipe::new(CAPTURE_LIMIT));
                wasi.stdout(out.clone()).stderr(err.clone());
                Some((out, err))
            }
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(policy.max_memory_bytes)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let limits = state::MemoryLimiter { limits, max_bytes: policy.max_memory_bytes, hit: false };
        let (timeout, cpu_budget) = (policy.timeout, policy.cpu_budget);
        let usage = Arc::new(RunUsage::new(&plugin.name));
        let state = PluginState {
            plugin: plugin.name.clone(),
            policy: Arc::new(policy),
            registry,
            wasi: wasi.build(),
            table: Default::default(),
            limits,
            open_generations: 0,
            usage: usage.clone(),
            token_reservations: Default::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);

        let call = async {
            let pipeline = bindings::Pipeline::instantiate_async(&mut store, &plugin.component, &self.linker)
                .await
                .map_err(|e| PluginError::WorldMismatch(format!("{e:#}")))?;
            pipeline.call_run(&mut store, &args).await.map_err(|e| match e.downcast_ref::<LimitTrap>() {
                Some(LimitTrap(message)) => PluginError::LimitExceeded(message.clone()),
                None => PluginError::Trap(format!("{e:#}")),
            })
        };
        let metered = cpu::metered(call, cpu_budget);
        let (outcome, cpu_time) = match timeout {
            Some(limit) => tokio::time::timeout(limit, metered).await.map_err(|_| PluginError::Timeout(limit))?,
            None => metered.await,
        };
        let result = match outcome {
            // A guest refused memory traps in its allocator; say which limit it was.
            cpu::Metered::Done(Err(PluginError::Trap(message))) if store.data().limits.hit => {
                let mib = store.data().limits.max_bytes >> 20;
                let refusal = Limit::Memory.refusal(format!("the plugin was refused memory past its limit of {mib} MiB"));
                usage.refuse(refusal.clone());
                return Err(PluginError::Trap(format!("{message}\n({refusal})")));
            }
            cpu::Metered::Done(result) => result?,
            cpu::Metered::OverBudget(used) => {
                let budget = cpu_budget.unwrap_or_default();
                let refusal = Limit::CpuBudget.refusal(format!("{used:.2?} of CPU time is over this run's budget of {budget:?}"));
                usage.refuse(refusal.clone());
                return Err(PluginError::LimitExceeded(refusal.to_string()));
            }
        };
        let (stdout, stderr) = captured
            .map(|(out, err)| (out.contents().to_vec(), err.contents().to_vec()))
            .unwrap_or_default();
        Ok(RunOutput { result, stdout, stderr, usage: UsageReport { cpu_time, ..usage.report() } })
    }
}

/// True when `bytes` is a core module (version 1) rather than a component.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
