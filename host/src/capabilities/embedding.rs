//! Text embedding: the request every embedding family answers, and its result.

use crate::error::LanternResult;

/// What the text is for; families with query/document prompts use it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EmbedTask {
    Query,
    #[default]
    Document,
    /// A query with a caller-written instruction.
    Instruction(String),
}

/// One embedding request, already validated by the registry (non-empty inputs).
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub inputs: Vec<String>,
    pub task: EmbedTask,
    /// Output dimension; `None` is the model's native one.
    pub dimensions: Option<usize>,
    pub normalize: bool,
    /// Cut over-long inputs (true) or reject them (false).
    pub truncate: bool,
}

impl EmbedRequest {
    pub fn new(inputs: Vec<String>) -> Self {
        EmbedRequest { inputs, task: EmbedTask::Document, dimensions: None, normalize: true, truncate: true }
    }
}

/// The vectors of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub dimensions: usize,
    pub prompt_tokens: usize,
    pub truncated_inputs: usize,
}

/// A loaded text-embedding model. Calls block: the registry runs them on worker threads.
pub trait TextEmbedder: Send + Sync {
    /// The model's native output dimension.
    fn dimensions(&self) -> usize;
    /// The longest input, in tokens, that the model reads.
    fn max_tokens(&self) -> usize;
    fn embed(&self, request: &EmbedRequest) -> LanternResult<Embeddings>;
}
