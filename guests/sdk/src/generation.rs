//! Streaming text generation: iterate over chunks as the model produces them.

use std::io::Write;

use crate::bindings::lantern::ai::generation as wit;
pub use wit::{Chunk, FinishReason, Finished, Message, Prompt, Role, Sampling, Usage};
use crate::Error;

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            max_tokens: None,
            temperature: None,
            top_k: None,
            top_p: None,
            repeat_penalty: None,
            repeat_last_n: None,
            seed: None,
            stop: Vec::new(),
        }
    }
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Message { role: Role::System, content: content.into() }
    }

    pub fn user(content: impl Into<String>) -> Self {
        Message { role: Role::User, content: content.into() }
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Message { role: Role::Assistant, content: content.into() }
    }
}

/// A running generation. Iterate to receive text; drop it to cancel the work on the host.
pub struct Generation {
    stream: wit::GenerationStream,
    finished: Option<Finished>,
}

impl Generation {
    pub(crate) fn from_stream(stream: wit::GenerationStream) -> Self {
        Generation { stream, finished: None }
    }

    /// How the generation ended, once the last chunk has been read.
    pub fn finished(&self) -> Option<&Finished> {
        self.finished.as_ref()
    }

    /// Writes every chunk to stdout as it arrives and returns the whole text.
    pub fn stream_to_stdout(&mut self) -> Result<String, Error> {
        let mut text = String::new();
        let mut stdout = std::io::stdout();
        for chunk in self.by_ref() {
            let chunk = chunk?;
            let _ = stdout.write_all(chunk.as_bytes());
            let _ = stdout.flush();
            text.push_str(&chunk);
        }
        Ok(text)
    }
}

impl Iterator for Generation {
    type Item = Result<String, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.stream.next() {
            Ok(Some(chunk)) => {
                if chunk.finished.is_some() {
                    self.finished = chunk.finished;
                }
                Some(Ok(chunk.text))
            }
            Ok(None) => None,
            Err(error) => Some(Err(error.into())),
        }
    }
}

/// Starts generating from `prompt`.
pub fn generate(model: &str, prompt: &Prompt, params: &Sampling) -> Result<Generation, Error> {
    Ok(Generation::from_stream(wit::generate(model, prompt, params)?))
}

/// Starts the assistant's answer to a conversation (the model's chat template applies).
pub fn chat(model: &str, messages: Vec<Message>, params: &Sampling) -> Result<Generation, Error> {
    generate(model, &Prompt::Chat(messages), params)
}
