//! The error every Lantern call can return: the WIT `error` variant, with messages
//! that read well when printed.

use crate::bindings::lantern::ai::types::Error as WitError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The host's policy does not let this plugin use the model.
    ModelNotAllowed(String),
    /// The model is not in the host's catalog, or does not offer what was asked.
    ModelNotSupported(String),
    /// The request is wrong (empty input, bad dimension, too long in strict mode...).
    InvalidInput(String),
    /// The model's files could not be obtained.
    DownloadFailed(String),
    /// The model failed to load or run.
    InferenceFailed(String),
    /// A host limit was reached.
    LimitExceeded(String),
    /// The work was cancelled.
    Cancelled,
}

impl From<WitError> for Error {
    fn from(error: WitError) -> Self {
        match error {
            WitError::ModelNotAllowed(m) => Error::ModelNotAllowed(m),
            WitError::ModelNotSupported(m) => Error::ModelNotSupported(m),
            WitError::InvalidInput(m) => Error::InvalidInput(m),
            WitError::DownloadFailed(m) => Error::DownloadFailed(m),
            WitError::InferenceFailed(m) => Error::InferenceFailed(m),
            WitError::LimitExceeded(m) => Error::LimitExceeded(m),
            WitError::Cancelled => Error::Cancelled,
        }
    }
}

impl Error {
    /// The WIT case name (`model-not-allowed`, `limit-exceeded`, ...): what a plugin
    /// branches on, and what test plugins report.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::ModelNotAllowed(_) => "model-not-allowed",
            Error::ModelNotSupported(_) => "model-not-supported",
            Error::InvalidInput(_) => "invalid-input",
            Error::DownloadFailed(_) => "download-failed",
            Error::InferenceFailed(_) => "inference-failed",
            Error::LimitExceeded(_) => "limit-exceeded",
            Error::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ModelNotAllowed(m) => write!(f, "model not allowed: {m}"),
            Error::ModelNotSupported(m) => write!(f, "model not supported: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::DownloadFailed(m) => write!(f, "download failed: {m}"),
            Error::InferenceFailed(m) => write!(f, "inference failed: {m}"),
            Error::LimitExceeded(m) => write!(f, "limit exceeded: {m}"),
            Error::Cancelled => write!(f, "cancelled"),
        }
    }
}

impl std::error::Error for Error {}
