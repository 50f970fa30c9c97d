//! MiniLM (all-MiniLM-L6-v2, real weights) embedding throughput, in sentences per
//! second, at batch sizes 1, 8, 32 and 128, three ways:
//! - native: the family's `TextEmbedder::embed` called directly (candle, no wasm);
//! - guest: the `probe` plugin in the host, one plugin run per batch, one at a time
//!   (instantiation, the WIT call, the registry's batcher and the JSON answer included);
//! - 16 guests: sixteen probe plugins at once, each sending batches of that size, merged
//!   by the registry's dynamic batcher.
//!
//! Run: `cargo bench -p lantern --bench embeddings` (needs `.models/all-MiniLM-L6-v2`
//! from scripts/fetch-models.sh and the guests built: `(cd guests && cargo build --release)`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

/// 256 distinct sentences of 16 to 23 words (about 20 to 30 tokens).
fn sentences(count: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "the", "quick", "model", "reads", "a", "long", "document", "about", "rivers", "and", "mountains", "while",
        "engineers", "measure", "how", "fast", "sentences", "become", "vectors", "on", "small", "machines", "every", "day",
    ];
    (0..count)
        .map(|i| {
            let length = 16 + i % 8;
            (0..length).map(|j| WORDS[(i * 7 + j * 5 + j * j) % WORDS.len()]).collect::<Vec<_>>().join(" ") + &format!(" {i}.")
        })
        .collect()
}

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
        // Warm-up: page in the weights, start the thread pools, compile the plugin's code.
        native(model.as_ref(), &texts[..64], 32);
        guest(&host, &plugin, &texts[..32], 8).await;

        println!(
            "MiniLM-L6 sentences/second ({SENTENCES} sentences of 16-23 words; {GUESTS} guests) on {}",
            lantern::device::describe(host.registry().device())
        );
        println!("| batch | native | guest | host/guest | {GUESTS} guests, dynamic batching | concurrency gain |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for batch in BATCHES {
            let native_rate = native(model.as_ref(), &texts, batch);
            let guest_rate = guest(&host, &plugin, &texts, batch).await;
            let before = host.registry().embedding_batch_counts(MINILM).unwrap();
            let concurrent_rate = concurrent(&host, &plugin, batch).await;
            let after = host.registry().embedding_batch_counts(MINILM).unwrap();
            println!(
                "| {batch} | {native_rate:.0} | {guest_rate:.0} | {:.2} | {concurrent_rate:.0} ({} requests in {} model calls) | {:.2}x |",
                native_rate / guest_rate,
                after.requests - before.requests,
                after.model_calls - before.model_calls,
                concurrent_rate / guest_rate
            );
        }
    });
}
