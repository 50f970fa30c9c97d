//! Tiny random FLUX.1 schnell repos: the three repos the catalog entry draws on, with the
//! real files' names, tensor names, layouts and config keys, but tiny widths and weights
//! drawn from a fixed seed (SplitMix64), so every run writes the same bytes. They test the
//! whole path (download, load, staging, sampling, decoding); their images mean nothing.
//!
//! - `black-forest-labs/FLUX.1-schnell`: `flux1-schnell.safetensors` (BFL names; hidden 64,
//!   2 heads of 32, one double and one single block, MLP ratio 4, q/k/v biases, no
//!   guidance input; `img_in` still takes 64 = 16 latent channels x 2x2), `ae.safetensors`
//!   (BFL/LDM names, encoder and decoder; channels 32, 32, 64, 64, which candle's 32-group
//!   norms need; one resnet block per level; 16 latent channels) and the tiny T5
//!   tokenizer as `tokenizer_2/tokenizer.json`.
//! - `google/t5-v1_1-xxl` (served at `refs/pr/2` too): `config.json` and a whole T5 v1.1
//!   encoder-decoder `model.safetensors` (d_model 32, 2 heads of 16, gated-GELU FFN 64,
//!   2 encoder and 1 decoder blocks, untied `lm_head`).
//! - `lmz/candle-flux` (written by [`write_gguf`]): the same tiny transformer as
//!   `flux1-schnell.gguf`, its matrices quantized to Q8_0 and the rest kept in f32.
//! - `openai/clip-vit-large-patch14`: a whole CLIPModel `model.safetensors` (text tower
//!   128 wide with heads of 64 as CLIP-L's, 2 layers, 77 positions; a 1-layer vision
//!   tower; projections; `logit_scale`) and the tiny CLIP tokenizer as `tokenizer.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::json;

use super::splitmix::SplitMix64;
use super::tiny_tokenizers;

pub const FLUX: &str = "black-forest-labs/FLUX.1-schnell";
pub const T5: &str = "google/t5-v1_1-xxl";
pub const CLIP_L: &str = "openai/clip-vit-large-patch14";
pub const GGUF: &str = "lmz/candle-flux";

pub const HIDDEN: usize = 64;
pub const HEAD_DIM: usize = 32;
const MLP: usize = 4 * HIDDEN;
pub const T5_WIDTH: usize = 32;
const T5_HEADS: usize = 2;
const T5_KV: usize = 16;
const T5_FF: usize = 64;
const T5_LAYERS: usize = 2;
const T5_DECODER_LAYERS: usize = 1;
const T5_BUCKETS: usize = 32;
pub const CLIP_WIDTH: usize = 128;
const CLIP_FF: usize = 256;
const CLIP_LAYERS: usize = 2;
const CLIP_POSITIONS: usize = 77;
const VISION_WIDTH: usize = 32;
const VISION_IMAGE: usize = 32;
const VISION_PATCH: usize = 16;
const PROJECTION: usize = 32;
/// Autoencoder: base channels and per-level multipliers (channels 32, 32, 64, 64).
const AE_CH: usize = 32;
const AE_MULT: [usize; 4] = [1, 1, 2, 2];
const AE_RES_BLOCKS: usize = 1;
const Z: usize = 16;

/// Named tensors filled from the seeded source in the order they are added, with
/// PyTorch-like scales so activations stay in a sensible range.
struct Checkpoint {
    tensors: Vec<(String, Tensor)>,
    rng: SplitMix64,
}

impl Checkpoint {
    fn new(seed: u64) -> Self {
        Checkpoint { tensors: Vec::new(), rng: SplitMix64(seed) }
    }

    /// Uniform in `center ± half`.
    fn add(&mut self, name: impl Into<String>, shape: &[usize], center: f32, half: f32) {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| center + (self.rng.next_unit() * 2.0 - 1.0) * half).collect();
        self.tensors.push((name.into(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap()));
    }

    /// A weight scaled by its fan-in (every dimension after the first).
    fn weight(&mut self, name: impl Into<String>, shape: &[usize]) {
        let fan_in: usize = shape[1..].iter().product();
        self.add(name, shape, 0.0, 1.0 / (fan_in as f32).sqrt());
    }

    fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) {
        self.weight(format!("{prefix}.weight"), &[out, inp]);
        if bias {
            self.add(format!("{prefix}.bias"), &[out], 0.0, 0.1);
        }
    }

    fn conv(&mut self, prefix: &str, out: usize, inp: usize, kernel: usize) {
        self.weight(format!("{prefix}.weight"), &[out, inp, kernel, kernel]);
        self.add(format!("{prefix}.bias"), &[out], 0.0, 0.1);
    }

    /// Layer or group norm: scale near 1, bias near 0.
    fn norm(&mut self, prefix: &str, width: usize) {
        self.add(format!("{prefix}.weight"), &[width], 1.0, 0.1);
        self.add(format!("{prefix}.bias"), &[width], 0.0, 0.1);
    }

    fn embedding(&mut self, name: impl Into<String>, shape: &[usize]) {
        self.add(name, shape, 0.0, 1.0);
    }

    fn save(self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let all: HashMap<String, Tensor> = self.tensors.into_iter().collect();
        candle_core::safetensors::save(&all, path).unwrap();
    }
}

/// The flow transformer in BFL's names (`flux1-schnell.safetensors` has no prefix).
fn transformer(path: &Path) {
    let mut w = Checkpoint::new(0xF1_0001);
    let h = HIDDEN;
    w.linear("img_in", h, 64, true);
    w.linear("txt_in", h, T5_WIDTH, true);
    w.linear("time_in.in_layer", h, 256, true);
    w.linear("time_in.out_layer", h, h, true);
    w.linear("vector_in.in_layer", h, CLIP_WIDTH, true);
    w.linear("vector_in.out_layer", h, h, true);
    for stream in ["img", "txt"] {
        let p = format!("double_blocks.0.{stream}");
        w.linear(&format!("{p}_mod.lin"), 6 * h, h, true);
        w.linear(&format!("{p}_attn.qkv"), 3 * h, h, true);
        w.add(format!("{p}_attn.norm.query_norm.scale"), &[HEAD_DIM], 1.0, 0.1);
        w.add(format!("{p}_attn.norm.key_norm.scale"), &[HEAD_DIM], 1.0, 0.1);
        w.linear(&format!("{p}_attn.proj"), h, h, true);
        w.linear(&format!("{p}_mlp.0"), MLP, h, true);
        w.linear(&format!("{p}_mlp.2"), h, MLP, true);
    }
    w.linear("single_blocks.0.linear1", 3 * h + MLP, h, true);
    w.linear("single_blocks.0.linear2", h, h + MLP, true);
    w.add("single_blocks.0.norm.query_norm.scale", &[HEAD_DIM], 1.0, 0.1);
    w.add("single_blocks.0.norm.key_norm.scale", &[HEAD_DIM], 1.0, 0.1);
    w.linear("single_blocks.0.modulation.lin", 3 * h, h, true);
    w.linear("final_layer.linear", 64, h, true);
    w.linear("final_layer.adaLN_modulation.1", 2 * h, h, true);
    w.save(path);
}

fn resnet(w: &mut Checkpoint, prefix: &str, inp: usize, out: usize) {
    w.norm(&format!("{prefix}.norm1"), inp);
    w.conv(&format!("{prefix}.conv1"), out, inp, 3);
    w.norm(&format!("{prefix}.norm2"), out);
    w.conv(&format!("{prefix}.conv2"), out, out, 3);
    if inp != out {
        w.conv(&format!("{prefix}.nin_shortcut"), out, inp, 1);
    }
}

/// The middle of either half: resnet, single-head attention (1x1 convs), resnet.
fn middle(w: &mut Checkpoint, prefix: &str, width: usize) {
    resnet(w, &format!("{prefix}.mid.block_1"), width, width);
    w.norm(&format!("{prefix}.mid.attn_1.norm"), width);
    for part in ["q", "k", "v", "proj_out"] {
        w.conv(&format!("{prefix}.mid.attn_1.{part}"), width, width, 1);
    }
    resnet(w, &format!("{prefix}.mid.block_2"), width, width);
}

/// The autoencoder in BFL/LDM names (`ae.safetensors`: encoder and decoder, no quant convs).
fn autoencoder(path: &Path) {
    let mut w = Checkpoint::new(0xF1_0002);
    let levels = AE_MULT.len();
    w.conv("encoder.conv_in", AE_CH, 3, 3);
    let mut block_in = AE_CH;
    for (level, mult) in AE_MULT.iter().enumerate() {
        let out = AE_CH * mult;
        for block in 0..AE_RES_BLOCKS {
            resnet(&mut w, &format!("encoder.down.{level}.block.{block}"), block_in, out);
            block_in = out;
        }
        if level != levels - 1 {
            w.conv(&format!("encoder.down.{level}.downsample.conv"), block_in, block_in, 3);
        }
    }
    middle(&mut w, "encoder", block_in);
    w.norm("encoder.norm_out", block_in);
    w.conv("encoder.conv_out", 2 * Z, block_in, 3);

    let mut block_in = AE_CH * AE_MULT[levels - 1];
    w.conv("decoder.conv_in", block_in, Z, 3);
    middle(&mut w, "decoder", block_in);
    for level in (0..levels).rev() {
        let out = AE_CH * AE_MULT[level];
        for block in 0..=AE_RES_BLOCKS {
            resnet(&mut w, &format!("decoder.up.{level}.block.{block}"), block_in, out);
            block_in = out;
        }
        if level != 0 {
            w.conv(&format!("decoder.up.{level}.upsample.conv"), block_in, block_in, 3);
        }
    }
    w.norm("decoder.norm_out", block_in);
    w.conv("decoder.conv_out", 3, block_in, 3);
    w.save(path);
}

/// T5 v1.1's attention, without biases; block 0 holds the relative position buckets.
fn t5_attention(w: &mut Checkpoint, prefix: &str, relative: bool) {
    for part in ["q", "k", "v"] {
        w.weight(format!("{prefix}.{part}.weight"), &[T5_HEADS * T5_KV, T5_WIDTH]);
    }
    w.weight(format!("{prefix}.o.weight"), &[T5_WIDTH, T5_HEADS * T5_KV]);
    if relative {
        w.add(format!("{prefix}.relative_attention_bias.weight"), &[T5_BUCKETS, T5_HEADS], 0.0, 0.5);
    }
}

fn t5_ffn(w: &mut Checkpoint, prefix: &str) {
    w.weight(format!("{prefix}.DenseReluDense.wi_0.weight"), &[T5_FF, T5_WIDTH]);
    w.weight(format!("{prefix}.DenseReluDense.wi_1.weight"), &[T5_FF, T5_WIDTH]);
    w.weight(format!("{prefix}.DenseReluDense.wo.weight"), &[T5_WIDTH, T5_FF]);
    w.add(format!("{prefix}.layer_norm.weight"), &[T5_WIDTH], 1.0, 0.1);
}

/// A whole T5 v1.1 checkpoint (`T5ForConditionalGeneration`: shared embeddings, encoder,
/// decoder, untied `lm_head`) and its config.
fn t5(dir: &Path) {
    let vocab = tiny_tokenizers::t5_vocab_size();
    let mut w = Checkpoint::new(0xF1_0003);
    w.embedding("shared.weight", &[vocab, T5_WIDTH]);
    for block in 0..T5_LAYERS {
        let p = format!("encoder.block.{block}.layer");
        t5_attention(&mut w, &format!("{p}.0.SelfAttention"), block == 0);
        w.add(format!("{p}.0.layer_norm.weight"), &[T5_WIDTH], 1.0, 0.1);
        t5_ffn(&mut w, &format!("{p}.1"));
    }
    w.add("encoder.final_layer_norm.weight", &[T5_WIDTH], 1.0, 0.1);
    for block in 0..T5_DECODER_LAYERS {
        let p = format!("decoder.block.{block}.layer");
        t5_attention(&mut w, &format!("{p}.0.SelfAttention"), block == 0);
        w.add(format!("{p}.0.layer_norm.weight"), &[T5_WIDTH], 1.0, 0.1);
        t5_attention(&mut w, &format!("{p}.1.EncDecAttention"), false);
        w.add(format!("{p}.1.layer_norm.weight"), &[T5_WIDTH], 1.0, 0.1);
        t5_ffn(&mut w, &format!("{p}.2"));
    }
    w.add("decoder.final_layer_norm.weight", &[T5_WIDTH], 1.0, 0.1);
    w.weight("lm_head.weight", &[vocab, T5_WIDTH]);
    w.save(&dir.join("model.safetensors"));
    let config = json!({
        "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
        "d_ff": T5_FF, "d_kv": T5_KV, "d_model": T5_WIDTH, "decoder_start_token_id": 0,
        "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
        "initializer_factor": 1.0, "is_encoder_decoder": true, "layer_norm_epsilon": 1e-06,
        "num_decoder_layers": T5_DECODER_LAYERS, "num_heads": T5_HEADS, "num_layers": T5_LAYERS,
        "output_past": true, "pad_token_id": 0, "relative_attention_num_buckets": T5_BUCKETS,
        "tie_word_embeddings": false, "vocab_size": vocab
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn clip_layers(w: &mut Checkpoint, prefix: &str, layers: usize, width: usize, ff: usize) {
    for layer in 0..layers {
        let p = format!("{prefix}.encoder.layers.{layer}");
        for part in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            w.linear(&format!("{p}.self_attn.{part}"), width, width, true);
        }
        w.norm(&format!("{p}.layer_norm1"), width);
        w.linear(&format!("{p}.mlp.fc1"), ff, width, true);
        w.linear(&format!("{p}.mlp.fc2"), width, ff, true);
        w.norm(&format!("{p}.layer_norm2"), width);
    }
}

/// A whole HF CLIPModel checkpoint: text and vision towers, projections, logit scale.
fn clip(path: &Path) {
    let mut w = Checkpoint::new(0xF1_0004);
    w.embedding("text_model.embeddings.token_embedding.weight", &[tiny_tokenizers::clip_vocab_size(), CLIP_WIDTH]);
    w.add("text_model.embeddings.position_embedding.weight", &[CLIP_POSITIONS, CLIP_WIDTH], 0.0, 0.2);
    clip_layers(&mut w, "text_model", CLIP_LAYERS, CLIP_WIDTH, CLIP_FF);
    w.norm("text_model.final_layer_norm", CLIP_WIDTH);
    let patches = (VISION_IMAGE / VISION_PATCH).pow(2);
    w.add("vision_model.embeddings.class_embedding", &[VISION_WIDTH], 0.0, 0.2);
    w.weight("vision_model.embeddings.patch_embedding.weight", &[VISION_WIDTH, 3, VISION_PATCH, VISION_PATCH]);
    w.add("vision_model.embeddings.position_embedding.weight", &[patches + 1, VISION_WIDTH], 0.0, 0.2);
    w.norm("vision_model.pre_layrnorm", VISION_WIDTH);
    clip_layers(&mut w, "vision_model", 1, VISION_WIDTH, 2 * VISION_WIDTH);
    w.norm("vision_model.post_layernorm", VISION_WIDTH);
    w.linear("visual_projection", PROJECTION, VISION_WIDTH, false);
    w.linear("text_projection", PROJECTION, CLIP_WIDTH, false);
    w.tensors.push(("logit_scale".into(), Tensor::new(2.6592f32, &Device::Cpu).unwrap()));
    w.save(path);
}

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_string(&value).unwrap()).unwrap();
}

/// Writes the three repos under `root` and returns `(repo id, folder)` for each.
pub fn write(root: &Path) -> Vec<(&'static str, PathBuf)> {
    let dir = |repo: &str| root.join(repo.replace('/', "--"));
    let (flux, t5_dir, clip_dir) = (dir(FLUX), dir(T5), dir(CLIP_L));
    transformer(&flux.join("flux1-schnell.safetensors"));
    autoencoder(&flux.join("ae.safetensors"));
    write_json(&flux.join("tokenizer_2/tokenizer.json"), tiny_tokenizers::t5());
    std::fs::create_dir_all(&t5_dir).unwrap();
    t5(&t5_dir);
    clip(&clip_dir.join("model.safetensors"));
    write_json(&clip_dir.join("tokenizer.json"), tiny_tokenizers::clip());
    vec![(FLUX, flux), (T5, t5_dir), (CLIP_L, clip_dir)]
}

/// Writes the `lmz/candle-flux` repo under `root`: the tiny transformer of [`write`] (read
/// from `flux_dir`) as `flux1-schnell.gguf`, matrices in Q8_0 (their rows are whole
/// 32-value blocks), vectors in f32, in BFL's names as candle's quantized FLUX reads them.
pub fn write_gguf(root: &Path, flux_dir: &Path) -> (&'static str, PathBuf) {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let tensors = candle_core::safetensors::load(flux_dir.join("flux1-schnell.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let quantized: Vec<(&str, QTensor)> = names
        .into_iter()
        .map(|name| {
            let tensor = &tensors[name];
            let dtype = if tensor.rank() == 2 && tensor.dim(1).unwrap().is_multiple_of(32) { GgmlDType::Q8_0 } else { GgmlDType::F32 };
            (name.as_str(), QTensor::quantize(tensor, dtype).unwrap())
        })
        .collect();
    let refs: Vec<(&str, &QTensor)> = quantized.iter().map(|(name, tensor)| (*name, tensor)).collect();
    let dir = root.join(GGUF.replace('/', "--"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut file = std::fs::File::create(dir.join("flux1-schnell.gguf")).unwrap();
    gguf_file::write(&mut file, &[], &refs).unwrap();
    (GGUF, dir)
}
