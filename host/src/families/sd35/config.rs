//! SD 3.5's sizes, read from the checkpoints' tensor shapes the way the reference
//! implementations do (mmditx / ComfyUI: depth = number of `joint_blocks`, hidden =
//! 64 * depth, heads = depth), so the real model and a tiny test one load through the
//! same code. Each check here stands between a bad file and a panic or shape error deep
//! inside candle.

use candle_transformers::models::mmdit::model::Config as MmditConfig;
use candle_transformers::models::stable_diffusion::vae::AutoEncoderKLConfig;

use crate::error::{LanternError, LanternResult};
use crate::families::diffusion::clip_text::{Activation, ClipTextConfig};
use crate::families::diffusion::weights::Shapes;

pub const MMDIT: &str = "model.diffusion_model.";
pub const VAE: &str = "first_stage_model.";
/// SD 3's latents: 16 channels at 1/8 of the image size.
pub const LATENT_CHANNELS: usize = 16;

fn invalid(shapes: &Shapes, what: String) -> LanternError {
    LanternError::InferenceFailed(format!("{}: {what}", shapes.label()))
}

/// The MMDiT's config from `model.diffusion_model.*` shapes.
pub fn mmdit(shapes: &Shapes) -> LanternResult<MmditConfig> {
    let depth = shapes.count(&format!("{MMDIT}joint_blocks."));
    let patch = shapes.shape(&format!("{MMDIT}x_embedder.proj.weight"))?.to_vec();
    let [hidden, in_channels, patch_size, patch_w] = patch[..] else {
        return Err(invalid(shapes, format!("x_embedder.proj.weight has shape {patch:?}")));
    };
    if depth < 2 || hidden != 64 * depth || patch_size == 0 || patch_size != patch_w || in_channels != LATENT_CHANNELS {
        return Err(invalid(
            shapes,
            format!("not an SD 3 MMDiT: {depth} joint blocks, hidden {hidden}, {in_channels} channels, patch {patch_size}x{patch_w}"),
        ));
    }
    let positions = shapes.dim(&format!("{MMDIT}pos_embed"), 1)?;
    let pos_embed_max_size = (positions as f64).sqrt().round() as usize;
    if pos_embed_max_size * pos_embed_max_size != positions {
        return Err(invalid(shapes, format!("pos_embed holds {positions} positions, not a square")));
    }
    let out = shapes.dim(&format!("{MMDIT}final_layer.linear.weight"), 0)?;
    let frequency_embedding_size = shapes.dim(&format!("{MMDIT}t_embedder.mlp.0.weight"), 1)?;
    if frequency_embedding_size % 2 != 0 {
        return Err(invalid(shapes, format!("odd timestep embedding width {frequency_embedding_size}")));
    }
    Ok(MmditConfig {
        patch_size,
        in_channels,
        out_channels: out / (patch_size * patch_size),
        depth,
        head_size: 64,
        adm_in_channels: shapes.dim(&format!("{MMDIT}y_embedder.mlp.0.weight"), 1)?,
        pos_embed_max_size,
        context_embed_size: shapes.dim(&format!("{MMDIT}context_embedder.weight"), 1)?,
        frequency_embedding_size,
    })
}

/// The VAE's config from `first_stage_model.*` shapes (LDM names). GroupNorm uses 32
/// groups, as SD 3's VAE does (not recorded in the weights).
pub fn vae(shapes: &Shapes) -> LanternResult<AutoEncoderKLConfig> {
    let levels = shapes.count(&format!("{VAE}encoder.down."));
    let block_out_channels = (0..levels)
        .map(|level| shapes.dim(&format!("{VAE}encoder.down.{level}.block.0.conv1.weight"), 0))
        .collect::<LanternResult<Vec<_>>>()?;
    let layers_per_block = shapes.count(&format!("{VAE}encoder.down.0.block."));
    let latent_channels = shapes.dim(&format!("{VAE}decoder.conv_in.weight"), 1)?;
    if levels == 0 || layers_per_block == 0 || latent_channels != LATENT_CHANNELS || block_out_channels.iter().any(|c| c % 32 != 0 || *c == 0) {
        return Err(invalid(
            shapes,
            format!("not an SD 3 VAE: channels {block_out_channels:?}, {layers_per_block} layers per block, {latent_channels} latent channels"),
        ));
    }
    Ok(AutoEncoderKLConfig {
        block_out_channels,
        layers_per_block,
        latent_channels,
        norm_num_groups: 32,
        use_quant_conv: shapes.contains(&format!("{VAE}quant_conv.weight")),
        use_post_quant_conv: shapes.contains(&format!("{VAE}post_quant_conv.weight")),
    })
}

/// CLIP-L (OpenAI, quick GELU, pooled output unprojected as in the reference) and CLIP-G
/// (OpenCLIP bigG, exact GELU, pooled output through `text_projection`).
pub fn clips(clip_l: &Shapes, clip_g: &Shapes) -> LanternResult<(ClipTextConfig, ClipTextConfig)> {
    let l = ClipTextConfig::infer(clip_l, Activation::QuickGelu, false)?;
    let g = ClipTextConfig::infer(clip_g, Activation::Gelu, true)?;
    if l.max_position_embeddings != g.max_position_embeddings {
        return Err(invalid(clip_g, format!("CLIP-L reads {} tokens, CLIP-G {}", l.max_position_embeddings, g.max_position_embeddings)));
    }
    Ok((l, g))
}

/// Checks that the text encoders' widths feed the MMDiT: the pooled outputs side by side
/// make `y`, and the CLIP hidden states side by side, zero-padded to T5's width, sit
/// next to T5's in the context.
pub fn check_fit(mmdit: &MmditConfig, l: &ClipTextConfig, g: &ClipTextConfig, t5_width: usize, shapes: &Shapes) -> LanternResult<()> {
    let pooled = l.pooled_dim() + g.pooled_dim();
    let hidden = l.embed_dim + g.embed_dim;
    if pooled != mmdit.adm_in_channels || t5_width != mmdit.context_embed_size || hidden > t5_width {
        return Err(invalid(
            shapes,
            format!(
                "text encoders do not fit the MMDiT: pooled {pooled} vs y {}, T5 {t5_width} vs context {}, CLIP {hidden}",
                mmdit.adm_in_channels, mmdit.context_embed_size
            ),
        ));
    }
    Ok(())
}
