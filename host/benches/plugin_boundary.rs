//! Where a plugin's embedding call spends its time: the same MiniLM batches through each
//! layer of the path a plugin takes, per batch, medians of 5 alternating rounds, each as
//! a fraction of the direct call (`main`: the family's `embed` on the calling thread):
//! - `dedicated`: on one long-lived thread fed by a channel (how the batcher runs it);
//! - `spawn_blocking`: on tokio's blocking pool (how the batcher ran it before);
//! - `registry`: `ModelRegistry::embed`, the batcher included;
//! - `plugin` / `pooled plugin`: the probe plugin's `embed` command, one run per batch
//!   (instantiation, the WIT call, the answer's JSON), without and with wasmtime's
//!   pooling allocator;
//! - `no-model run`: the probe's `allowed` command, the run's fixed cost.
//!
//! Run: `cargo bench -p lantern --bench plugin_boundary` (needs `.models/all-MiniLM-L6-v2`
//! and the guests built). BENCHMARKS.md, "Embeddings", has a run.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use lantern::capabilities::{EmbedRequest, TextEmbedder};
use lantern::{Host, HubConfig, Plugin, Policy, Stdio};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const ROUNDS: usize = 5;
const PATHS: [&str; 7] = ["main", "dedicated", "spawn_blocking", "registry", "plugin", "pooled plugin", "no-model run"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[path = "support/sentences.rs"]
mod sentences;
use sentences::sentences;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

async fn plugin_embeds(host: &Host, plugin: &Plugin, chunk: &[String]) {
    let mut args = vec!["embed".to_string(), MINILM.to_string()];
    args.extend_from_slice(chunk);
    host.run(plugin, Policy::default().allow_model(MINILM), args, Stdio::Capture).await.unwrap().result.unwrap();
}

fn main() {
    let models = root().join(".models");
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
        let host = Host::builder().hub_config(config.clone()).build().unwrap();
        let plugin = host.load_plugin(&wasm).unwrap();
        let pooled = Host::builder().hub_config(config).pooling_allocator(true).build().unwrap();
        let pooled_plugin = pooled.load_plugin(&wasm).unwrap();
        pooled.registry().text_embedder(MINILM, None).await.unwrap();
        let model: Arc<dyn TextEmbedder> = host.registry().text_embedder(MINILM, None).await.unwrap();
        let texts = sentences(256);
        let (jobs, receiver) = mpsc::channel::<(Vec<String>, mpsc::Sender<()>)>();
        let worker_model = model.clone();
        std::thread::spawn(move || {
            for (chunk, done) in receiver {
                worker_model.embed(&EmbedRequest::new(chunk)).unwrap();
                done.send(()).unwrap();
            }
        });
        println!("MiniLM, ms per batch (fraction of the direct call), medians of {ROUNDS} alternating rounds:");
        for batch in [1usize, 8, 32, 128] {
            let texts = &texts[..if batch == 1 { 64 } else { 256 }];
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); PATHS.len()];
            for _ in 0..ROUNDS {
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    model.embed(&EmbedRequest::new(chunk.to_vec())).unwrap();
                }
                times[0].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    let (done, finished) = mpsc::channel();
                    jobs.send((chunk.to_vec(), done)).unwrap();
                    finished.recv().unwrap();
                }
                times[1].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    let (model, chunk) = (model.clone(), chunk.to_vec());
                    tokio::task::spawn_blocking(move || model.embed(&EmbedRequest::new(chunk)).unwrap()).await.unwrap();
                }
                times[2].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    host.registry().embed(MINILM, EmbedRequest::new(chunk.to_vec())).await.unwrap();
                }
                times[3].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    plugin_embeds(&host, &plugin, chunk).await;
                }
                times[4].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for chunk in texts.chunks(batch) {
                    plugin_embeds(&pooled, &pooled_plugin, chunk).await;
                }
                times[5].push(started.elapsed().as_secs_f64());
                let started = Instant::now();
                for _ in texts.chunks(batch) {
                    let args = vec!["allowed".to_string(), MINILM.to_string()];
                    host.run(&plugin, Policy::default().allow_model(MINILM), args, Stdio::Capture).await.unwrap().result.unwrap();
                }
                times[6].push(started.elapsed().as_secs_f64());
            }
            let calls = texts.len().div_ceil(batch) as f64;
            let direct = median(times[0].clone());
            let cells: Vec<String> = PATHS
                .iter()
                .zip(times)
                .map(|(path, samples)| {
                    let time = median(samples);
                    format!("{path} {:.2} ms ({:.3})", time * 1e3 / calls, direct / time)
                })
                .collect();
            println!("batch {batch}: {}", cells.join(" | "));
        }
    });
}
