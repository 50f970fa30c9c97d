//! The decode loop shared by every causal language model: sampling, repeat penalty,
//! whole-UTF-8 text from tokens, stop sequences, limits and cancellation.

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use tokenizers::Tokenizer;

use crate::capabilities::{FinishReason, Generated, GenerationEvent, GenerationSink, SamplingParams, Usage};
use crate::error::{LanternError, LanternResult};

/// A model that maps token ids at `position` to next-token logits, keeping its own cache.
pub trait CausalLm {
    fn forward(&mut self, input: &Tensor, position: usize) -> candle_core::Result<Tensor>;

    /// Told before the first forward pass how many positions the generation can reach
    /// (prompt + token budget), so a cache that grows in place is allocated once at its
    /// final size instead of doubling past it. Default: nothing to prepare.
    fn reserve(&mut self, _positions: usize) {}
}

/// What the loop needs to know about the model besides its forward pass.
pub struct DecodeSetup<'a> {
    pub tokenizer: &'a Tokenizer,
    /// Tokens that end the answer (end of sequence, end of turn).
    pub eos_ids: &'a [u32],
    pub context_length: usize,
    pub device: &'a Device,
}

fn sampling(params: &SamplingParams) -> Sampling {
    let temperature = params.temperature;
    if temperature <= 0.0 {
        return Sampling::ArgMax;
    }
    match (params.top_k, params.top_p) {
        (None, None) => Sampling::All { temperature },
        (Some(k), None) => Sampling::TopK { k, temperature },
        (None, Some(p)) => Sampling::TopP { p, temperature },
        (Some(k), Some(p)) => Sampling::TopKThenTopP { k, p, temperature },
    }
}

/// The logits of the last position as a 1-D f32 tensor, whatever shape the model returns.
fn last_position(logits: Tensor) -> candle_core::Result<Tensor> {
    let logits = match logits.rank() {
        3 => logits.i((0, logits.dim(1)? - 1))?,
        2 => logits.i(logits.dim(0)? - 1)?,
        _ => logits,
    };
    logits.to_dtype(DType::F32)
}

/// Turns tokens into text pieces that are whole UTF-8 and never reveal a stop sequence.
pub struct TextAssembler<'a> {
    tokenizer: &'a Tokenizer,
    stops: &'a [String],
    tokens: Vec<u32>,
    decoded_len: usize,
    /// Decoded text not yet released: it could be the start of a stop sequence.
    held: String,
}

/// What one more token turned into.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// Text to release now (may be empty while a character or a possible stop is incomplete).
    Text(String),
    /// A stop sequence was reached: release this text (what came before it) and end.
    Stop(String),
}

impl<'a> TextAssembler<'a> {
    pub fn new(tokenizer: &'a Tokenizer, stops: &'a [String]) -> Self {
        TextAssembler { tokenizer, stops, tokens: Vec::new(), decoded_len: 0, held: String::new() }
    }

    pub fn push(&mut self, token: u32) -> LanternResult<Assembled> {
        self.tokens.push(token);
        let text = self.tokenizer.decode(&self.tokens, true).map_err(|e| LanternError::inference("decoding tokens", e))?;
        // A character split across tokens decodes to U+FFFD until its last byte arrives.
        if text.ends_with('\u{FFFD}') || text.len() < self.decoded_len || !text.is_char_boundary(self.decoded_len) {
            return Ok(Assembled::Text(String::new()));
        }
        self.held.push_str(&text[self.decoded_len..]);
        self.decoded_len = text.len();
        if let Some(at) = self.stops.iter().filter(|s| !s.is_empty()).filter_map(|s| self.held.find(s.as_str())).min() {
            let before = self.held[..at].to_string();
            self.held.clear();
            return Ok(Assembled::Stop(before));
        }
        let keep = self.longest_stop_prefix_at_end();
        let release = self.held.len() - keep;
        let released: String = self.held.drain(..release).collect();
        Ok(Assembled::Text(released))
    }

    /// Bytes at the end of `held` that begin some stop sequence (so must wait).
    fn longest_stop_prefix_at_end(&self) -> usize {
        let mut longest = 0;
        for stop in self.stops {
            for (boundary, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..boundary];
                if boundary > longest && self.held.ends_with(prefix) {
                    longest = boundary;
                }
            }
        }
        longest
    }

    /// What is still held back, released at the end of a generation.
    pub fn finish(self) -> String {
        self.held
    }
}

/// Generates from `prompt_ids` until end of sequence, a stop sequence, the token budget
/// or the context is reached, or the sink stops listening.
pub fn generate(
    model: &mut dyn CausalLm,
    setup: &DecodeSetup,
    prompt_ids: &[u32],
    params: &SamplingParams,
    sink: &mut dyn GenerationSink,
) -> LanternResult<Generated> {
    let failed = |e: candle_core::Error| LanternError::inference("generating", e);
    let budget = params.max_tokens.min(setup.context_length.saturating_sub(prompt_ids.len()));
    model.reserve(prompt_ids.len() + budget);
    let mut processor = LogitsProcessor::from_sampling(params.seed, sampling(params));
    let mut context: Vec<u32> = prompt_ids.to_vec();
    let mut assembler = TextAssembler::new(setup.tokenizer, &params.stop);
    let mut input = Tensor::new(prompt_ids, setup.device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
    let mut position = 0;
    let mut generated = 0;
    let mut reason = FinishReason::MaxTokens;
    while generated < budget {
        if !sink.keep_going() {
            reason = FinishReason::Cancelled;
            break;
        }
        let logits = model.forward(&input, position).and_then(last_position).map_err(failed)?;
        position += input.dim(1).map_err(failed)?;
        let logits = if params.repeat_penalty != 1.0 {
            let start = context.len().saturating_sub(params.repeat_last_n);
            candle_transformers::utils::apply_repeat_penalty(&logits, params.repeat_penalty, &context[start..])
                .map_err(failed)?
        } else {
            logits
        };
        let token = processor.sample(&logits).map_err(failed)?;
        if setup.eos_ids.contains(&token) {
            reason = FinishReason::Eos;
            break;
        }
        generated += 1;
        context.push(token);
        match assembler.push(token)? {
            Assembled::Text(text) => {
                if !text.is_empty() && !sink.emit(GenerationEvent::Text(text)) {
                    reason = FinishReason::Cancelled;
                    break;
                }
            }
            Assembled::Stop(text) => {
                if !text.is_empty() {
                    sink.emit(GenerationEvent::Text(text));
                }
                reason = FinishReason::StopSequence;
                break;
            }
        }
        input = Tensor::new(&[token], setup.device).and_then(|t| t.unsqueeze(0)).map_err(failed)?;
    }
    let usage = Usage { prompt_tokens: prompt_ids.len(), generated_tokens: generated };
    if reason != FinishReason::StopSequence && reason != FinishReason::Cancelled {
        let rest = assembler.finish();
        if !rest.is_empty() {
            sink.emit(GenerationEvent::Text(rest));
        }
    }
    sink.emit(GenerationEvent::Finished { reason, usage });
    Ok(Generated { reason, usage, tokens: context.split_off(prompt_ids.len()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// GPT-2's printable stand-in for each byte (`bytes_to_unicode`).
    fn byte_char(byte: u8) -> char {
        let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
        if printable(byte) {
            return byte as char;
        }
        char::from_u32(256 + (0..byte).filter(|b| !printable(*b)).count() as u32).unwrap()
    }

    /// A byte-level BPE tokenizer whose first 256 ids are the bytes, plus `extra` tokens
    /// (in GPT-2's byte alphabet) from id 256 on.
    fn byte_tokenizer(extra: &[&str]) -> Tokenizer {
        let mut vocab: serde_json::Map<String, serde_json::Value> =
            (0..=255u8).map(|b| (byte_char(b).to_string(), json!(b as u32))).collect();
        for (i, token) in extra.iter().enumerate() {
            vocab.insert(token.to_string(), json!(256 + i));
        }
        let document = json!({ "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": { "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true },
            "post_processor": null,
            "decoder": { "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true },
            "model": { "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": [] } });
        Tokenizer::from_bytes(serde_json::to_vec(&document).unwrap()).unwrap()
    }

    /// Pushes each token; returns what each push gave.
    fn push_all(assembler: &mut TextAssembler, tokens: &[u32]) -> Vec<Assembled> {
        tokens.iter().map(|&t| assembler.push(t).unwrap()).collect()
    }

    fn bytes(text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }

    fn text(piece: &str) -> Assembled {
        Assembled::Text(piece.to_string())
    }

    #[test]
    fn a_character_split_across_byte_tokens_is_released_whole() {
        let tokenizer = byte_tokenizer(&[]);
        let mut assembler = TextAssembler::new(&tokenizer, &[]);
        // "a€é b": € is 3 bytes, é is 2.
        let got = push_all(&mut assembler, &bytes("a€é b"));
        let expected = [text("a"), text(""), text(""), text("€"), text(""), text("é"), text(" "), text("b")];
        assert_eq!(got, expected);
        assert_eq!(assembler.finish(), "");
    }

    #[test]
    fn a_stop_sequence_split_across_tokens_is_never_partly_released() {
        let tokenizer = byte_tokenizer(&[]);
        let stops = vec!["STOP".to_string()];
        let mut assembler = TextAssembler::new(&tokenizer, &stops);
        let got = push_all(&mut assembler, &bytes("hi STOP"));
        let expected = [text("h"), text("i"), text(" "), text(""), text(""), text(""), Assembled::Stop(String::new())];
        assert_eq!(got, expected);
    }

    #[test]
    fn a_held_prefix_that_does_not_become_the_stop_is_released() {
        let tokenizer = byte_tokenizer(&[]);
        let stops = vec!["STOP".to_string()];
        let mut assembler = TextAssembler::new(&tokenizer, &stops);
        let got = push_all(&mut assembler, &bytes("STX"));
        assert_eq!(got, [text(""), text(""), text("STX")]);
        // A generation that ends while a prefix is held releases it at the end.
        push_all(&mut assembler, &bytes("ST"));
        assert_eq!(assembler.finish(), "ST");
    }

    #[test]
    fn text_before_a_stop_inside_one_token_is_released() {
        // One token "and.then" (GPT-2 alphabet: no spaces involved) holding the stop ".".
        let tokenizer = byte_tokenizer(&["and.then"]);
        let stops = vec![".".to_string()];
        let mut assembler = TextAssembler::new(&tokenizer, &stops);
        let mut tokens = bytes("Yes ");
        tokens.push(256);
        let got = push_all(&mut assembler, &tokens);
        assert_eq!(got.last().unwrap(), &Assembled::Stop("and".to_string()));
        let released: String = got[..got.len() - 1]
            .iter()
            .map(|a| match a {
                Assembled::Text(t) => t.as_str(),
                Assembled::Stop(_) => panic!("stopped early: {got:?}"),
            })
            .collect();
        assert_eq!(released, "Yes ");
    }

    #[test]
    fn a_multibyte_stop_split_mid_character_is_found() {
        let tokenizer = byte_tokenizer(&[]);
        let stops = vec!["€".to_string()];
        let mut assembler = TextAssembler::new(&tokenizer, &stops);
        let got = push_all(&mut assembler, &bytes("5€"));
        assert_eq!(got, [text("5"), text(""), text(""), Assembled::Stop(String::new())]);
    }
}
