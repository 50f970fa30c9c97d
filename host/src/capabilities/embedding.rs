//! Text embedding: the request every embedding family answers, and its result.

use crate::error::LanternResult;
use crate::hub::ModelFiles;

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

impl EmbedRequest {
    /// Whether `self` and `other` ask for the same processing, so that their inputs can
    /// run in one batch and be split back.
    pub fn same_options(&self, other: &EmbedRequest) -> bool {
        self.task == other.task
            && self.dimensions == other.dimensions
            && self.normalize == other.normalize
            && self.truncate == other.truncate
    }
}

/// The vectors of one request, with per-input accounting so that merged batches can
/// be split back exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub dimensions: usize,
    /// Tokens the model read for each input (prompt included, after truncation).
    pub input_tokens: Vec<usize>,
    /// Whether each input was cut to the model's maximum.
    pub input_truncated: Vec<bool>,
}

impl Embeddings {
    pub fn prompt_tokens(&self) -> usize {
        self.input_tokens.iter().sum()
    }

    pub fn truncated_inputs(&self) -> usize {
        self.input_truncated.iter().filter(|&&t| t).count()
    }

    /// Splits the result of a merged batch into consecutive parts of `sizes` inputs.
    pub fn split(self, sizes: &[usize]) -> Vec<Embeddings> {
        let mut vectors = self.vectors.into_iter();
        let mut tokens = self.input_tokens.into_iter();
        let mut truncated = self.input_truncated.into_iter();
        sizes
            .iter()
            .map(|&n| Embeddings {
                vectors: vectors.by_ref().take(n).collect(),
                dimensions: self.dimensions,
                input_tokens: tokens.by_ref().take(n).collect(),
                input_truncated: truncated.by_ref().take(n).collect(),
            })
            .collect()
    }
}

/// A loaded text-embedding model. Calls block: the registry runs them on worker threads.
pub trait TextEmbedder: Send + Sync {
    /// The model's native output dimension.
    fn dimensions(&self) -> usize;
    /// The longest input, in tokens, that the model reads.
    fn max_tokens(&self) -> usize;
    fn embed(&self, request: &EmbedRequest) -> LanternResult<Embeddings>;

    /// Files beyond the catalog's list that `request` needs and that are not loaded yet
    /// (Stella's projection head for the asked dimension). The registry fetches them
    /// through the hub and hands them to [`TextEmbedder::load_request_files`] before
    /// calling `embed`. An unsupported option is refused here, before any download.
    fn request_files(&self, request: &EmbedRequest) -> LanternResult<Vec<String>> {
        let _ = request;
        Ok(Vec::new())
    }

    /// Loads files that [`TextEmbedder::request_files`] named.
    fn load_request_files(&self, files: &ModelFiles) -> LanternResult<()> {
        let _ = files;
        Ok(())
    }
}
