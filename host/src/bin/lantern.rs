//! The `lantern` command line: run plugins, inspect them, fetch and list models.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use lantern::hub::{names, FetchProgress, ProgressSink, RepoRef};
use lantern::{CompileCache, DirGrant, Host, Policy, Stdio};

#[derive(Parser)]
#[command(
    name = "lantern",
    version,
    about = "Run sandboxed WebAssembly plugins that use machine-learning models",
    long_about = "Run sandboxed WebAssembly plugins that use machine-learning models.\n\n\
        A plugin is a component of the lantern:ai/pipeline world (see wit/). It gets no files, \
        network or environment unless granted, and only the models you allow. Models download \
        from the Hugging Face Hub into its cache; HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_TOKEN \
        and HF_HUB_OFFLINE work as in huggingface_hub."
)]
struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// A catalog file (TOML) of models to add to the built-in ones. Default:
    /// $XDG_CONFIG_HOME/lantern/catalog.toml (~/.config/lantern/catalog.toml) when it exists.
    #[arg(long, global = true, value_name = "FILE", env = "LANTERN_CATALOG")]
    catalog: Option<PathBuf>,
    /// Compile plugins every time instead of keeping compiled ones in
    /// $XDG_CACHE_HOME/lantern/components (~/.cache/lantern/components).
    #[arg(long, global = true)]
    no_compile_cache: bool,
    /// Most MiB of compiled plugins kept; past it, the least recently used are removed.
    #[arg(long, global = true, value_name = "MIB", env = "LANTERN_COMPILE_CACHE_MAX_MIB", default_value_t = 1024)]
    compile_cache_max_mib: u64,
    /// Where models run: cpu, cuda (= cuda:0), cuda:N, or auto (the first CUDA device
    /// when this build has the `cuda` feature and one answers, else the CPU).
    #[arg(long, global = true, value_name = "DEVICE", env = "LANTERN_DEVICE", default_value = "auto")]
    device: lantern::DeviceChoice,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline plugin: `lantern run PLUGIN.wasm --allow-model KEY -- ARGS...`
    Run(RunArgs),
    /// Print the WIT world a plugin imports and exports, whether this host can run it,
    /// and what the policy (--policy FILE and the same flags as `run`) grants each import.
    Inspect {
        plugin: PathBuf,
        /// Also print every interface the plugin uses, in full.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Download a catalog model's files (or any repo's, with --files) into the cache, with progress bars.
    Pull {
        /// A catalog key (see `lantern models`), or any repo id (org/name): all its files, or --files.
        target: String,
        /// Fetch only these files of the repo TARGET.
        #[arg(long, num_args = 1.., value_name = "FILE")]
        files: Vec<String>,
        /// Branch, tag or commit of the repo (for a repo id).
        #[arg(long, default_value = "main")]
        revision: String,
    },
    /// List the catalog's models, whether they are cached, and other cached repos.
    Models,
    /// Delete a model's files from the cache and print the space freed.
    Rm {
        /// A catalog key or a repo id (org/name).
        target: String,
    },
    /// Show where compiled plugins are kept and how much they take, or delete them.
    CompileCache {
        /// Delete every compiled plugin (each compiles again on its next run).
        #[arg(long)]
        clear: bool,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// The plugin component (.wasm, built for wasm32-wasip2).
    plugin: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Arguments for the plugin, after `--`.
    #[arg(last = true)]
    args: Vec<String>,
}

/// What a plugin may do: a policy file, then flags. A flag overrides the file's value;
/// models, directories and variables given as flags are added to the file's.
#[derive(clap::Args)]
struct PolicyArgs {
    /// A policy file (TOML; see examples/policy.toml). Unknown keys are errors.
    #[arg(long, value_name = "FILE.toml")]
    policy: Option<PathBuf>,
    /// Let the plugin use this model (repeatable): a key, KEY:TAG, or ORG/* for every
    /// repo of ORG. Plugins get no model by default.
    #[arg(long = "allow-model", value_name = "KEY")]
    allow_models: Vec<String>,
    /// Let the plugin use any model.
    #[arg(long)]
    allow_all_models: bool,
    /// Grant a host directory, read-only, as HOST or HOST::GUEST (repeatable).
    #[arg(long = "dir", value_name = "HOST[::GUEST]")]
    dirs: Vec<String>,
    /// Grant a host directory read-write, as HOST or HOST::GUEST (repeatable).
    #[arg(long = "dir-rw", value_name = "HOST[::GUEST]")]
    dirs_rw: Vec<String>,
    /// Pass an environment variable NAME=VALUE to the plugin (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// Most memory the plugin may use, in MiB [default: 512].
    #[arg(long)]
    max_memory_mib: Option<usize>,
    /// Stop the plugin after this many seconds [default: none].
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Stop the plugin after this many seconds of CPU time on the host's async threads
    /// (its own code, not model work or waiting) [default: none].
    #[arg(long, value_name = "SECONDS")]
    cpu_budget: Option<f64>,
    /// Most texts in one embedding call [default: 4096].
    #[arg(long)]
    max_embed_inputs: Option<usize>,
    /// Most texts and images embedded in the whole run [default: 1000000].
    #[arg(long)]
    max_embed_inputs_per_run: Option<u64>,
    /// Most bytes of one text handed to a model [default: 1 MiB].
    #[arg(long)]
    max_input_bytes: Option<usize>,
    /// Longest plugin log message kept, in bytes [default: 16 KiB].
    #[arg(long)]
    max_log_bytes: Option<usize>,
    /// Most tokens one generation may ask for [default: 4096].
    #[arg(long)]
    max_generated_tokens: Option<usize>,
    /// Most tokens all generations of the run may produce [default: 100000].
    #[arg(long)]
    max_generated_tokens_per_run: Option<u64>,
    /// Most text and image generations open at once [default: 16].
    #[arg(long)]
    max_open_generations: Option<usize>,
    /// Widest or tallest image the plugin may generate, in pixels [default: 2048].
    #[arg(long)]
    max_image_side: Option<u32>,
    /// Most denoising steps of one generated image [default: 100].
    #[arg(long)]
    max_image_steps: Option<u32>,
    /// Most images the plugin may hand to a model in one call [default: 64].
    #[arg(long)]
    max_images_per_call: Option<usize>,
    /// Most bytes of one encoded image the plugin may hand to a model [default: 32 MiB].
    #[arg(long)]
    max_image_bytes: Option<usize>,
    /// Widest or tallest image the host decodes for the plugin, in pixels [default: 8192].
    #[arg(long)]
    max_decoded_side: Option<u32>,
    /// Most calls into the host in the run, lantern:ai and WASI ones alike [default: 1000000].
    #[arg(long)]
    max_host_calls: Option<u64>,
}

fn dir_grant(spec: &str, writable: bool) -> anyhow::Result<DirGrant> {
    let (host, guest) = match spec.split_once("::") {
        Some((host, guest)) => (host, guest.to_string()),
        None => (spec, spec.to_string()),
    };
    let host_path = PathBuf::from(host);
    anyhow::ensure!(host_path.is_dir(), "--dir {spec}: {host} is not a directory");
    Ok(DirGrant { host_path, guest_path: guest, writable })
}

fn positive_seconds(flag: &str, seconds: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{flag} must be a positive number of seconds, not {seconds}"))
}

/// The policy file (or the default policy), then the flags on top of it.
fn policy(args: &PolicyArgs) -> anyhow::Result<Policy> {
    let mut policy = match &args.policy {
        Some(path) => Policy::from_toml_file(path)?,
        None => Policy::default(),
    };
    if args.allow_all_models {
        policy = policy.allow_any_model();
    }
    for key in &args.allow_models {
        lantern::policy::check_model_pattern(key).map_err(|message| anyhow::anyhow!("--allow-model {message}"))?;
        policy = policy.allow_model(key);
    }
    for spec in &args.dirs {
        policy.dirs.push(dir_grant(spec, false)?);
    }
    for spec in &args.dirs_rw {
        policy.dirs.push(dir_grant(spec, true)?);
    }
    for pair in &args.env {
        let (name, value) = pair.split_once('=').with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
        policy.env.retain(|(existing, _)| existing != name);
        policy.env.push((name.to_string(), value.to_string()));
    }
    if let Some(seconds) = args.timeout {
        policy.timeout = Some(positive_seconds("--timeout", seconds)?);
    }
    if let Some(seconds) = args.cpu_budget {
        policy.cpu_budget = Some(positive_seconds("--cpu-budget", seconds)?);
    }
    fn set<T: Copy>(field: &mut T, flag: Option<T>) {
        if let Some(value) = flag {
            *field = value;
        }
    }
    if let Some(mib) = args.max_memory_mib {
        policy.max_memory_bytes = mib.saturating_mul(1 << 20);
    }
    set(&mut policy.max_embed_inputs, args.max_embed_inputs);
    set(&mut policy.max_embed_inputs_per_run, args.max_embed_inputs_per_run);
    set(&mut policy.max_input_bytes, args.max_input_bytes);
    set(&mut policy.max_log_bytes, args.max_log_bytes);
    set(&mut policy.max_generated_tokens, args.max_generated_tokens);
    set(&mut policy.max_generated_tokens_per_run, args.max_generated_tokens_per_run);
    set(&mut policy.max_open_generations, args.max_open_generations);
    set(&mut policy.max_image_side, args.max_image_side);
    set(&mut policy.max_image_steps, args.max_image_steps);
    set(&mut policy.max_images_per_call, args.max_images_per_call);
    set(&mut policy.max_image_bytes, args.max_image_bytes);
    set(&mut policy.max_decoded_side, args.max_decoded_side);
    set(&mut policy.max_host_calls, args.max_host_calls);
    Ok(policy)
}

async fn run(host: &Host, args: RunArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(&args.policy)?;
    let plugin = host.load_plugin(&args.plugin)?;
    let output = host.run(&plugin, policy, args.args, Stdio::Inherit).await?;
    // What the run used, to set its limits by (`-v` shows it).
    let usage = output.usage;
    tracing::info!(
        cpu = ?usage.cpu_time,
        host_calls = usage.host_calls,
        generated_tokens = usage.generated_tokens,
        embed_inputs = usage.embed_inputs,
        "run finished"
    );
    match output.result {
        Ok(text) => {
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(text) => {
            eprintln!("error: plugin {} failed: {text}", plugin.name());
            Ok(ExitCode::from(1))
        }
    }
}

fn inspect(host: &Host, path: &PathBuf, full: bool, policy_args: &PolicyArgs) -> anyhow::Result<ExitCode> {
    let policy = policy(policy_args)?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let plugin = host.load_plugin_bytes(&path.display().to_string(), &bytes)?;
    println!("{}", lantern::runtime::inspect::component_wit(&bytes, full)?.trim_end());
    let origin = policy_args.policy.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "the default policy".into());
    let grants = lantern::runtime::inspect::grants(&plugin, &policy, host.registry().catalog());
    println!("\n// what {origin} (and the flags) grant each import:\n{}", grants.trim_end());
    match host.check_plugin(&plugin) {
        Ok(()) => {
            println!("\n// fits lantern:ai/pipeline: this host can run it");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("\n// does not fit this host: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// What `lantern run` shows of the host's work on stderr: a download bar per model and a
/// step bar per image on a terminal; one line per image step otherwise.
fn activity_bars() -> lantern::registry::ActivityObserver {
    use lantern::Activity;
    use std::io::IsTerminal;
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let download_style =
        ProgressStyle::with_template("{prefix:40!} {bar:30.cyan} {bytes:>10}/{total_bytes:<10} {msg}").expect("valid template");
    let step_style = ProgressStyle::with_template("{prefix:40!} {bar:30.green} step {pos}/{len} {elapsed}").expect("valid template");
    let shown: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>> = Default::default();
    Arc::new(move |activity: Activity| {
        let mut shown = shown.lock().unwrap();
        match activity {
            Activity::Download { model, progress } if terminal => {
                let bar = shown.entry(format!("download {model}")).or_insert_with(|| {
                    bars.add(ProgressBar::new(0).with_style(download_style.clone()).with_prefix(model.clone()))
                });
                if let Some(total) = progress.model_bytes_total {
                    bar.set_length(total);
                }
                bar.set_position(progress.model_bytes_done);
                bar.set_message(format!("{}/{} files", progress.files_done, progress.files_total));
                if progress.files_done == progress.files_total {
                    bar.finish();
                }
            }
            Activity::Download { .. } => {}
            Activity::ImageStep { model, step, total } if terminal => {
                let bar = shown.entry(format!("image {model}")).or_insert_with(|| {
                    bars.add(ProgressBar::new(total as u64).with_style(step_style.clone()).with_prefix(model.clone()))
                });
                bar.set_position(step as u64);
            }
            Activity::ImageStep { model, step, total } => eprintln!("{model}: step {step}/{total}"),
            Activity::ImageFinished { model } => {
                if let Some(bar) = shown.remove(&format!("image {model}")) {
                    bar.finish();
                }
            }
        }
    })
}

/// Progress bars for one fetch: a bar per file and a total bar with the hub's rate and ETA.
fn progress_bars() -> ProgressSink {
    let bars = MultiProgress::new();
    let file_style = ProgressStyle::with_template("{msg:32!} {bar:30} {bytes:>10}/{total_bytes:<10}").expect("valid template");
    let total_style =
        ProgressStyle::with_template("{prefix:32!} {bar:30.cyan} {bytes:>10}/{total_bytes:<10} {msg}").expect("valid template");
    let total = bars.add(ProgressBar::new(0).with_style(total_style).with_prefix("total"));
    total.enable_steady_tick(Duration::from_millis(120));
    let per_file: std::sync::Mutex<std::collections::HashMap<String, ProgressBar>> = Default::default();
    Arc::new(move |progress: FetchProgress| {
        let mut per_file = per_file.lock().unwrap();
        let bar = per_file.entry(progress.file.clone()).or_insert_with(|| {
            bars.insert_before(&total, ProgressBar::new(0).with_style(file_style.clone()).with_message(progress.file.clone()))
        });
        if let Some(length) = progress.file_bytes_total {
            bar.set_length(length);
        }
        bar.set_position(progress.file_bytes_done);
        if progress.file_done {
            bar.finish();
        }
        if let Some(length) = progress.model_bytes_total {
            total.set_length(length);
        }
        total.set_position(progress.model_bytes_done);
        let eta = progress.eta.map(|eta| format!("ETA {}s", eta.as_secs())).unwrap_or_default();
        total.set_message(format!(
            "{:>9}/s {eta}  {}/{} files",
            indicatif::HumanBytes(progress.bytes_per_second as u64),
            progress.files_done,
            progress.files_total
        ));
        if progress.files_done == progress.files_total {
            total.finish();
        }
    })
}

async fn pull(host: &Host, target: &str, files: Vec<String>, revision: String) -> anyhow::Result<ExitCode> {
    let in_catalog = host.registry().catalog().resolve(target).is_some();
    let parts = if files.is_empty() && in_catalog {
        // Every repo the catalog model draws on (SD 3.5 takes tokenizers from four).
        host.registry().entry_with_files(target, None).await?.all_repos()
    } else if files.is_empty() {
        // A repo the catalog does not name: all of it at the revision, as `huggingface-cli download` does.
        let repo = RepoRef { repo: target.to_string(), revision };
        let listing = host.registry().hub().list_files(&repo).await?;
        anyhow::ensure!(!listing.is_empty(), "{target} has no files at revision {}", repo.revision);
        vec![(repo, listing)]
    } else {
        // Checked here too (fetch checks again) so a bad name fails before any bar or request.
        names::check_repo_id(target)?;
        names::check_revision(&revision)?;
        for file in &files {
            names::check_file_name(file)?;
        }
        vec![(RepoRef { repo: target.to_string(), revision }, files)]
    };
    let fetched = host.registry().hub().fetch_from_repos(&parts, Some(progress_bars())).await?;
    // A pull ends with its files on disk, not only in the page cache.
    host.registry().hub().wait_until_synced().await;
    let RepoRef { repo, revision } = &fetched.repo;
    let count: usize = parts.iter().map(|(_, files)| files.len()).sum();
    eprintln!("{target}: {count} files, {} bytes in the cache ({repo}@{revision})", fetched.total_bytes());
    Ok(ExitCode::SUCCESS)
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The catalog file that applies: `--catalog`, else the default one if it exists.
fn catalog_file(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
        Some(config.join("lantern/catalog.toml")).filter(|path| path.is_file())
    })
}

/// Prints rows as columns padded to their widest cell; the last column is not padded.
fn print_columns(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().filter_map(|row| row.get(c)).map(|cell| cell.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
            }
        }
        println!("{}", line.trim_end());
    }
}

async fn models(host: &Host) -> anyhow::Result<ExitCode> {
    let mut rows = vec![["KEY", "FAMILY", "CAPABILITIES", "CACHED", "SOURCE", "DESCRIPTION"].map(String::from).to_vec()];
    let mut catalog_repos = std::collections::HashSet::new();
    let catalog = host.registry().catalog();
    for entry in catalog.entries() {
        catalog_repos.insert(entry.repo.repo.clone());
        let info = host.registry().info(&entry.key)?;
        let capabilities: Vec<&str> = entry.capabilities.iter().map(|c| c.wit_name()).collect();
        let cached = info.size_bytes.map(megabytes).unwrap_or_else(|| "-".into());
        let origin = catalog.origin(&entry.key).unwrap_or("added").to_string();
        rows.push(vec![
            entry.key.clone(),
            entry.family.name().into(),
            capabilities.join(","),
            cached,
            origin,
            entry.description.clone(),
        ]);
    }
    print_columns(&rows);
    let others: Vec<_> =
        host.registry().hub().cached_repos().await?.into_iter().filter(|r| !catalog_repos.contains(&r.repo)).collect();
    if !others.is_empty() {
        println!("\nother cached repos (not in the catalog):");
        for repo in others {
            println!("{:<44} {:>12}", repo.repo, megabytes(repo.bytes));
        }
    }
    println!("\ncache: {}", host.registry().hub().config().cache_dir.display());
    Ok(ExitCode::SUCCESS)
}

async fn remove(host: &Host, target: &str) -> anyhow::Result<ExitCode> {
    let repo = match host.registry().catalog().get(target) {
        Some(entry) => entry.repo.repo.clone(),
        None => target.to_string(),
    };
    let freed = host.registry().hub().remove_repo(&repo).await?;
    if freed == 0 {
        println!("{repo} is not in the cache; nothing freed");
    } else {
        println!("removed {repo}: {freed} bytes freed ({})", megabytes(freed));
    }
    Ok(ExitCode::SUCCESS)
}

/// `lantern compile-cache [--clear]`.
fn compile_cache(cache: &CompileCache, clear: bool) -> anyhow::Result<ExitCode> {
    let dir = cache.dir().display();
    if clear {
        let removed = cache.clear().with_context(|| format!("clearing {dir}"))?;
        println!("removed {} compiled plugins from {dir}: {} freed", removed.entries, megabytes(removed.bytes));
        return Ok(ExitCode::SUCCESS);
    }
    let size = cache.size().with_context(|| format!("reading {dir}"))?;
    let limit = cache.max_bytes() >> 20;
    println!(
        "{dir}: {} compiled plugins, {} (limit {limit} MiB: past it, the least recently used are removed)",
        size.entries,
        megabytes(size.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "warn,lantern=info,plugin=info",
        2 => "info,lantern=debug,plugin=debug",
        _ => "debug,lantern=trace,plugin=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let outcome = async {
        let max_bytes = cli.compile_cache_max_mib.saturating_mul(1 << 20);
        if let Command::CompileCache { clear } = cli.command {
            // The cache's own command needs no host, and works whatever --no-compile-cache says.
            let dir = CompileCache::default_dir().context("no cache directory: neither XDG_CACHE_HOME nor HOME is set")?;
            return compile_cache(&CompileCache::new(dir).with_max_bytes(max_bytes), clear);
        }
        let mut catalog = lantern::Catalog::builtin();
        if let Some(path) = catalog_file(cli.catalog) {
            catalog = catalog.with_file(&path)?;
        }
        let mut builder = Host::builder().catalog(catalog).device(cli.device);
        if let Some(dir) = CompileCache::default_dir().filter(|_| !cli.no_compile_cache) {
            builder = builder.compile_cache(dir).compile_cache_max_bytes(max_bytes);
        }
        let host = match cli.command {
            Command::Run(_) => builder.observer(activity_bars()).build()?,
            _ => builder.build()?,
        };
        match cli.command {
            Command::Run(args) => run(&host, args).await,
            Command::Inspect { plugin, full, policy } => inspect(&host, &plugin, full, &policy),
            Command::Pull { target, files, revision } => pull(&host, &target, files, revision).await,
            Command::Models => models(&host).await,
            Command::Rm { target } => remove(&host, &target).await,
            Command::CompileCache { .. } => unreachable!("answered before the host is built"),
        }
    }
    .await;
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
