//! The sizes of FLUX's four networks, read from their checkpoints' tensor shapes, so the
//! real 12B files and the tests' tiny random ones load through the same code.

use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use candle_transformers::models::flux::{autoencoder, model};

use super::checkpoint::Shapes;
use crate::error::{LanternError, LanternResult};

fn unsupported(shapes: &Shapes, why: impl std::fmt::Display) -> LanternError {
    LanternError::ModelNotSupported(format!("{}: {why}", shapes.label()))
}

/// 16 latent channels packed 2x2: the only input width FLUX's latents and packing make.
const PACKED_CHANNELS: usize = 64;
/// The AE's latent channels.
pub const LATENT_CHANNELS: usize = 16;
/// FLUX's AE latents are scaled and shifted (BFL `AutoEncoderParams`, diffusers
/// `scaling_factor`/`shift_factor`); the numbers are not in the checkpoint.
pub const AE_SCALE: f64 = 0.3611;
pub const AE_SHIFT: f64 = 0.1159;
/// candle's AE builds every group norm with 32 groups.
const AE_GROUPS: usize = 32;
/// CLIP ViT-L/14's text tower has heads of 64 (768 wide, 12 heads); CLIPModel's weights
/// do not record the head count, and the catalog fetches no config.json for it.
const CLIP_HEAD_DIM: usize = 64;

/// The RoPE split of one attention head over FLUX's three position axes (unused,
/// row, column). The real model's heads of 128 use [16, 56, 56]; the general rule that
/// gives it is `hd/8` for the first axis and the rest halved, each of which RoPE needs
/// even, so the head dim must be a multiple of 32 (tiny heads of 32: [4, 14, 14]).
pub fn axes_dim(head_dim: usize) -> Option<Vec<usize>> {
    if head_dim == 0 || !head_dim.is_multiple_of(32) {
        return None;
    }
    let first = head_dim / 8;
    let rest = (head_dim - first) / 2;
    Some(vec![first, rest, rest])
}

/// The flow transformer's configuration from `flux1-schnell.safetensors` (BFL names).
pub fn transformer(shapes: &Shapes) -> LanternResult<model::Config> {
    let hidden = shapes.dim("img_in.weight", 0)?;
    let in_channels = shapes.dim("img_in.weight", 1)?;
    if in_channels != PACKED_CHANNELS {
        return Err(unsupported(shapes, format!("img_in takes {in_channels} channels; FLUX packs 16 latent channels into {PACKED_CHANNELS}")));
    }
    let depth = shapes.count("double_blocks")?;
    let depth_single_blocks = shapes.count("single_blocks")?;
    let head_dim = if depth > 0 {
        shapes.dim("double_blocks.0.img_attn.norm.query_norm.scale", 0)?
    } else {
        shapes.dim("single_blocks.0.norm.query_norm.scale", 0)?
    };
    if head_dim == 0 || hidden % head_dim != 0 {
        return Err(unsupported(shapes, format!("hidden size {hidden} is not a whole number of heads of {head_dim}")));
    }
    let mlp = if depth > 0 {
        shapes.dim("double_blocks.0.img_mlp.0.weight", 0)?
    } else {
        let fused = shapes.dim("single_blocks.0.linear1.weight", 0)?;
        fused.checked_sub(3 * hidden).ok_or_else(|| unsupported(shapes, "single block linear1 is narrower than q, k and v"))?
    };
    let axes_dim = axes_dim(head_dim)
        .ok_or_else(|| unsupported(shapes, format!("no RoPE axis split for heads of {head_dim} (a multiple of 32 is needed)")))?;
    Ok(model::Config {
        in_channels,
        vec_in_dim: shapes.dim("vector_in.in_layer.weight", 1)?,
        context_in_dim: shapes.dim("txt_in.weight", 1)?,
        hidden_size: hidden,
        mlp_ratio: mlp as f64 / hidden as f64,
        num_heads: hidden / head_dim,
        depth,
        depth_single_blocks,
        axes_dim,
        theta: 10_000,
        qkv_bias: shapes.contains("double_blocks.0.img_attn.qkv.bias") || shapes.contains("single_blocks.0.linear1.bias"),
        guidance_embed: shapes.contains("guidance_in.in_layer.weight"),
    })
}

/// The autoencoder's configuration from the decoder half of `ae.safetensors` (BFL/LDM
/// names): the channels of each level, its resnet blocks, the latent channels.
pub fn autoencoder(shapes: &Shapes) -> LanternResult<autoencoder::Config> {
    let levels = shapes.count("decoder.up")?;
    if levels != 4 {
        return Err(unsupported(shapes, format!("the decoder has {levels} levels; FLUX's latents are 8x smaller than the image (4 levels)")));
    }
    let z_channels = shapes.dim("decoder.conv_in.weight", 1)?;
    if z_channels != LATENT_CHANNELS {
        return Err(unsupported(shapes, format!("the decoder takes {z_channels} latent channels, FLUX makes {LATENT_CHANNELS}")));
    }
    let num_res_blocks = shapes.count("decoder.up.0.block")?.checked_sub(1).ok_or_else(|| unsupported(shapes, "decoder level 0 has no blocks"))?;
    let outs: Vec<usize> = (0..levels)
        .map(|level| shapes.dim(&format!("decoder.up.{level}.block.0.conv1.weight"), 0))
        .collect::<LanternResult<_>>()?;
    let ch = outs[0];
    if let Some(bad) = outs.iter().find(|&&c| c == 0 || c % AE_GROUPS != 0 || c % ch != 0) {
        return Err(unsupported(
            shapes,
            format!("decoder channels {outs:?}: {bad} is not a multiple of {AE_GROUPS} (the group-norm groups) and of the first level's {ch}"),
        ));
    }
    Ok(autoencoder::Config {
        resolution: 256,
        in_channels: 3,
        ch,
        out_ch: shapes.dim("decoder.conv_out.weight", 0)?,
        ch_mult: outs.iter().map(|c| c / ch).collect(),
        num_res_blocks,
        z_channels,
        scale_factor: AE_SCALE,
        shift_factor: AE_SHIFT,
    })
}

/// The CLIP text tower's configuration from a `CLIPModel` checkpoint (`text_model.*`).
pub fn clip_text(shapes: &Shapes) -> LanternResult<ClipTextConfig> {
    let embed = "text_model.embeddings.token_embedding.weight";
    let (vocab_size, embed_dim) = (shapes.dim(embed, 0)?, shapes.dim(embed, 1)?);
    if embed_dim == 0 || embed_dim % CLIP_HEAD_DIM != 0 {
        return Err(unsupported(shapes, format!("text width {embed_dim} is not a whole number of CLIP heads of {CLIP_HEAD_DIM}")));
    }
    let max_position_embeddings = shapes.dim("text_model.embeddings.position_embedding.weight", 0)?;
    if max_position_embeddings < 2 {
        return Err(unsupported(shapes, format!("{max_position_embeddings} text positions leave no room for a prompt")));
    }
    Ok(ClipTextConfig {
        vocab_size,
        embed_dim,
        activation: Activation::QuickGelu,
        intermediate_size: shapes.dim("text_model.encoder.layers.0.mlp.fc1.weight", 0)?,
        max_position_embeddings,
        pad_with: None,
        num_hidden_layers: shapes.count("text_model.encoder.layers")?,
        num_attention_heads: embed_dim / CLIP_HEAD_DIM,
        projection_dim: if shapes.contains("text_projection.weight") { shapes.dim("text_projection.weight", 0)? } else { embed_dim },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use candle_core::{DType, Device, Shape, Tensor};
    use candle_nn::var_builder::SimpleBackend;

    /// Hands out weightless tensors and writes down every name and shape asked for: the
    /// tensor list of a real-size checkpoint, without the checkpoint.
    #[derive(Default)]
    struct Recorder(std::sync::Arc<Mutex<BTreeMap<String, Vec<usize>>>>);

    impl SimpleBackend for Recorder {
        fn get(&self, s: Shape, name: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
            self.0.lock().unwrap().insert(name.to_string(), s.dims().to_vec());
            Tensor::zeros((), dtype, dev)?.broadcast_as(s)
        }
        fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
            candle_core::bail!("{name}: no shape")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            true
        }
    }

    fn real_shapes(label: &str, build: impl FnOnce(candle_nn::VarBuilder<'static>)) -> Shapes {
        let recorder = Recorder::default();
        let names = recorder.0.clone();
        build(candle_nn::VarBuilder::from_backend(Box::new(recorder), DType::F32, Device::Cpu));
        let names = names.lock().unwrap().clone();
        Shapes::from_map(label, names)
    }

    /// The sizes read from the real checkpoints' tensor lists are the real configs.
    #[test]
    fn real_sizes_are_read_back() {
        let real = model::Config::schnell();
        let shapes = real_shapes("flux1-schnell", |vb| {
            model::Flux::new(&model::Config::schnell(), vb).unwrap();
        });
        let read = transformer(&shapes).unwrap();
        assert_eq!(
            (read.in_channels, read.vec_in_dim, read.context_in_dim, read.hidden_size, read.mlp_ratio, read.num_heads),
            (real.in_channels, real.vec_in_dim, real.context_in_dim, real.hidden_size, real.mlp_ratio, real.num_heads)
        );
        assert_eq!((read.depth, read.depth_single_blocks, read.axes_dim, read.theta), (real.depth, real.depth_single_blocks, real.axes_dim, real.theta));
        assert_eq!((read.qkv_bias, read.guidance_embed), (true, false));

        let real = autoencoder::Config::schnell();
        let shapes = real_shapes("ae", |vb| {
            autoencoder::AutoEncoder::new(&autoencoder::Config::schnell(), vb).unwrap();
        });
        let read = autoencoder(&shapes).unwrap();
        assert_eq!((read.ch, read.ch_mult, read.num_res_blocks, read.z_channels, read.out_ch), (real.ch, real.ch_mult, real.num_res_blocks, real.z_channels, real.out_ch));

        // CLIP ViT-L/14's text tower: 49408 tokens, 768 wide, 12 layers of 12 heads, 77 positions.
        let clip_l = ClipTextConfig {
            vocab_size: 49408,
            embed_dim: 768,
            activation: Activation::QuickGelu,
            intermediate_size: 3072,
            max_position_embeddings: 77,
            pad_with: None,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            projection_dim: 768,
        };
        let shapes = real_shapes("clip-l", |vb| {
            candle_transformers::models::clip::text_model::ClipTextTransformer::new(vb.pp("text_model"), &clip_l).unwrap();
        });
        let read = clip_text(&shapes).unwrap();
        assert_eq!(
            (read.vocab_size, read.embed_dim, read.intermediate_size, read.max_position_embeddings, read.num_hidden_layers, read.num_attention_heads),
            (49408, 768, 3072, 77, 12, 12)
        );
    }

    #[test]
    fn the_real_heads_get_the_real_axes() {
        assert_eq!(axes_dim(128), Some(vec![16, 56, 56]));
        assert_eq!(axes_dim(32), Some(vec![4, 14, 14]));
        assert_eq!(axes_dim(48), None);
        for hd in (32..=512).step_by(32) {
            let axes = axes_dim(hd).unwrap();
            assert_eq!(axes.iter().sum::<usize>(), hd);
            assert!(axes.iter().all(|a| a % 2 == 0));
        }
    }
}
