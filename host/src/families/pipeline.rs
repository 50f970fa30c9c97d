//! The embedding pipeline every family shares: instruction prompt, tokenization,
//! truncation (or refusal), length-sorted padded sub-batches, the family's encoder,
//! the asked output dimension, L2 normalisation. A family supplies only an [`Encoder`]
//! (one padded batch in, one pooled row per input out) and its rules ([`EmbedderRules`]).

use candle_core::{DType, Device, Tensor};
use tokenizers::{Encoding, Tokenizer};

use super::heads::ProjectionHeads;
use crate::capabilities::{EmbedRequest, EmbedTask, Embeddings, TextEmbedder};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// One right-padded batch of token ids, as an encoder receives it.
pub struct TokenBatch {
    /// (batch, longest) u32 ids, padded with the family's pad id.
    pub ids: Tensor,
    /// (batch, longest) u32: 1 on real tokens, 0 on padding.
    pub mask: Tensor,
    /// Real tokens per row.
    pub lengths: Vec<usize>,
    /// Leading tokens of each row that belong to the instruction prompt.
    pub prompt_lengths: Vec<usize>,
}

impl TokenBatch {
    /// (batch, longest) f32 mask of the tokens to pool: real tokens, minus the
    /// instruction prompt when `skip_prompt` (NV-Embed pools the text only).
    pub fn pool_mask(&self, skip_prompt: bool) -> candle_core::Result<Tensor> {
        let (rows, longest) = self.ids.dims2()?;
        let mut mask = vec![0f32; rows * longest];
        for (row, (&length, &prompt)) in self.lengths.iter().zip(&self.prompt_lengths).enumerate() {
            let start = if skip_prompt && prompt < length { prompt } else { 0 };
            mask[row * longest + start..row * longest + length].iter_mut().for_each(|m| *m = 1.0);
        }
        Tensor::from_vec(mask, (rows, longest), self.ids.device())
    }
}

/// A family's network: pooled vectors for one padded batch.
pub trait Encoder: Send + Sync {
    /// (batch, width) f32 rows, one per input; `head` is the projection head to apply
    /// (only for families with [`OutputDims::Heads`]).
    fn forward(&self, batch: &TokenBatch, head: Option<usize>) -> candle_core::Result<Tensor>;
}

/// How a family turns the task into a prompt prefix.
#[derive(Debug, Clone)]
pub enum Prompts {
    /// The model was trained without instructions: query and document read the same,
    /// a custom instruction is refused.
    None,
    /// `Instruct: {task}\nQuery: ` before queries; `default_task` for a plain query;
    /// documents as they are.
    Instruct { default_task: &'static str },
}

impl Prompts {
    fn prefix(&self, task: &EmbedTask) -> LanternResult<String> {
        match (self, task) {
            (_, EmbedTask::Document) => Ok(String::new()),
            (Prompts::None, EmbedTask::Query) => Ok(String::new()),
            (Prompts::None, EmbedTask::Instruction(_)) => Err(LanternError::InvalidInput(
                "this model was not trained with instructions; use the query or document task".into(),
            )),
            (Prompts::Instruct { default_task }, EmbedTask::Query) => Ok(format!("Instruct: {default_task}\nQuery: ")),
            (Prompts::Instruct { .. }, EmbedTask::Instruction(text)) if text.trim().is_empty() => {
                Err(LanternError::InvalidInput("the instruction is empty".into()))
            }
            (Prompts::Instruct { .. }, EmbedTask::Instruction(text)) => Ok(format!("Instruct: {text}\nQuery: ")),
        }
    }
}

/// Which output sizes a family can give.
pub enum OutputDims {
    /// The encoder's width only (models not trained with Matryoshka loss: a prefix of
    /// their vectors is not a meaningful embedding).
    Native(usize),
    /// Matryoshka-trained projection heads, loaded on request (Stella).
    Heads(std::sync::Arc<ProjectionHeads>),
}

/// What a family decides about its inputs and outputs.
pub struct EmbedderRules {
    /// Names the family in error messages.
    pub family: &'static str,
    pub max_tokens: usize,
    pub pad_id: u32,
    pub prompts: Prompts,
    /// Appended to every input (NV-Embed's `</s>`), empty for most families.
    pub suffix: &'static str,
    pub dims: OutputDims,
    /// Inputs per forward pass.
    pub max_batch: usize,
    /// The encoder takes no padding mask (candle's Jina-BERT): only inputs of equal
    /// length may share a forward pass.
    pub attends_to_padding: bool,
}

/// The output a request resolves to: which head runs and how many leading components are kept.
struct OutputChoice {
    head: Option<usize>,
    width: usize,
}

/// A [`TextEmbedder`] made of a tokenizer, an [`Encoder`] and the family's rules.
pub struct PipelineEmbedder<E> {
    encoder: E,
    tokenizer: Tokenizer,
    truncating_tokenizer: Tokenizer,
    rules: EmbedderRules,
    device: Device,
}

impl<E: Encoder> PipelineEmbedder<E> {
    pub fn new(encoder: E, tokenizer: Tokenizer, rules: EmbedderRules, device: &Device) -> LanternResult<Self> {
        let mut truncating_tokenizer = tokenizer.clone();
        truncating_tokenizer
            .with_truncation(Some(tokenizers::TruncationParams { max_length: rules.max_tokens, ..Default::default() }))
            .map_err(|e| LanternError::inference("tokenizer truncation", e))?;
        Ok(PipelineEmbedder { encoder, tokenizer, truncating_tokenizer, rules, device: device.clone() })
    }

    fn choose_output(&self, asked: Option<usize>) -> LanternResult<OutputChoice> {
        match (&self.rules.dims, asked) {
            (OutputDims::Native(width), None) => Ok(OutputChoice { head: None, width: *width }),
            (OutputDims::Native(width), Some(d)) if d == *width => Ok(OutputChoice { head: None, width: d }),
            (OutputDims::Native(width), Some(d)) => Err(LanternError::InvalidInput(format!(
                "this model gives {width} dimensions only and was not trained for shorter (Matryoshka) prefixes; {d} was asked"
            ))),
            (OutputDims::Heads(heads), asked) => {
                let (head, width) = heads.choose(asked)?;
                Ok(OutputChoice { head: Some(head), width })
            }
        }
    }

    /// Tokenizes prompt + text for every input; over-long ones are cut or refused.
    fn encode(&self, request: &EmbedRequest) -> LanternResult<(Vec<Encoding>, Vec<usize>, Vec<bool>)> {
        let prefix = self.rules.prompts.prefix(&request.task)?;
        let texts: Vec<String> = request.inputs.iter().map(|text| format!("{prefix}{text}{}", self.rules.suffix)).collect();
        let mut encodings =
            self.tokenizer.encode_batch(texts.clone(), true).map_err(|e| LanternError::inference("tokenizing", e))?;
        let mut truncated = vec![false; encodings.len()];
        for (index, encoding) in encodings.iter_mut().enumerate() {
            if encoding.len() <= self.rules.max_tokens {
                continue;
            }
            if !request.truncate {
                return Err(LanternError::InvalidInput(format!(
                    "input {index} is {} tokens; this model reads at most {} (truncation was turned off)",
                    encoding.len(),
                    self.rules.max_tokens
                )));
            }
            *encoding = self
                .truncating_tokenizer
                .encode(texts[index].as_str(), true)
                .map_err(|e| LanternError::inference("tokenizing", e))?;
            truncated[index] = true;
        }
        let prompt_lengths = encodings.iter().map(|e| prompt_length(e, prefix.len())).collect();
        Ok((encodings, prompt_lengths, truncated))
    }

    /// Input indices grouped into forward passes: sorted by length so that padding
    /// stays small, at most `max_batch` each, equal lengths only where padding leaks.
    fn passes(&self, encodings: &[Encoding]) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut passes: Vec<Vec<usize>> = Vec::new();
        for index in order {
            let fits = passes.last().is_some_and(|pass| {
                pass.len() < self.rules.max_batch
                    && (!self.rules.attends_to_padding || encodings[pass[0]].len() == encodings[index].len())
            });
            if fits {
                passes.last_mut().unwrap().push(index);
            } else {
                passes.push(vec![index]);
            }
        }
        passes
    }

    fn token_batch(&self, encodings: &[&Encoding], prompt_lengths: Vec<usize>) -> candle_core::Result<TokenBatch> {
        let longest = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(encodings.len() * longest);
        let mut mask = Vec::with_capacity(encodings.len() * longest);
        for encoding in encodings {
            ids.extend_from_slice(encoding.get_ids());
            ids.extend(std::iter::repeat_n(self.rules.pad_id, longest - encoding.len()));
            mask.extend(std::iter::repeat_n(1u32, encoding.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - encoding.len()));
        }
        let shape = (encodings.len(), longest);
        Ok(TokenBatch {
            ids: Tensor::from_vec(ids, shape, &self.device)?,
            mask: Tensor::from_vec(mask, shape, &self.device)?,
            lengths: encodings.iter().map(|e| e.len()).collect(),
            prompt_lengths,
        })
    }
}

/// Leading tokens of `encoding` that come from the first `prefix_bytes` bytes of the
/// text, with the special tokens before them (BOS/CLS).
fn prompt_length(encoding: &Encoding, prefix_bytes: usize) -> usize {
    if prefix_bytes == 0 {
        return 0;
    }
    encoding
        .get_offsets()
        .iter()
        .zip(encoding.get_special_tokens_mask())
        .take_while(|((_, end), &special)| special == 1 || *end <= prefix_bytes)
        .count()
}

pub fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

impl<E: Encoder> TextEmbedder for PipelineEmbedder<E> {
    fn dimensions(&self) -> usize {
        match &self.rules.dims {
            OutputDims::Native(width) => *width,
            OutputDims::Heads(heads) => heads.default_size(),
        }
    }

    fn max_tokens(&self) -> usize {
        self.rules.max_tokens
    }

    fn request_files(&self, request: &EmbedRequest) -> LanternResult<Vec<String>> {
        self.rules.prompts.prefix(&request.task)?;
        let choice = self.choose_output(request.dimensions)?;
        match (&self.rules.dims, choice.head) {
            (OutputDims::Heads(heads), Some(head)) if !heads.is_loaded(head) => Ok(heads.files(head)),
            _ => Ok(Vec::new()),
        }
    }

    fn load_request_files(&self, files: &ModelFiles) -> LanternResult<()> {
        match &self.rules.dims {
            OutputDims::Heads(heads) => heads.load_from(files),
            OutputDims::Native(_) => Ok(()),
        }
    }

    fn embed(&self, request: &EmbedRequest) -> LanternResult<Embeddings> {
        let choice = self.choose_output(request.dimensions)?;
        if let (OutputDims::Heads(heads), Some(head)) = (&self.rules.dims, choice.head) {
            if !heads.is_loaded(head) {
                return Err(LanternError::InferenceFailed(format!("projection head {head} was not loaded before embedding")));
            }
        }
        let (encodings, prompt_lengths, input_truncated) = self.encode(request)?;
        let mut vectors = vec![Vec::new(); encodings.len()];
        let failed = |e: candle_core::Error| LanternError::inference(&format!("{} forward pass", self.rules.family), e);
        for pass in self.passes(&encodings) {
            let batch: Vec<&Encoding> = pass.iter().map(|&i| &encodings[i]).collect();
            let prompts = pass.iter().map(|&i| prompt_lengths[i]).collect();
            let tokens = self.token_batch(&batch, prompts).map_err(failed)?;
            let rows: Vec<Vec<f32>> =
                self.encoder.forward(&tokens, choice.head).and_then(|t| t.to_dtype(DType::F32)?.to_vec2()).map_err(failed)?;
            for (&index, mut row) in pass.iter().zip(rows) {
                row.truncate(choice.width);
                if request.normalize {
                    l2_normalize(&mut row);
                }
                vectors[index] = row;
            }
        }
        Ok(Embeddings {
            vectors,
            dimensions: choice.width,
            input_tokens: encodings.iter().map(Encoding::len).collect(),
            input_truncated,
        })
    }
}
