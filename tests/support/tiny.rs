//! Tiny random checkpoints of the embedding families that no package registry ships
//! (Jina-BERT v2, Stella v5 400M and 1.5B, GTE-Qwen2, NV-Embed v2). Each has the real
//! repo's file layout (sharded with `model.safetensors.index.json` where the real repo
//! is, Stella's `2_Dense_{size}` heads), the real tensor names and config keys, but two
//! layers of width 32 and random weights from a fixed seed: the files are identical on
//! every run. They test the whole path (download, load, prompts, pooling, batching,
//! dimensions); their vectors mean nothing. The tokenizer is MiniLM's `tokenizer.json`
//! (ids below 30522), so every tiny config has a vocabulary of 30528.

use super::splitmix::SplitMix64;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::json;

pub const JINA: &str = "jinaai/jina-embeddings-v2-base-en";
pub const STELLA_400M: &str = "dunzhang/stella_en_400M_v5";
pub const STELLA_1_5B: &str = "dunzhang/stella_en_1.5B_v5";
pub const GTE_QWEN2: &str = "Alibaba-NLP/gte-Qwen2-1.5B-instruct";
pub const NV_EMBED: &str = "nvidia/NV-Embed-v2";

const VOCAB: usize = 30528;
const HIDDEN: usize = 32;
const INTERMEDIATE: usize = 64;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const MAX_POSITIONS: usize = 512;
pub const STELLA_HEADS: [usize; 7] = [256, 768, 1024, 2048, 4096, 6144, 8192];

/// Named tensors filled from the seeded source in the order they are added.
struct Checkpoint {
    tensors: BTreeMap<String, Tensor>,
    rng: SplitMix64,
}

impl Checkpoint {
    fn new(seed: u64) -> Self {
        Checkpoint { tensors: BTreeMap::new(), rng: SplitMix64(seed) }
    }

    /// Uniform in ±0.2 around `center`: 0 for weights, 1 for norm scales.
    fn add(&mut self, name: impl Into<String>, shape: &[usize], center: f32) {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| center + (self.rng.next_unit() - 0.5) * 0.4).collect();
        self.tensors.insert(name.into(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    }

    fn weight(&mut self, name: &str, shape: &[usize]) {
        self.add(name, shape, 0.0);
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) {
        self.weight(&format!("{prefix}.weight"), &[out, inp]);
        if bias {
            self.weight(&format!("{prefix}.bias"), &[out]);
        }
    }

    fn layer_norm(&mut self, prefix: &str, width: usize) {
        self.add(format!("{prefix}.weight"), &[width], 1.0);
        self.weight(&format!("{prefix}.bias"), &[width]);
    }

    fn rms_norm(&mut self, prefix: &str, width: usize) {
        self.add(format!("{prefix}.weight"), &[width], 1.0);
    }

    /// Writes `model.safetensors`, or `shards` files named as the Hub names them plus
    /// their `model.safetensors.index.json`.
    fn save(self, dir: &Path, shards: usize) {
        if shards <= 1 {
            let all: HashMap<&String, Tensor> = self.tensors.iter().map(|(k, v)| (k, v.clone())).collect();
            candle_core::safetensors::save(&all, dir.join("model.safetensors")).unwrap();
            return;
        }
        let names: Vec<String> = self.tensors.keys().cloned().collect();
        let per_shard = names.len().div_ceil(shards);
        let mut weight_map = serde_json::Map::new();
        for (index, chunk) in names.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{shards:05}.safetensors", index + 1);
            let part: HashMap<&String, Tensor> = chunk.iter().map(|name| (name, self.tensors[name].clone())).collect();
            candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
            for name in chunk {
                weight_map.insert(name.clone(), json!(file));
            }
        }
        let index = json!({ "metadata": { "total_size": 0 }, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

fn write_common(dir: &Path, config: serde_json::Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    std::fs::copy(super::minilm_dir().join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
}

/// Qwen2/Mistral decoder layers: q/k/v projections with bias for Qwen2, without for Mistral.
fn decoder_layers(weights: &mut Checkpoint, prefix: &str, qkv_bias: bool) {
    let head_dim = HIDDEN / HEADS;
    for layer in 0..LAYERS {
        let p = format!("{prefix}layers.{layer}");
        weights.linear(&format!("{p}.self_attn.q_proj"), HIDDEN, HIDDEN, qkv_bias);
        weights.linear(&format!("{p}.self_attn.k_proj"), KV_HEADS * head_dim, HIDDEN, qkv_bias);
        weights.linear(&format!("{p}.self_attn.v_proj"), KV_HEADS * head_dim, HIDDEN, qkv_bias);
        weights.linear(&format!("{p}.self_attn.o_proj"), HIDDEN, HIDDEN, false);
        weights.linear(&format!("{p}.mlp.gate_proj"), INTERMEDIATE, HIDDEN, false);
        weights.linear(&format!("{p}.mlp.up_proj"), INTERMEDIATE, HIDDEN, false);
        weights.linear(&format!("{p}.mlp.down_proj"), HIDDEN, INTERMEDIATE, false);
        weights.rms_norm(&format!("{p}.input_layernorm"), HIDDEN);
        weights.rms_norm(&format!("{p}.post_attention_layernorm"), HIDDEN);
    }
    weights.weight(&format!("{prefix}embed_tokens.weight"), &[VOCAB, HIDDEN]);
    weights.rms_norm(&format!("{prefix}norm"), HIDDEN);
}

fn qwen2_config(model_type: &str) -> serde_json::Value {
    json!({
        "architectures": ["Qwen2ForCausalLM"], "model_type": model_type,
        "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "max_position_embeddings": MAX_POSITIONS, "sliding_window": MAX_POSITIONS, "max_window_layers": LAYERS,
        "tie_word_embeddings": false, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
        "use_sliding_window": false, "hidden_act": "silu", "torch_dtype": "float32"
    })
}

/// Jina-BERT v2: ALiBi BERT with a GEGLU MLP, one `model.safetensors` without prefix.
pub fn jina(dir: &Path) {
    write_common(
        dir,
        json!({
            "architectures": ["JinaBertForMaskedLM"], "model_type": "bert",
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS, "intermediate_size": INTERMEDIATE, "hidden_act": "gelu",
            "max_position_embeddings": MAX_POSITIONS, "type_vocab_size": 2, "initializer_range": 0.02,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "alibi",
            "feed_forward_type": "geglu"
        }),
    );
    let mut weights = Checkpoint::new(1);
    weights.weight("embeddings.word_embeddings.weight", &[VOCAB, HIDDEN]);
    weights.weight("embeddings.token_type_embeddings.weight", &[2, HIDDEN]);
    weights.layer_norm("embeddings.LayerNorm", HIDDEN);
    for layer in 0..LAYERS {
        let p = format!("encoder.layer.{layer}");
        for part in ["query", "key", "value"] {
            weights.linear(&format!("{p}.attention.self.{part}"), HIDDEN, HIDDEN, true);
        }
        weights.linear(&format!("{p}.attention.output.dense"), HIDDEN, HIDDEN, true);
        weights.layer_norm(&format!("{p}.attention.output.LayerNorm"), HIDDEN);
        weights.linear(&format!("{p}.mlp.gated_layers"), 2 * INTERMEDIATE, HIDDEN, false);
        weights.linear(&format!("{p}.mlp.wo"), HIDDEN, INTERMEDIATE, true);
        weights.layer_norm(&format!("{p}.mlp.layernorm"), HIDDEN);
    }
    weights.save(dir, 1);
}

/// Stella's `2_Dense_{size}` projection heads (sentence-transformers Dense modules).
fn stella_heads(dir: &Path, seed: u64) {
    for (offset, size) in STELLA_HEADS.into_iter().enumerate() {
        let head_dir = dir.join(format!("2_Dense_{size}"));
        std::fs::create_dir_all(&head_dir).unwrap();
        let config = json!({ "in_features": HIDDEN, "out_features": size, "bias": true,
                             "activation_function": "torch.nn.modules.linear.Identity" });
        std::fs::write(head_dir.join("config.json"), config.to_string()).unwrap();
        let mut weights = Checkpoint::new(seed + 100 + offset as u64);
        weights.linear("linear", size, HIDDEN, true);
        weights.save(&head_dir, 1);
    }
}

/// Stella v5 400M: the "new" BERT-like encoder with fused qkv, tensors under `new.`.
pub fn stella_400m(dir: &Path) {
    write_common(
        dir,
        json!({
            "architectures": ["NewModel"], "model_type": "new",
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
            "max_position_embeddings": MAX_POSITIONS, "rope_theta": 160000.0, "layer_norm_eps": 1e-12,
            "type_vocab_size": 2, "rope_scaling": { "factor": 2.0, "type": "ntk" }, "hidden_act": "gelu",
            "pad_token_id": 0
        }),
    );
    let mut weights = Checkpoint::new(2);
    weights.weight("new.embeddings.word_embeddings.weight", &[VOCAB, HIDDEN]);
    weights.weight("new.embeddings.token_type_embeddings.weight", &[2, HIDDEN]);
    weights.layer_norm("new.embeddings.LayerNorm", HIDDEN);
    for layer in 0..LAYERS {
        let p = format!("new.encoder.layer.{layer}");
        weights.linear(&format!("{p}.attention.qkv_proj"), 3 * HIDDEN, HIDDEN, true);
        weights.linear(&format!("{p}.attention.o_proj"), HIDDEN, HIDDEN, true);
        weights.linear(&format!("{p}.mlp.up_gate_proj"), 2 * INTERMEDIATE, HIDDEN, false);
        weights.linear(&format!("{p}.mlp.down_proj"), HIDDEN, INTERMEDIATE, true);
        weights.layer_norm(&format!("{p}.attn_ln"), HIDDEN);
        weights.layer_norm(&format!("{p}.mlp_ln"), HIDDEN);
    }
    weights.save(dir, 1);
    stella_heads(dir, 2);
}

/// Stella v5 1.5B: a Qwen2 decoder under `model.`, one `model.safetensors`.
pub fn stella_1_5b(dir: &Path) {
    write_common(dir, qwen2_config("qwen2"));
    let mut weights = Checkpoint::new(3);
    decoder_layers(&mut weights, "model.", true);
    weights.save(dir, 1);
    stella_heads(dir, 3);
}

/// GTE-Qwen2 instruct: a bare `Qwen2Model` (no `model.` prefix) in two shards.
pub fn gte_qwen2(dir: &Path) {
    write_common(dir, qwen2_config("qwen2"));
    let mut weights = Checkpoint::new(4);
    decoder_layers(&mut weights, "", true);
    weights.save(dir, 2);
}

/// NV-Embed v2: a Mistral decoder under `embedding_model.` and the latent-attention
/// pooler under `latent_attention_model.`, in four shards.
pub fn nv_embed(dir: &Path) {
    const LATENTS: usize = 16;
    const CROSS_HEADS: usize = 2;
    write_common(
        dir,
        json!({
            "architectures": ["NVEmbedModel"], "model_type": "nvembed",
            "text_config": {
                "model_type": "bidir_mistral", "vocab_size": VOCAB, "hidden_size": HIDDEN,
                "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
                "num_key_value_heads": KV_HEADS, "max_position_embeddings": MAX_POSITIONS,
                "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": null, "hidden_act": "silu"
            },
            "latent_attention_config": {
                "model_type": "latent_attention", "num_latents_value": LATENTS, "num_cross_heads": CROSS_HEADS,
                "hidden_dim": HIDDEN, "latent_dim": HIDDEN, "cross_dim_head": HIDDEN
            }
        }),
    );
    let mut weights = Checkpoint::new(5);
    decoder_layers(&mut weights, "embedding_model.", false);
    let inner = CROSS_HEADS * HIDDEN;
    let p = "latent_attention_model";
    weights.weight(&format!("{p}.latents"), &[LATENTS, HIDDEN]);
    weights.layer_norm(&format!("{p}.cross_attend_blocks.0.norm"), HIDDEN);
    weights.layer_norm(&format!("{p}.cross_attend_blocks.0.norm_context"), HIDDEN);
    weights.linear(&format!("{p}.cross_attend_blocks.0.fn.to_q"), inner, HIDDEN, false);
    weights.linear(&format!("{p}.cross_attend_blocks.0.fn.to_kv"), 2 * inner, HIDDEN, false);
    weights.linear(&format!("{p}.cross_attend_blocks.0.fn.to_out"), HIDDEN, inner, false);
    weights.layer_norm(&format!("{p}.cross_attend_blocks.1.norm"), HIDDEN);
    weights.linear(&format!("{p}.cross_attend_blocks.1.fn.net.0.proj"), 8 * HIDDEN, HIDDEN, true);
    weights.linear(&format!("{p}.cross_attend_blocks.1.fn.net.2"), HIDDEN, 4 * HIDDEN, true);
    weights.save(dir, 4);
}

/// Every tiny repo, generated under `root`, by repo id.
pub fn all(root: &Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let makers: [(&str, fn(&Path)); 5] =
        [(JINA, jina), (STELLA_400M, stella_400m), (STELLA_1_5B, stella_1_5b), (GTE_QWEN2, gte_qwen2), (NV_EMBED, nv_embed)];
    makers
        .into_iter()
        .map(|(repo, make)| {
            let dir = root.join(repo.replace('/', "--"));
            make(&dir);
            (repo, dir)
        })
        .collect()
}
