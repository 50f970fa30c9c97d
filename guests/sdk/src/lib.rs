//! The Rust SDK for Lantern plugins.
//!
//! A plugin is a type implementing [`Pipeline`], exported with [`export!`]:
//!
//! ```ignore
//! struct Hello;
//! impl lantern_sdk::Pipeline for Hello {
//!     fn run(args: Vec<String>) -> Result<String, String> {
//!         let vectors = lantern_sdk::embeddings::embed("sentence-transformers/all-MiniLM-L6-v2", &args)
//!             .map_err(|e| e.to_string())?;
//!         Ok(format!("{} vectors", vectors.len()))
//!     }
//! }
//! lantern_sdk::export!(Hello);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2 --release` (crate-type `cdylib`) and
//! run with `lantern run plugin.wasm --allow-model KEY -- ARGS`.

/// The raw bindings generated from `wit/`, for anything the wrappers do not cover.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "lantern:ai/pipeline",
        pub_export_macro: true,
        export_macro_name: "export_pipeline",
        default_bindings_module: "lantern_sdk::bindings",
        generate_all,
    });
}

pub mod embeddings;
pub mod generation;
pub mod images;
pub mod logging;
pub mod models;
pub mod vision;

mod error;

pub use bindings::lantern::ai::types::Capability;
pub use error::Error;
/// The plugin entry point: `fn run(args: Vec<String>) -> Result<String, String>`.
pub use bindings::Guest as Pipeline;

/// Exports a [`Pipeline`] implementation as the plugin's `run`.
#[macro_export]
macro_rules! export {
    ($plugin:ident) => {
        $crate::bindings::export_pipeline!($plugin);
    };
}
