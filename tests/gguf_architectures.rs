//! The GGUF architectures besides llama — Qwen3, Qwen3-Coder MoE, Phi-3/Phi-4 (`phi3`) and
//! Kimi-K2 / DeepSeek-V3 (`deepseek2`) — end to end through the wasm `probe` plugin.
//!
//! These are TINY RANDOM CHECKPOINTS, NOT REAL WEIGHTS (hidden 64, 2 layers, ~300-token
//! vocabularies), written by the test itself with candle's GGUF writer
//! (tests/support/tiny_gguf.rs) using the real llama.cpp tensor names and metadata keys,
//! and served from a local HF-protocol hub under realistic repo ids. Their answers are
//! noise; what is checked is the machinery: the architecture is read from
//! `general.architecture` (every file name here names a *different* model), the
//! tokenizer and chat template come from the metadata, greedy output is deterministic,
//! limits hold, and deepseek2 (the host's own loader) computes what candle's non-quantized
//! DeepSeek-V2 computes where their routers agree.

mod support;
#[path = "support/gguf_split.rs"]
mod gguf_split;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::net::SocketAddr;
use std::sync::Arc;

use hubmirror::Mirror;
use lantern::capabilities::{ChatMessage, ChatRole, FinishReason, PromptInput, SamplingParams, TextGenerator};
use lantern::hub::RepoRef;
use lantern::{Capability, Catalog, CatalogEntry, Family, Host, Policy, Stdio};
use serde_json::Value;
use support::{guest, json};
use tiny_gguf::{Arch, Spec, VocabStyle};

const QWEN3: &str = "Qwen/Qwen3-0.6B-GGUF";
const QWEN3_CODER_MOE: &str = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF";
const PHI4_REASONING: &str = "microsoft/phi-4-reasoning-gguf";
const PHI3_MINI: &str = "microsoft/Phi-3-mini-4k-instruct-gguf";
const KIMI_K2: &str = "unsloth/Kimi-K2-Instruct-GGUF";
const CONTEXT: u32 = 256;

/// A reduced Qwen3 template: same structure and Jinja features as the real one.
const QWEN3_TEMPLATE: &str = "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}\
{%- for message in messages %}{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\
{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\
{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + message.content.strip() + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}\
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and enable_thinking is false %}\
{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}";

/// Kimi-K2's turn format (without its default system prompt).
const KIMI_TEMPLATE: &str = "{%- for message in messages -%}{%- if message.role == 'system' -%}<|im_system|>system<|im_middle|>\
{%- elif message.role == 'user' -%}<|im_user|>user<|im_middle|>{%- else -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}\
{{ message.content }}<|im_end|>{%- endfor -%}{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}";

/// Phi-4-reasoning's turn format (without its long default system prompt).
const PHI4_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '<|im_sep|>' + message['content'] + '<|im_end|>' }}\
{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}";

struct Checkpoint {
    key: &'static str,
    /// Deliberately names another model: the loader must not look at it.
    file: &'static str,
    spec: Spec,
}

fn checkpoints() -> Vec<Checkpoint> {
    let qwen_specials: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"];
    let spec = |arch, vocab, specials, bos, eos, add_bos, chat_template, seed| Spec {
        arch,
        vocab,
        specials,
        bos,
        eos,
        add_bos,
        chat_template,
        context_length: CONTEXT,
        seed,
        experts: 4,
        experts_used: 2,
    };
    vec![
        Checkpoint {
            key: QWEN3,
            file: "Llama-3.2-1B-Instruct-Q8_0.gguf",
            spec: spec(Arch::Qwen3, VocabStyle::Gpt2 { pre: "qwen2" }, qwen_specials, None, "<|im_end|>", false, Some(QWEN3_TEMPLATE), 1),
        },
        Checkpoint {
            key: QWEN3_CODER_MOE,
            file: "Phi-3-mini-Q8_0.gguf",
            spec: spec(Arch::Qwen3Moe, VocabStyle::Gpt2 { pre: "qwen2" }, qwen_specials, None, "<|im_end|>", false, Some(QWEN3_TEMPLATE), 2),
        },
        Checkpoint {
            key: PHI4_REASONING,
            file: "Qwen3-0.6B-Q8_0.gguf",
            spec: spec(
                Arch::Phi3,
                VocabStyle::Gpt2 { pre: "dbrx" },
                &["<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>", "<think>", "</think>"],
                None,
                "<|im_end|>",
                false,
                Some(PHI4_TEMPLATE),
                3,
            ),
        },
        Checkpoint {
            key: PHI3_MINI,
            file: "model-qwen3moe.gguf",
            // No template in the file: the host falls back to Phi-3's format by its tokens.
            spec: spec(
                Arch::Phi3,
                VocabStyle::SentencePiece,
                &["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
                Some("<s>"),
                "<|endoftext|>",
                true,
                None,
                4,
            ),
        },
        Checkpoint {
            key: KIMI_K2,
            file: "Llama-3-8B-Q8_0.gguf",
            spec: spec(
                Arch::DeepSeek2,
                VocabStyle::Gpt2 { pre: "kimi-k2" },
                &["[BOS]", "[EOS]", "<|im_end|>", "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>"],
                Some("[BOS]"),
                "[EOS]",
                false,
                Some(KIMI_TEMPLATE),
                5,
            ),
        },
    ]
}

/// Every checkpoint written to its own repo folder, a hub serving them, and a host whose
/// catalog lists them.
struct World {
    _files: tempfile::TempDir,
    _cache: tempfile::TempDir,
    _mirror: Mirror,
    host: Host,
}

async fn world() -> World {
    let files = tempfile::tempdir().unwrap();
    let mut mirror = Mirror::builder();
    let mut catalog = Catalog::builtin();
    for checkpoint in checkpoints() {
        let dir = files.path().join(checkpoint.key.replace('/', "--"));
        std::fs::create_dir_all(&dir).unwrap();
        tiny_gguf::write(&checkpoint.spec, &dir.join(checkpoint.file));
        mirror = mirror.repo(checkpoint.key, dir);
        catalog.insert(CatalogEntry {
            key: checkpoint.key.into(),
            repo: RepoRef::main(checkpoint.key),
            family: Family::GgufLlm,
            capabilities: vec![Capability::TextGeneration],
            files: vec![checkpoint.file.into()],
            other_repos: Vec::new(),
            gguf_quant: None,
            description: "tiny random test checkpoint".into(),
        });
    }
    let mirror = mirror.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub");
    let cache = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .hub_config(support::hub_config(&mirror.endpoint(), cache.path()))
        .catalog(catalog)
        .build()
        .expect("building the host");
    World { _files: files, _cache: cache, _mirror: mirror, host }
}

fn policy() -> Policy {
    [QWEN3, QWEN3_CODER_MOE, PHI4_REASONING, PHI3_MINI, KIMI_K2].into_iter().fold(Policy::default(), Policy::allow_model)
}

fn args(words: &[&str]) -> Vec<String> {
    words.iter().map(|s| s.to_string()).collect()
}

async fn probe(world: &World, words: &[&str]) -> Value {
    let plugin = world.host.load_plugin(&guest("probe")).unwrap();
    json(&world.host.run(&plugin, policy(), args(words), Stdio::Capture).await.unwrap().result)
}

async fn model(world: &World, key: &str) -> Arc<dyn TextGenerator> {
    world.host.registry().text_generator(key, None).await.unwrap_or_else(|e| panic!("{key}: {e}"))
}

const GENERATING: [&str; 5] = [QWEN3, QWEN3_CODER_MOE, PHI4_REASONING, PHI3_MINI, KIMI_K2];

#[tokio::test]
async fn every_architecture_streams_the_same_greedy_answer_twice() {
    let world = world().await;
    for key in GENERATING {
        let first = probe(&world, &["generate", key, "Hello the sea", "--max", "12"]).await;
        let second = probe(&world, &["generate", key, "Hello the sea", "--max", "12"]).await;
        assert_eq!(first, second, "{key}: greedy decoding differs between two runs");
        let text = first["text"].as_str().unwrap_or_else(|| panic!("{key}: {first}"));
        assert!(!text.is_empty(), "{key}: {first}");
        let chunks: Vec<&str> = first["chunks"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(chunks.concat(), text, "{key}");
        assert!(chunks.len() > 1, "{key}: not streamed: {first}");
        assert_eq!(first["finished"]["reason"], "max-tokens", "{key}: {first}");
        assert_eq!(first["finished"]["generated_tokens"], 12, "{key}: {first}");

        let shorter = probe(&world, &["generate", key, "Hello the sea", "--max", "5"]).await;
        assert_eq!(shorter["finished"]["generated_tokens"], 5, "{key}: {shorter}");
        assert!(text.starts_with(shorter["text"].as_str().unwrap()), "{key}: {shorter} is not a prefix of {first}");
    }
}

#[tokio::test]
async fn greedy_tokens_are_identical_across_generations_in_process() {
    let world = world().await;
    for key in GENERATING {
        let model = model(&world, key).await;
        let prompt = model.prepare(&PromptInput::Text("Hello the sea".into())).unwrap();
        let mut ignore = |_| true;
        let a = model.generate(&prompt, &SamplingParams::greedy(10), &mut ignore).unwrap();
        let b = model.generate(&prompt, &SamplingParams::greedy(10), &mut ignore).unwrap();
        assert_eq!(a.tokens, b.tokens, "{key}");
        assert_eq!(a.tokens.len(), 10, "{key}");
        assert_eq!(a.reason, FinishReason::MaxTokens, "{key}");
    }
}

fn chat() -> Vec<ChatMessage> {
    vec![
        ChatMessage { role: ChatRole::System, content: "Be brief.".into() },
        ChatMessage { role: ChatRole::User, content: "Hi".into() },
    ]
}

#[tokio::test]
async fn chat_prompts_use_the_files_template_or_the_vocabularys_format() {
    let world = world().await;
    let cases = [
        (QWEN3, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false),
        (QWEN3_CODER_MOE, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", false),
        (PHI4_REASONING, "<|im_start|>system<|im_sep|>Be brief.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|><|im_start|>assistant<|im_sep|>", false),
        // No template in the file: Phi-3's format, found by its <|user|>/<|end|> tokens; BOS first.
        (PHI3_MINI, "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n", true),
        (KIMI_K2, "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Hi<|im_end|><|im_assistant|>assistant<|im_middle|>", false),
    ];
    for (key, rendered, bos_first) in cases {
        let model = model(&world, key).await;
        let prepared = model.prepare(&PromptInput::Chat(chat())).unwrap();
        let mut expected = model.tokenize(rendered).unwrap();
        // Each control token is one id, as the model was trained.
        assert!(expected.len() < rendered.len() / 2, "{key}: control tokens were split: {expected:?}");
        if bos_first {
            expected.insert(0, 1); // <s>
        }
        assert_eq!(prepared.ids, expected, "{key}");

        let answer = probe(&world, &["generate", key, "Hi", "--chat", "--system", "Be brief.", "--max", "6"]).await;
        assert_eq!(answer["finished"]["prompt_tokens"], expected.len(), "{key}: {answer}");
        assert_eq!(answer["finished"]["generated_tokens"], 6, "{key}: {answer}");
    }
}

#[tokio::test]
async fn a_sentencepiece_vocabulary_uses_its_pieces_and_falls_back_to_bytes() {
    let world = world().await;
    let model = model(&world, PHI3_MINI).await;
    let vocab = tiny_gguf::write(&checkpoints()[3].spec, &tempfile::tempdir().unwrap().path().join("v.gguf"));
    let pieces = |text: &str| -> Vec<String> {
        model.tokenize(text).unwrap().iter().map(|&id| vocab[id as usize].clone()).collect()
    };
    assert_eq!(pieces("Hello the sea"), ["▁Hello", "▁the", "▁sea"]);
    // "é" is in no piece: its two UTF-8 bytes.
    assert_eq!(pieces("é"), ["▁", "<0xC3>", "<0xA9>"]);
}

#[tokio::test]
async fn a_prompt_longer_than_the_context_is_invalid_input() {
    let world = world().await;
    let long = "the sea is blue ".repeat(40); // well over 256 tokens in any of these vocabularies
    for key in GENERATING {
        let answer = probe(&world, &["generate", key, &long]).await;
        assert_eq!(answer["error"], "invalid-input", "{key}: {answer}");
        assert!(answer["message"].as_str().unwrap().contains(&CONTEXT.to_string()), "{key}: {answer}");
    }
}

/// The CPU mixture-of-experts (host/src/families/gguf/qwen3_moe.rs) checked against
/// candle's own dense Qwen3: with one expert that every token uses at weight 1, a
/// qwen3moe model *is* a dense qwen3 model whose feed-forward is that expert. The same
/// file is loaded both ways (the dense view renames the tensors, sharing their bytes).
#[test]
fn qwen3moe_with_one_expert_computes_what_candles_dense_qwen3_computes() {
    use candle_core::quantized::gguf_file::{Content, Value};
    use candle_core::{Device, Tensor};
    use candle_transformers::models::quantized_qwen3;
    use lantern::families::gguf::qwen3_moe::Qwen3Moe;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-expert.gguf");
    let mut spec = checkpoints().swap_remove(1).spec;
    assert_eq!(spec.arch, Arch::Qwen3Moe);
    (spec.experts, spec.experts_used) = (1, 1);
    tiny_gguf::write(&spec, &path);

    let mut file = std::fs::File::open(&path).unwrap();
    let mut ours = Qwen3Moe::from_gguf(Content::read(&mut file).unwrap(), &mut file, &Device::Cpu).unwrap();

    let mut file = std::fs::File::open(&path).unwrap();
    let mut dense = Content::read(&mut file).unwrap();
    for (key, value) in dense.metadata.clone() {
        if let Some(rest) = key.strip_prefix("qwen3moe.") {
            dense.metadata.insert(format!("qwen3.{rest}"), value);
        }
    }
    // candle's dense Qwen3 builds its rotary tables in f16 unless told otherwise.
    dense.metadata.insert("general.dtype".into(), Value::U32(0));
    for layer in 0..tiny_gguf::LAYERS {
        for (stacked, single) in [("ffn_gate_exps", "ffn_gate"), ("ffn_up_exps", "ffn_up"), ("ffn_down_exps", "ffn_down")] {
            let mut info = dense.tensor_infos.remove(&format!("blk.{layer}.{stacked}.weight")).unwrap();
            info.shape = info.shape.dims()[1..].to_vec().into();
            dense.tensor_infos.insert(format!("blk.{layer}.{single}.weight"), info);
        }
    }
    let mut theirs = quantized_qwen3::ModelWeights::from_gguf(dense, &mut file, &Device::Cpu).unwrap();

    let max_difference = |a: Tensor, b: Tensor| -> f32 {
        let (a, b) = (a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    };
    // A prompt, then two single-token steps through the KV cache.
    let prompt = Tensor::new(&[[40u32, 72, 101, 108, 111, 32]], &Device::Cpu).unwrap();
    let (a, b) = (ours.forward(&prompt, 0).unwrap(), theirs.forward(&prompt, 0).unwrap());
    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(scale > 0.1, "logits are all near zero: the comparison would prove nothing");
    assert!(max_difference(a, b) < 1e-3 * scale.max(1.0), "prompt logits differ");
    for (step, token) in [(6usize, 97u32), (7, 258)] {
        let input = Tensor::new(&[[token]], &Device::Cpu).unwrap();
        let (a, b) = (ours.forward(&input, step).unwrap(), theirs.forward(&input, step).unwrap());
        assert!(max_difference(a, b) < 1e-3 * scale.max(1.0), "step {step} logits differ");
    }
}

/// The largest absolute difference between two logit tensors, and the larger one's scale.
fn logit_difference(ours: &candle_core::Tensor, theirs: &candle_core::Tensor) -> (f32, f32) {
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let difference = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    (difference, scale)
}

/// The host's dense decoder engine (host/src/families/gguf/llama.rs) on the file at `path`.
fn engine(path: &std::path::Path) -> lantern::families::gguf::llama::Session {
    use lantern::families::gguf::llama::{Llama, Session};
    let mut file = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    Session::new(Arc::new(Llama::from_gguf(&content, &mut file).unwrap()))
}

/// The engine's logits for `tokens` at `position`, as a tensor to compare.
fn engine_logits(session: &mut lantern::families::gguf::llama::Session, tokens: &[u32], position: usize) -> candle_core::Tensor {
    let logits = session.forward_tokens(tokens, position).unwrap();
    candle_core::Tensor::new(logits, &candle_core::Device::Cpu).unwrap()
}

/// Phi-4 uses a RoPE base of 250 000, which candle's `quantized_phi3` ignores (it
/// hard-codes 10 000). The host's phi3 module (host/src/families/gguf/phi3.rs) reads
/// `phi3.rope.freq_base` and `phi3.rope.dimension_count`: on the same tiny weights,
/// stored as F32 so that no quantization differs, it computes what candle's
/// *non-quantized* `models::phi3` computes with that `rope_theta` (and partial rotary
/// factor), prompt and cached steps, to 1e-3. So does the host's dense decoder engine,
/// which runs phi3 files by default (the module is `LANTERN_GGUF_ENGINE=candle`'s).
#[test]
fn phi3_reads_its_rope_base_and_computes_what_candles_f32_phi3_computes() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{Activation, VarBuilder};
    use candle_transformers::models::{phi3 as reference, quantized_phi3};
    use lantern::families::gguf::phi3::ModelWeights;
    use tiny_gguf::{FFN, HEADS, HEAD_DIM, HIDDEN, KV_HEADS, LAYERS};

    let dir = tempfile::tempdir().unwrap();
    let quantized = dir.path().join("phi4-q8_0.gguf");
    let spec = checkpoints().swap_remove(2).spec;
    assert_eq!(spec.arch, Arch::Phi3);
    tiny_gguf::write(&spec, &quantized);
    let open = |path: &std::path::Path| {
        let mut file = std::fs::File::open(path).unwrap();
        (Content::read(&mut file).unwrap(), file)
    };
    let device = Device::Cpu;
    let prompt = Tensor::new(&[[40u32, 72, 101, 108, 111, 32, 260, 97, 33, 44]], &device).unwrap();
    let steps = [(10usize, 97u32), (11, 258)];

    let mut last_logits = Vec::new();
    for (base, rope_dims) in [(250_000f32, HEAD_DIM), (10_000.0, HEAD_DIM), (250_000.0, HEAD_DIM / 2)] {
        let path = dir.path().join(format!("phi4-f32-{base}-{rope_dims}.gguf"));
        let changes = [("phi3.rope.freq_base", Md::F32(base)), ("phi3.rope.dimension_count", Md::U32(rope_dims as u32))];
        tiny_gguf::rewrite(&quantized, &path, &changes, GgmlDType::F32);
        let (content, mut file) = open(&path);
        let mut ours = ModelWeights::from_gguf(content, &mut file, &device).unwrap();

        let tensors = tiny_gguf::hf_tensors(&path);
        let vocab_size = tensors["model.embed_tokens.weight"].dim(0).unwrap();
        let config = reference::Config {
            vocab_size,
            hidden_act: Activation::Silu,
            hidden_size: HIDDEN,
            intermediate_size: FFN,
            num_hidden_layers: LAYERS,
            num_attention_heads: HEADS,
            num_key_value_heads: KV_HEADS,
            rms_norm_eps: 1e-6,
            rope_theta: base as f64,
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
            max_position_embeddings: CONTEXT as usize,
            original_max_position_embeddings: None,
            partial_rotary_factor: (rope_dims != HEAD_DIM).then_some(rope_dims as f64 / HEAD_DIM as f64),
            tie_word_embeddings: false,
        };
        let mut theirs = reference::Model::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &device)).unwrap();

        let mut host = engine(&path);
        let prompt_ids = prompt.flatten_all().unwrap().to_vec1::<u32>().unwrap();

        let case = format!("base {base}, {rope_dims} rotated dims");
        let (a, b) = (ours.forward(&prompt, 0).unwrap(), theirs.forward(&prompt, 0).unwrap());
        let (difference, scale) = logit_difference(&a, &b);
        assert!(scale > 0.1, "{case}: logits are all near zero: the comparison would prove nothing");
        assert!(difference < 1e-3 * scale.max(1.0), "{case}: prompt logits differ by {difference}");
        let (engine_off, _) = logit_difference(&engine_logits(&mut host, &prompt_ids, 0), &b);
        eprintln!("phi3 {case}: engine vs candle f32 phi3, prompt: {engine_off} (logit scale {scale})");
        assert!(engine_off < 1e-3 * scale.max(1.0), "{case}: the engine's prompt logits differ by {engine_off}");
        if rope_dims == HEAD_DIM && base == 250_000.0 {
            // candle's quantized_phi3 on the same file: computed with base 10 000.
            let (content, mut file) = open(&path);
            let mut candles = quantized_phi3::ModelWeights::from_gguf(false, content, &mut file, &device).unwrap();
            let (off, _) = logit_difference(&candles.forward(&prompt, 0).unwrap(), &b);
            assert!(off > 1e-2 * scale, "{case}: candle's quantized_phi3 was expected to be off, by {off}");
        }
        for (step, token) in steps {
            let input = Tensor::new(&[[token]], &device).unwrap();
            let (a, b) = (ours.forward(&input, step).unwrap(), theirs.forward(&input, step).unwrap());
            let (difference, _) = logit_difference(&a, &b);
            assert!(difference < 1e-3 * scale.max(1.0), "{case}: step {step} logits differ by {difference}");
            let (engine_off, _) = logit_difference(&engine_logits(&mut host, &[token], step), &b);
            eprintln!("phi3 {case}: engine vs candle f32 phi3, step {step}: {engine_off}");
            assert!(engine_off < 1e-3 * scale.max(1.0), "{case}: the engine's step {step} logits differ by {engine_off}");
            last_logits.push(a);
        }
    }
    // The base is read: 250 000 and 10 000 give different answers on the same weights.
    let (difference, scale) = logit_difference(&last_logits[1], &last_logits[3]);
    assert!(difference > 1e-2 * scale, "the rope base made no difference ({difference})");
}

/// LongRoPE (Phi-3-*-128k, Phi-4-mini): per-frequency divisors, the long ones when the
/// context exceeds `phi3.rope.scaling.original_context_length`, and `attn_factor` scaling
/// cos and sin, over a partial rotary. candle's f32 `models::phi3` picks the factors per
/// position and does not scale, as llama.cpp does not; the reference here is the host's
/// phi3 port (host/src/families/gguf/phi3.rs, whose tables its unit tests check), on F32
/// weights: the dense decoder engine computes what it computes, to 1e-3, with the long
/// and with the short factors, and the two differ.
#[test]
fn phi3_longrope_on_the_engine_computes_what_the_phi3_port_computes() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::{Device, Tensor};
    use lantern::families::gguf::phi3::ModelWeights;
    use tiny_gguf::HEAD_DIM;

    let dir = tempfile::tempdir().unwrap();
    let quantized = dir.path().join("phi4-mini-q8_0.gguf");
    tiny_gguf::write(&checkpoints().swap_remove(2).spec, &quantized);
    let device = Device::Cpu;
    let ids = [40u32, 72, 101, 108, 111, 32, 260, 97, 33, 44];
    let prompt = Tensor::new(&ids, &device).unwrap().unsqueeze(0).unwrap();
    let rope_dims = HEAD_DIM / 2;
    let long: Vec<f32> = (0..rope_dims / 2).map(|i| 1.0 + 7.0 * i as f32).collect();
    let short: Vec<f32> = (0..rope_dims / 2).map(|i| 1.0 + 0.5 * i as f32).collect();
    let mut answers = Vec::new();
    for (case, original) in [("long factors", CONTEXT / 2), ("short factors", CONTEXT * 16)] {
        let path = dir.path().join(format!("phi4-mini-{original}.gguf"));
        let changes = [
            ("phi3.rope.freq_base", Md::F32(250_000.0)),
            ("phi3.rope.dimension_count", Md::U32(rope_dims as u32)),
            ("phi3.rope.scaling.type", Md::String("longrope".into())),
            ("phi3.rope.scaling.attn_factor", Md::F32(1.19)),
            ("phi3.rope.scaling.original_context_length", Md::U32(original)),
        ];
        let extra = [("rope_factors_long.weight", long.clone()), ("rope_factors_short.weight", short.clone())];
        rewrite_tensors(&quantized, &path, &changes, &extra, |_, _| {});
        let mut file = std::fs::File::open(&path).unwrap();
        let mut port = ModelWeights::from_gguf(Content::read(&mut file).unwrap(), &mut file, &device).unwrap();
        let mut host = engine(&path);

        let b = port.forward(&prompt, 0).unwrap();
        let (mut worst, scale) = logit_difference(&engine_logits(&mut host, &ids, 0), &b);
        assert!(scale > 0.1, "{case}: logits are all near zero: the comparison would prove nothing");
        for (step, token) in [(10usize, 97u32), (11, 258)] {
            let b = port.forward(&Tensor::new(&[[token]], &device).unwrap(), step).unwrap();
            let a = engine_logits(&mut host, &[token], step);
            worst = worst.max(logit_difference(&a, &b).0);
            answers.push(a);
        }
        eprintln!("phi3 LongRoPE, {case}, attn_factor 1.19, 8 of 16 dims rotated: engine vs phi3 port {worst} (logit scale {scale})");
        assert!(worst < 1e-3 * scale.max(1.0), "{case}: the engine's logits differ by {worst}");
    }
    let (moved, scale) = logit_difference(&answers[1], &answers[3]);
    assert!(moved > 1e-2 * scale, "long and short factors gave the same answer ({moved})");
}

/// A phi3 file asking for a RoPE scaling the host does not compute is refused, naming it,
/// by the phi3 port and by the dense decoder engine alike.
#[test]
fn phi3_with_an_unsupported_rope_scaling_is_refused() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::quantized::GgmlDType;
    use lantern::families::gguf::phi3::ModelWeights;

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("phi.gguf");
    tiny_gguf::write(&checkpoints().swap_remove(2).spec, &plain);
    for (key, value, named) in [
        ("phi3.rope.scaling.type", Md::String("yarn".into()), "yarn"),
        ("phi3.rope.scaling.factor", Md::F32(4.0), "phi3.rope.scaling.factor"),
    ] {
        let path = dir.path().join("scaled.gguf");
        tiny_gguf::rewrite(&plain, &path, &[(key, value)], GgmlDType::Q8_0);
        let mut file = std::fs::File::open(&path).unwrap();
        let refused = ModelWeights::from_gguf(Content::read(&mut file).unwrap(), &mut file, &candle_core::Device::Cpu);
        match refused {
            Err(lantern::LanternError::ModelNotSupported(message)) => assert!(message.contains(named), "{message}"),
            Err(other) => panic!("{key}: refused with the wrong error: {other}"),
            Ok(_) => panic!("{key}: loaded"),
        }
        // The dense decoder engine (the default for phi3) refuses it the same way.
        let mut file = std::fs::File::open(&path).unwrap();
        match lantern::families::gguf::llama::Llama::from_gguf(&Content::read(&mut file).unwrap(), &mut file) {
            Err(lantern::LanternError::ModelNotSupported(message)) => assert!(message.contains(named), "engine: {message}"),
            Err(other) => panic!("{key}: the engine refused with the wrong error: {other}"),
            Ok(_) => panic!("{key}: the engine loaded"),
        }
    }
}

/// candle's `quantized_qwen3` builds its RoPE tables in f16 (without `general.dtype`),
/// where positions above 2048 are not exact. The host's qwen3 module computes them in
/// f64: a 3000-token prompt and cached steps at 3000 and 3001 give, on the same tiny F32
/// weights, what candle's non-quantized f32 `models::qwen3` computes (to 1e-3), and
/// candle's quantized model does not. The host's dense decoder engine (the default for
/// qwen3 files; the module is `LANTERN_GGUF_ENGINE=candle`'s) computes it too.
#[test]
fn qwen3_past_position_2048_computes_what_candles_f32_qwen3_computes() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{Activation, VarBuilder};
    use candle_transformers::models::{quantized_qwen3, qwen3 as reference};
    use lantern::families::gguf::qwen3::ModelWeights;
    use tiny_gguf::{FFN, HEADS, HEAD_DIM, HIDDEN, KV_HEADS, LAYERS};

    const POSITIONS: usize = 4096;
    let dir = tempfile::tempdir().unwrap();
    let quantized = dir.path().join("qwen3-q8_0.gguf");
    let mut spec = checkpoints().swap_remove(0).spec;
    assert_eq!(spec.arch, Arch::Qwen3);
    spec.context_length = POSITIONS as u32;
    tiny_gguf::write(&spec, &quantized);
    let path = dir.path().join("qwen3-f32.gguf");
    tiny_gguf::rewrite(&quantized, &path, &[("qwen3.rope.freq_base", Md::F32(1_000_000.0))], GgmlDType::F32);
    let open = || {
        let mut file = std::fs::File::open(&path).unwrap();
        (Content::read(&mut file).unwrap(), file)
    };
    let device = Device::Cpu;
    let (content, mut file) = open();
    let mut ours = ModelWeights::from_gguf(content, &mut file, &device).unwrap();
    let (content, mut file) = open();
    let mut candles = quantized_qwen3::ModelWeights::from_gguf(content, &mut file, &device).unwrap();
    let tensors = tiny_gguf::hf_tensors(&path);
    let vocab_size = tensors["model.embed_tokens.weight"].dim(0).unwrap();
    let config = reference::Config {
        vocab_size,
        hidden_size: HIDDEN,
        intermediate_size: FFN,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        head_dim: HEAD_DIM,
        attention_bias: false,
        num_key_value_heads: KV_HEADS,
        max_position_embeddings: POSITIONS,
        sliding_window: None,
        max_window_layers: LAYERS,
        tie_word_embeddings: false,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        use_sliding_window: false,
        hidden_act: Activation::Silu,
    };
    let mut theirs =
        reference::ModelForCausalLM::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &device)).unwrap();

    let mut state = 12345u64;
    let ids: Vec<u32> = (0..3000)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % 256) as u32
        })
        .collect();
    let prompt = Tensor::new(ids.as_slice(), &device).unwrap().unsqueeze(0).unwrap();
    let (a, b) = (ours.forward(&prompt, 0).unwrap(), theirs.forward(&prompt, 0).unwrap());
    let (difference, scale) = logit_difference(&a, &b);
    assert!(scale > 0.1, "logits are all near zero: the comparison would prove nothing");
    assert!(difference < 1e-3 * scale.max(1.0), "prompt logits differ by {difference}");
    let mut host = engine(&path);
    let mut engine_worst = logit_difference(&engine_logits(&mut host, &ids, 0), &b).0;
    let mut candle_worst = logit_difference(&candles.forward(&prompt, 0).unwrap(), &b).0;
    for (step, token) in [(3000usize, 97u32), (3001, 258)] {
        let input = Tensor::new(&[[token]], &device).unwrap();
        let (a, b) = (ours.forward(&input, step).unwrap(), theirs.forward(&input, step).unwrap());
        let (difference, _) = logit_difference(&a, &b);
        assert!(difference < 1e-3 * scale.max(1.0), "step {step} logits differ by {difference}");
        engine_worst = engine_worst.max(logit_difference(&engine_logits(&mut host, &[token], step), &b).0);
        candle_worst = candle_worst.max(logit_difference(&candles.forward(&input, step).unwrap(), &b).0);
    }
    assert!(candle_worst > 1e-2 * scale, "candle's quantized_qwen3 was expected to be off, by {candle_worst}");
    eprintln!("qwen3 to position 3001: engine vs candle f32 qwen3 {engine_worst} (logit scale {scale}), candle quantized_qwen3 {candle_worst}");
    assert!(engine_worst < 1e-3 * scale.max(1.0), "the engine's logits differ by {engine_worst}");
}

/// Qwen2 adds biases to the q, k and v projections and rotates NeoX-style. On tiny F32
/// weights (random biases), the host's dense decoder engine computes what candle's
/// non-quantized f32 `models::qwen2` computes, prompt and cached steps, to 1e-3; so does
/// candle's `quantized_qwen2` (what `LANTERN_GGUF_ENGINE=candle` runs). Without the
/// biases the answer differs: they are read.
#[test]
fn qwen2_biases_on_the_engine_compute_what_candles_f32_qwen2_computes() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{Activation, VarBuilder};
    use candle_transformers::models::{quantized_qwen2, qwen2 as reference};
    use tiny_gguf::{FFN, HEADS, HIDDEN, KV_HEADS, LAYERS};

    let dir = tempfile::tempdir().unwrap();
    let quantized = dir.path().join("qwen2-q8_0.gguf");
    tiny_gguf::write(&Spec::qwen(Arch::Qwen2, 31), &quantized);
    let path = dir.path().join("qwen2-f32.gguf");
    tiny_gguf::rewrite(&quantized, &path, &[("qwen2.rope.freq_base", Md::F32(1_000_000.0))], GgmlDType::F32);
    let device = Device::Cpu;
    let tensors = tiny_gguf::hf_tensors(&path);
    assert!(tensors.contains_key("model.layers.0.self_attn.q_proj.bias"));
    let config = reference::Config {
        vocab_size: tensors["model.embed_tokens.weight"].dim(0).unwrap(),
        hidden_size: HIDDEN,
        intermediate_size: FFN,
        num_hidden_layers: LAYERS,
        num_attention_heads: HEADS,
        num_key_value_heads: KV_HEADS,
        max_position_embeddings: CONTEXT as usize,
        sliding_window: CONTEXT as usize,
        max_window_layers: LAYERS,
        tie_word_embeddings: false,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        use_sliding_window: false,
        hidden_act: Activation::Silu,
    };
    let mut theirs = reference::ModelForCausalLM::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &device)).unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let mut candles = quantized_qwen2::ModelWeights::from_gguf(Content::read(&mut file).unwrap(), &mut file, &device).unwrap();
    let mut host = engine(&path);

    let ids = [40u32, 72, 101, 108, 111, 32, 260, 97, 33, 44];
    let prompt = Tensor::new(&ids, &device).unwrap().unsqueeze(0).unwrap();
    let b = theirs.forward(&prompt, 0).unwrap();
    let (engine_off, scale) = logit_difference(&engine_logits(&mut host, &ids, 0), &b);
    let mut candle_off = logit_difference(&candles.forward(&prompt, 0).unwrap(), &b).0;
    assert!(scale > 0.1, "logits are all near zero: the comparison would prove nothing");
    let mut engine_worst = engine_off;
    let mut last = Vec::new();
    for (step, token) in [(10usize, 97u32), (11, 258)] {
        let input = Tensor::new(&[[token]], &device).unwrap();
        let b = theirs.forward(&input, step).unwrap();
        let a = engine_logits(&mut host, &[token], step);
        engine_worst = engine_worst.max(logit_difference(&a, &b).0);
        candle_off = candle_off.max(logit_difference(&candles.forward(&input, step).unwrap(), &b).0);
        last = a.to_vec1::<f32>().unwrap();
    }
    eprintln!("qwen2: engine vs candle f32 qwen2 {engine_worst}, candle quantized_qwen2 {candle_off} (logit scale {scale})");
    assert!(engine_worst < 1e-3 * scale.max(1.0), "the engine's logits differ by {engine_worst}");
    assert!(candle_off < 1e-3 * scale.max(1.0), "quantized_qwen2's logits differ by {candle_off}");

    // The same weights without the biases: another answer.
    let unbiased = dir.path().join("qwen2-zero-bias.gguf");
    rewrite_tensors(&path, &unbiased, &[], &[], |name, values| {
        if name.ends_with(".bias") {
            values.iter_mut().for_each(|v| *v = 0.0);
        }
    });
    let mut host = engine(&unbiased);
    host.forward_tokens(&ids, 0).unwrap();
    host.forward_tokens(&[97], 10).unwrap();
    let other = host.forward_tokens(&[258], 11).unwrap();
    let moved = last.iter().zip(&other).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(moved > 1e-2 * scale, "the biases made no difference ({moved})");
}

/// Copies the checkpoint at `src` to `dst` as F32, each tensor's values passed through
/// `edit`, with `extra` 1-D tensors added and `changes` made to the metadata.
fn rewrite_tensors(
    src: &std::path::Path,
    dst: &std::path::Path,
    changes: &[(&str, candle_core::quantized::gguf_file::Value)],
    extra: &[(&str, Vec<f32>)],
    mut edit: impl FnMut(&str, &mut Vec<f32>),
) {
    use candle_core::quantized::gguf_file::{self, Content, Value as Md};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    let mut file = std::fs::File::open(src).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut tensors: Vec<(String, QTensor)> = content
        .tensor_infos
        .keys()
        .map(|name| {
            let tensor = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            let shape = tensor.shape().clone();
            let mut values = tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            edit(name, &mut values);
            let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
            (name.clone(), QTensor::quantize(&tensor, GgmlDType::F32).unwrap())
        })
        .collect();
    for (name, values) in extra {
        let tensor = Tensor::new(values.as_slice(), &Device::Cpu).unwrap();
        tensors.push((name.to_string(), QTensor::quantize(&tensor, GgmlDType::F32).unwrap()));
    }
    let mut metadata = content.metadata.clone();
    for (key, value) in changes {
        metadata.insert(key.to_string(), value.clone());
    }
    let metadata: Vec<(&str, &Md)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &metadata, &tensors).unwrap();
}

/// The Kimi-K2 checkpoint's spec with `experts` routed experts, `used` per token.
fn deepseek2_spec(experts: usize, used: usize) -> Spec {
    let mut spec = checkpoints().swap_remove(4).spec;
    assert_eq!(spec.arch, Arch::DeepSeek2);
    (spec.experts, spec.experts_used) = (experts, used);
    spec
}

/// The host's deepseek2 module (host/src/families/gguf/deepseek2/) checked against
/// candle's own NON-quantized `models::deepseek2` on the same tiny weights, stored as F32
/// so that no quantization differs: prompt logits and two cached steps, to 1e-3.
///
/// candle's model is DeepSeek-V2's: softmax router only (no sigmoid, no `exp_probs_b`),
/// its group-limited top-k does not select by group (it takes the top experts' indices as
/// group indices), and its `norm_topk_prob` path fails (it divides a (tokens, k) tensor by
/// a (tokens, 1) one without broadcasting) and would normalise *instead of* scaling. The
/// host follows llama.cpp (normalise, then scale; sigmoid and groups as DeepSeek-V3), so
/// the comparison covers what both compute: softmax routing with one group, unnormalised,
/// scaled by 2.5 or not. The rest is compared whole: MLA in both
/// tensor layouts (`attn_k_b`/`attn_v_b` and the older `attn_kv_b`), low-rank and plain
/// queries, YaRN with mscale, the dense first layer, routed and shared experts. The
/// sigmoid router, the selection bias and the groups are checked in the host's unit tests
/// (deepseek2/router.rs).
#[test]
fn deepseek2_computes_what_candles_f32_deepseek2_computes() {
    use candle_core::quantized::gguf_file::Content;
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;
    use candle_transformers::models::deepseek2 as reference;
    use lantern::families::gguf::deepseek2::DeepSeek2;
    use tiny_gguf::deepseek2::{Options, KV_LORA, NOPE, Q_LORA, ROPE, VALUE};
    use tiny_gguf::{EXPERT_FFN, FFN, HEADS, HIDDEN, LAYERS};

    let device = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let spec = deepseek2_spec(8, 2);
    let scaled = Options {
        gating: 1,
        selection_bias: false,
        weights_norm: false,
        weights_scale: 2.5,
        yarn: Some((4.0, 64, 0.707)),
        ..Options::kimi_k2()
    };
    let unscaled = Options {
        weights_scale: 1.0,
        yarn: None,
        low_rank_queries: false,
        legacy_kv_b: true,
        ..scaled.clone()
    };
    let prompt = Tensor::new(&[[40u32, 72, 101, 108, 111, 32, 260, 97, 33, 44]], &device).unwrap();
    for (case, options) in [("scaled, MLA layout, YaRN", scaled), ("unscaled, legacy attn_kv_b, plain queries", unscaled)] {
        let quantized = dir.path().join("q8.gguf");
        tiny_gguf::write_with(&spec, &options, &quantized);
        let path = dir.path().join("f32.gguf");
        tiny_gguf::rewrite(&quantized, &path, &[], GgmlDType::F32);
        let mut file = std::fs::File::open(&path).unwrap();
        let mut ours = DeepSeek2::from_gguf(Content::read(&mut file).unwrap(), &mut file, &device).unwrap();

        let tensors = tiny_gguf::deepseek2::hf_tensors(&path);
        let rope_scaling = options.yarn.map(|(factor, original, mscale)| {
            serde_json::json!({ "type": "yarn", "factor": factor, "original_max_position_embeddings": original,
                "beta_fast": 32.0, "beta_slow": 1.0, "mscale": mscale, "mscale_all_dim": mscale })
        });
        let config: reference::DeepSeekV2Config = serde_json::from_value(serde_json::json!({
            "vocab_size": tensors["model.embed_tokens.weight"].dim(0).unwrap(),
            "hidden_size": HIDDEN, "intermediate_size": FFN, "moe_intermediate_size": EXPERT_FFN,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "n_shared_experts": options.shared_experts, "n_routed_experts": spec.experts,
            "num_experts_per_tok": spec.experts_used, "routed_scaling_factor": options.weights_scale,
            "norm_topk_prob": options.weights_norm, "first_k_dense_replace": 1, "moe_layer_freq": 1,
            "topk_method": "greedy", "scoring_func": "softmax", "n_group": 1, "topk_group": 1,
            "max_position_embeddings": CONTEXT, "rms_norm_eps": 1e-6, "rope_theta": 10_000.0,
            "rope_scaling": rope_scaling, "attention_bias": false,
            "q_lora_rank": if options.low_rank_queries { Some(Q_LORA) } else { None },
            "kv_lora_rank": KV_LORA, "qk_nope_head_dim": NOPE, "qk_rope_head_dim": ROPE, "v_head_dim": VALUE,
        }))
        .unwrap();
        let mut theirs = reference::DeepSeekV2::new(&config, VarBuilder::from_tensors(tensors, DType::F32, &device)).unwrap();

        let (a, b) = (ours.forward(&prompt, 0).unwrap(), theirs.forward(&prompt, 0).unwrap());
        let (difference, scale) = logit_difference(&a, &b);
        assert!(scale > 0.1, "{case}: logits are all near zero: the comparison would prove nothing");
        assert!(difference < 1e-3 * scale.max(1.0), "{case}: prompt logits differ by {difference} (scale {scale})");
        for (step, token) in [(10usize, 97u32), (11, 258)] {
            let input = Tensor::new(&[[token]], &device).unwrap();
            let (a, b) = (ours.forward(&input, step).unwrap(), theirs.forward(&input, step).unwrap());
            let (difference, _) = logit_difference(&a, &b);
            assert!(difference < 1e-3 * scale.max(1.0), "{case}: step {step} logits differ by {difference}");
        }
    }
}

/// The same weights in the two tensor layouts llama.cpp has written (one `attn_kv_b`, or
/// `attn_k_b` + `attn_v_b` since its MLA change) give the same model, with Kimi-K2's
/// router (sigmoid, selection bias, normalised and scaled weights) and YaRN.
#[test]
fn deepseek2_reads_both_attention_layouts_alike() {
    use candle_core::quantized::gguf_file::Content;
    use candle_core::{Device, Tensor};
    use lantern::families::gguf::deepseek2::DeepSeek2;
    use tiny_gguf::deepseek2::Options;

    let device = Device::Cpu;
    let dir = tempfile::tempdir().unwrap();
    let spec = deepseek2_spec(8, 2);
    let open = |path: &std::path::Path| {
        let mut file = std::fs::File::open(path).unwrap();
        DeepSeek2::from_gguf(Content::read(&mut file).unwrap(), &mut file, &device).unwrap()
    };
    let (mla_path, legacy_path) = (dir.path().join("mla.gguf"), dir.path().join("legacy.gguf"));
    let quantized = dir.path().join("mla-q8.gguf");
    tiny_gguf::write_with(&spec, &Options::kimi_k2(), &quantized);
    // F32 both: candle's quantized matmuls round activations, plain f32 ones do not.
    tiny_gguf::rewrite(&quantized, &mla_path, &[], candle_core::quantized::GgmlDType::F32);
    join_kv_b(&mla_path, &legacy_path);
    let (mut mla, mut legacy) = (open(&mla_path), open(&legacy_path));
    let prompt = Tensor::new(&[[40u32, 72, 101, 108, 111, 32]], &device).unwrap();
    let (a, b) = (mla.forward(&prompt, 0).unwrap(), legacy.forward(&prompt, 0).unwrap());
    let (difference, scale) = logit_difference(&a, &b);
    assert!(scale > 0.1, "logits are all near zero");
    assert!(difference < 1e-4 * scale.max(1.0), "the layouts differ by {difference}");
}

/// Rewrites a deepseek2 file of the MLA layout into the older one: per layer one
/// `attn_kv_b` (heads × (nope + value), kv_lora) from `attn_k_b` (transposed back) and
/// `attn_v_b`, per-head key/value lengths, no `_mla` keys; F32 so nothing is re-rounded.
fn join_kv_b(src: &std::path::Path, dst: &std::path::Path) {
    use candle_core::quantized::gguf_file::{self, Content, Value as Md};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};
    use tiny_gguf::deepseek2::{NOPE, ROPE, VALUE};

    let mut file = std::fs::File::open(src).unwrap();
    let content = Content::read(&mut file).unwrap();
    let mut metadata = content.metadata.clone();
    metadata.remove("deepseek2.attention.key_length_mla");
    metadata.remove("deepseek2.attention.value_length_mla");
    metadata.insert("deepseek2.attention.key_length".into(), Md::U32((NOPE + ROPE) as u32));
    metadata.insert("deepseek2.attention.value_length".into(), Md::U32(VALUE as u32));
    metadata.insert("deepseek2.attention.head_count_kv".into(), Md::U32(tiny_gguf::HEADS as u32));
    let mut read = |name: &str| content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for name in content.tensor_infos.keys() {
        if name.ends_with("attn_v_b.weight") {
            continue;
        }
        let tensor = if let Some(layer) = name.strip_suffix(".attn_k_b.weight") {
            let k_b = read(name).transpose(1, 2).unwrap();
            let v_b = read(&format!("{layer}.attn_v_b.weight"));
            let kv_b = Tensor::cat(&[&k_b, &v_b], 1).unwrap();
            let (heads, rows, cols) = kv_b.dims3().unwrap();
            tensors.push((format!("{layer}.attn_kv_b.weight"), QTensor::quantize(&kv_b.reshape((heads * rows, cols)).unwrap(), GgmlDType::F32).unwrap()));
            continue;
        } else {
            read(name)
        };
        tensors.push((name.clone(), QTensor::quantize(&tensor, GgmlDType::F32).unwrap()));
    }
    let metadata: Vec<(&str, &Md)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &metadata, &tensors).unwrap();
}

/// What the host does not compute is refused as `model-not-supported`, naming it; broken
/// metadata is an error naming the key, never a panic.
#[test]
fn deepseek2_refuses_what_it_does_not_compute() {
    use candle_core::quantized::gguf_file::{Content, Value as Md};
    use candle_core::quantized::GgmlDType;
    use lantern::families::gguf::deepseek2::DeepSeek2;
    use lantern::LanternError;

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("kimi.gguf");
    tiny_gguf::write(&deepseek2_spec(4, 2), &plain);
    let cases = [
        ("deepseek2.expert_gating_func", Md::U32(3), "expert_gating_func 3", true),
        ("deepseek2.rope.scaling.type", Md::String("longrope".into()), "longrope", true),
        ("deepseek2.expert_used_count", Md::U32(9), "expert_used_count 9", false),
        ("deepseek2.expert_group_count", Md::U32(3), "groups", false),
        ("deepseek2.attention.kv_lora_rank", Md::String("512".into()), "kv_lora_rank", false),
    ];
    for (key, value, named, unsupported) in cases {
        let path = dir.path().join("changed.gguf");
        tiny_gguf::rewrite(&plain, &path, &[(key, value)], GgmlDType::F32);
        let mut file = std::fs::File::open(&path).unwrap();
        match DeepSeek2::from_gguf(Content::read(&mut file).unwrap(), &mut file, &candle_core::Device::Cpu) {
            Err(LanternError::ModelNotSupported(message)) if unsupported => assert!(message.contains(named), "{key}: {message}"),
            Err(LanternError::InferenceFailed(message)) if !unsupported => assert!(message.contains(named), "{key}: {message}"),
            Err(other) => panic!("{key}: refused with the wrong error: {other}"),
            Ok(_) => panic!("{key}: loaded"),
        }
    }
}

/// `unsloth/Kimi-K2-Instruct-GGUF` through the host's own catalog entry (not the test's):
/// the default tag Q4_K_M picks the split parts in the repo's `Q4_K_M/` folder (a UD-
/// variant beside it is left alone), they download and load as one deepseek2 model, and
/// the answer equals the unsplit file's.
#[tokio::test]
async fn kimi_k2_resolves_from_its_repo_and_its_split_parts_load_as_one_deepseek2_model() {
    let files = tempfile::tempdir().unwrap();
    let repo = files.path().join("repo");
    for folder in ["Q4_K_M", "UD-Q4_K_XL"] {
        std::fs::create_dir_all(repo.join(folder)).unwrap();
    }
    let spec = checkpoints().swap_remove(4).spec;
    let whole = files.path().join("unsplit").join("model.gguf");
    std::fs::create_dir_all(whole.parent().unwrap()).unwrap();
    tiny_gguf::write(&spec, &whole);
    gguf_split::split(&whole, 3, &repo.join("Q4_K_M"), "Kimi-K2-Instruct-Q4_K_M");
    let other = files.path().join("other.gguf");
    tiny_gguf::write(&Spec { seed: 99, ..checkpoints().swap_remove(4).spec }, &other);
    gguf_split::split(&other, 2, &repo.join("UD-Q4_K_XL"), "Kimi-K2-Instruct-UD-Q4_K_XL");

    let mirror = Mirror::builder()
        .repo(KIMI_K2, &repo)
        .repo("test/kimi-unsplit", whole.parent().unwrap())
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut catalog = Catalog::builtin();
    catalog.insert(CatalogEntry {
        key: "test/kimi-unsplit".into(),
        repo: RepoRef::main("test/kimi-unsplit"),
        family: Family::GgufLlm,
        capabilities: vec![Capability::TextGeneration],
        files: vec!["model.gguf".into()],
        other_repos: Vec::new(),
        gguf_quant: None,
        description: "the Kimi-K2 test checkpoint, unsplit".into(),
    });
    let cache = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .hub_config(support::hub_config(&mirror.endpoint(), cache.path()))
        .catalog(catalog)
        .build()
        .unwrap();
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let generate = |key: &'static str| {
        let (host, plugin) = (&host, &plugin);
        async move {
            let policy = Policy::default().allow_model(KIMI_K2).allow_model("test/kimi-unsplit");
            let words = args(&["generate", key, "Hello the sea", "--max", "8"]);
            json(&host.run(plugin, policy, words, Stdio::Capture).await.unwrap().result)
        }
    };
    let reference = generate("test/kimi-unsplit").await;
    assert_eq!(reference["finished"]["generated_tokens"], 8, "{reference}");
    for key in [KIMI_K2, "unsloth/Kimi-K2-Instruct-GGUF:Q4_K_M"] {
        let answer = generate(key).await;
        assert_eq!(answer["text"], reference["text"], "{key}: the split parts must answer as the whole file: {answer}");
    }
    for part in 1..=3 {
        let file = format!("Q4_K_M/Kimi-K2-Instruct-Q4_K_M-{part:05}-of-00003.gguf");
        assert_eq!(mirror.stats().file_requests(KIMI_K2, &file), 1, "{file} downloaded once");
    }
    let ud = "UD-Q4_K_XL/Kimi-K2-Instruct-UD-Q4_K_XL-00001-of-00002.gguf";
    assert_eq!(mirror.stats().file_requests(KIMI_K2, ud), 0, "the UD- variant is not Q4_K_M");
}
