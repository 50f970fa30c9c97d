//! Small `tokenizer.json` files with the structure of the real CLIP and T5 tokenizers
//! (same model type, normalizer, pre-tokenizer and post-processor, same special tokens
//! in the same roles) but vocabularies of a few hundred tokens, for the tiny image
//! checkpoints. No registry ships the real ones.

use serde_json::{json, Value};

/// An `added_tokens` entry of a `tokenizer.json`, as the real files write a special token.
pub fn special_token(id: usize, content: &str, normalized: bool) -> Value {
    json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": normalized, "special": true})
}

/// GPT-2's printable stand-in for each byte (`bytes_to_unicode`), as CLIP's BPE uses.
fn byte_char(byte: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(byte) {
        return byte as char;
    }
    char::from_u32(256 + (0..byte).filter(|b| !printable(*b)).count() as u32).unwrap()
}

/// Merges of the tiny CLIP vocabulary: enough to make whole words of a few test prompts.
const CLIP_MERGES: [(&str, &str); 12] = [
    ("a", "t</w>"),
    ("c", "at</w>"),
    ("o", "g</w>"),
    ("d", "og</w>"),
    ("r", "e"),
    ("re", "d</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("o", "n</w>"),
    ("i", "n</w>"),
    ("s", "k"),
];

/// The id of `<|endoftext|>` in [`clip`]: the highest id, as in CLIP (whose text
/// tower pools at the arg-max of the ids).
pub fn clip_eos_id() -> u32 {
    clip_vocab_size() as u32 - 1
}

/// Tokens in [`clip`]: 256 bytes, 256 bytes ending a word, the merges, two specials.
pub fn clip_vocab_size() -> usize {
    512 + CLIP_MERGES.len() + 2
}

/// A CLIP-style byte-level BPE tokenizer: lower-cased, words end in `</w>`,
/// `<|startoftext|>` … `<|endoftext|>` around every text.
pub fn clip() -> Value {
    let mut vocab = serde_json::Map::new();
    for byte in 0..=255u8 {
        vocab.insert(byte_char(byte).to_string(), json!(vocab.len()));
    }
    for byte in 0..=255u8 {
        vocab.insert(format!("{}</w>", byte_char(byte)), json!(vocab.len()));
    }
    for (left, right) in CLIP_MERGES {
        vocab.insert(format!("{left}{right}"), json!(vocab.len()));
    }
    let bos = vocab.len();
    vocab.insert("<|startoftext|>".into(), json!(bos));
    vocab.insert("<|endoftext|>".into(), json!(bos + 1));
    let merges: Vec<String> = CLIP_MERGES.iter().map(|(l, r)| format!("{l} {r}")).collect();
    let special = |id: usize, content: &str| special_token(id, content, true);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(bos, "<|startoftext|>"), special(bos + 1, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", bos + 1], "cls": ["<|startoftext|>", bos],
                            "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>", "continuing_subword_prefix": "",
                  "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// Pieces of the tiny T5 vocabulary after the three specials: the word-start marker,
/// letters, and a few whole words.
const T5_PIECES: [&str; 8] = ["▁", "▁a", "▁cat", "▁dog", "▁red", "▁the", "▁on", "▁in"];

/// Tokens in [`t5`]: `<pad>` 0, `</s>` 1, `<unk>` 2, the pieces above, then a-z
/// alone and after the word-start marker.
pub fn t5_vocab_size() -> usize {
    3 + T5_PIECES.len() + 52
}

/// A T5-style SentencePiece Unigram tokenizer: `▁` marks word starts, `</s>` ends every
/// text, `<pad>` is 0.
pub fn t5() -> Value {
    let mut vocab: Vec<Value> = vec![json!(["<pad>", 0.0]), json!(["</s>", 0.0]), json!(["<unk>", 0.0])];
    for (i, piece) in T5_PIECES.iter().enumerate() {
        vocab.push(json!([piece, -2.0 - i as f64 * 0.01]));
    }
    for letter in 'a'..='z' {
        vocab.push(json!([format!("▁{letter}"), -8.0]));
        vocab.push(json!([letter.to_string(), -9.0]));
    }
    let special = |id: usize, content: &str| special_token(id, content, false);
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "</s>"), special(2, "<unk>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}
        ]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}}},
        "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": false}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(json: Value) -> tokenizers::Tokenizer {
        tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&json).unwrap()).unwrap()
    }

    #[test]
    fn clip_wraps_texts_and_eos_is_the_highest_id() {
        let tokenizer = load(clip());
        let ids = tokenizer.encode("The  CAT", true).unwrap().get_ids().to_vec();
        assert_eq!(ids.first(), Some(&(clip_eos_id() - 1)));
        assert_eq!(ids.last(), Some(&clip_eos_id()));
        assert_eq!(tokenizer.get_vocab_size(true), clip_vocab_size());
        assert_eq!(tokenizer.token_to_id("cat</w>").map(|id| ids.contains(&id)), Some(true), "{ids:?}");
    }

    #[test]
    fn t5_ends_texts_with_eos() {
        let tokenizer = load(t5());
        let encoding = tokenizer.encode("a red cat", true).unwrap();
        assert_eq!(encoding.get_ids().last(), Some(&1));
        assert_eq!(tokenizer.get_vocab_size(true), t5_vocab_size());
        assert_eq!(encoding.get_tokens()[..3], ["▁a", "▁red", "▁cat"]);
    }
}
