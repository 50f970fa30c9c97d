//! SD 3.5's VAE decoder: candle's `AutoEncoderKL` (diffusers names) reading the LDM
//! names of the single-file checkpoint (`first_stage_model.*`), with 16 latent channels
//! and no quant convs. The renaming follows candle's SD 3 example but works for any
//! number of blocks (the real VAE has 4; the example hard-codes the reversal for 4).

use candle_core::Tensor;
use candle_nn::VarBuilder;
use candle_transformers::models::stable_diffusion::vae::{AutoEncoderKL, AutoEncoderKLConfig};

/// SD 3's latent scaling (`vae.config.scaling_factor`, `shift_factor`).
const SCALING_FACTOR: f64 = 1.5305;
const SHIFT_FACTOR: f64 = 0.0609;

/// diffusers' VAE tensor name → the LDM one in the checkpoint, for a VAE of `blocks` levels.
pub fn ldm_name(name: &str, blocks: usize) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    let mut out: Vec<String> = Vec::with_capacity(parts.len());
    let mut i = 0;
    while i < parts.len() {
        let next = parts.get(i + 1).copied().unwrap_or("");
        let index = next.parse::<usize>().ok();
        match parts[i] {
            "down_blocks" => out.push("down".into()),
            "mid_block" => out.push("mid".into()),
            "up_blocks" => {
                // diffusers counts up blocks from the lowest resolution, LDM from the highest.
                out.push("up".into());
                if let Some(index) = index.filter(|&index| index < blocks) {
                    out.push((blocks - 1 - index).to_string());
                    i += 1;
                }
            }
            "resnets" if i > 0 && parts[i - 1] == "mid_block" => {
                out.push(format!("block_{}", index.unwrap_or(0) + 1));
                i += 1;
            }
            "resnets" => out.push("block".into()),
            "attentions" => {
                out.push(format!("attn_{}", index.unwrap_or(0) + 1));
                i += 1;
            }
            "downsamplers" => {
                out.push("downsample".into());
                i += 1;
            }
            "upsamplers" => {
                out.push("upsample".into());
                i += 1;
            }
            "conv_shortcut" => out.push("nin_shortcut".into()),
            "group_norm" => out.push("norm".into()),
            "query" => out.push("q".into()),
            "key" => out.push("k".into()),
            "value" => out.push("v".into()),
            "proj_attn" => out.push("proj_out".into()),
            "conv_norm_out" => out.push("norm_out".into()),
            other => out.push(other.into()),
        }
        i += 1;
    }
    out.join(".")
}

/// Builds the VAE from the checkpoint's root `vb` (a renamer sees whole names, so it goes
/// on before the `first_stage_model` prefix).
pub fn build(vb: VarBuilder, config: &AutoEncoderKLConfig) -> candle_core::Result<AutoEncoderKL> {
    let blocks = config.block_out_channels.len();
    let vb = vb.rename_f(move |name| ldm_name(name, blocks)).pp("first_stage_model");
    AutoEncoderKL::new(vb, 3, 3, config.clone())
}

/// Latents `(1, 16, h, w)` → image `(1, 3, 8h, 8w)` in about [-1, 1].
pub fn decode(vae: &AutoEncoderKL, latents: &Tensor) -> candle_core::Result<Tensor> {
    vae.decode(&((latents / SCALING_FACTOR)? + SHIFT_FACTOR)?)
}

#[cfg(test)]
mod tests {
    use super::ldm_name;

    #[test]
    fn diffusers_names_map_to_ldm_names() {
        assert_eq!(ldm_name("decoder.up_blocks.0.resnets.2.conv1.weight", 4), "decoder.up.3.block.2.conv1.weight");
        assert_eq!(ldm_name("decoder.up_blocks.2.upsamplers.0.conv.bias", 4), "decoder.up.1.upsample.conv.bias");
        assert_eq!(ldm_name("encoder.down_blocks.1.downsamplers.0.conv.weight", 4), "encoder.down.1.downsample.conv.weight");
        assert_eq!(ldm_name("encoder.mid_block.resnets.1.norm2.weight", 4), "encoder.mid.block_2.norm2.weight");
        assert_eq!(ldm_name("decoder.mid_block.attentions.0.group_norm.bias", 4), "decoder.mid.attn_1.norm.bias");
        assert_eq!(ldm_name("decoder.mid_block.attentions.0.proj_attn.weight", 4), "decoder.mid.attn_1.proj_out.weight");
        assert_eq!(ldm_name("encoder.down_blocks.2.resnets.0.conv_shortcut.weight", 4), "encoder.down.2.block.0.nin_shortcut.weight");
        assert_eq!(ldm_name("decoder.conv_norm_out.weight", 4), "decoder.norm_out.weight");
        assert_eq!(ldm_name("decoder.up_blocks.0.resnets.0.conv1.weight", 3), "decoder.up.2.block.0.conv1.weight");
    }
}
