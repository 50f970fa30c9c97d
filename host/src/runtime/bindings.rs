//! Host bindings generated from `wit/`. Every import is async on the host, so a guest
//! waiting on a model suspends its own fiber and never blocks the tokio runtime.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "pipeline",
    imports: { default: async | trappable },
    exports: { default: async },
    with: {
        "lantern:ai/models.preparation": super::streams::PreparationStream,
        "lantern:ai/generation.generation-stream": super::streams::GenerationStream,
        "lantern:ai/images.image-generation": super::streams::ImageStream,
    },
});

pub use self::lantern::ai::types::Error as WitError;

impl From<crate::error::LanternError> for WitError {
    fn from(error: crate::error::LanternError) -> Self {
        use crate::error::LanternError as E;
        match error {
            E::ModelNotAllowed(m) => WitError::ModelNotAllowed(m),
            E::ModelNotSupported(m) => WitError::ModelNotSupported(m),
            E::InvalidInput(m) => WitError::InvalidInput(m),
            E::DownloadFailed(m) => WitError::DownloadFailed(m),
            E::InferenceFailed(m) => WitError::InferenceFailed(m),
            E::LimitExceeded(m) => WitError::LimitExceeded(m),
            E::Cancelled => WitError::Cancelled,
        }
    }
}

impl From<crate::capabilities::Capability> for self::lantern::ai::types::Capability {
    fn from(capability: crate::capabilities::Capability) -> Self {
        use crate::capabilities::Capability as C;
        match capability {
            C::TextEmbedding => Self::TextEmbedding,
            C::TextGeneration => Self::TextGeneration,
            C::TextToImage => Self::TextToImage,
            C::ImageEmbedding => Self::ImageEmbedding,
            C::VisionLanguage => Self::VisionLanguage,
        }
    }
}
