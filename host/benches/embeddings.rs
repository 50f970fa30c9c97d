//! MiniLM (all-MiniLM-L6-v2, real weights) embedding throughput, in sentences per
//! second, at batch sizes 1, 8, 32 and 128, against PyTorch in the same run:
//! - PyTorch: sentence-transformers on the same files and sentences, 2 threads
//!   (`scripts/bench/minilm_torch.py`, run before and after ours; the peers' venv from
//!   `scripts/bench/peers.sh`, or `$PEERS_PYTHON`);
//! - native: the family's `TextEmbedder::embed` called directly (no wasm);
//! - guest: the `probe` plugin in the host, one plugin run per batch, one at a time
//!   (instantiation, the WIT call, the registry's batcher and the JSON answer included);
//!   native and guest passes alternate three times and their medians are compared;
//! - 16 guests: sixteen probe plugins at once, each sending batches of that size, merged
//!   by the registry's dynamic batcher.
//!
//! Run: `cargo bench -p lantern --bench embeddings` (needs `.models/all-MiniLM-L6-v2`
//! from scripts/fetch-models.sh and the guests built: `(cd guests && cargo build --release)`).
//! The machine's load average is printed before and after: ratios from a loaded machine
//! say little.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use lantern::capabilities::{EmbedRequest, TextEmbedder};
use lantern::{Host, HubConfig, Policy, Stdio};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SENTENCES: usize = 256;
const GUESTS: usize = 16;
const BATCHES: [usize; 4] = [1, 8, 32, 128];

/// The source tree, or a packed copy of what the bench reads (LANTERN_ROOT, scripts/gpu-check.sh).
fn root() -> PathBuf {
    std::env::var_os("LANTERN_ROOT").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf())
}

#[path = "support/sentences.rs"]
mod sentences;
use sentences::sentences;

fn rate(sentences: usize, started: Instant) -> f64 {
    sentences as f64 / started.elapsed().as_secs_f64()
}

fn native(model: &dyn TextEmbedder, texts: &[String], batch: usize) -> f64 {
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        model.embed(&EmbedRequest::new(chunk.to_vec())).unwrap();
    }
    rate(texts.len(), started)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The peers' Python: `$PEERS_PYTHON`, else the venv scripts/bench/peers.sh makes.
fn peers_python() -> PathBuf {
    std::env::var_os("PEERS_PYTHON").map(PathBuf::from).unwrap_or_else(|| root().join(".venv-peers/bin/python"))
}

/// sentence-transformers' rates on the same sentences, by batch size; None when the peers'
/// venv is missing (the table then says so).
fn pytorch(model_dir: &Path, texts: &[String]) -> Option<Value> {
    let python = peers_python();
    if !python.is_file() {
        eprintln!("{} not found: run scripts/bench/peers.sh for the PyTorch column", python.display());
        return None;
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), texts.join("\n")).unwrap();
    let batches = BATCHES.map(|b| b.to_string()).join(",");
    let output = Command::new(python)
        .arg(root().join("scripts/bench/minilm_torch.py"))
        .args(["--model", &model_dir.to_string_lossy(), "--sentences-file", &file.path().to_string_lossy()])
        .args(["--batches", &batches, "--threads", "2"])
        .output()
        .expect("running the PyTorch peer");
    assert!(output.status.success(), "PyTorch peer failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(output.stdout.trim_ascii()).ok()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).unwrap_or_default()
}

async fn guest_run(host: &Host, plugin: &lantern::Plugin, chunk: &[String]) {
    let mut args = vec!["embed".to_string(), MINILM.to_string()];
    args.extend_from_slice(chunk);
    let output = host.run(plugin, Policy::default().allow_model(MINILM), args, Stdio::Capture).await.unwrap();
    let answer = output.result.unwrap();
    assert!(answer.starts_with("{\"dimensions\":384") || answer.contains("\"dimensions\":384"), "{}", &answer[..answer.len().min(200)]);
}

async fn guest(host: &Host, plugin: &lantern::Plugin, texts: &[String], batch: usize) -> f64 {
    let started = Instant::now();
    for chunk in texts.chunks(batch) {
        guest_run(host, plugin, chunk).await;
    }
    rate(texts.len(), started)
}

/// GUESTS plugins at once, each embedding its own share in batches of `batch`
/// (at least one batch each, so large batches use more sentences).
async fn concurrent(host: &Host, plugin: &lantern::Plugin, batch: usize) -> f64 {
    let per_guest = (SENTENCES / GUESTS).max(batch);
    let texts = sentences(per_guest * GUESTS);
    let started = Instant::now();
    let runs = texts.chunks(per_guest).map(|share| async move {
        for chunk in share.chunks(batch) {
            guest_run(host, plugin, chunk).await;
        }
    });
    futures::future::join_all(runs).await;
    rate(texts.len(), started)
}

fn main() {
    let models = std::env::var_os("LANTERN_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| root().join(".models"));
    let wasm = root().join("guests/target/wasm32-wasip2/release/probe.wasm");
    assert!(wasm.is_file(), "build the guests first: (cd guests && cargo build --release)");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mirror = hubmirror::Mirror::builder()
            .repo(MINILM, models.join("all-MiniLM-L6-v2"))
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let config = HubConfig { endpoint: mirror.endpoint(), cache_dir: cache.path().to_path_buf(), token: None, offline: false, ..HubConfig::from_env() };
        // LANTERN_DEVICE (default cpu) picks where the model runs: scripts/gpu-check.sh sets cuda.
    let host = Host::builder().hub_config(config).device(lantern::DeviceChoice::from_env().unwrap()).build().unwrap();
        let plugin = host.load_plugin(&wasm).unwrap();
        let model = host.registry().text_embedder(MINILM, None).await.unwrap();
        let texts = sentences(SENTENCES);
        let minilm_dir = models.join("all-MiniLM-L6-v2");
        let load_before = load_average();
        let torch_before = pytorch(&minilm_dir, &texts);
        // Warm-up: page in the weights, start the thread pools, compile the plugin's code.
        native(model.as_ref(), &texts[..64], 32);
        guest(&host, &plugin, &texts[..32], 8).await;

        println!(
            "MiniLM-L6 sentences/second ({SENTENCES} sentences of 16-23 words; {GUESTS} guests) on {}",
            lantern::device::describe(host.registry().device())
        );
        let mut rows = Vec::new();
        for batch in BATCHES {
            // Native and guest passes alternate, so drift in the machine's speed (a shared VM's
            // neighbours) lands on both; the medians of three each are compared.
            let (mut native_rates, mut guest_rates) = (Vec::new(), Vec::new());
            for _ in 0..3 {
                native_rates.push(native(model.as_ref(), &texts, batch));
                guest_rates.push(guest(&host, &plugin, &texts, batch).await);
            }
            let (native_rate, guest_rate) = (median(native_rates), median(guest_rates));
            let before = host.registry().embedding_batch_counts(MINILM).unwrap();
            let concurrent_rate = concurrent(&host, &plugin, batch).await;
            let after = host.registry().embedding_batch_counts(MINILM).unwrap();
            rows.push((batch, native_rate, guest_rate, concurrent_rate, after.requests - before.requests, after.model_calls - before.model_calls));
        }
        let torch_after = pytorch(&minilm_dir, &texts);
        println!("load average before {load_before}, after {}", load_average());
        for (when, peer) in [("before", &torch_before), ("after", &torch_after)] {
            if let Some(peer) = peer {
                println!("PyTorch {when}: {}", peer["versions"]);
            }
        }
        println!("| batch | PyTorch (before / after) | native | native/PyTorch | guest | guest/native | {GUESTS} guests, dynamic batching |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for (batch, native_rate, guest_rate, concurrent_rate, requests, calls) in rows {
            let peer = |run: &Option<Value>| run.as_ref().and_then(|r| r["rates"][batch.to_string()].as_f64());
            let (torch, ratio) = match (peer(&torch_before), peer(&torch_after)) {
                (Some(a), Some(b)) => (format!("{a:.0} / {b:.0}"), format!("{:.2}x", native_rate / ((a + b) / 2.0))),
                _ => ("not run".to_string(), "-".to_string()),
            };
            println!(
                "| {batch} | {torch} | {native_rate:.0} | {ratio} | {guest_rate:.0} | {:.2} | {concurrent_rate:.0} ({requests} requests in {calls} model calls) |",
                guest_rate / native_rate,
            );
        }
    });
}
