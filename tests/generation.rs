//! Text generation end to end: the real SmolLM2-135M-Instruct Q4_1 GGUF, downloaded from
//! a local HF-protocol hub, tokenized from the GGUF's own metadata, streamed to a wasm
//! plugin. Greedy output is checked token by token against an independent NumPy
//! implementation (scripts/reference/smollm2_numpy.py, tests/fixtures/smollm2_reference.json).
//!
//! Exact-token checks run with CANDLE_DEQUANTIZE_ALL=1 (f32 matmuls): candle's default
//! quantized matmul rounds activations to 8 bits, which flips near-tied steps.

mod support;

use std::time::Duration;

use lantern::capabilities::{PromptInput, SamplingParams};
use lantern::{Policy, Stdio};
use serde_json::Value;
use support::{guest, host, json, smollm2_mirror, SMOLLM2};

fn exact_math() {
    // Set before any model loads in this test binary; every test here sets the same value.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
}

/// A host with exact math whose hub serves SmolLM2 (the cache lives as long as the guard).
async fn smollm2_host() -> (hubmirror::Mirror, lantern::Host, tempfile::TempDir) {
    exact_math();
    let mirror = smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    (mirror, host, cache)
}

fn reference() -> Value {
    let path = support::workspace_root().join("tests/fixtures/smollm2_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

fn policy() -> Policy {
    Policy::default().allow_model(SMOLLM2)
}

#[tokio::test]
async fn greedy_tokens_match_an_independent_implementation() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let model = host.registry().text_generator(SMOLLM2, None).await.unwrap();
    for case in reference()["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        // The tokenizer built from GGUF metadata agrees with the reference's.
        assert_eq!(model.tokenize(prompt).unwrap(), ids(&case["prompt_ids"]), "case {name}: prompt tokens");
        let prepared = model.prepare(&PromptInput::Text(prompt.to_string())).unwrap();
        let mut ignore = |_| true;
        let generated = model.generate(&prepared, &SamplingParams::greedy(32), &mut ignore).unwrap();
        let mut expected = ids(&case["generated_ids"]);
        if expected.last() == Some(&2) {
            expected.pop(); // <|im_end|> ends the answer; it is not part of it
            assert_eq!(generated.reason, lantern::capabilities::FinishReason::Eos, "case {name}");
        }
        assert_eq!(generated.tokens, expected, "case {name}: generated tokens");
    }
}

#[tokio::test]
async fn a_plugin_streams_the_answer_about_france() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();

    // Case A: a raw ChatML prompt, no system prompt.
    let output = host
        .run(&plugin, policy(), args(&["generate", SMOLLM2, cases[0]["prompt"].as_str().unwrap(), "--max", "32"]), Stdio::Capture)
        .await
        .unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["text"], "The capital of France is Paris.", "{answer}");
    assert_eq!(answer["finished"]["reason"], "eos", "{answer}");
    assert_eq!(answer["finished"]["generated_tokens"], 7, "{answer}");
    assert_eq!(answer["finished"]["prompt_tokens"], 16, "{answer}");

    // Case B: 32 tokens arrive as many chunks whose text is the reference's.
    let output = host
        .run(&plugin, policy(), args(&["generate", SMOLLM2, cases[1]["prompt"].as_str().unwrap(), "--max", "32"]), Stdio::Capture)
        .await
        .unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["text"], cases[1]["text"], "{answer}");
    assert!(answer["chunks"].as_array().unwrap().len() > 10, "not streamed: {answer}");
    assert_eq!(answer["finished"]["reason"], "max-tokens");
    assert_eq!(answer["finished"]["generated_tokens"], 32);
}

#[tokio::test]
async fn chat_prompts_use_the_template_from_the_gguf() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let model = host.registry().text_generator(SMOLLM2, None).await.unwrap();
    let user = lantern::capabilities::ChatMessage {
        role: lantern::capabilities::ChatRole::User,
        content: "What is the capital of France?".into(),
    };
    // SmolLM2's template adds its default system prompt when the chat has none.
    let expected = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
                    <|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let prepared = model.prepare(&PromptInput::Chat(vec![user])).unwrap();
    assert_eq!(prepared.ids, model.tokenize(expected).unwrap());

    // Through a plugin, with its own system prompt: an answer that ends the turn.
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let output = host
        .run(
            &plugin,
            policy(),
            args(&["generate", SMOLLM2, "What is the capital of France?", "--chat", "--system", "Answer in one short sentence.", "--max", "48"]),
            Stdio::Capture,
        )
        .await
        .unwrap();
    let answer = json(&output.result);
    assert!(answer["text"].as_str().unwrap().contains("Paris"), "{answer}");
    assert_eq!(answer["finished"]["reason"], "eos", "{answer}");
}

#[tokio::test]
async fn stop_sequences_max_tokens_and_long_prompts() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let reference = reference();
    let sea = reference["cases"][1]["prompt"].as_str().unwrap();
    let run = |words: Vec<String>| {
        let (host, plugin) = (&host, &plugin);
        async move { json(&host.run(plugin, policy(), words, Stdio::Capture).await.unwrap().result) }
    };

    // The reference answer is "The sea is a vast and mysterious realm, ...".
    let answer = run(args(&["generate", SMOLLM2, sea, "--max", "32", "--stop", " mysterious"])).await;
    assert_eq!(answer["text"], "The sea is a vast and", "{answer}");
    assert_eq!(answer["finished"]["reason"], "stop-sequence", "{answer}");

    let answer = run(args(&["generate", SMOLLM2, sea, "--max", "5"])).await;
    assert_eq!(answer["finished"]["reason"], "max-tokens", "{answer}");
    assert_eq!(answer["finished"]["generated_tokens"], 5, "{answer}");

    // Longer than the 8192-token context: a typed error before any token, not a trap.
    let long = "lantern ".repeat(9000);
    let answer = run(vec!["generate".into(), SMOLLM2.into(), long]).await;
    assert_eq!(answer["error"], "invalid-input", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("8192"), "{answer}");

    // Over the host's token cap, and nonsense sampling values.
    assert_eq!(run(args(&["generate", SMOLLM2, "Hi", "--max", "100000"])).await["error"], "limit-exceeded");
    assert_eq!(run(args(&["generate", SMOLLM2, "Hi", "--temp", "-1"])).await["error"], "invalid-input");
    // Not allowed.
    let output = host.run(&plugin, Policy::default(), args(&["generate", SMOLLM2, "Hi"]), Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result)["error"], "model-not-allowed");
}

#[tokio::test]
async fn dropping_the_stream_cancels_the_work_on_the_host() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    // Ask for 4000 tokens (minutes of work), read three chunks, drop the stream.
    let output = host
        .run(&plugin, policy(), args(&["generate-drop", SMOLLM2, "3", "Tell me a very long story.", "--chat", "--max", "4000"]), Stdio::Capture)
        .await
        .unwrap();
    let answer = json(&output.result);
    assert_eq!(answer["chunks"].as_array().unwrap().len(), 3, "{answer}");
    assert_eq!(answer["finished"], Value::Null);
    // The worker notices at its next token and ends.
    let mut waited = Duration::ZERO;
    while host.registry().active_generations() > 0 {
        assert!(waited < Duration::from_secs(20), "the generation kept running after its stream was dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
}

#[tokio::test]
async fn concurrent_plugins_all_get_their_answers() {
    let (mirror, host, _cache) = smollm2_host().await;
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let reference = reference();
    let cases = reference["cases"].as_array().unwrap();
    let runs = (0..4).map(|i| {
        let case = &cases[i % 2];
        let words = args(&["generate", SMOLLM2, case["prompt"].as_str().unwrap(), "--max", "32"]);
        let (host, plugin) = (&host, &plugin);
        async move { (i, json(&host.run(plugin, policy(), words, Stdio::Capture).await.unwrap().result)) }
    });
    for (i, answer) in futures::future::join_all(runs).await {
        let expected = cases[i % 2]["text"].as_str().unwrap().trim_end_matches("<|im_end|>");
        assert_eq!(answer["text"], expected, "plugin {i}: {answer}");
    }
    // One download for all of them.
    assert_eq!(mirror.stats().file_requests(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf"), 1);
}

#[tokio::test]
async fn the_rag_plugin_answers_from_the_granted_documents_and_cites_them() {
    exact_math();
    let mirror = support::minilm_and_smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("rag")).unwrap();
    let docs = support::workspace_root().join("examples/docs");
    let policy = Policy {
        dirs: vec![lantern::DirGrant { host_path: docs, guest_path: "/docs".into(), writable: false }],
        ..Policy::default().allow_model(support::MINILM).allow_model(SMOLLM2)
    };
    let output = host
        .run(&plugin, policy, args(&["--docs", "/docs", "What is the capital of France?"]), Stdio::Capture)
        .await
        .unwrap();
    let sources = output.result.unwrap();
    let answer = String::from_utf8(output.stdout).unwrap();
    // The passage that holds the answer is retrieved first, and the streamed answer uses it.
    let first = sources.lines().find(|l| l.starts_with("[1]")).expect("sources listed");
    assert!(first.contains("france.txt") && first.contains("Paris is the capital"), "{sources}");
    assert!(answer.contains("Paris"), "answer: {answer}");

    // Without the directory grant the plugin cannot see the documents.
    let policy = Policy::default().allow_model(support::MINILM).allow_model(SMOLLM2);
    let output = host.run(&plugin, policy, args(&["--docs", "/docs", "Anything?"]), Stdio::Capture).await.unwrap();
    let error = output.result.unwrap_err();
    assert!(error.contains("cannot read /docs"), "{error}");
}

#[tokio::test]
async fn the_chat_plugin_streams_a_one_shot_answer_to_stdout() {
    let (_mirror, host, _cache) = smollm2_host().await;
    let plugin = host.load_plugin(&guest("chat")).unwrap();
    let words = args(&["--system", "Answer in one short sentence.", "--temperature", "0", "What is the capital of France?"]);
    let output = host.run(&plugin, policy(), words, Stdio::Capture).await.unwrap();
    assert_eq!(output.result, Ok(String::new()));
    let answer = String::from_utf8(output.stdout).unwrap();
    assert!(answer.contains("Paris"), "answer: {answer}");
}
