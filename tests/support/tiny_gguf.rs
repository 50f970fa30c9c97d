//! Writes tiny GGUF checkpoints with random weights (NOT real models): the tensor names
//! and metadata keys are those llama.cpp's converter writes and candle's quantized
//! loaders read, the sizes are a few kilobytes. They exercise the whole path
//! (download, architecture dispatch from metadata, tokenizer and chat template from
//! metadata, generation, errors) where no real Qwen3 / Phi / Kimi weights can be had.

#![allow(dead_code)]

#[path = "tiny_deepseek2.rs"]
pub mod deepseek2;

use crate::support::splitmix::SplitMix64;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = HIDDEN / HEADS;
pub const FFN: usize = 128;
pub const LAYERS: usize = 2;
pub const EXPERT_FFN: usize = 32;

/// `general.architecture` values, as llama.cpp names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Phi3,
    DeepSeek2,
}

impl Arch {
    fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Qwen3Moe => "qwen3moe",
            Arch::Phi3 => "phi3",
            Arch::DeepSeek2 => "deepseek2",
        }
    }
}

/// The two vocabulary styles GGUF files carry.
#[derive(Clone, Copy, Debug)]
pub enum VocabStyle {
    /// `tokenizer.ggml.model = "gpt2"`: byte-level BPE with merges (Qwen, Phi-4, DeepSeek).
    Gpt2 { pre: &'static str },
    /// `tokenizer.ggml.model = "llama"`: SentencePiece pieces with scores and `<0xNN>` byte tokens (Phi-3).
    SentencePiece,
}

pub struct Spec {
    pub arch: Arch,
    pub vocab: VocabStyle,
    /// Control tokens, appended after the ordinary vocabulary.
    pub specials: &'static [&'static str],
    pub bos: Option<&'static str>,
    pub eos: &'static str,
    pub add_bos: bool,
    pub chat_template: Option<&'static str>,
    pub context_length: u32,
    pub seed: u64,
    /// For `qwen3moe` and `deepseek2`: experts per layer, and how many each token uses.
    pub experts: usize,
    pub experts_used: usize,
}

impl Spec {
    /// A Qwen-style checkpoint (GPT-2 byte-level BPE with the `qwen2` pre-tokenizer, ChatML
    /// specials, no BOS, no template): what most tests need when the vocabulary is not the
    /// point. Four experts, two per token, where the architecture has experts.
    pub fn qwen(arch: Arch, seed: u64) -> Spec {
        Spec {
            arch,
            vocab: VocabStyle::Gpt2 { pre: "qwen2" },
            specials: &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            bos: None,
            eos: "<|im_end|>",
            add_bos: false,
            chat_template: None,
            context_length: 256,
            seed,
            experts: 4,
            experts_used: 2,
        }
    }
}

const TYPE_NORMAL: i32 = 1;
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_BYTE: i32 = 6;

/// GPT-2's printable stand-in for each byte (`bytes_to_unicode`).
pub fn gpt2_byte_char(byte: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(byte) {
        return byte as char;
    }
    let shift = (0..byte).filter(|b| !printable(*b)).count() as u32;
    char::from_u32(256 + shift).unwrap()
}

/// Uniform in [-1, 1) from the shared SplitMix64 stream.
trait Uniform {
    fn uniform(&mut self) -> f32;
}

impl Uniform for SplitMix64 {
    fn uniform(&mut self) -> f32 {
        self.next_unit() * 2.0 - 1.0
    }
}

struct Vocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    scores: Vec<f32>,
    merges: Vec<String>,
    /// Whether the output layer may pick the token: printable text only, so random
    /// weights produce readable, whole-UTF-8 answers and never end early.
    pickable: Vec<bool>,
}

impl Vocab {
    fn push(&mut self, token: &str, kind: i32, score: f32, pickable: bool) {
        self.tokens.push(token.to_string());
        self.types.push(kind);
        self.scores.push(score);
        self.pickable.push(pickable);
    }

    fn id(&self, token: &str) -> u32 {
        self.tokens.iter().position(|t| t == token).unwrap_or_else(|| panic!("{token} is not in the vocabulary")) as u32
    }
}

fn gpt2_vocab(specials: &[&str]) -> Vocab {
    let mut vocab = Vocab { tokens: vec![], types: vec![], scores: vec![], merges: vec![], pickable: vec![] };
    for byte in 0..=255u8 {
        vocab.push(&gpt2_byte_char(byte).to_string(), TYPE_NORMAL, 0.0, (0x20..0x7f).contains(&byte));
    }
    // A few merges, each into a token of the vocabulary, as BPE training leaves them.
    for (left, right) in [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("e", "r"), ("Ġ", "a"), ("o", "n")] {
        vocab.merges.push(format!("{left} {right}"));
        vocab.push(&format!("{left}{right}"), TYPE_NORMAL, 0.0, true);
    }
    for special in specials {
        vocab.push(special, TYPE_CONTROL, 0.0, false);
    }
    vocab
}

fn sentencepiece_vocab(specials: &[&str]) -> Vocab {
    let mut vocab = Vocab { tokens: vec![], types: vec![], scores: vec![], merges: vec![], pickable: vec![] };
    vocab.push("<unk>", TYPE_UNKNOWN, 0.0, false);
    vocab.push("<s>", TYPE_CONTROL, 0.0, false);
    vocab.push("</s>", TYPE_CONTROL, 0.0, false);
    for byte in 0..=255u8 {
        vocab.push(&format!("<0x{byte:02X}>"), TYPE_BYTE, 0.0, false);
    }
    let mut pieces: Vec<String> = vec!["▁".into()];
    pieces.extend(('a'..='z').chain('A'..='Z').chain('0'..='9').map(String::from));
    pieces.extend([".", ",", "!", "?", ":"].map(String::from));
    // Whole words, each with the prefixes it is merged through: a SentencePiece BPE
    // vocabulary holds every intermediate piece, and llama.cpp (like the host) builds a
    // word by merging adjacent pieces, never by looking the whole word up.
    for word in ["▁the", "▁a", "▁is", "▁of", "▁Hello", "▁Hi", "▁sea", "▁Be", "▁brief", "er", "in", "on"] {
        let chars: Vec<char> = word.chars().collect();
        for end in 2..=chars.len() {
            let prefix: String = chars[..end].iter().collect();
            if !pieces.contains(&prefix) {
                pieces.push(prefix);
            }
        }
    }
    for (rank, piece) in pieces.iter().enumerate() {
        // Longer pieces score higher, as SentencePiece's log-probabilities roughly do.
        let score = -10.0 + piece.chars().count() as f32 - rank as f32 * 0.01;
        vocab.push(piece, TYPE_NORMAL, score, true);
    }
    for special in specials {
        vocab.push(special, TYPE_CONTROL, 0.0, false);
    }
    vocab
}

struct Writer {
    rng: SplitMix64,
    tensors: Vec<(String, QTensor)>,
}

impl Writer {
    fn random(&mut self, name: &str, shape: &[usize]) {
        let count: usize = shape.iter().product();
        let scale = 1.0 / (*shape.last().unwrap() as f32).sqrt() * 1.7;
        let values: Vec<f32> = (0..count).map(|_| self.rng.uniform() * scale).collect();
        self.put(name, values, shape, GgmlDType::Q8_0);
    }

    fn ones(&mut self, name: &str, len: usize) {
        self.put(name, vec![1.0; len], &[len], GgmlDType::F32);
    }

    fn put(&mut self, name: &str, values: Vec<f32>, shape: &[usize], dtype: GgmlDType) {
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        self.tensors.push((name.to_string(), QTensor::quantize(&tensor, dtype).unwrap()));
    }

    fn attention_qkv_separate(&mut self, p: &str) {
        self.random(&format!("{p}.attn_q.weight"), &[HEADS * HEAD_DIM, HIDDEN]);
        self.random(&format!("{p}.attn_k.weight"), &[KV_HEADS * HEAD_DIM, HIDDEN]);
        self.random(&format!("{p}.attn_v.weight"), &[KV_HEADS * HEAD_DIM, HIDDEN]);
        self.random(&format!("{p}.attn_output.weight"), &[HIDDEN, HEADS * HEAD_DIM]);
        // Qwen3's per-head RMS norms of queries and keys.
        self.ones(&format!("{p}.attn_q_norm.weight"), HEAD_DIM);
        self.ones(&format!("{p}.attn_k_norm.weight"), HEAD_DIM);
    }

    fn block(&mut self, spec: &Spec, options: &deepseek2::Options, layer: usize) {
        let arch = spec.arch;
        let p = format!("blk.{layer}");
        self.ones(&format!("{p}.attn_norm.weight"), HIDDEN);
        self.ones(&format!("{p}.ffn_norm.weight"), HIDDEN);
        match arch {
            Arch::Qwen2 => {
                // Qwen2 has biases on q, k and v (random, so that they matter), no head norms.
                self.random(&format!("{p}.attn_q.weight"), &[HEADS * HEAD_DIM, HIDDEN]);
                self.random(&format!("{p}.attn_k.weight"), &[KV_HEADS * HEAD_DIM, HIDDEN]);
                self.random(&format!("{p}.attn_v.weight"), &[KV_HEADS * HEAD_DIM, HIDDEN]);
                for (part, width) in [("q", HEADS * HEAD_DIM), ("k", KV_HEADS * HEAD_DIM), ("v", KV_HEADS * HEAD_DIM)] {
                    let bias: Vec<f32> = (0..width).map(|_| self.rng.uniform() * 0.5).collect();
                    self.put(&format!("{p}.attn_{part}.bias"), bias, &[width], GgmlDType::F32);
                }
                self.random(&format!("{p}.attn_output.weight"), &[HIDDEN, HEADS * HEAD_DIM]);
                self.random(&format!("{p}.ffn_gate.weight"), &[FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_up.weight"), &[FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_down.weight"), &[HIDDEN, FFN]);
            }
            Arch::Qwen3 => {
                self.attention_qkv_separate(&p);
                self.random(&format!("{p}.ffn_gate.weight"), &[FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_up.weight"), &[FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_down.weight"), &[HIDDEN, FFN]);
            }
            Arch::Qwen3Moe => {
                self.attention_qkv_separate(&p);
                // The router stays f32 in real files; the experts are stacked 3-D tensors.
                let router: Vec<f32> = (0..spec.experts * HIDDEN).map(|_| self.rng.uniform()).collect();
                self.put(&format!("{p}.ffn_gate_inp.weight"), router, &[spec.experts, HIDDEN], GgmlDType::F32);
                self.random(&format!("{p}.ffn_gate_exps.weight"), &[spec.experts, EXPERT_FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_up_exps.weight"), &[spec.experts, EXPERT_FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_down_exps.weight"), &[spec.experts, HIDDEN, EXPERT_FFN]);
            }
            Arch::Phi3 => {
                // Phi-3/4 fuse q, k, v into one projection and gate, up into another.
                self.random(&format!("{p}.attn_qkv.weight"), &[(HEADS + 2 * KV_HEADS) * HEAD_DIM, HIDDEN]);
                self.random(&format!("{p}.attn_output.weight"), &[HIDDEN, HIDDEN]);
                self.random(&format!("{p}.ffn_up.weight"), &[2 * FFN, HIDDEN]);
                self.random(&format!("{p}.ffn_down.weight"), &[HIDDEN, FFN]);
            }
            Arch::DeepSeek2 => deepseek2::block(self, spec, options, layer),
        }
    }
}

fn u32v(v: usize) -> Value {
    Value::U32(v as u32)
}

fn architecture_metadata(spec: &Spec, options: &deepseek2::Options) -> Vec<(String, Value)> {
    let (arch, context_length) = (spec.arch, spec.context_length);
    let a = arch.name();
    let mut md = vec![
        (format!("{a}.context_length"), Value::U32(context_length)),
        (format!("{a}.embedding_length"), u32v(HIDDEN)),
        (format!("{a}.block_count"), u32v(LAYERS)),
        (format!("{a}.feed_forward_length"), u32v(FFN)),
        (format!("{a}.attention.head_count"), u32v(HEADS)),
        (format!("{a}.attention.head_count_kv"), u32v(KV_HEADS)),
        (format!("{a}.attention.layer_norm_rms_epsilon"), Value::F32(1e-6)),
        (format!("{a}.rope.freq_base"), Value::F32(10_000.0)),
    ];
    match arch {
        Arch::Qwen3 | Arch::Qwen3Moe => {
            md.push((format!("{a}.attention.key_length"), u32v(HEAD_DIM)));
            md.push((format!("{a}.attention.value_length"), u32v(HEAD_DIM)));
        }
        Arch::Phi3 => md.push((format!("{a}.rope.dimension_count"), u32v(HEAD_DIM))),
        // Qwen2 files have no key_length: heads are hidden / heads wide.
        Arch::Qwen2 => {}
        Arch::DeepSeek2 => {
            // Its own head_count_kv: 1 over the compressed cache, or one per head in old files.
            md.retain(|(key, _)| !key.ends_with(".attention.head_count_kv"));
            md.extend(deepseek2::metadata(spec, options));
        }
    }
    if arch == Arch::Qwen3Moe {
        md.push((format!("{a}.expert_count"), u32v(spec.experts)));
        md.push((format!("{a}.expert_used_count"), u32v(spec.experts_used)));
        md.push((format!("{a}.expert_feed_forward_length"), u32v(EXPERT_FFN)));
    }
    md
}

/// Writes the checkpoint `spec` describes to `path`; returns its vocabulary (id order).
/// A deepseek2 checkpoint makes Kimi-K2's choices ([`deepseek2::Options::kimi_k2`]).
pub fn write(spec: &Spec, path: &Path) -> Vec<String> {
    write_with(spec, &deepseek2::Options::kimi_k2(), path)
}

/// [`write`], with `options` for a deepseek2 checkpoint (ignored by other architectures).
pub fn write_with(spec: &Spec, options: &deepseek2::Options, path: &Path) -> Vec<String> {
    let vocab = match spec.vocab {
        VocabStyle::Gpt2 { .. } => gpt2_vocab(spec.specials),
        VocabStyle::SentencePiece => sentencepiece_vocab(spec.specials),
    };
    let n_vocab = vocab.tokens.len();
    let mut w = Writer { rng: SplitMix64(spec.seed), tensors: vec![] };
    w.random("token_embd.weight", &[n_vocab, HIDDEN]);
    // Output rows of tokens that must never be picked are zero: their logit is 0 while
    // the best of ~100 random logits is positive.
    let scale = 1.0 / (HIDDEN as f32).sqrt() * 4.0;
    let output: Vec<f32> = (0..n_vocab * HIDDEN)
        .map(|i| if vocab.pickable[i / HIDDEN] { w.rng.uniform() * scale } else { 0.0 })
        .collect();
    w.put("output.weight", output, &[n_vocab, HIDDEN], GgmlDType::Q8_0);
    w.ones("output_norm.weight", HIDDEN);
    for layer in 0..LAYERS {
        w.block(spec, options, layer);
    }

    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(spec.arch.name().into())),
        ("general.name".into(), Value::String(format!("tiny random {} (test checkpoint)", spec.arch.name()))),
        ("general.file_type".into(), Value::U32(7)), // MOSTLY_Q8_0
        ("general.quantization_version".into(), Value::U32(2)),
    ];
    md.extend(architecture_metadata(spec, options));
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    match spec.vocab {
        VocabStyle::Gpt2 { pre } => {
            md.push(("tokenizer.ggml.model".into(), Value::String("gpt2".into())));
            md.push(("tokenizer.ggml.pre".into(), Value::String(pre.into())));
            md.push(("tokenizer.ggml.merges".into(), strings(&vocab.merges)));
        }
        VocabStyle::SentencePiece => {
            md.push(("tokenizer.ggml.model".into(), Value::String("llama".into())));
            md.push(("tokenizer.ggml.scores".into(), Value::Array(vocab.scores.iter().map(|s| Value::F32(*s)).collect())));
            md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)));
        }
    }
    md.push(("tokenizer.ggml.tokens".into(), strings(&vocab.tokens)));
    md.push(("tokenizer.ggml.token_type".into(), Value::Array(vocab.types.iter().map(|t| Value::I32(*t)).collect())));
    md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(vocab.id(spec.eos))));
    if let Some(bos) = spec.bos {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(vocab.id(bos))));
    }
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(spec.add_bos)));
    if let Some(template) = spec.chat_template {
        md.push(("tokenizer.chat_template".into(), Value::String(template.into())));
    }

    let metadata: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = w.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, &metadata, &tensors).unwrap();
    vocab.tokens
}

/// Copies the checkpoint at `src` to `dst` with `changes` made to its metadata and every
/// tensor stored as `dtype` (F32: the values the quantized file holds, exactly, so that
/// a reference in plain f32 matmuls computes the same model).
pub fn rewrite(src: &Path, dst: &Path, changes: &[(&str, Value)], dtype: GgmlDType) {
    let mut file = std::fs::File::open(src).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut metadata = content.metadata.clone();
    for (key, value) in changes {
        metadata.insert(key.to_string(), value.clone());
    }
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|name| {
            let values = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            (name.clone(), QTensor::quantize(&values, dtype).unwrap())
        })
        .collect();
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(dst).unwrap(), &metadata, &tensors).unwrap();
}

/// Every tensor of the checkpoint at `path`, dequantized to f32, under the Hugging Face
/// (transformers) name of the same weight, for candle's non-quantized models.
pub fn hf_tensors(path: &Path) -> std::collections::HashMap<String, Tensor> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let rename = |name: &str| -> String {
        let fixed = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output.weight", "lm_head.weight"),
            ("output_norm.weight", "model.norm.weight"),
        ];
        if let Some((_, hf)) = fixed.iter().find(|(gguf, _)| *gguf == name) {
            return hf.to_string();
        }
        let rest = name.strip_prefix("blk.").unwrap_or_else(|| panic!("unexpected tensor {name}"));
        let (layer, rest) = rest.split_once('.').unwrap();
        let (rest, kind) = rest.rsplit_once('.').unwrap();
        let part = match rest {
            "attn_norm" => "input_layernorm",
            "ffn_norm" => "post_attention_layernorm",
            "attn_qkv" => "self_attn.qkv_proj",
            "attn_q" => "self_attn.q_proj",
            "attn_k" => "self_attn.k_proj",
            "attn_v" => "self_attn.v_proj",
            "attn_output" => "self_attn.o_proj",
            "attn_q_norm" => "self_attn.q_norm",
            "attn_k_norm" => "self_attn.k_norm",
            "ffn_gate" => "mlp.gate_proj",
            "ffn_up" if content.tensor_infos.contains_key(&format!("blk.{layer}.ffn_gate.weight")) => "mlp.up_proj",
            "ffn_up" => "mlp.gate_up_proj",
            "ffn_down" => "mlp.down_proj",
            other => panic!("unexpected tensor {other}"),
        };
        format!("model.layers.{layer}.{part}.{kind}")
    };
    let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
    names
        .iter()
        .map(|name| {
            let tensor = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            (rename(name), tensor)
        })
        .collect()
}
