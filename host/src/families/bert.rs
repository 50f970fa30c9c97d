//! BERT sentence encoders in the sentence-transformers layout (all-MiniLM-L6-v2 and kin):
//! `config.json`, `tokenizer.json`, `model.safetensors`, `1_Pooling/config.json`,
//! `sentence_bert_config.json`. Mean or CLS pooling; no instructions; native width only.

use candle_core::{DType, Device, Tensor};
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;

use super::loading;
use super::pipeline::{EmbedderRules, Encoder, OutputDims, PipelineEmbedder, Prompts, TokenBatch};
use super::pooling;
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

#[derive(Deserialize)]
struct SizeConfig {
    hidden_size: usize,
    #[serde(default = "default_max_positions")]
    max_position_embeddings: usize,
    #[serde(default)]
    pad_token_id: u32,
}

fn default_max_positions() -> usize {
    512
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Mean,
    Cls,
}

pub struct BertEncoder {
    model: BertModel,
    pooling: Pooling,
}

impl Encoder for BertEncoder {
    fn forward(&self, batch: &TokenBatch, _head: Option<usize>) -> candle_core::Result<Tensor> {
        let hidden = self.model.forward(&batch.ids, &batch.ids.zeros_like()?, Some(&batch.mask))?;
        match self.pooling {
            Pooling::Cls => pooling::first_token(&hidden),
            Pooling::Mean => pooling::mean(&hidden, &batch.mask),
        }
    }
}

pub type BertEmbedder = PipelineEmbedder<BertEncoder>;

pub fn load(files: &ModelFiles, device: &Device) -> LanternResult<BertEmbedder> {
    let config: Config = loading::json_config(files, "config.json")?;
    let sizes: SizeConfig = loading::json_config(files, "config.json")?;
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
    let rules = EmbedderRules {
        family: "BERT",
        max_tokens: sentence.max_seq_length.min(sizes.max_position_embeddings),
        pad_id: sizes.pad_token_id,
        prompts: Prompts::None,
        suffix: "",
        dims: OutputDims::Native(sizes.hidden_size),
        max_batch: MAX_BATCH,
        attends_to_padding: false,
    };
    PipelineEmbedder::new(BertEncoder { model, pooling }, tokenizer, rules, device)
}
