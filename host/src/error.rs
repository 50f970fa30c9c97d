//! The host's one error type for model work. Each case maps one to one onto the WIT
//! `lantern:ai/types.error` variant, so what a plugin sees is what the host meant.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum LanternError {
    #[error("model not allowed: {0}")]
    ModelNotAllowed(String),
    #[error("model not supported: {0}")]
    ModelNotSupported(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("download failed: {0}")]
    DownloadFailed(String),
    #[error("inference failed: {0}")]
    InferenceFailed(String),
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("cancelled")]
    Cancelled,
}

impl LanternError {
    /// An inference failure from any displayable cause (candle, tokenizers, a panic).
    pub fn inference(context: &str, cause: impl std::fmt::Display) -> Self {
        LanternError::InferenceFailed(format!("{context}: {cause}"))
    }
}

impl From<crate::hub::HubError> for LanternError {
    fn from(error: crate::hub::HubError) -> Self {
        match error {
            crate::hub::HubError::InvalidName(message) => LanternError::InvalidInput(message),
            other => LanternError::DownloadFailed(other.to_string()),
        }
    }
}

pub type LanternResult<T> = Result<T, LanternError>;
