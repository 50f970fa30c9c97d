//! Hugging Face CLIP configs (`CLIPConfig`, `CLIPTextConfig`, `CLIPVisionConfig`) read
//! from config.json with transformers' defaults for absent keys (the real repos leave
//! many out, LLaVA's `vision_config` most of all), turned into candle's plain config
//! structs. Shared by the CLIP family and LLaVA's vision tower.

use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::clip::vision_model::ClipVisionConfig;
use serde::Deserialize;

use crate::error::{LanternError, LanternResult};

/// candle's CLIP layers hard-code this layer-norm epsilon (transformers' default).
const CANDLE_LAYER_NORM_EPS: f64 = 1e-5;

/// `CLIPVisionConfig` keys with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct HfVisionConfig {
    #[serde(default = "vision_hidden")]
    pub hidden_size: usize,
    #[serde(default = "vision_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
    #[serde(default = "twelve")]
    pub num_hidden_layers: usize,
    #[serde(default = "twelve")]
    pub num_attention_heads: usize,
    #[serde(default = "three")]
    pub num_channels: usize,
    #[serde(default = "vision_image_size")]
    pub image_size: usize,
    #[serde(default = "vision_patch_size")]
    pub patch_size: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
}

/// `CLIPTextConfig` keys with transformers' defaults.
#[derive(Debug, Clone, Deserialize)]
pub struct HfTextConfig {
    #[serde(default = "text_vocab")]
    pub vocab_size: usize,
    #[serde(default = "text_hidden")]
    pub hidden_size: usize,
    #[serde(default = "text_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "twelve")]
    pub num_hidden_layers: usize,
    #[serde(default = "eight")]
    pub num_attention_heads: usize,
    #[serde(default = "text_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "quick_gelu")]
    pub hidden_act: String,
    #[serde(default = "layer_norm_eps")]
    pub layer_norm_eps: f64,
}

/// `CLIPConfig`: both towers and the shared projection width.
#[derive(Debug, Clone, Deserialize)]
pub struct HfClipConfig {
    pub text_config: HfTextConfig,
    pub vision_config: HfVisionConfig,
    /// The shared space's width (transformers' `CLIPModel` reads this one, not the towers').
    #[serde(default = "default_projection")]
    pub projection_dim: usize,
}

fn vision_hidden() -> usize {
    768
}
fn vision_intermediate() -> usize {
    3072
}
fn default_projection() -> usize {
    512
}
fn twelve() -> usize {
    12
}
fn eight() -> usize {
    8
}
fn three() -> usize {
    3
}
fn vision_image_size() -> usize {
    224
}
fn vision_patch_size() -> usize {
    32
}
fn quick_gelu() -> String {
    "quick_gelu".into()
}
fn layer_norm_eps() -> f64 {
    1e-5
}
fn text_vocab() -> usize {
    49408
}
fn text_hidden() -> usize {
    512
}
fn text_intermediate() -> usize {
    2048
}
fn text_positions() -> usize {
    77
}

/// candle's CLIP towers implement only quick GELU and the default layer-norm epsilon.
fn check_supported(tower: &str, hidden_act: &str, eps: f64) -> LanternResult<Activation> {
    if hidden_act != "quick_gelu" {
        return Err(LanternError::ModelNotSupported(format!(
            "CLIP {tower} tower activation {hidden_act:?}: only quick_gelu is supported"
        )));
    }
    if (eps - CANDLE_LAYER_NORM_EPS).abs() > 1e-12 {
        return Err(LanternError::ModelNotSupported(format!("CLIP {tower} tower layer_norm_eps {eps}: only 1e-5 is supported")));
    }
    Ok(Activation::QuickGelu)
}

fn check_heads(tower: &str, width: usize, heads: usize) -> LanternResult<()> {
    if heads == 0 || !width.is_multiple_of(heads) {
        return Err(LanternError::ModelNotSupported(format!(
            "CLIP {tower} tower: width {width} is not a multiple of {heads} heads"
        )));
    }
    Ok(())
}

impl HfVisionConfig {
    /// candle's vision config; `projection_dim` is the shared space's width.
    pub fn to_candle(&self, projection_dim: usize) -> LanternResult<ClipVisionConfig> {
        let activation = check_supported("vision", &self.hidden_act, self.layer_norm_eps)?;
        check_heads("vision", self.hidden_size, self.num_attention_heads)?;
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(LanternError::ModelNotSupported(format!(
                "CLIP vision tower: image size {} is not a multiple of patch size {}",
                self.image_size, self.patch_size
            )));
        }
        Ok(ClipVisionConfig {
            embed_dim: self.hidden_size,
            activation,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim,
            num_channels: self.num_channels,
            image_size: self.image_size,
            patch_size: self.patch_size,
        })
    }

    /// Patches per image (the class token not counted).
    pub fn patches(&self) -> usize {
        (self.image_size / self.patch_size.max(1)).pow(2)
    }
}

impl HfTextConfig {
    pub fn to_candle(&self, projection_dim: usize) -> LanternResult<ClipTextConfig> {
        let activation = check_supported("text", &self.hidden_act, self.layer_norm_eps)?;
        check_heads("text", self.hidden_size, self.num_attention_heads)?;
        Ok(ClipTextConfig {
            vocab_size: self.vocab_size,
            embed_dim: self.hidden_size,
            activation,
            intermediate_size: self.intermediate_size,
            max_position_embeddings: self.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            projection_dim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openai_l14_336_config_reads_into_candle_configs() {
        // openai/clip-vit-large-patch14-336's config.json, the keys that matter.
        let config: HfClipConfig = serde_json::from_str(
            r#"{"architectures":["CLIPModel"],"logit_scale_init_value":2.6592,"model_type":"clip","projection_dim":768,
            "text_config":{"bos_token_id":0,"eos_token_id":2,"hidden_act":"quick_gelu","hidden_size":768,"intermediate_size":3072,
              "layer_norm_eps":1e-05,"max_position_embeddings":77,"model_type":"clip_text_model","num_attention_heads":12,
              "num_hidden_layers":12,"projection_dim":768,"vocab_size":49408},
            "text_config_dict":{"hidden_size":768},"torch_dtype":"float32",
            "vision_config":{"hidden_act":"quick_gelu","hidden_size":1024,"image_size":336,"intermediate_size":4096,
              "layer_norm_eps":1e-05,"model_type":"clip_vision_model","num_attention_heads":16,"num_hidden_layers":24,
              "patch_size":14,"projection_dim":768}}"#,
        )
        .unwrap();
        let text = config.text_config.to_candle(config.projection_dim).unwrap();
        let vision = config.vision_config.to_candle(config.projection_dim).unwrap();
        assert_eq!(
            (text.embed_dim, text.num_attention_heads, text.vocab_size, text.max_position_embeddings),
            (768, 12, 49408, 77)
        );
        assert_eq!((vision.embed_dim, vision.num_hidden_layers, vision.image_size, vision.patch_size), (1024, 24, 336, 14));
        assert_eq!(config.vision_config.patches(), 576);
    }

    #[test]
    fn another_activation_is_refused() {
        let config: HfVisionConfig = serde_json::from_str(r#"{"hidden_act":"gelu"}"#).unwrap();
        assert!(matches!(config.to_candle(512), Err(LanternError::ModelNotSupported(_))));
    }
}
