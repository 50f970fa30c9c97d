//! The `deepseek2` part of the tiny GGUF writer (DeepSeek-V2/V3, Kimi-K2): llama.cpp's
//! tensor names and metadata keys for multi-head latent attention, YaRN, the leading
//! dense layer and the MoE layers (routed experts stacked as `*_exps`, the shared expert
//! `*_shexp`, the router `ffn_gate_inp` and its selection bias `exp_probs_b`). Layer 0 is
//! dense, every later layer MoE. TINY RANDOM WEIGHTS, not a real model.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};

use super::{Spec, Uniform, Writer, EXPERT_FFN, FFN, HEADS, HIDDEN};

pub const Q_LORA: usize = 32;
pub const KV_LORA: usize = 32;
/// Per head: position-free and rotated query/key dimensions, value dimensions. All
/// multiples of 32 so that every matrix (attn_k_b's rows included) can be Q8_0.
pub const NOPE: usize = 32;
pub const ROPE: usize = 16;
pub const VALUE: usize = 32;

/// What differs between the files llama.cpp writes for the models of this architecture.
#[derive(Clone, Debug)]
pub struct Options {
    /// `expert_gating_func`: 1 softmax (DeepSeek-V2), 2 sigmoid (V3, Kimi-K2).
    pub gating: u32,
    /// Writes `exp_probs_b.bias` (V3's `e_score_correction_bias`).
    pub selection_bias: bool,
    pub weights_norm: bool,
    pub weights_scale: f32,
    /// `expert_group_count`, `expert_group_used_count`.
    pub groups: (usize, usize),
    /// YaRN (factor, original context, mscale_all_dim).
    pub yarn: Option<(f32, u32, f32)>,
    /// `attn_q_a`/`attn_q_b` (q_lora_rank 32), or one `attn_q` (q_lora_rank 0, V2-Lite).
    pub low_rank_queries: bool,
    /// One `attn_kv_b` per layer and per-head key/value lengths, as files converted
    /// before llama.cpp's MLA change; otherwise `attn_k_b`/`attn_v_b` and `_mla` lengths.
    pub legacy_kv_b: bool,
    pub shared_experts: usize,
}

impl Options {
    /// Kimi-K2's choices (one expert group, sigmoid with bias, normalised and scaled weights,
    /// YaRN, the MLA tensor layout of current conversions).
    pub fn kimi_k2() -> Self {
        Options {
            gating: 2,
            selection_bias: true,
            weights_norm: true,
            weights_scale: 2.827,
            groups: (1, 1),
            yarn: Some((4.0, 64, 1.0)),
            low_rank_queries: true,
            legacy_kv_b: false,
            shared_experts: 1,
        }
    }
}

pub(super) fn block(w: &mut Writer, spec: &Spec, options: &Options, layer: usize) {
    let p = format!("blk.{layer}");
    if options.low_rank_queries {
        w.random(&format!("{p}.attn_q_a.weight"), &[Q_LORA, HIDDEN]);
        w.ones(&format!("{p}.attn_q_a_norm.weight"), Q_LORA);
        w.random(&format!("{p}.attn_q_b.weight"), &[HEADS * (NOPE + ROPE), Q_LORA]);
    } else {
        w.random(&format!("{p}.attn_q.weight"), &[HEADS * (NOPE + ROPE), HIDDEN]);
    }
    w.random(&format!("{p}.attn_kv_a_mqa.weight"), &[KV_LORA + ROPE, HIDDEN]);
    w.ones(&format!("{p}.attn_kv_a_norm.weight"), KV_LORA);
    if options.legacy_kv_b {
        w.random(&format!("{p}.attn_kv_b.weight"), &[HEADS * (NOPE + VALUE), KV_LORA]);
    } else {
        // convert_hf_to_gguf.py: kv_b viewed per head, the key rows transposed.
        w.random(&format!("{p}.attn_k_b.weight"), &[HEADS, KV_LORA, NOPE]);
        w.random(&format!("{p}.attn_v_b.weight"), &[HEADS, VALUE, KV_LORA]);
    }
    w.random(&format!("{p}.attn_output.weight"), &[HIDDEN, HEADS * VALUE]);
    if layer == 0 {
        w.random(&format!("{p}.ffn_gate.weight"), &[FFN, HIDDEN]);
        w.random(&format!("{p}.ffn_up.weight"), &[FFN, HIDDEN]);
        w.random(&format!("{p}.ffn_down.weight"), &[HIDDEN, FFN]);
        return;
    }
    // The router and the bias stay f32 in real files.
    let router: Vec<f32> = (0..spec.experts * HIDDEN).map(|_| w.rng.uniform()).collect();
    w.put(&format!("{p}.ffn_gate_inp.weight"), router, &[spec.experts, HIDDEN], GgmlDType::F32);
    if options.selection_bias {
        let bias: Vec<f32> = (0..spec.experts).map(|_| w.rng.uniform() * 0.5).collect();
        w.put(&format!("{p}.exp_probs_b.bias"), bias, &[spec.experts], GgmlDType::F32);
    }
    w.random(&format!("{p}.ffn_gate_exps.weight"), &[spec.experts, EXPERT_FFN, HIDDEN]);
    w.random(&format!("{p}.ffn_up_exps.weight"), &[spec.experts, EXPERT_FFN, HIDDEN]);
    w.random(&format!("{p}.ffn_down_exps.weight"), &[spec.experts, HIDDEN, EXPERT_FFN]);
    if options.shared_experts > 0 {
        let shared = EXPERT_FFN * options.shared_experts;
        w.random(&format!("{p}.ffn_gate_shexp.weight"), &[shared, HIDDEN]);
        w.random(&format!("{p}.ffn_up_shexp.weight"), &[shared, HIDDEN]);
        w.random(&format!("{p}.ffn_down_shexp.weight"), &[HIDDEN, shared]);
    }
}

/// The `deepseek2.*` keys besides the ones every architecture has.
pub(super) fn metadata(spec: &Spec, options: &Options) -> Vec<(String, Value)> {
    let u = |key: &str, v: usize| (format!("deepseek2.{key}"), Value::U32(v as u32));
    let mut md = vec![
        u("attention.q_lora_rank", if options.low_rank_queries { Q_LORA } else { 0 }),
        u("attention.kv_lora_rank", KV_LORA),
        u("rope.dimension_count", ROPE),
        u("leading_dense_block_count", 1),
        u("expert_count", spec.experts),
        u("expert_used_count", spec.experts_used),
        u("expert_shared_count", options.shared_experts),
        u("expert_feed_forward_length", EXPERT_FFN),
        u("expert_gating_func", options.gating as usize),
        u("expert_group_count", options.groups.0),
        u("expert_group_used_count", options.groups.1),
        ("deepseek2.expert_weights_scale".into(), Value::F32(options.weights_scale)),
        ("deepseek2.expert_weights_norm".into(), Value::Bool(options.weights_norm)),
    ];
    if options.legacy_kv_b {
        md.push(u("attention.head_count_kv", HEADS));
        md.push(u("attention.key_length", NOPE + ROPE));
        md.push(u("attention.value_length", VALUE));
    } else {
        // What current conversions write: MQA over the compressed cache.
        md.push(u("attention.head_count_kv", 1));
        md.push(u("attention.key_length", KV_LORA + ROPE));
        md.push(u("attention.value_length", KV_LORA));
        md.push(u("attention.key_length_mla", NOPE + ROPE));
        md.push(u("attention.value_length_mla", VALUE));
    }
    if let Some((factor, original, mscale_all_dim)) = options.yarn {
        md.push(("deepseek2.rope.scaling.type".into(), Value::String("yarn".into())));
        md.push(("deepseek2.rope.scaling.factor".into(), Value::F32(factor)));
        md.push(u("rope.scaling.original_context_length", original as usize));
        md.push(("deepseek2.rope.scaling.yarn_log_multiplier".into(), Value::F32(0.1 * mscale_all_dim)));
    }
    md
}

/// The Hugging Face (`DeepseekV3ForCausalLM`) name of a GGUF tensor of a dense layer,
/// attention or norm; the expert tensors are split, and attn_k_b/attn_v_b joined, apart.
fn hf_name(rest: &str) -> &'static str {
    match rest {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_q_a" => "self_attn.q_a_proj",
        "attn_q_a_norm" => "self_attn.q_a_layernorm",
        "attn_q_b" => "self_attn.q_b_proj",
        "attn_kv_a_mqa" => "self_attn.kv_a_proj_with_mqa",
        "attn_kv_a_norm" => "self_attn.kv_a_layernorm",
        "attn_kv_b" => "self_attn.kv_b_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_gate_inp" => "mlp.gate",
        "ffn_gate_shexp" => "mlp.shared_experts.gate_proj",
        "ffn_up_shexp" => "mlp.shared_experts.up_proj",
        "ffn_down_shexp" => "mlp.shared_experts.down_proj",
        other => panic!("unexpected deepseek2 tensor {other}"),
    }
}

/// Every tensor of the deepseek2 checkpoint at `path`, dequantized to f32, under the
/// names candle's non-quantized `models::deepseek2` reads (the Hugging Face ones).
pub fn hf_tensors(path: &Path) -> HashMap<String, Tensor> {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut tensors = HashMap::new();
    let mut split_kv_b: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(&mut file, name, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
        let fixed = match name.as_str() {
            "token_embd.weight" => Some("model.embed_tokens.weight"),
            "output.weight" => Some("lm_head.weight"),
            "output_norm.weight" => Some("model.norm.weight"),
            _ => None,
        };
        if let Some(hf) = fixed {
            tensors.insert(hf.to_string(), tensor);
            continue;
        }
        let rest = name.strip_prefix("blk.").unwrap();
        let (layer, rest) = rest.split_once('.').unwrap();
        let layer_prefix = format!("model.layers.{layer}");
        if rest == "exp_probs_b.bias" {
            tensors.insert(format!("{layer_prefix}.mlp.gate.e_score_correction_bias"), tensor);
            continue;
        }
        let rest = rest.strip_suffix(".weight").unwrap();
        match rest {
            "attn_k_b" => split_kv_b.entry(layer_prefix).or_default().0 = Some(tensor),
            "attn_v_b" => split_kv_b.entry(layer_prefix).or_default().1 = Some(tensor),
            "ffn_gate_exps" | "ffn_up_exps" | "ffn_down_exps" => {
                let part = &rest["ffn_".len()..rest.len() - "_exps".len()];
                for e in 0..tensor.dim(0).unwrap() {
                    tensors.insert(format!("{layer_prefix}.mlp.experts.{e}.{part}_proj.weight"), tensor.get(e).unwrap());
                }
            }
            other => {
                tensors.insert(format!("{layer_prefix}.{}.weight", hf_name(other)), tensor);
            }
        }
    }
    // kv_b_proj is (heads × (nope + value), kv_lora): per head its key rows (attn_k_b
    // transposed back), then its value rows.
    for (layer_prefix, (k_b, v_b)) in split_kv_b {
        let k_b = k_b.unwrap().transpose(1, 2).unwrap();
        let kv_b = Tensor::cat(&[&k_b, &v_b.unwrap()], 1).unwrap();
        let (heads, rows, cols) = kv_b.dims3().unwrap();
        tensors.insert(format!("{layer_prefix}.self_attn.kv_b_proj.weight"), kv_b.reshape((heads * rows, cols)).unwrap());
    }
    tensors
}
