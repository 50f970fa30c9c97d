//! llava-hf's LLaVA 1.5 `config.json` (`LlavaConfig` with a Llama `text_config` and a
//! CLIP `vision_config`) and `generation_config.json`, read with transformers' defaults
//! for the keys the real file leaves out (its `text_config` has no `hidden_size`, its
//! `vision_config` no `hidden_act`). candle's `HFLLaVAConfig` cannot read this file (it
//! requires v1.6 keys) and `to_llava_config` hard-codes v1.6 values, so the host builds
//! the pieces' configs itself.

use candle_nn::Activation;
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use candle_transformers::models::llama;
use serde::Deserialize;

use crate::error::{LanternError, LanternResult};
use crate::families::clip::HfVisionConfig;

/// `LlamaConfig` keys with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
struct HfLlamaConfig {
    #[serde(default = "llama_vocab")]
    vocab_size: usize,
    #[serde(default = "llama_hidden")]
    hidden_size: usize,
    #[serde(default = "llama_intermediate")]
    intermediate_size: usize,
    #[serde(default = "thirty_two")]
    num_hidden_layers: usize,
    #[serde(default = "thirty_two")]
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "llama_positions")]
    max_position_embeddings: usize,
    #[serde(default = "llama_rms_eps")]
    rms_norm_eps: f64,
    #[serde(default = "llama_rope_theta")]
    rope_theta: f32,
    #[serde(default = "silu")]
    hidden_act: String,
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default = "one")]
    bos_token_id: u32,
    #[serde(default = "two")]
    eos_token_id: u32,
}

#[derive(Debug, Clone, Deserialize)]
struct HfLlavaConfig {
    text_config: HfLlamaConfig,
    vision_config: HfVisionConfig,
    #[serde(default = "image_token")]
    image_token_index: u32,
    #[serde(default = "gelu")]
    projector_hidden_act: String,
    #[serde(default = "minus_two")]
    vision_feature_layer: serde_json::Value,
    #[serde(default = "default_strategy")]
    vision_feature_select_strategy: String,
    #[serde(default = "yes")]
    multimodal_projector_bias: bool,
}

/// `eos_token_id` of generation_config.json: one id or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EosIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct GenerationConfig {
    eos_token_id: Option<EosIds>,
}

fn llama_vocab() -> usize {
    32000
}
fn llama_hidden() -> usize {
    4096
}
fn llama_intermediate() -> usize {
    11008
}
fn thirty_two() -> usize {
    32
}
fn llama_positions() -> usize {
    2048
}
fn llama_rms_eps() -> f64 {
    1e-6
}
fn llama_rope_theta() -> f32 {
    10000.0
}
fn silu() -> String {
    "silu".into()
}
fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn image_token() -> u32 {
    32000
}
fn gelu() -> String {
    "gelu".into()
}
fn minus_two() -> serde_json::Value {
    serde_json::json!(-2)
}
fn default_strategy() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}

/// Everything the host needs to assemble and run LLaVA 1.5.
#[derive(Debug, Clone)]
pub struct LlavaSetup {
    pub llama: llama::Config,
    pub vision: ClipVisionConfig,
    /// Index into candle's `output_hidden_states` (which has no embeddings entry).
    pub vision_layer: usize,
    /// Keep the class token's feature ("full") or drop it ("default").
    pub keep_class_token: bool,
    pub projector_act: Activation,
    pub projector_bias: bool,
    pub image_token: u32,
    /// Features (prompt positions) one image takes.
    pub image_features: usize,
    pub eos: Vec<u32>,
}

fn unsupported(what: String) -> LanternError {
    LanternError::ModelNotSupported(format!("LLaVA config.json: {what}"))
}

/// transformers' `hidden_states[layer]` counts the embeddings as entry 0 and the encoder
/// layers from 1; candle's `output_hidden_states` starts at the first layer. So HF's -2
/// (the penultimate layer) is candle's entry `layers - 2`, not candle's -2.
fn candle_vision_layer(feature_layer: &serde_json::Value, layers: usize) -> LanternResult<usize> {
    let layer = feature_layer
        .as_i64()
        .ok_or_else(|| unsupported(format!("vision_feature_layer {feature_layer}: only one layer is supported")))?;
    let hf_index = if layer < 0 { layers as i64 + 1 + layer } else { layer };
    if hf_index < 1 || hf_index > layers as i64 {
        return Err(unsupported(format!("vision_feature_layer {layer} with {layers} vision layers")));
    }
    Ok(hf_index as usize - 1)
}

impl LlavaSetup {
    pub fn parse(config_json: &str, generation_json: &str) -> LanternResult<Self> {
        let config: HfLlavaConfig = serde_json::from_str(config_json).map_err(|e| unsupported(e.to_string()))?;
        let generation: GenerationConfig = serde_json::from_str(generation_json)
            .map_err(|e| LanternError::ModelNotSupported(format!("generation_config.json: {e}")))?;
        let text = &config.text_config;
        if text.hidden_act != "silu" {
            return Err(unsupported(format!("text hidden_act {:?}: only silu is supported", text.hidden_act)));
        }
        if text.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(unsupported("rope_scaling is not supported".into()));
        }
        let kv_heads = text.num_key_value_heads.unwrap_or(text.num_attention_heads);
        if text.num_attention_heads == 0
            || !text.hidden_size.is_multiple_of(text.num_attention_heads)
            || kv_heads == 0
            || !text.num_attention_heads.is_multiple_of(kv_heads)
        {
            return Err(unsupported(format!(
                "{} heads, {kv_heads} key-value heads for width {}",
                text.num_attention_heads, text.hidden_size
            )));
        }
        let keep_class_token = match config.vision_feature_select_strategy.as_str() {
            "default" => false,
            "full" => true,
            other => return Err(unsupported(format!("vision_feature_select_strategy {other:?}"))),
        };
        let projector_act: Activation = serde_json::from_value(serde_json::json!(config.projector_hidden_act))
            .map_err(|_| unsupported(format!("projector_hidden_act {:?}", config.projector_hidden_act)))?;
        let vision = config.vision_config.to_candle(config.vision_config.projection_dim)?;
        let vision_layer = candle_vision_layer(&config.vision_feature_layer, vision.num_hidden_layers)?;
        let image_features = config.vision_config.patches() + usize::from(keep_class_token);
        let eos = match generation.eos_token_id {
            Some(EosIds::One(id)) => vec![id],
            Some(EosIds::Many(ids)) if !ids.is_empty() => ids,
            _ => vec![text.eos_token_id],
        };
        let llama = llama::Config {
            hidden_size: text.hidden_size,
            intermediate_size: text.intermediate_size,
            vocab_size: text.vocab_size,
            num_hidden_layers: text.num_hidden_layers,
            num_attention_heads: text.num_attention_heads,
            num_key_value_heads: kv_heads,
            use_flash_attn: false,
            rms_norm_eps: text.rms_norm_eps,
            rope_theta: text.rope_theta,
            bos_token_id: Some(text.bos_token_id),
            eos_token_id: Some(llama::LlamaEosToks::Single(eos[0])),
            rope_scaling: None,
            max_position_embeddings: text.max_position_embeddings,
            tie_word_embeddings: text.tie_word_embeddings,
        };
        Ok(LlavaSetup {
            llama,
            vision,
            vision_layer,
            keep_class_token,
            projector_act,
            projector_bias: config.multimodal_projector_bias,
            image_token: config.image_token_index,
            image_features,
            eos,
        })
    }

    /// The language model's tensors with the shapes candle's `Llama::load` asks for (it
    /// panics on a missing one, so they are checked first), under `prefix`.
    pub fn llama_tensors(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let c = &self.llama;
        let head_dim = c.hidden_size / c.num_attention_heads;
        let (h, i, q, kv) =
            (c.hidden_size, c.intermediate_size, head_dim * c.num_attention_heads, head_dim * c.num_key_value_heads);
        let mut tensors = vec![
            (format!("{prefix}.model.embed_tokens.weight"), vec![c.vocab_size, h]),
            (format!("{prefix}.model.norm.weight"), vec![h]),
        ];
        if !c.tie_word_embeddings {
            tensors.push((format!("{prefix}.lm_head.weight"), vec![c.vocab_size, h]));
        }
        for layer in 0..c.num_hidden_layers {
            let p = format!("{prefix}.model.layers.{layer}");
            for (name, shape) in [
                ("self_attn.q_proj", vec![q, h]),
                ("self_attn.k_proj", vec![kv, h]),
                ("self_attn.v_proj", vec![kv, h]),
                ("self_attn.o_proj", vec![h, q]),
                ("mlp.gate_proj", vec![i, h]),
                ("mlp.up_proj", vec![i, h]),
                ("mlp.down_proj", vec![h, i]),
            ] {
                tensors.push((format!("{p}.{name}.weight"), shape));
            }
            tensors.push((format!("{p}.input_layernorm.weight"), vec![h]));
            tensors.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
        }
        tensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_penultimate_layer_is_candle_entry_layers_minus_two() {
        assert_eq!(candle_vision_layer(&serde_json::json!(-2), 24).unwrap(), 22);
        assert_eq!(candle_vision_layer(&serde_json::json!(-1), 24).unwrap(), 23);
        assert_eq!(candle_vision_layer(&serde_json::json!(1), 24).unwrap(), 0);
        // HF's entry 0 is the embeddings, which candle does not return.
        assert!(candle_vision_layer(&serde_json::json!(-25), 24).is_err());
        assert!(candle_vision_layer(&serde_json::json!([-2, -5]), 24).is_err());
    }

    #[test]
    fn the_real_config_reads_with_transformers_defaults() {
        // llava-hf/llava-1.5-7b-hf's config.json, as published.
        let config = r#"{"architectures":["LlavaForConditionalGeneration"],"ignore_index":-100,"image_token_index":32000,
            "model_type":"llava","pad_token_id":32001,"projector_hidden_act":"gelu",
            "text_config":{"_name_or_path":"lmsys/vicuna-7b-v1.5","architectures":["LlamaForCausalLM"],
              "max_position_embeddings":4096,"model_type":"llama","rms_norm_eps":1e-05,"torch_dtype":"float16","vocab_size":32064},
            "tie_word_embeddings":false,"torch_dtype":"float16","transformers_version":"4.36.0.dev0",
            "vision_config":{"hidden_size":1024,"image_size":336,"intermediate_size":4096,"model_type":"clip_vision_model",
              "num_attention_heads":16,"num_hidden_layers":24,"patch_size":14,"projection_dim":768,"vocab_size":32000},
            "vision_feature_layer":-2,"vision_feature_select_strategy":"default","vocab_size":32064}"#;
        let generation = r#"{"bos_token_id":1,"eos_token_id":2,"pad_token_id":32001}"#;
        let setup = LlavaSetup::parse(config, generation).unwrap();
        assert_eq!(setup.image_features, 576);
        assert_eq!(setup.vision_layer, 22);
        assert_eq!((setup.llama.hidden_size, setup.llama.num_hidden_layers, setup.llama.num_key_value_heads), (4096, 32, 32));
        assert_eq!((setup.llama.vocab_size, setup.llama.max_position_embeddings), (32064, 4096));
        assert_eq!(setup.eos, vec![2]);
        assert_eq!(setup.projector_act, Activation::Gelu);
        assert_eq!(setup.vision.embed_dim, 1024);
    }
}
