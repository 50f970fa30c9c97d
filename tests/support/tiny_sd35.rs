//! A tiny random Stable Diffusion 3.5 Large Turbo, with the real repos' layout: the
//! single-file `sd3.5_large_turbo.safetensors` (MMDiT under `model.diffusion_model.`,
//! VAE under `first_stage_model.` in LDM names, 16-bit like the real one), CLIP-L and
//! CLIP-G text encoders (`text_model.*`, CLIP-G's `text_projection`) and the T5 encoder
//! (stored as f16 like `t5xxl_fp16.safetensors`) under `text_encoders/`, plus the other
//! repos the model draws on: T5's `config.json` and the three tokenizers (the tiny
//! CLIP-style and T5-style ones of `tiny_tokenizers`).
//!
//! The weights are random from a fixed seed (SplitMix64), so every run writes the same
//! bytes. The sizes are tiny (MMDiT depth 2 = hidden 128, 2 heads of 64, position table
//! 8x8 so at most 128x128 images; VAE channels 32/32/64/64; CLIP-L width 64, CLIP-G 128,
//! two layers each; T5 width 256, two blocks): the images mean nothing, they test the
//! whole path against the reference implementation run on the same files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::json;

use super::splitmix::SplitMix64;
use super::tiny_tokenizers;

pub const REPO: &str = "stabilityai/stable-diffusion-3.5-large-turbo";
pub const T5_REPO: &str = "google/t5-v1_1-xxl";
pub const T5_TOKENIZER_REPO: &str = "lmz/mt5-tokenizers";
pub const CLIP_L_REPO: &str = "openai/clip-vit-large-patch14";
pub const CLIP_G_REPO: &str = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k";

pub const DEPTH: usize = 2;
pub const HIDDEN: usize = 64 * DEPTH;
pub const PATCH: usize = 2;
pub const POS_EMBED_MAX: usize = 8;
pub const CLIP_L_WIDTH: usize = 64;
pub const CLIP_G_WIDTH: usize = 128;
pub const T5_WIDTH: usize = 256;
const T5_KV: usize = 32;
const T5_HEADS: usize = 4;
const T5_FF: usize = 256;
const VAE_CHANNELS: [usize; 4] = [32, 32, 64, 64];
const VAE_LAYERS: usize = 2;
const LATENT: usize = 16;

/// Named tensors with values from the seeded source, in the order they are added.
struct Weights {
    tensors: Vec<(String, Vec<f32>, Vec<usize>)>,
    rng: SplitMix64,
}

impl Weights {
    fn new(seed: u64) -> Self {
        Weights { tensors: Vec::new(), rng: SplitMix64(seed) }
    }

    /// Uniform in `center ± spread`.
    fn add(&mut self, name: String, shape: &[usize], center: f32, spread: f32) {
        let count = shape.iter().product();
        let values = (0..count).map(|_| center + (self.rng.next_unit() * 2.0 - 1.0) * spread).collect();
        self.tensors.push((name, values, shape.to_vec()));
    }

    /// A weight with unit gain (uniform of variance 1 / fan-in) and, when asked, a small bias.
    fn layer(&mut self, prefix: &str, shape: &[usize], bias: bool) {
        let fan_in: usize = shape[1..].iter().product();
        self.add(format!("{prefix}.weight"), shape, 0.0, (3.0 / fan_in as f32).sqrt());
        if bias {
            self.add(format!("{prefix}.bias"), &shape[..1], 0.0, 0.1);
        }
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize) {
        self.layer(prefix, &[out, inp], true);
    }

    fn conv(&mut self, prefix: &str, out: usize, inp: usize, kernel: usize) {
        self.layer(prefix, &[out, inp, kernel, kernel], true);
    }

    fn norm(&mut self, prefix: &str, width: usize, bias: bool) {
        self.add(format!("{prefix}.weight"), &[width], 1.0, 0.1);
        if bias {
            self.add(format!("{prefix}.bias"), &[width], 0.0, 0.1);
        }
    }

    fn save(self, path: &Path, dtype: DType) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tensors: HashMap<String, Tensor> = self
            .tensors
            .into_iter()
            .map(|(name, values, shape)| {
                (name, Tensor::from_vec(values, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap())
            })
            .collect();
        candle_core::safetensors::save(&tensors, path).unwrap();
    }
}

fn mmdit(w: &mut Weights) {
    let p = "model.diffusion_model";
    let h = HIDDEN;
    w.conv(&format!("{p}.x_embedder.proj"), h, LATENT, PATCH);
    w.add(format!("{p}.pos_embed"), &[1, POS_EMBED_MAX * POS_EMBED_MAX, h], 0.0, 0.5);
    w.linear(&format!("{p}.t_embedder.mlp.0"), h, 256);
    w.linear(&format!("{p}.t_embedder.mlp.2"), h, h);
    w.linear(&format!("{p}.y_embedder.mlp.0"), h, CLIP_L_WIDTH + CLIP_G_WIDTH);
    w.linear(&format!("{p}.y_embedder.mlp.2"), h, h);
    w.linear(&format!("{p}.context_embedder"), h, T5_WIDTH);
    for block in 0..DEPTH {
        for side in ["x_block", "context_block"] {
            let b = format!("{p}.joint_blocks.{block}.{side}");
            let last_context = block == DEPTH - 1 && side == "context_block";
            w.linear(&format!("{b}.attn.qkv"), 3 * h, h);
            w.norm(&format!("{b}.attn.ln_q"), 64, false);
            w.norm(&format!("{b}.attn.ln_k"), 64, false);
            if last_context {
                // The last context block only makes q, k, v (mmditx `pre_only`).
                w.linear(&format!("{b}.adaLN_modulation.1"), 2 * h, h);
                continue;
            }
            w.linear(&format!("{b}.attn.proj"), h, h);
            w.linear(&format!("{b}.mlp.fc1"), 4 * h, h);
            w.linear(&format!("{b}.mlp.fc2"), h, 4 * h);
            w.linear(&format!("{b}.adaLN_modulation.1"), 6 * h, h);
        }
    }
    w.linear(&format!("{p}.final_layer.linear"), PATCH * PATCH * LATENT, h);
    w.linear(&format!("{p}.final_layer.adaLN_modulation.1"), 2 * h, h);
}

fn resnet(w: &mut Weights, prefix: &str, inp: usize, out: usize) {
    w.norm(&format!("{prefix}.norm1"), inp, true);
    w.conv(&format!("{prefix}.conv1"), out, inp, 3);
    w.norm(&format!("{prefix}.norm2"), out, true);
    w.conv(&format!("{prefix}.conv2"), out, out, 3);
    if inp != out {
        w.conv(&format!("{prefix}.nin_shortcut"), out, inp, 1);
    }
}

fn vae_mid(w: &mut Weights, prefix: &str, c: usize) {
    resnet(w, &format!("{prefix}.mid.block_1"), c, c);
    w.norm(&format!("{prefix}.mid.attn_1.norm"), c, true);
    for part in ["q", "k", "v", "proj_out"] {
        // LDM keeps these as 1x1 convolutions.
        w.conv(&format!("{prefix}.mid.attn_1.{part}"), c, c, 1);
    }
    resnet(w, &format!("{prefix}.mid.block_2"), c, c);
}

fn vae(w: &mut Weights) {
    let e = "first_stage_model.encoder";
    let levels = VAE_CHANNELS.len();
    w.conv(&format!("{e}.conv_in"), VAE_CHANNELS[0], 3, 3);
    let mut channels = VAE_CHANNELS[0];
    for (level, &out) in VAE_CHANNELS.iter().enumerate() {
        for block in 0..VAE_LAYERS {
            resnet(w, &format!("{e}.down.{level}.block.{block}"), channels, out);
            channels = out;
        }
        if level + 1 < levels {
            w.conv(&format!("{e}.down.{level}.downsample.conv"), out, out, 3);
        }
    }
    vae_mid(w, e, channels);
    w.norm(&format!("{e}.norm_out"), channels, true);
    w.conv(&format!("{e}.conv_out"), 2 * LATENT, channels, 3);

    let d = "first_stage_model.decoder";
    let top = VAE_CHANNELS[levels - 1];
    w.conv(&format!("{d}.conv_in"), top, LATENT, 3);
    vae_mid(w, d, top);
    let mut channels = top;
    for level in (0..levels).rev() {
        let out = VAE_CHANNELS[level];
        for block in 0..=VAE_LAYERS {
            resnet(w, &format!("{d}.up.{level}.block.{block}"), channels, out);
            channels = out;
        }
        if level != 0 {
            w.conv(&format!("{d}.up.{level}.upsample.conv"), out, out, 3);
        }
    }
    w.norm(&format!("{d}.norm_out"), channels, true);
    // A quieter last layer keeps most random pixels off the clamp.
    w.add(format!("{d}.conv_out.weight"), &[3, channels, 3, 3], 0.0, 0.3 * (3.0 / (channels * 9) as f32).sqrt());
    w.add(format!("{d}.conv_out.bias"), &[3], 0.0, 0.1);
}

fn clip(w: &mut Weights, width: usize, projection: bool) {
    let t = "text_model";
    w.add(format!("{t}.embeddings.token_embedding.weight"), &[tiny_tokenizers::clip_vocab_size(), width], 0.0, 1.0);
    w.add(format!("{t}.embeddings.position_embedding.weight"), &[77, width], 0.0, 0.5);
    for layer in 0..2 {
        let l = format!("{t}.encoder.layers.{layer}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w.linear(&format!("{l}.self_attn.{proj}"), width, width);
        }
        w.norm(&format!("{l}.layer_norm1"), width, true);
        w.linear(&format!("{l}.mlp.fc1"), 4 * width, width);
        w.linear(&format!("{l}.mlp.fc2"), width, 4 * width);
        w.norm(&format!("{l}.layer_norm2"), width, true);
    }
    w.norm(&format!("{t}.final_layer_norm"), width, true);
    if projection {
        w.layer("text_projection", &[width, width], false);
    }
}

fn t5(w: &mut Weights) {
    let inner = T5_KV * T5_HEADS;
    w.add("shared.weight".into(), &[tiny_tokenizers::t5_vocab_size(), T5_WIDTH], 0.0, 1.0);
    for block in 0..2 {
        let b = format!("encoder.block.{block}.layer");
        for part in ["q", "k", "v"] {
            w.layer(&format!("{b}.0.SelfAttention.{part}"), &[inner, T5_WIDTH], false);
        }
        w.layer(&format!("{b}.0.SelfAttention.o"), &[T5_WIDTH, inner], false);
        if block == 0 {
            w.add(format!("{b}.0.SelfAttention.relative_attention_bias.weight"), &[32, T5_HEADS], 0.0, 0.5);
        }
        w.norm(&format!("{b}.0.layer_norm"), T5_WIDTH, false);
        w.layer(&format!("{b}.1.DenseReluDense.wi_0"), &[T5_FF, T5_WIDTH], false);
        w.layer(&format!("{b}.1.DenseReluDense.wi_1"), &[T5_FF, T5_WIDTH], false);
        w.layer(&format!("{b}.1.DenseReluDense.wo"), &[T5_WIDTH, T5_FF], false);
        w.norm(&format!("{b}.1.layer_norm"), T5_WIDTH, false);
    }
    w.norm("encoder.final_layer_norm", T5_WIDTH, false);
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// The tiny T5's `config.json` (the keys of google/t5-v1_1-xxl's).
pub fn t5_config() -> serde_json::Value {
    json!({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "vocab_size": tiny_tokenizers::t5_vocab_size(), "d_model": T5_WIDTH, "d_kv": T5_KV, "d_ff": T5_FF,
        "num_layers": 2, "num_decoder_layers": 2, "num_heads": T5_HEADS,
        "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6, "initializer_factor": 1.0,
        "feed_forward_proj": "gated-gelu", "is_encoder_decoder": true, "tie_word_embeddings": false,
        "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
    })
}

/// Writes the five repos under `root`; returns `(repo id, folder)` for the test hub.
pub fn write(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let sd = root.join("sd35");
    let mut checkpoint = Weights::new(0x5d35_0001);
    mmdit(&mut checkpoint);
    vae(&mut checkpoint);
    checkpoint.save(&sd.join("sd3.5_large_turbo.safetensors"), DType::BF16);
    let mut clip_l = Weights::new(0x5d35_0002);
    clip(&mut clip_l, CLIP_L_WIDTH, false);
    clip_l.save(&sd.join("text_encoders/clip_l.safetensors"), DType::F16);
    let mut clip_g = Weights::new(0x5d35_0003);
    clip(&mut clip_g, CLIP_G_WIDTH, true);
    clip_g.save(&sd.join("text_encoders/clip_g.safetensors"), DType::F16);
    let mut encoder = Weights::new(0x5d35_0004);
    t5(&mut encoder);
    encoder.save(&sd.join("text_encoders/t5xxl_fp16.safetensors"), DType::F16);

    let t5_dir = root.join("t5-v1_1-xxl");
    write_json(&t5_dir.join("config.json"), &t5_config());
    let t5_tokenizer = root.join("mt5-tokenizers");
    write_json(&t5_tokenizer.join("t5-v1_1-xxl.tokenizer.json"), &tiny_tokenizers::t5());
    let clip_l_dir = root.join("clip-vit-large-patch14");
    write_json(&clip_l_dir.join("tokenizer.json"), &tiny_tokenizers::clip());
    let clip_g_dir = root.join("clip-vit-bigg");
    write_json(&clip_g_dir.join("tokenizer.json"), &tiny_tokenizers::clip());
    vec![(REPO, sd), (T5_REPO, t5_dir), (T5_TOKENIZER_REPO, t5_tokenizer), (CLIP_L_REPO, clip_l_dir), (CLIP_G_REPO, clip_g_dir)]
}
