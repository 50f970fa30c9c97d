//! User catalog files: models the built-in catalog does not know, in TOML.
//!
//! ```toml
//! [[model]]
//! key = "bartowski/Qwen2.5-0.5B-Instruct-GGUF"   # what plugins and --allow-model name
//! family = "gguf-llm"                            # see `lantern models` for the families
//! files = ["Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"]
//! # optional: repo (default: the key), revision (default: main), capabilities (default:
//! # the family's), description, gguf_quant (a GGUF repo of many quantisations: the
//! # default tag, `KEY:TAG` picks another, files come from the repo listing), and files
//! # from other repos:
//! # [[model.other_repos]]
//! # repo = "org/name"
//! # revision = "main"
//! # files = ["tokenizer.json"]
//! ```
//!
//! Every problem is an error naming the file and the line: unknown keys, a family the
//! host does not have, a capability the family does not offer, bad repo or file names.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{CatalogEntry, Family, RepoFiles};
use crate::capabilities::Capability;
use crate::hub::{names, RepoRef};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<Spanned<ModelEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    key: Spanned<String>,
    family: Spanned<String>,
    repo: Option<Spanned<String>>,
    revision: Option<Spanned<String>>,
    #[serde(default = "no_files")]
    files: Spanned<Vec<String>>,
    capabilities: Option<Spanned<Vec<String>>>,
    description: Option<String>,
    /// A GGUF repo with many quantisations: the default tag (files then come from the listing).
    gguf_quant: Option<String>,
    #[serde(default)]
    other_repos: Vec<Spanned<OtherRepo>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OtherRepo {
    repo: String,
    revision: Option<String>,
    files: Vec<String>,
}

fn no_files() -> Spanned<Vec<String>> {
    Spanned::new(0..0, Vec::new())
}

/// Line (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Parses a catalog file's text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Vec<CatalogEntry>> {
    let file: CatalogFile = toml::from_str(text).map_err(|error| {
        let line = error.span().map(|span| format!(" line {}", line_of(text, span.start))).unwrap_or_default();
        anyhow::anyhow!("{origin}{line}: {}", error.message())
    })?;
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for model in file.model {
        let at = |span: std::ops::Range<usize>| format!("{origin} line {}", line_of(text, span.start));
        let model = model.into_inner();
        let key = model.key.get_ref().clone();
        anyhow::ensure!(!key.trim().is_empty(), "{}: the key is empty", at(model.key.span()));
        anyhow::ensure!(seen.insert(key.clone()), "{}: {key} is listed twice", at(model.key.span()));
        let family = Family::from_name(model.family.get_ref()).ok_or_else(|| {
            let known: Vec<&str> = Family::ALL.iter().map(|f| f.name()).collect();
            anyhow::anyhow!("{}: unknown family {:?} (known: {})", at(model.family.span()), model.family.get_ref(), known.join(", "))
        })?;
        let repo_id = model.repo.as_ref().map(|r| r.get_ref().clone()).unwrap_or_else(|| key.clone());
        let repo_span = model.repo.as_ref().map(|r| r.span()).unwrap_or(model.key.span());
        names::check_repo_id(&repo_id).map_err(|e| anyhow::anyhow!("{}: {e}", at(repo_span.clone())))?;
        let revision = model.revision.as_ref().map(|r| r.get_ref().clone()).unwrap_or_else(|| "main".into());
        names::check_revision(&revision).map_err(|e| anyhow::anyhow!("{}: {e}", at(repo_span)))?;
        anyhow::ensure!(
            !model.files.get_ref().is_empty() || (model.gguf_quant.is_some() && family == Family::GgufLlm),
            "{}: a model needs at least one file (or, for a GGUF repo, gguf_quant)",
            at(model.files.span())
        );
        for file in model.files.get_ref() {
            names::check_file_name(file).map_err(|e| anyhow::anyhow!("{}: {e}", at(model.files.span())))?;
        }
        let capabilities = match &model.capabilities {
            None => family.capabilities().to_vec(),
            Some(list) => {
                let mut capabilities = Vec::new();
                for name in list.get_ref() {
                    let capability = Capability::from_name(name)
                        .filter(|c| family.capabilities().contains(c))
                        .ok_or_else(|| anyhow::anyhow!("{}: family {} does not offer {name:?}", at(list.span()), family.name()))?;
                    capabilities.push(capability);
                }
                capabilities
            }
        };
        let mut other_repos = Vec::new();
        for other in &model.other_repos {
            let span = other.span();
            let other = other.get_ref();
            names::check_repo_id(&other.repo).map_err(|e| anyhow::anyhow!("{}: {e}", at(span.clone())))?;
            let revision = other.revision.clone().unwrap_or_else(|| "main".into());
            names::check_revision(&revision).map_err(|e| anyhow::anyhow!("{}: {e}", at(span.clone())))?;
            for file in &other.files {
                names::check_file_name(file).map_err(|e| anyhow::anyhow!("{}: {e}", at(span.clone())))?;
            }
            other_repos.push(RepoFiles { repo: RepoRef { repo: other.repo.clone(), revision }, files: other.files.clone() });
        }
        entries.push(CatalogEntry {
            key,
            repo: RepoRef { repo: repo_id, revision },
            family,
            capabilities,
            files: model.files.into_inner(),
            other_repos,
            gguf_quant: model.gguf_quant,
            description: model.description.unwrap_or_else(|| format!("from {origin}")),
        });
    }
    Ok(entries)
}

/// Reads and parses a catalog file.
pub fn load(path: &Path) -> anyhow::Result<Vec<CatalogEntry>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading the catalog {}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_gives_entries_with_defaults() {
        let text = r#"
[[model]]
key = "bartowski/Qwen2.5-0.5B-Instruct-GGUF"
family = "gguf-llm"
files = ["Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"]

[[model]]
key = "my-clip"
repo = "openai/clip-vit-base-patch32"
revision = "refs/pr/15"
family = "clip"
files = ["config.json", "model.safetensors"]
description = "CLIP at a pinned revision"
[[model.other_repos]]
repo = "openai/clip-vit-large-patch14"
files = ["tokenizer.json"]
"#;
        let entries = parse(text, "test.toml").unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].repo, RepoRef::main("bartowski/Qwen2.5-0.5B-Instruct-GGUF"));
        assert_eq!(entries[0].capabilities, vec![Capability::TextGeneration]);
        assert_eq!(entries[1].repo.revision, "refs/pr/15");
        assert_eq!(entries[1].other_repos[0].files, vec!["tokenizer.json".to_string()]);
    }

    fn error(text: &str) -> String {
        parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn bad_entries_name_the_line() {
        let unknown_family = "[[model]]\nkey = \"a/b\"\nfamily = \"unet\"\nfiles = [\"x\"]\n";
        assert!(error(unknown_family).starts_with("test.toml line 3: unknown family \"unet\""), "{}", error(unknown_family));
        let unknown_key = "[[model]]\nkey = \"a/b\"\nfamily = \"bert\"\nfiles = [\"x\"]\nsize = 3\n";
        assert!(error(unknown_key).contains("line 5"), "{}", error(unknown_key));
        assert!(error(unknown_key).contains("size"), "{}", error(unknown_key));
        let traversal = "[[model]]\nkey = \"a/b\"\nfamily = \"bert\"\n\nfiles = [\"../../etc/passwd\"]\n";
        assert!(error(traversal).starts_with("test.toml line 5"), "{}", error(traversal));
        let wrong_capability = "[[model]]\nkey = \"a/b\"\nfamily = \"bert\"\nfiles = [\"x\"]\ncapabilities = [\"text-to-image\"]\n";
        assert!(error(wrong_capability).contains("line 5: family bert does not offer"), "{}", error(wrong_capability));
        let twice = "[[model]]\nkey = \"a/b\"\nfamily = \"bert\"\nfiles = [\"x\"]\n[[model]]\nkey = \"a/b\"\nfamily = \"bert\"\nfiles = [\"x\"]\n";
        assert!(error(twice).contains("line 6: a/b is listed twice"), "{}", error(twice));
        assert!(error("[[model]\n").contains("line 1"), "{}", error("[[model]\n"));
    }
}
