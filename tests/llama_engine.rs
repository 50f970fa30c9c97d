//! The host's own llama forward pass (host/src/families/gguf/llama.rs, on the host's
//! kernels) against candle's `quantized_llama` on the real SmolLM2-135M Q4_1 GGUF,
//! teacher-forced over the reference texts (tests/fixtures/smollm2_reference.json):
//! - against the same model with every weight dequantized to f32 (candle, dense f32
//!   matmuls): top-1 agreement ≥ 98 % of the steps (issue 9's accuracy bar);
//! - closer to that f32 model than candle's own quantized path on the same Q4_1 weights
//!   (whose 8-bit activations move logits by up to ~1), since the host's activations
//!   carry ~15 bits;
//! - and on the generation benchmark's text (tests/fixtures/generation_prompt.txt, the
//!   prompt `host/benches/generation.rs` times): 128 steps teacher-forced on the f32
//!   model's own greedy continuation, top-1 agreement ≥ 98 %.
//!
//! The same engine runs qwen2, qwen3 and phi3 files. No real checkpoint of those is here
//! (but Qwen2.5-Coder's Q4_K_M in tests/real_gguf.rs, whose k-quants run on candle's
//! matmul inside the engine), so their accuracy bar is checked on the tiny random
//! checkpoints (tests/support/tiny_gguf.rs), Q8_0 and Q4_1: 128 teacher-forced steps of
//! the engine on the quantized file against the engine on the same file dequantized to
//! f32 (whose logits equal candle's f32 models', tests/gguf_architectures.rs), top-1
//! agreement ≥ 98 %.

mod support;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::io::Cursor;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use lantern::families::gguf::llama::{Llama, Session};
use lantern::hub::RepoRef;
use support::{smollm2_mirror, SMOLLM2};

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn reference_sequences() -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(support::workspace_root().join("tests/fixtures/smollm2_reference.json")).unwrap();
    let reference: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect::<Vec<_>>();
    reference["cases"].as_array().unwrap().iter().map(|c| [ids(&c["prompt_ids"]), ids(&c["generated_ids"])].concat()).collect()
}

/// The same file with every tensor dequantized to f32, as an in-memory GGUF.
fn dequantized(content: &Content, file: &mut std::fs::File) -> (Content, Cursor<Vec<u8>>) {
    let cpu = Device::Cpu;
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let t = content.tensor(file, name, &cpu).unwrap().dequantize(&cpu).unwrap();
            (name.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
        })
        .collect();
    let metadata: Vec<_> = content.metadata.iter().filter(|(k, _)| k.as_str() != "general.alignment").map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<_> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut memory = Cursor::new(Vec::new());
    gguf_file::write(&mut memory, &metadata, &refs).unwrap();
    memory.set_position(0);
    (Content::read(&mut memory).unwrap(), memory)
}

fn argmax(logits: &[f32]) -> usize {
    logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

/// Logits after the prompt and after each following token of `ids`.
fn candle_steps(model: &mut ModelWeights, ids: &[u32], prompt: usize) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    let input = Tensor::new(&ids[..prompt], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    out.push(model.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1().unwrap());
    for p in prompt..ids.len() - 1 {
        let input = Tensor::new(&ids[p..p + 1], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        out.push(model.forward(&input, p).unwrap().flatten_all().unwrap().to_vec1().unwrap());
    }
    out
}

/// The f32 model's greedy continuation of `prompt` (`steps` tokens) and its logits at each.
fn candle_greedy(model: &mut ModelWeights, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut ids = prompt.to_vec();
    let mut logits = Vec::new();
    let mut input = Tensor::new(prompt, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    for _ in 0..steps {
        let step: Vec<f32> = model.forward(&input, ids.len() - input.dims()[1]).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let next = argmax(&step) as u32;
        logits.push(step);
        ids.push(next);
        input = Tensor::new(&[next], &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    }
    (ids, logits)
}

fn host_steps(session: &mut Session, ids: &[u32], prompt: usize) -> Vec<Vec<f32>> {
    let mut out = vec![session.forward_tokens(&ids[..prompt], 0).unwrap()];
    for p in prompt..ids.len() - 1 {
        out.push(session.forward_tokens(&ids[p..p + 1], p).unwrap());
    }
    out
}

#[tokio::test]
async fn the_host_forward_pass_agrees_with_candle_and_with_f32() {
    let mirror = smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let hub = lantern::Hub::new(support::hub_config(&mirror.endpoint(), cache.path())).unwrap();
    let files = hub.fetch(&RepoRef::main(SMOLLM2), &[GGUF.to_string()], None).await.unwrap();
    let path = files.path(GGUF).unwrap().to_path_buf();
    let mut file = std::fs::File::open(&path).unwrap();
    let content = Content::read(&mut file).unwrap();
    let llama = std::sync::Arc::new(Llama::from_gguf(&content, &mut file).unwrap());
    std::io::Seek::rewind(&mut file).unwrap();
    let quantized = ModelWeights::from_gguf(Content::read(&mut file).unwrap(), &mut file, &Device::Cpu).unwrap();
    let (f32_content, mut memory) = dequantized(&content, &mut file);
    let dense = ModelWeights::from_gguf(f32_content, &mut memory, &Device::Cpu).unwrap();

    let (mut steps, mut agree, mut ours_off, mut candle_off) = (0, 0, 0f32, 0f32);
    let distance = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    for ids in reference_sequences() {
        // Prompts are the first 16 (chat) or 4 tokens; the rest are teacher-forced.
        let prompt = if ids[0] == 1 { 16 } else { 4 };
        let ours = host_steps(&mut Session::new(llama.clone()), &ids, prompt);
        let f32_steps = candle_steps(&mut dense.clone(), &ids, prompt);
        let q_steps = candle_steps(&mut quantized.clone(), &ids, prompt);
        for ((o, d), q) in ours.iter().zip(&f32_steps).zip(&q_steps) {
            steps += 1;
            agree += (argmax(o) == argmax(d)) as usize;
            ours_off = ours_off.max(distance(o, d));
            candle_off = candle_off.max(distance(q, d));
        }
    }
    eprintln!("{steps} steps: top-1 = f32 in {agree}; max |logit - f32|: ours {ours_off}, candle Q4_1 {candle_off}");
    assert!(agree * 100 >= steps * 98, "top-1 agreement with f32: {agree}/{steps}");
    // 15-bit activations: closer to f32 than candle's 8-bit ones.
    assert!(ours_off < candle_off / 2.0, "ours {ours_off} vs candle {candle_off} away from f32");

    // The benchmark's own text: 128 greedy steps of the f32 model, ours teacher-forced on them.
    const STEPS: usize = 128;
    let text = std::fs::read_to_string(support::workspace_root().join("tests/fixtures/generation_prompt.txt")).unwrap();
    let tokenizer = lantern::families::gguf::tokenizer::from_gguf(&content).unwrap();
    let prompt = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    let (ids, f32_steps) = candle_greedy(&mut dense.clone(), &prompt, STEPS);
    let ours = host_steps(&mut Session::new(llama.clone()), &ids, prompt.len());
    let agree = ours.iter().zip(&f32_steps).filter(|(o, d)| argmax(o) == argmax(d)).count();
    eprintln!("benchmark text ({} prompt tokens): top-1 = f32 in {agree}/{STEPS} steps", prompt.len());
    assert_eq!(ours.len(), STEPS);
    assert!(agree * 100 >= STEPS * 98, "top-1 agreement with f32 on the benchmark text: {agree}/{STEPS}");
}

/// `src` rewritten with its matrices in `dtype` and its vectors (norms, biases) in F32,
/// as llama.cpp's quantizer leaves them.
fn requantized(src: &std::path::Path, dst: &std::path::Path, dtype: GgmlDType) {
    let mut file = std::fs::File::open(src).unwrap();
    let content = Content::read(&mut file).unwrap();
    let tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let t = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            let dtype = if t.rank() == 1 { GgmlDType::F32 } else { dtype };
            (name.clone(), QTensor::quantize(&t, dtype).unwrap())
        })
        .collect();
    let metadata: Vec<_> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<_> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &metadata, &refs).unwrap();
}

/// The engine's greedy continuation of `prompt` (`steps` tokens) and its logits at each.
fn host_greedy(session: &mut Session, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let mut ids = prompt.to_vec();
    let mut logits = vec![session.forward_tokens(prompt, 0).unwrap()];
    for _ in 1..steps {
        ids.push(argmax(logits.last().unwrap()) as u32);
        logits.push(session.forward_tokens(&ids[ids.len() - 1..], ids.len() - 1).unwrap());
    }
    ids.push(argmax(logits.last().unwrap()) as u32);
    (ids, logits)
}

/// Issue 9's accuracy bar for the qwen2, qwen3 and phi3 paths of the engine, on the tiny
/// checkpoints: quantized (Q8_0 as written, and Q4_1) against the same file dequantized
/// to f32, 128 steps teacher-forced on the f32 run's greedy continuation, top-1 agreement
/// ≥ 98 %. Random weights give flatter logits than a trained model (near-ties are
/// likelier), which makes the bar harder, not easier.
#[test]
fn qwen2_qwen3_and_phi3_on_the_engine_agree_with_their_f32_runs() {
    use tiny_gguf::{Arch, Spec};
    const STEPS: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let mut phi3 = Spec::qwen(Arch::Phi3, 43);
    phi3.context_length = 256;
    let mut state = 7u64;
    let prompt: Vec<u32> = (0..16)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (32 + (state >> 33) % 95) as u32
        })
        .collect();
    let mut worst = 100.0f64;
    for spec in [Spec::qwen(Arch::Qwen2, 41), Spec::qwen(Arch::Qwen3, 42), phi3] {
        let q8 = dir.path().join(format!("{:?}-q8_0.gguf", spec.arch));
        tiny_gguf::write(&spec, &q8);
        let q4 = dir.path().join(format!("{:?}-q4_1.gguf", spec.arch));
        requantized(&q8, &q4, GgmlDType::Q4_1);
        for (format, path) in [("Q8_0", &q8), ("Q4_1", &q4)] {
            let mut file = std::fs::File::open(path).unwrap();
            let content = Content::read(&mut file).unwrap();
            let quantized = Arc::new(Llama::from_gguf(&content, &mut file).unwrap());
            let (f32_content, mut memory) = dequantized(&content, &mut file);
            let dense = Arc::new(Llama::from_gguf(&f32_content, &mut memory).unwrap());
            let (ids, f32_steps) = host_greedy(&mut Session::new(dense), &prompt, STEPS);
            let ours = host_steps(&mut Session::new(quantized), &ids, prompt.len());
            assert_eq!(ours.len(), STEPS);
            let agree = ours.iter().zip(&f32_steps).filter(|(o, d)| argmax(o) == argmax(d)).count();
            let distance = ours.iter().zip(&f32_steps).map(|(o, d)| o.iter().zip(d).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max)).fold(0f32, f32::max);
            let scale = f32_steps.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
            eprintln!("{:?} {format}: top-1 = f32 in {agree}/{STEPS} steps; max |logit - f32| {distance} (logit scale {scale})", spec.arch);
            worst = worst.min(agree as f64 * 100.0 / STEPS as f64);
            assert!(agree * 100 >= STEPS * 98, "{:?} {format}: top-1 agreement with f32: {agree}/{STEPS}", spec.arch);
        }
    }
    eprintln!("worst agreement {worst:.1} %");
}
