//! Plugin start: what the compile cache saves, and what a run costs with wasmtime's
//! on-demand and pooling allocators (BENCHMARKS.md, "Plugin start").
//!
//! ```sh
//! (cd guests && cargo build --release)
//! cargo bench -p lantern --bench plugin_start
//! ```
//!
//! 1. Loading each guest plugin in-process: compiled (no cache), a cache miss (compile +
//!    store), a cache hit (verify + deserialize).
//! 2. `lantern run` as a user starts it, wall clock to exit: `--no-compile-cache` (cold)
//!    and with a filled cache (warm).
//! 3. Runs of a plugin that returns at once (instantiate, call, drop): one at a time, and
//!    64 at a time, with either allocator.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lantern::{CacheOutcome, Host, HubConfig, Policy, Stdio};

const PLUGINS: [&str; 6] = ["probe", "hostile", "semantic_search", "chat", "rag", "image_workflow"];
const REPEATS: usize = 7;

fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../guests/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.is_file(), "{} is missing: build the guests first (cd guests && cargo build --release)", path.display());
    path
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1e3)
}

fn host(cache: &Path, components: Option<&Path>, pooling: bool) -> Host {
    let hub = HubConfig { endpoint: "http://127.0.0.1:9".into(), cache_dir: cache.to_path_buf(), ..HubConfig::from_env() };
    let mut builder = Host::builder().hub_config(hub).pooling_allocator(pooling);
    if let Some(dir) = components {
        builder = builder.compile_cache(dir);
    }
    builder.build().unwrap()
}

fn load_times() {
    let cache = tempfile::tempdir().unwrap();
    println!("| plugin | size (KiB) | compile, no cache (ms) | cache miss: compile + store (ms) | cache hit (ms) |");
    println!("|---|---:|---:|---:|---:|");
    for name in PLUGINS {
        let path = guest(name);
        let size = std::fs::metadata(&path).unwrap().len() / 1024;
        let plain = host(cache.path(), None, false);
        let compile = median((0..REPEATS).map(|_| time(|| plain.load_plugin(&path).unwrap())).collect());
        let (mut miss, mut hit) = (Vec::new(), Vec::new());
        for _ in 0..REPEATS {
            let components = tempfile::tempdir().unwrap();
            let cached = host(cache.path(), Some(components.path()), false);
            miss.push(time(|| assert_eq!(cached.load_plugin(&path).unwrap().compile_cache_outcome(), Some(CacheOutcome::Miss))));
            hit.push(time(|| assert_eq!(cached.load_plugin(&path).unwrap().compile_cache_outcome(), Some(CacheOutcome::Hit))));
        }
        println!("| {name} | {size} | {} | {} | {} |", ms(compile), ms(median(miss)), ms(median(hit)));
    }
}

fn time<T>(work: impl FnOnce() -> T) -> Duration {
    let started = Instant::now();
    std::hint::black_box(work());
    started.elapsed()
}

/// Wall clock of `lantern run PLUGIN -- ARGS` to exit.
fn cli_run(xdg_cache: &Path, hf_home: &Path, plugin: &Path, extra: &[&str], args: &[&str]) -> Duration {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(extra)
        .arg("run")
        .arg(plugin)
        .arg("--")
        .args(args)
        .env("XDG_CACHE_HOME", xdg_cache)
        .env("HF_HOME", hf_home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    // Plugins given no arguments answer with their usage (exit 1): that is a start too.
    assert!(output.status.code().is_some_and(|code| code <= 1), "{}", String::from_utf8_lossy(&output.stderr));
    elapsed
}

fn cli_times() {
    let (xdg, hf) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    println!("| plugin | cold: `--no-compile-cache` (ms) | warm: cache filled (ms) | saved |");
    println!("|---|---:|---:|---:|");
    for name in PLUGINS {
        let path = guest(name);
        let args: &[&str] = match name {
            "probe" => &["allowed"],
            "hostile" => &["flood", "0"],
            _ => &[],
        };
        let cold = median((0..REPEATS).map(|_| cli_run(xdg.path(), hf.path(), &path, &["--no-compile-cache"], args)).collect());
        cli_run(xdg.path(), hf.path(), &path, &[], args);
        let warm = median((0..REPEATS).map(|_| cli_run(xdg.path(), hf.path(), &path, &[], args)).collect());
        let saved = 1.0 - warm.as_secs_f64() / cold.as_secs_f64();
        println!("| {name} | {} | {} | {:.0} % |", ms(cold), ms(warm), saved * 100.0);
    }
}

/// Mean time of one run, one at a time, and runs per second with 64 at a time.
async fn run_times(pooling: bool) -> (Duration, f64, u64) {
    let cache = tempfile::tempdir().unwrap();
    let host = host(cache.path(), None, pooling);
    let plugin = host.load_plugin(&guest("hostile")).unwrap();
    let run = || async {
        let output = host.run(&plugin, Policy::default(), vec!["flood".into(), "0".into()], Stdio::Capture).await.unwrap();
        assert!(output.result.is_ok());
    };
    for _ in 0..20 {
        run().await;
    }
    const SEQUENTIAL: u32 = 300;
    let started = Instant::now();
    for _ in 0..SEQUENTIAL {
        run().await;
    }
    let each = started.elapsed() / SEQUENTIAL;
    const CONCURRENT: usize = 2000;
    let started = Instant::now();
    futures::stream::iter(0..CONCURRENT).map(|_| run()).buffer_unordered(64).collect::<Vec<()>>().await;
    let rate = CONCURRENT as f64 / started.elapsed().as_secs_f64();
    (each, rate, resident_kib())
}

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

fn main() {
    println!("## loading a plugin in-process (median of {REPEATS})\n");
    load_times();
    println!("\n## `lantern run` to exit (median of {REPEATS})\n");
    cli_times();
    println!("\n## runs of `hostile flood 0` (instantiate + call + drop)\n");
    println!("| allocator | one at a time (µs/run) | 64 at a time (runs/s) | RSS after (MiB) |");
    println!("|---|---:|---:|---:|");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    for (name, pooling) in [("on-demand (default)", false), ("pooling", true), ("on-demand again", false)] {
        let (each, rate, rss) = runtime.block_on(run_times(pooling));
        println!("| {name} | {:.0} | {rate:.0} | {:.0} |", each.as_secs_f64() * 1e6, rss as f64 / 1024.0);
    }
}
