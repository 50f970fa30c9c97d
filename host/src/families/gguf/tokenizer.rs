//! A `tokenizers::Tokenizer` built from a GGUF file's own metadata, as llama.cpp does it:
//! many GGUF repos ship no `tokenizer.json`.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, with the
//!   pre-tokenizer regex named by `tokenizer.ggml.pre` (GPT-2, SmolLM, Qwen2, Llama 3).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece vocabulary with `scores`. llama.cpp
//!   tokenizes it by merging adjacent pieces, highest-scoring merged piece first (its SPM
//!   tokenizer); that is byte-pair encoding whose merges are ranked by the merged piece's
//!   score, so it is loaded as BPE with merges derived from the scores (as transformers'
//!   SentencePiece converter does), byte fallback, `▁` for spaces, and a `▁` prefix unless
//!   `tokenizer.ggml.add_space_prefix` is false (Gemma).
//!
//! Control and user-defined tokens (`token_type` 3 and 4) become added tokens, so a
//! prompt's `<|im_start|>` is one token, as the model was trained.

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;

/// Pre-tokenizer splits of the newer BPE vocabularies (as in llama.cpp's `llama-vocab.cpp`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn bad(what: impl std::fmt::Display) -> LanternError {
    LanternError::InferenceFailed(format!("GGUF tokenizer: {what}"))
}

fn strings(content: &Content, key: &str) -> LanternResult<Vec<String>> {
    let values = content.metadata.get(key).ok_or_else(|| bad(format!("no {key} in the metadata")))?;
    values
        .to_vec()
        .map_err(bad)?
        .iter()
        .map(|v| v.to_string().cloned().map_err(bad))
        .collect()
}

fn numbers<T>(content: &Content, key: &str, convert: impl Fn(&Value) -> candle_core::Result<T>) -> LanternResult<Option<Vec<T>>> {
    let Some(values) = content.metadata.get(key) else { return Ok(None) };
    values.to_vec().map_err(bad)?.iter().map(|v| convert(v).map_err(bad)).collect::<LanternResult<_>>().map(Some)
}

fn byte_level_pre_tokenizer(pre: &str) -> Json {
    let byte_level = |use_regex: bool| {
        json!({ "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex })
    };
    let split = |pattern: &str| {
        json!({ "type": "Split", "pattern": { "Regex": pattern }, "behavior": "Isolated", "invert": false })
    };
    match pre {
        "qwen2" | "deepseek-r1-qwen" => json!({ "type": "Sequence", "pretokenizers": [split(QWEN2_SPLIT), byte_level(false)] }),
        "llama-bpe" | "llama3" | "smaug-bpe" => {
            json!({ "type": "Sequence", "pretokenizers": [split(LLAMA3_SPLIT), byte_level(false)] })
        }
        // SmolLM splits every digit on its own before the GPT-2 regex.
        "smollm" => json!({ "type": "Sequence", "pretokenizers": [
            { "type": "Digits", "individual_digits": true }, byte_level(true)] }),
        _ => byte_level(true),
    }
}

/// BPE merges equivalent to SentencePiece's score-driven merging: every way to split a
/// normal piece into two pieces of the vocabulary, ranked by the piece's score (highest
/// first), ties by the ids of the halves.
fn merges_from_scores(tokens: &[String], scores: &[f32], types: Option<&[i32]>) -> Vec<(String, String)> {
    let normal = |id: usize| types.is_none_or(|types| types.get(id) == Some(&TOKEN_TYPE_NORMAL));
    let ids: std::collections::HashMap<&str, usize> =
        tokens.iter().enumerate().filter(|(id, _)| normal(*id)).map(|(id, t)| (t.as_str(), id)).collect();
    let mut merges: Vec<(f32, usize, usize, &str, &str)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate().filter(|(id, _)| normal(*id)) {
        for (split, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(split);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                merges.push((scores.get(id).copied().unwrap_or(0.0), l, r, left, right));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges.into_iter().map(|(_, _, _, l, r)| (l.to_string(), r.to_string())).collect()
}

/// Builds the tokenizer described by the GGUF metadata.
pub fn from_gguf(content: &Content) -> LanternResult<Tokenizer> {
    let model_kind = content
        .metadata
        .get("tokenizer.ggml.model")
        .ok_or_else(|| bad("no tokenizer.ggml.model in the metadata"))?
        .to_string()
        .map_err(bad)?
        .clone();
    let tokens = strings(content, "tokenizer.ggml.tokens")?;
    let token_types = numbers(content, "tokenizer.ggml.token_type", Value::to_i32)?;
    let added_tokens: Vec<Json> = token_types
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, kind)| matches!(**kind, TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED))
        .map(|(id, kind)| {
            json!({ "id": id, "content": tokens[id], "single_word": false, "lstrip": false, "rstrip": false,
                    "normalized": false, "special": *kind == TOKEN_TYPE_CONTROL })
        })
        .collect();

    let (model, pre_tokenizer, decoder) = match model_kind.as_str() {
        "gpt2" => {
            let merges = strings(content, "tokenizer.ggml.merges")?;
            let vocab: serde_json::Map<String, Json> =
                tokens.iter().enumerate().map(|(id, token)| (token.clone(), json!(id))).collect();
            let pre = content
                .metadata
                .get("tokenizer.ggml.pre")
                .and_then(|v| v.to_string().ok().cloned())
                .unwrap_or_else(|| "default".into());
            let model = json!({ "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges });
            let decoder = json!({ "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true });
            (model, byte_level_pre_tokenizer(&pre), decoder)
        }
        "llama" => {
            let scores = numbers(content, "tokenizer.ggml.scores", Value::to_f32)?
                .ok_or_else(|| bad("a SentencePiece vocabulary needs tokenizer.ggml.scores"))?;
            let unknown = content
                .metadata
                .get("tokenizer.ggml.unknown_token_id")
                .and_then(|v| v.to_u32().ok())
                .unwrap_or(0);
            let vocab: serde_json::Map<String, Json> =
                tokens.iter().enumerate().map(|(id, token)| (token.clone(), json!(id))).collect();
            let merges = merges_from_scores(&tokens, &scores, token_types.as_deref());
            let unk_token = tokens.get(unknown as usize).cloned();
            let model = json!({ "type": "BPE", "dropout": null, "unk_token": unk_token, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merges });
            let space_prefix = content.metadata.get("tokenizer.ggml.add_space_prefix").and_then(|v| v.to_bool().ok()).unwrap_or(true);
            let prepend = if space_prefix { "first" } else { "never" };
            let pre = json!({ "type": "Metaspace", "replacement": "▁", "prepend_scheme": prepend, "split": false });
            let decoder = json!({ "type": "Sequence", "decoders": [
                { "type": "Replace", "pattern": { "String": "▁" }, "content": " " },
                { "type": "ByteFallback" }, { "type": "Fuse" },
                { "type": "Strip", "content": " ", "start": usize::from(space_prefix), "stop": 0 }] });
            (model, pre, decoder)
        }
        other => return Err(LanternError::ModelNotSupported(format!("GGUF tokenizer model {other:?} is not supported"))),
    };
    let document = json!({ "version": "1.0", "truncation": null, "padding": null, "added_tokens": added_tokens,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null, "decoder": decoder, "model": model });
    Tokenizer::from_bytes(serde_json::to_vec(&document).expect("JSON of plain values")).map_err(bad)
}

/// The id of a token given by its text, if the vocabulary has it.
pub fn token_id(tokenizer: &Tokenizer, text: &str) -> Option<u32> {
    tokenizer.token_to_id(text)
}
