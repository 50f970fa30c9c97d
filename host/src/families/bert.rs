//! BERT sentence encoders in the sentence-transformers layout (all-MiniLM-L6-v2 and kin):
//! `config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`. Mean or CLS pooling, optional L2 normalisation.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{Encoding, Tokenizer};

use super::loading;
use crate::capabilities::{EmbedRequest, Embeddings, TextEmbedder};
use crate::error::{LanternError, LanternResult};
use crate::hub::ModelFiles;

/// Inputs per forward pass. Sorting by length first keeps padding small within a pass.
const MAX_BATCH: usize = 32;

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

pub struct BertEmbedder {
    model: BertModel,
    tokenizer: Tokenizer,
    pooling: Pooling,
    max_tokens: usize,
    dimensions: usize,
    pad_id: u32,
    device: Device,
}

impl BertEmbedder {
    pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<Self> {
        let config: Config = loading::json_config(files, "config.json")?;
        let raw_config: serde_json::Value = loading::json_config(files, "config.json")?;
        let pooling: PoolingConfig = loading::json_config(files, "1_Pooling/config.json")?;
        let sentence: SentenceBertConfig = loading::json_config(files, "sentence_bert_config.json")?;
        let pooling = match (pooling.pooling_mode_mean_tokens, pooling.pooling_mode_cls_token) {
            (true, _) => Pooling::Mean,
            (false, true) => Pooling::Cls,
            (false, false) => {
                return Err(LanternError::ModelNotSupported(
                    "1_Pooling/config.json asks for a pooling mode other than mean or CLS".into(),
                ))
            }
        };
        let tokenizer = loading::tokenizer(files, "tokenizer.json")?;
        let weights = loading::safetensors(files, &["model.safetensors"], DType::F32, device)?;
        let model = BertModel::load(weights, &config).map_err(|e| LanternError::inference("loading BERT weights", e))?;
        let max_positions = raw_config["max_position_embeddings"].as_u64().unwrap_or(512) as usize;
        let hidden = raw_config["hidden_size"]
            .as_u64()
            .ok_or_else(|| LanternError::inference("config.json", "no hidden_size"))? as usize;
        let pad_id = raw_config["pad_token_id"].as_u64().unwrap_or(0) as u32;
        Ok(BertEmbedder {
            model,
            tokenizer,
            pooling,
            max_tokens: sentence.max_seq_length.min(max_positions),
            dimensions: hidden,
            pad_id,
            device: device.clone(),
        })
    }

    /// Tokenizes every input; over-long ones are cut (keeping the final [SEP]) or refused.
    fn encode(&self, request: &EmbedRequest) -> LanternResult<(Vec<Encoding>, usize)> {
        let mut encodings = self
            .tokenizer
            .encode_batch(request.inputs.clone(), true)
            .map_err(|e| LanternError::inference("tokenizing", e))?;
        let mut truncated = 0;
        for (index, encoding) in encodings.iter_mut().enumerate() {
            if encoding.len() <= self.max_tokens {
                continue;
            }
            if !request.truncate {
                return Err(LanternError::InvalidInput(format!(
                    "input {index} is {} tokens; this model reads at most {} (truncation was turned off)",
                    encoding.len(),
                    self.max_tokens
                )));
            }
            let mut cut = self.tokenizer.clone();
            cut.with_truncation(Some(tokenizers::TruncationParams { max_length: self.max_tokens, ..Default::default() }))
                .map_err(|e| LanternError::inference("tokenizing", e))?;
            *encoding = cut
                .encode(request.inputs[index].as_str(), true)
                .map_err(|e| LanternError::inference("tokenizing", e))?;
            truncated += 1;
        }
        Ok((encodings, truncated))
    }

    /// One forward pass over encodings of similar length; returns one pooled row each.
    fn forward(&self, batch: &[&Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let longest = batch.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for encoding in batch {
            ids.extend_from_slice(encoding.get_ids());
            ids.extend(std::iter::repeat_n(self.pad_id, longest - encoding.len()));
            mask.extend(std::iter::repeat_n(1u32, encoding.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - encoding.len()));
        }
        let shape = (batch.len(), longest);
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &token_types, Some(&mask))?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                summed.broadcast_div(&mask.sum(1)?)?
            }
        };
        pooled.to_vec2()
    }
}

fn l2_normalize(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

impl TextEmbedder for BertEmbedder {
    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn embed(&self, request: &EmbedRequest) -> LanternResult<Embeddings> {
        let dimensions = match request.dimensions {
            None => self.dimensions,
            Some(d) if d == self.dimensions => d,
            Some(d) => {
                return Err(LanternError::InvalidInput(format!(
                    "this model produces {} dimensions only; {d} was asked",
                    self.dimensions
                )))
            }
        };
        let (encodings, truncated_inputs) = self.encode(request)?;
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| encodings[i].len());
        let mut vectors = vec![Vec::new(); encodings.len()];
        for chunk in order.chunks(MAX_BATCH) {
            let batch: Vec<&Encoding> = chunk.iter().map(|&i| &encodings[i]).collect();
            let rows = self.forward(&batch).map_err(|e| LanternError::inference("BERT forward pass", e))?;
            for (&index, mut row) in chunk.iter().zip(rows) {
                if request.normalize {
                    l2_normalize(&mut row);
                }
                vectors[index] = row;
            }
        }
        Ok(Embeddings {
            vectors,
            dimensions,
            prompt_tokens: encodings.iter().map(Encoding::len).sum(),
            truncated_inputs,
        })
    }
}
