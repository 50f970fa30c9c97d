//! wasmtime: the engine, the linker, plugin components and their sandboxed runs.
//!
//! Each `run` gets a fresh store: WASI with no preopened directories, no network, no
//! environment (unless the policy grants them), a memory limit, and epoch interruption
//! that makes a busy guest yield to the async runtime every tick, so a plugin stuck in a
//! loop cannot starve other plugins, and a timeout can stop it. The store's call hook
//! counts every call the guest makes into the host, WASI's included, against the run's
//! host-call limit (see `policy/usage.rs`).
//!
//! A plugin is compiled once (through the on-disk [`CompileCache`] when the host has one)
//! and its imports are resolved once, at load, into an `InstancePre`; a run only
//! instantiates it. A run that traps ends with a [`PluginError`] naming why: its timeout,
//! its memory limit, a stack overflow, or the trap with what the guest printed last.

pub mod bindings;
pub mod compile_cache;
mod cpu;
mod host_embeddings;
mod host_generation;
mod host_images;
mod host_logging;
mod host_models;
pub mod inspect;
mod limits;
mod state;
pub mod streams;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{CallHook, Config, Engine, Store, StoreLimitsBuilder, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::policy::{Limit, Policy, RunUsage, UsageReport};
use crate::registry::ModelRegistry;
use bindings::PipelinePre;
pub use compile_cache::{CacheOutcome, CacheSize, CompileCache};
use limits::RunLimits;
pub use state::PluginState;
use state::LimitTrap;

/// How often the epoch advances; a running guest yields to the runtime at each tick.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Most bytes of stdout/stderr kept when a run captures them.
const CAPTURE_LIMIT: usize = 16 << 20;

/// Most bytes of a trapped plugin's captured stderr quoted in its error.
const STDERR_TAIL: usize = 2048;

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
    #[error("the plugin ran out of memory: it asked for more than its limit of {limit_bytes} bytes (raise it with lantern run --max-memory-mib or `limits.max_memory_mib` in a policy file) and then trapped: {message}")]
    OutOfMemory { limit_bytes: usize, message: String },
    #[error("the plugin overflowed its call stack (unbounded recursion?): {0}")]
    StackOverflow(String),
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
    /// Imports resolved against the host's linker once, at load, so each run only
    /// instantiates; the reason it does not fit the pipeline world otherwise.
    pre: Result<PipelinePre<PluginState>, String>,
    /// Whether the compile cache served this plugin (`None`: no cache in use).
    cache: Option<CacheOutcome>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn component(&self) -> &Component {
        &self.component
    }

    /// What the compile cache did when this plugin was loaded; `None` without a cache.
    pub fn compile_cache_outcome(&self) -> Option<CacheOutcome> {
        self.cache
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
    cache: Option<CompileCache>,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    /// A runtime that compiles every plugin it loads.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_compile_cache(None)
    }

    /// A runtime that keeps compiled plugins in `cache` (see [`CompileCache`]).
    pub fn with_compile_cache(cache: Option<CompileCache>) -> anyhow::Result<Self> {
        Self::with_options(cache, false)
    }

    /// `pooling`: instances, memories and fiber stacks come from wasmtime's pooling
    /// allocator (1,000 slots) instead of being mapped per run.
    pub fn with_options(cache: Option<CompileCache>, pooling: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true);
        if pooling {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(Default::default()));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::Pipeline::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(PluginRuntime { engine, linker, cache, _ticker: ticker })
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
        let (component, cache) = match &self.cache {
            Some(cache) => {
                let (component, outcome) = cache.load(&self.engine, bytes).map_err(|e| invalid(format!("{e:#}")))?;
                (component, Some(outcome))
            }
            None => (Component::new(&self.engine, bytes).map_err(|e| invalid(format!("{e:#}")))?, None),
        };
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(PipelinePre::new)
            .map_err(|e| format!("{e:#}"));
        Ok(Plugin { name: name.to_string(), component, pre, cache })
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
        plugin.pre.as_ref().map(|_| ()).map_err(|message| PluginError::WorldMismatch(message.clone()))
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
        let pre = plugin.pre.clone().map_err(PluginError::WorldMismatch)?;
        let limits = StoreLimitsBuilder::new()
            .memory_size(policy.max_memory_bytes)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let usage = Arc::new(RunUsage::new(&plugin.name));
        let limits = RunLimits::new(limits, usage.clone());
        let memory_limit = policy.max_memory_bytes;
        let (timeout, cpu_budget, host_call_limit) = (policy.timeout, policy.cpu_budget, policy.max_host_calls);
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
        // wasmtime has no per-call hook on the linker, and WASI's functions are its own;
        // the store's call hook is the one place that sees every call into the host, WASI
        // and lantern:ai alike, so it is where they are counted (once: the lantern:ai
        // functions only ask whether they are the call that went over).
        let meter = usage.clone();
        store.call_hook(move |_, hook| {
            match hook {
                CallHook::CallingHost => meter.host_call_entered(host_call_limit),
                CallHook::ReturningFromHost => meter.host_call_returned(host_call_limit).map_err(LimitTrap::from_refusal)?,
                CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
        store.set_epoch_deadline(1);
        // Yield to the async runtime at every tick (as `epoch_deadline_async_yield_and_update`
        // would); the tick reaches the call hook as a call into the runtime, which the plugin
        // did not make: it is not counted, or a long computation would run out of host calls.
        store.epoch_deadline_callback(|store| {
            store.data().usage.not_a_host_call();
            Ok(UpdateDeadline::Yield(1))
        });

        let call = async {
            // Instantiation runs guest code too (start functions): a trap there is the plugin's.
            let pipeline = pre.instantiate_async(&mut store).await?;
            pipeline.call_run(&mut store, &args).await
        };
        let metered = cpu::metered(call, cpu_budget);
        let (outcome, cpu_time) = match timeout {
            Some(limit) => tokio::time::timeout(limit, metered).await.map_err(|_| PluginError::Timeout(limit))?,
            None => metered.await,
        };
        let result = match outcome {
            cpu::Metered::Done(result) => result,
            cpu::Metered::OverBudget(used) => {
                let budget = cpu_budget.unwrap_or_default();
                let refusal = Limit::CpuBudget.refusal(format!("{used:.2?} of CPU time is over this run's budget of {budget:?}"));
                usage.refuse(refusal.clone());
                return Err(PluginError::LimitExceeded(refusal.to_string()));
            }
        };
        let result = result.map_err(|error| {
            // A host call with no error to return (WASI's, logging) went over the host-call limit.
            if let Some(LimitTrap(message)) = error.downcast_ref::<LimitTrap>() {
                return PluginError::LimitExceeded(message.clone());
            }
            // A captured run returns no output when it traps, so what the guest said last
            // (a Rust panic prints its message to stderr before aborting) goes in the error.
            let said = captured.as_ref().map(|(_, err)| stderr_tail(&err.contents())).unwrap_or_default();
            let memory_refused = store.data().limits.memory_refused();
            if memory_refused {
                let mib = memory_limit >> 20;
                usage.refuse(Limit::Memory.refusal(format!("the plugin was refused memory past its limit of {mib} MiB")));
            }
            trap_error(error, memory_refused, memory_limit, &said)
        })?;
        let (stdout, stderr) = captured
            .map(|(out, err)| (out.contents().to_vec(), err.contents().to_vec()))
            .unwrap_or_default();
        Ok(RunOutput { result, stdout, stderr, usage: UsageReport { cpu_time, ..usage.report() } })
    }
}

/// Names why a run trapped: its memory limit, a stack overflow, or another trap.
fn trap_error(error: wasmtime::Error, memory_refused: bool, limit_bytes: usize, stderr: &str) -> PluginError {
    let message = match stderr {
        "" => format!("{error:#}"),
        said => format!("{error:#}\nthe plugin's stderr ended with:\n{said}"),
    };
    if error.downcast_ref::<Trap>() == Some(&Trap::StackOverflow) {
        return PluginError::StackOverflow(message);
    }
    // A guest whose allocation was refused usually aborts (Rust's alloc error handler
    // executes `unreachable`): the refusal, not the abort, is what the user must know.
    if memory_refused {
        return PluginError::OutOfMemory { limit_bytes, message };
    }
    PluginError::Trap(message)
}

/// The last lines of a plugin's stderr, at most [`STDERR_TAIL`] bytes, for an error message.
fn stderr_tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&stderr[start..]).trim().to_string()
}

/// True when `bytes` is a core module (version 1) rather than a component.
fn wasmparser_is_core_module(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0]
}
