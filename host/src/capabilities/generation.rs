//! Text generation: the request every generating family answers, and the events it
//! streams back.

use crate::error::LanternResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    System,
    User,
    Assistant,
}

impl ChatRole {
    /// The role's name as chat templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChatRole::System => "system",
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// What to continue: raw text, or a conversation to apply the model's chat template to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptInput {
    Text(String),
    Chat(Vec<ChatMessage>),
}

/// Sampling settings with every default already applied.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// 1.0 is off.
    pub repeat_penalty: f32,
    pub repeat_last_n: usize,
    pub seed: u64,
    /// Generation ends before any of these would be emitted.
    pub stop: Vec<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 256,
            temperature: 0.7,
            top_k: None,
            top_p: None,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 299792458,
            stop: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of at most `max_tokens` tokens, no repeat penalty: reproducible.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams { max_tokens, temperature: 0.0, repeat_penalty: 1.0, ..Default::default() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Eos,
    StopSequence,
    MaxTokens,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
}

/// What a generation streams: pieces of text (whole UTF-8), then one `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum GenerationEvent {
    Text(String),
    Finished { reason: FinishReason, usage: Usage },
}

/// How a generation ended, with the token ids it produced (end-of-sequence not included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub reason: FinishReason,
    pub usage: Usage,
    pub tokens: Vec<u32>,
}

/// A tokenized prompt, ready to generate from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPrompt {
    pub ids: Vec<u32>,
}

/// Receives a generation's output as it is produced. `emit` returns false when nobody
/// listens any more; the generation then stops (finish reason `Cancelled`).
pub trait GenerationSink {
    fn emit(&mut self, event: GenerationEvent) -> bool;
    /// Checked before each token: false stops the generation even while no text is
    /// being released (a held-back character or stop-sequence prefix).
    fn keep_going(&self) -> bool {
        true
    }
}

impl<F: FnMut(GenerationEvent) -> bool> GenerationSink for F {
    fn emit(&mut self, event: GenerationEvent) -> bool {
        self(event)
    }
}

/// A loaded text-generation model. Calls block: the registry runs them on worker
/// threads, one thread per generation, so concurrent generations all make progress.
pub trait TextGenerator: Send + Sync {
    /// The longest prompt plus answer, in tokens.
    fn context_length(&self) -> usize;
    /// Applies the chat template (for chat prompts) and tokenizes. A prompt that
    /// leaves no room to answer in the context is `InvalidInput`.
    fn prepare(&self, prompt: &PromptInput) -> LanternResult<PreparedPrompt>;
    /// Generates from a prepared prompt, streaming into `sink` (ending with `Finished`);
    /// returns how it ended and the generated token ids.
    fn generate(&self, prompt: &PreparedPrompt, params: &SamplingParams, sink: &mut dyn GenerationSink) -> LanternResult<Generated>;
    /// Token ids of `text` (for tests and diagnostics).
    fn tokenize(&self, text: &str) -> LanternResult<Vec<u32>>;
}
