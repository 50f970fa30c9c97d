//! Text embeddings, with the similarity helpers that plugins need next.

use crate::bindings::lantern::ai::embeddings as wit;
pub use wit::{EmbedOptions, EmbedTask, EmbeddingBatch};
use crate::Error;

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { task: None, dimensions: None, normalize: None, truncate: None }
    }
}

impl EmbedOptions {
    /// Options for search queries (the model's query prompt applies).
    pub fn query() -> Self {
        EmbedOptions { task: Some(EmbedTask::Query), ..Default::default() }
    }

    /// Options for documents to be searched.
    pub fn document() -> Self {
        EmbedOptions { task: Some(EmbedTask::Document), ..Default::default() }
    }
}

/// Embeds `inputs` with the host's defaults (document task, normalised, truncated).
pub fn embed<S: AsRef<str>>(model: &str, inputs: &[S]) -> Result<Vec<Vec<f32>>, Error> {
    embed_with(model, inputs, &EmbedOptions::default()).map(|batch| batch.vectors)
}

/// Embeds `inputs` with explicit options, returning token counts too.
pub fn embed_with<S: AsRef<str>>(model: &str, inputs: &[S], options: &EmbedOptions) -> Result<EmbeddingBatch, Error> {
    let inputs: Vec<String> = inputs.iter().map(|s| s.as_ref().to_string()).collect();
    wit::embed(model, &inputs, options).map_err(Error::from)
}

/// Cosine similarity; for normalised vectors this is their dot product.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 { 0.0 } else { dot / denominator }
}

/// Indices of `candidates` sorted by cosine similarity to `query`, best first, with scores.
pub fn rank(query: &[f32], candidates: &[Vec<f32>]) -> Vec<(usize, f32)> {
    let mut scored: Vec<(usize, f32)> = candidates.iter().enumerate().map(|(i, c)| (i, cosine(query, c))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
}
