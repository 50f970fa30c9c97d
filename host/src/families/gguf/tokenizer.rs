//! A `tokenizers::Tokenizer` built from a GGUF file's own metadata, as llama.cpp does it:
//! many GGUF repos ship no `tokenizer.json`.
//!
//! - `tokenizer.ggml.model = "gpt2"`: byte-level BPE from `tokens` + `merges`, with the
//!   pre-tokenizer regex named by `tokenizer.ggml.pre` (GPT-2, SmolLM, Qwen2, Llama 3).
//! - `tokenizer.ggml.model = "llama"`: SentencePiece-style vocabulary with `scores`,
//!   loaded as a Unigram model with byte fallback and `▁` word boundaries.
//!
//! Control and user-defined tokens (`token_type` 3 and 4) become added tokens, so a
//! prompt's `<|im_start|>` is one token, as the model was trained.

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{json, Value as Json};
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};

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
            let vocab: Vec<Json> = tokens.iter().zip(&scores).map(|(t, s)| json!([t, s])).collect();
            let model = json!({ "type": "Unigram", "unk_id": unknown, "vocab": vocab, "byte_fallback": true });
            let pre = json!({ "type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": false });
            let decoder = json!({ "type": "Sequence", "decoders": [
                { "type": "Replace", "pattern": { "String": "▁" }, "content": " " },
                { "type": "ByteFallback" }, { "type": "Fuse" },
                { "type": "Strip", "content": " ", "start": 1, "stop": 0 }] });
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
