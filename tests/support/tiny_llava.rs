//! A tiny random `llava-hf/llava-1.5-7b-hf`: the real repo's files and layout (config.json
//! with the real 1.5 keys, generation_config.json, preprocessor_config.json in the new
//! dict spelling, tokenizer.json, three f16 safetensors shards with their index, HF's
//! tensor names) but a two-layer 32-wide CLIP vision tower on 42 px images with 14 px
//! patches (9 image features), a two-layer 64-wide Llama with 320 tokens, and random
//! weights from a fixed seed: identical files on every run. Its answers mean nothing; it
//! tests the path (download, load, prompt, vision layer, projector, decoding) against
//! transformers.
//!
//! The tokenizer is a Llama-style SentencePiece BPE (byte fallback, `▁` word marks,
//! `<unk>` `<s>` `</s>`, BOS added by the post-processor) with a few hundred tokens; like
//! the real one, `<image>` and `<pad>` are added tokens right after the vocabulary
//! (32000 and 32001 there, 300 and 301 here) and the model's vocabulary is padded beyond.

use super::tiny_clip::{vision_config, vision_tower, Tensors, Tower, CLIP_MEAN, CLIP_STD};
use std::path::{Path, PathBuf};

use candle_core::DType;
use serde_json::{json, Value};

pub const LLAVA: &str = "llava-hf/llava-1.5-7b-hf";
pub const IMAGE_TOKEN: u32 = 300;
pub const PAD_TOKEN: u32 = 301;
pub const VOCAB: usize = 320;
pub const IMAGE_SIZE: usize = 42;
pub const PATCH: usize = 14;
/// Image features in a prompt: (42 / 14)² patches, the class token dropped.
pub const IMAGE_FEATURES: usize = 9;
pub const MAX_POSITIONS: usize = 256;
const HIDDEN: usize = 64;
const INTERMEDIATE: usize = 128;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const VISION: Tower = Tower { hidden: 32, intermediate: 64, layers: 2, heads: 2 };

/// Single characters of the tiny vocabulary after `▁` (others fall back to bytes).
const CHARS: &str = "abcdefghiklmnoprstuwy:?.";
/// BPE merges, in rank order; each result is a token.
const MERGES: [(&str, &str); 16] = [
    ("▁", "t"),
    ("h", "e"),
    ("▁t", "he"),
    ("a", "t"),
    ("h", "at"),
    ("▁", "w"),
    ("▁w", "hat"),
    ("▁", "i"),
    ("▁i", "s"),
    ("▁", "c"),
    ("o", "l"),
    ("o", "r"),
    ("ol", "or"),
    ("▁c", "olor"),
    ("▁", "a"),
    ("▁", "s"),
];

/// The tiny Llama tokenizer.json.
pub fn tokenizer() -> Value {
    let mut vocab = serde_json::Map::new();
    for token in ["<unk>", "<s>", "</s>"] {
        vocab.insert(token.into(), json!(vocab.len()));
    }
    for byte in 0..=255u8 {
        vocab.insert(format!("<0x{byte:02X}>"), json!(vocab.len()));
    }
    vocab.insert("▁".into(), json!(vocab.len()));
    for c in CHARS.chars() {
        vocab.insert(c.to_string(), json!(vocab.len()));
    }
    for (left, right) in MERGES {
        vocab.insert(format!("{left}{right}"), json!(vocab.len()));
    }
    assert_eq!(vocab.len(), IMAGE_TOKEN as usize, "the tiny vocabulary must end where <image> begins");
    let merges: Vec<String> = MERGES.iter().map(|(l, r)| format!("{l} {r}")).collect();
    let added = |id: u32, content: &str| super::tiny_tokenizers::special_token(id as usize, content, false);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(IMAGE_TOKEN, "<image>"), added(PAD_TOKEN, "<pad>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
        ]},
        "pre_tokenizer": null,
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}
        ]},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

fn config() -> Value {
    json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": IMAGE_TOKEN,
        "model_type": "llava",
        "pad_token_id": PAD_TOKEN,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
            "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE, "num_attention_heads": HEADS,
            "num_hidden_layers": LAYERS, "num_key_value_heads": HEADS,
            "max_position_embeddings": MAX_POSITIONS, "model_type": "llama", "rms_norm_eps": 1e-05,
            "torch_dtype": "float16", "vocab_size": VOCAB
        },
        "tie_word_embeddings": false,
        "torch_dtype": "float16",
        "transformers_version": "4.36.0.dev0",
        "vision_config": vision_config(VISION, IMAGE_SIZE, PATCH, 16),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": VOCAB
    })
}

/// The tiny checkpoint's tensors; `skip` leaves one out (a broken checkpoint).
fn tensors(skip: Option<&str>) -> Tensors {
    let mut t = Tensors::new(0x11A7_A015);
    vision_tower(&mut t, "vision_tower.vision_model.", VISION, IMAGE_SIZE, PATCH);
    t.linear("multi_modal_projector.linear_1", HIDDEN, VISION.hidden, true);
    t.linear("multi_modal_projector.linear_2", HIDDEN, HIDDEN, true);
    let head_dim = HIDDEN / HEADS;
    t.add("language_model.model.embed_tokens.weight", &[VOCAB, HIDDEN], 0.0, 0.5);
    for layer in 0..LAYERS {
        let p = format!("language_model.model.layers.{layer}");
        t.linear(&format!("{p}.self_attn.q_proj"), HEADS * head_dim, HIDDEN, false);
        t.linear(&format!("{p}.self_attn.k_proj"), HEADS * head_dim, HIDDEN, false);
        t.linear(&format!("{p}.self_attn.v_proj"), HEADS * head_dim, HIDDEN, false);
        t.linear(&format!("{p}.self_attn.o_proj"), HIDDEN, HEADS * head_dim, false);
        t.linear(&format!("{p}.mlp.gate_proj"), INTERMEDIATE, HIDDEN, false);
        t.linear(&format!("{p}.mlp.up_proj"), INTERMEDIATE, HIDDEN, false);
        t.linear(&format!("{p}.mlp.down_proj"), HIDDEN, INTERMEDIATE, false);
        t.add(format!("{p}.input_layernorm.weight"), &[HIDDEN], 1.0, 0.2);
        t.add(format!("{p}.post_attention_layernorm.weight"), &[HIDDEN], 1.0, 0.2);
    }
    t.add("language_model.model.norm.weight", &[HIDDEN], 1.0, 0.2);
    t.weight("language_model.lm_head.weight", &[VOCAB, HIDDEN]);
    // Random weights would often pick the specials, `<image>`, the padding ids beyond the
    // tokenizer or bytes that are no text alone; damping their rows keeps greedy answers
    // long and textual (printable ASCII bytes, letters and merges).
    let head = t.tensors["language_model.lm_head.weight"].clone();
    let textual = |id: usize| (3 + 0x20..3 + 0x7F).contains(&id) || (3 + 256..IMAGE_TOKEN as usize).contains(&id);
    let damp: Vec<f32> = (0..VOCAB).map(|id| if textual(id) { 1.0 } else { 0.05 }).collect();
    let damp = candle_core::Tensor::from_vec(damp, (VOCAB, 1), head.device()).unwrap();
    t.tensors.insert("language_model.lm_head.weight".into(), head.broadcast_mul(&damp).unwrap());
    if let Some(name) = skip {
        t.tensors.remove(name).expect("the tensor to leave out exists");
    }
    t
}

/// Writes the tiny repo into `dir`; `skip` leaves one tensor out.
pub fn llava_with(dir: &Path, skip: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    tensors(skip).save_sharded(dir, 3, DType::F16);
    let write = |name: &str, value: &Value| std::fs::write(dir.join(name), serde_json::to_string_pretty(value).unwrap()).unwrap();
    write("config.json", &config());
    write(
        "generation_config.json",
        &json!({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": PAD_TOKEN, "transformers_version": "4.36.0.dev0"}),
    );
    write(
        "preprocessor_config.json",
        &json!({
            "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "do_center_crop": true, "do_convert_rgb": true,
            "do_normalize": true, "do_rescale": true, "do_resize": true, "image_mean": CLIP_MEAN,
            "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "processor_class": "LlavaProcessor",
            "resample": 3, "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": IMAGE_SIZE}
        }),
    );
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tokenizer()).unwrap()).unwrap();
}

/// The tiny repo under `root`, as (repo id, folder).
pub fn llava(root: &Path) -> (&'static str, PathBuf) {
    let dir = root.join(LLAVA.replace('/', "--"));
    llava_with(&dir, None);
    (LLAVA, dir)
}
