//! The Python `summarize` plugin (guests/python/summarize, built with componentize-py) in
//! the host next to the Rust `rag` plugin: both reach the real MiniLM and SmolLM2 through
//! the host's download path from a local hub, retrieve the same passage and stream the
//! same greedy answer; its errors come back as the plugin's `err`, and the CLI streams
//! its answer to a pipe as it is generated.

mod support;

use std::process::Stdio as ProcessStdio;

use lantern::{DirGrant, Policy, Stdio};
use support::{guest, python_guest, MINILM, SMOLLM2};
use tokio::io::AsyncReadExt;

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn docs_policy() -> Policy {
    let docs = support::workspace_root().join("examples/docs");
    Policy {
        dirs: vec![DirGrant { host_path: docs, guest_path: "/docs".into(), writable: false }],
        ..Policy::default().allow_model(MINILM).allow_model(SMOLLM2)
    }
}

/// The passages of a `Sources:` list without their scores: Python ranks in f64 and Rust
/// in f32, so the printed scores may differ in the last digit.
fn cited(sources: &str) -> Vec<String> {
    sources
        .lines()
        .filter(|line| line.starts_with('['))
        .map(|line| {
            let (number_and_file, rest) = line.split_once(" (").expect("a source line has a score");
            format!("{number_and_file}: {}", rest.split_once("): ").expect("score then text").1)
        })
        .collect()
}

#[tokio::test]
async fn the_python_plugin_answers_like_the_rust_rag_plugin_side_by_side() {
    // Exact dequantised matmuls, so that two runs of one greedy prompt give the same tokens.
    std::env::set_var("CANDLE_DEQUANTIZE_ALL", "1");
    let mirror = support::minilm_and_smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    let python = host.load_plugin(&python_guest("summarize")).unwrap();
    let rust = host.load_plugin(&guest("rag")).unwrap();

    // Both at once, in one host, under the default memory limit; --top 2 because the
    // third-closest passages are near-ties that f32 and f64 may order differently.
    let question = ["--docs", "/docs", "--top", "2", "What is the capital of France?"];
    let (python_run, rust_run) = tokio::join!(
        host.run(&python, docs_policy(), args(&question), Stdio::Capture),
        host.run(&rust, docs_policy(), args(&question), Stdio::Capture),
    );
    let (python_run, rust_run) = (python_run.unwrap(), rust_run.unwrap());
    // Every call into the host counts against the run's host-call limit, WASI's included.
    // CPython's start is snapshotted at build time (componentize-py), so it makes few; the
    // streamed answer's reads and writes make most. Both stay far below the default limit.
    let limit = Policy::default().max_host_calls;
    for (plugin, usage) in [("python", python_run.usage), ("rust", rust_run.usage)] {
        eprintln!("{plugin}: {} host calls", usage.host_calls);
        assert!(usage.host_calls < limit / 10, "{plugin}: {} host calls, near the default limit of {limit}", usage.host_calls);
    }
    let python_sources = python_run.result.unwrap();
    let rust_sources = rust_run.result.unwrap();
    let first = python_sources.lines().find(|l| l.starts_with("[1]")).expect("sources listed");
    assert!(first.starts_with("[1] france.txt") && first.contains("Paris is the capital"), "{python_sources}");
    assert_eq!(cited(&python_sources), cited(&rust_sources), "python:\n{python_sources}\nrust:\n{rust_sources}");
    let python_answer = String::from_utf8(python_run.stdout).unwrap();
    let rust_answer = String::from_utf8(rust_run.stdout).unwrap();
    assert!(python_answer.contains("Paris"), "answer: {python_answer}");
    assert_eq!(python_answer, rust_answer, "the same prompt, greedy, gives the same answer");
    // One download of each model for both plugins.
    assert_eq!(mirror.stats().file_requests(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf"), 1);
    assert_eq!(mirror.stats().file_requests(MINILM, "model.safetensors"), 1);

    // Passages given as arguments need no directory grant.
    let policy = Policy::default().allow_model(MINILM).allow_model(SMOLLM2);
    let words = args(&[
        "--passage", "Bread is baked from flour, water and yeast.",
        "--passage", "The sky looks blue because air scatters blue light more than red light.",
        "--passage", "Chess is played on a board of sixty-four squares.",
        "--top", "1", "--max", "24",
        "Why is the sky blue?",
    ]);
    let output = host.run(&python, policy, words, Stdio::Capture).await.unwrap();
    let sources = output.result.unwrap();
    assert!(sources.contains("[1] arg 2 (") && sources.contains("scatters blue light"), "{sources}");
    let answer = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(answer.contains("blue") || answer.contains("scatter"), "answer: {answer:?}\nstderr: {stderr}");
}

#[tokio::test]
async fn the_python_plugin_reports_errors_as_its_err_result() {
    let mirror = support::minilm_and_smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&python_guest("summarize")).unwrap();
    let run = |policy: Policy, words: &[&str]| {
        let (host, plugin, words) = (&host, &plugin, args(words));
        async move { host.run(plugin, policy, words, Stdio::Capture).await.unwrap().result.unwrap_err() }
    };

    // The host's typed error, as the plugin reads it (WIT `model-not-allowed`).
    let error = run(Policy::default().allow_model(MINILM), &["--passage", "Paris is in France.", "Where is Paris?"]).await;
    assert!(error.starts_with("model not allowed:") && error.contains(SMOLLM2), "{error}");
    // No grant, no documents.
    let error = run(Policy::default().allow_model(MINILM).allow_model(SMOLLM2), &["--docs", "/docs", "Anything?"]).await;
    assert!(error.contains("cannot read /docs") && error.contains("--dir"), "{error}");
    // Usage errors are the plugin's own.
    let error = run(docs_policy(), &["--top", "many", "Anything?"]).await;
    assert_eq!(error, "--top needs a number, not 'many'");
    let error = run(docs_policy(), &["--docs"]).await;
    assert!(error.starts_with("--docs needs a value\nusage: summarize"), "{error}");
    // Nothing was downloaded for runs that failed before asking for a model.
    assert_eq!(mirror.stats().file_requests(SMOLLM2, "SmolLM2-135M-Instruct.Q4_1.gguf"), 0);
}

#[tokio::test]
async fn lantern_run_streams_the_python_plugins_answer_to_a_pipe() {
    let mirror = support::minilm_and_smollm2_mirror().await;
    let home = tempfile::tempdir().unwrap();
    let plugin = python_guest("summarize");
    let docs = format!("{}::/docs", support::workspace_root().join("examples/docs").display());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(["run", plugin.to_str().unwrap(), "--allow-model", MINILM, "--allow-model", SMOLLM2, "--dir", &docs])
        .args(["--", "--docs", "/docs", "--max", "64", "What is the capital of France?"])
        .env("HF_ENDPOINT", mirror.endpoint())
        .env("HF_HOME", home.path())
        .env("CANDLE_DEQUANTIZE_ALL", "1")
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .stdout(ProcessStdio::piped())
        .stderr(ProcessStdio::piped())
        .spawn()
        .expect("running lantern");
    let mut stdout = child.stdout.take().unwrap();

    // The first words arrive while the model is still generating the rest: the plugin
    // writes each chunk as it comes, not the whole answer at the end.
    let mut text = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = stdout.read(&mut buffer).await.unwrap();
    assert!(read > 0, "no output before the plugin ended");
    let still_running = child.try_wait().unwrap().is_none();
    text.extend_from_slice(&buffer[..read]);
    stdout.read_to_end(&mut text).await.unwrap();
    let output = child.wait_with_output().await.unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(output.status.success(), "lantern failed: {}", String::from_utf8_lossy(&output.stderr));
    assert!(still_running, "the answer came only at the end: {text}");
    let (answer, sources) = text.split_once("Sources:").expect("the plugin's result follows the answer");
    assert!(answer.contains("Paris"), "answer: {answer}");
    assert!(sources.trim_start().starts_with("[1] france.txt"), "{sources}");
}
