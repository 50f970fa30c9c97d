//! SD 3.5's prompt conditioning (as diffusers' `StableDiffusion3Pipeline.encode_prompt`
//! builds it): CLIP-L and CLIP-G read 77 tokens each, their penultimate hidden states
//! side by side, zero-padded to T5's width, go first in the context and T5's 77 hidden
//! states after them; their pooled outputs side by side make the vector `y`.

use candle_core::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::error::{LanternError, LanternResult};
use crate::families::diffusion::clip_text::{ClipTextConfig, ClipTextEncoder};
use crate::families::diffusion::t5;

/// T5 tokens per prompt. Stability's `sd3_infer.py` (and candle's example) read 77;
/// diffusers defaults to 256. We follow Stability: 77 costs the T5 encoder and every
/// MMDiT step far less on a CPU, and it is what the model's makers run.
pub const T5_LENGTH: usize = 77;

/// A CLIP tokenizer with what padding needs.
pub struct ClipTokenizer {
    pub tokenizer: Tokenizer,
    /// Fills the 77 positions after the text: `<|endoftext|>` for CLIP-L, `!` for CLIP-G
    /// (as the reference tokenizers configure them).
    pub pad_id: u32,
    pub eos_id: u32,
}

impl ClipTokenizer {
    pub fn new(tokenizer: Tokenizer, pad_token: &str, label: &str) -> LanternResult<Self> {
        let id = |token: &str| {
            tokenizer
                .token_to_id(token)
                .ok_or_else(|| LanternError::InferenceFailed(format!("{label}: the tokenizer has no {token}")))
        };
        let (pad_id, eos_id) = (id(pad_token)?, id("<|endoftext|>")?);
        Ok(ClipTokenizer { tokenizer, pad_id, eos_id })
    }

    /// Exactly `length` ids: `<|startoftext|>` text `<|endoftext|>` then padding, cut
    /// (keeping the end token) when longer, as the reference tokenizers with
    /// `truncation=True` do. Also returns the position of the end token, where CLIP
    /// pools, and how many tokens were cut.
    pub fn tokenize(&self, prompt: &str, length: usize, truncate: bool) -> LanternResult<(Vec<u32>, usize, usize)> {
        let encoding = self.tokenizer.encode(prompt, true).map_err(|e| LanternError::inference("tokenizing for CLIP", e))?;
        let ids = encoding.get_ids().to_vec();
        if ids.last() != Some(&self.eos_id) {
            // CLIP's tokenizers always end a text with <|endoftext|>, where CLIP pools.
            return Err(LanternError::InferenceFailed("the CLIP tokenizer did not end the prompt with <|endoftext|>".into()));
        }
        let (mut ids, cut) = crate::families::diffusion::fit_prompt(ids, length, truncate, "CLIP")?;
        let end = ids.len() - 1;
        ids.resize(length, self.pad_id);
        Ok((ids, end, cut))
    }
}

/// One prompt's tokens for the three encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTokens {
    pub clip_l: Vec<u32>,
    pub clip_l_end: usize,
    pub clip_g: Vec<u32>,
    pub clip_g_end: usize,
    pub t5: Vec<u32>,
    /// The most tokens any encoder lost to truncation.
    pub truncated: usize,
}

/// The text stage's tokenizers.
pub struct Tokenizers {
    pub clip_l: ClipTokenizer,
    pub clip_g: ClipTokenizer,
    pub t5: Tokenizer,
}

impl Tokenizers {
    pub fn tokenize(&self, prompt: &str, clip_length: usize, truncate: bool) -> LanternResult<PromptTokens> {
        let (clip_l, clip_l_end, cut_l) = self.clip_l.tokenize(prompt, clip_length, truncate)?;
        let (clip_g, clip_g_end, cut_g) = self.clip_g.tokenize(prompt, clip_length, truncate)?;
        let t5 = t5::tokenize(&self.t5, prompt, T5_LENGTH, truncate)?;
        Ok(PromptTokens { clip_l, clip_l_end, clip_g, clip_g_end, t5: t5.ids, truncated: cut_l.max(cut_g).max(t5.truncated) })
    }
}

/// A prompt's conditioning for the MMDiT.
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// `(1, 77 + 77, t5_width)`.
    pub context: Tensor,
    /// `(1, clip_l_pooled + clip_g_pooled)`.
    pub y: Tensor,
}

/// Stacks the encoders' outputs (see the module doc).
pub fn stack(
    l: &crate::families::diffusion::clip_text::ClipTextOutput,
    g: &crate::families::diffusion::clip_text::ClipTextOutput,
    t5_hidden: &Tensor,
) -> candle_core::Result<Conditioning> {
    let clip = Tensor::cat(&[&l.penultimate, &g.penultimate], 2)?;
    let pad = t5_hidden.dim(2)? - clip.dim(2)?;
    let clip = clip.pad_with_zeros(2, 0, pad)?;
    Ok(Conditioning { context: Tensor::cat(&[&clip, t5_hidden], 1)?, y: Tensor::cat(&[&l.pooled, &g.pooled], 1)? })
}

/// Runs one CLIP over several prompts' tokens, loading it once.
pub fn run_clip(
    vb: candle_nn::VarBuilder,
    config: &ClipTextConfig,
    prompts: &[(&[u32], usize)],
    device: &Device,
) -> candle_core::Result<Vec<crate::families::diffusion::clip_text::ClipTextOutput>> {
    let encoder = ClipTextEncoder::new(vb, config)?;
    prompts.iter().map(|(ids, end)| encoder.encode(ids, *end, device)).collect()
}
