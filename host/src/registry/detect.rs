//! Models the catalog does not know, resolved from their repos: a key a plugin is
//! allowed to use but that no catalog entry names is read as a Hub repo id
//! (`org/name`, `org/name:TAG` for a GGUF quantisation). The repo's file listing and
//! `config.json` decide the family:
//!
//! - any `.gguf` file: a GGUF language model; `TAG` picks the quantisation, else the
//!   first of Q4_K_M, Q8_0, Q4_0 the repo has, else its only GGUF. The architecture
//!   inside the file (`general.architecture`) is checked at load.
//! - else `config.json`'s `architectures`: BERT, Jina-BERT, NV-Embed, CLIP, LLaVA, with
//!   the weights (single or sharded safetensors) and the extra files each family reads.
//!
//! Anything else is `model-not-supported` naming what was found.

use crate::capabilities::Capability;
use crate::catalog::{CatalogEntry, Family};
use crate::error::{LanternError, LanternResult};
use crate::families::gguf::files::select_quant;
use crate::hub::{names, RepoRef};

use super::ModelRegistry;

/// Quantisations picked, in order, when a GGUF repo is named without a tag.
const DEFAULT_QUANTS: [&str; 3] = ["Q4_K_M", "Q8_0", "Q4_0"];

/// `config.json` `architectures` values and the family that runs them.
const ARCHITECTURES: [(&str, Family); 7] = [
    ("BertModel", Family::Bert),
    ("BertForMaskedLM", Family::Bert),
    ("JinaBertForMaskedLM", Family::JinaBert),
    ("JinaBertModel", Family::JinaBert),
    ("NVEmbedModel", Family::NvEmbed),
    ("CLIPModel", Family::Clip),
    ("LlavaForConditionalGeneration", Family::Llava),
];

/// Files a family reads besides `config.json` and the weights, when the repo has them.
fn extra_files(family: Family) -> &'static [&'static str] {
    match family {
        Family::Bert => &["tokenizer.json", "1_Pooling/config.json", "sentence_bert_config.json"],
        Family::Clip => &["tokenizer.json", "preprocessor_config.json"],
        Family::Llava => &["tokenizer.json", "generation_config.json", "preprocessor_config.json"],
        _ => &["tokenizer.json"],
    }
}

#[derive(serde::Deserialize)]
struct ModelConfig {
    #[serde(default)]
    architectures: Vec<String>,
    model_type: Option<String>,
}

fn unsupported(message: String) -> LanternError {
    LanternError::ModelNotSupported(message)
}

/// The GGUF file(s) of a repo, for `tag` or the default choice.
fn gguf_files(repo: &str, listing: &[String], tag: Option<&str>) -> LanternResult<(String, Vec<String>)> {
    if let Some(tag) = tag {
        return select_quant(listing, tag).map(|files| (tag.to_string(), files)).map_err(|m| unsupported(format!("{repo}: {m}")));
    }
    for tag in DEFAULT_QUANTS {
        if let Ok(files) = select_quant(listing, tag) {
            return Ok((tag.to_string(), files));
        }
    }
    let ggufs: Vec<&String> = listing.iter().filter(|f| f.ends_with(".gguf")).collect();
    match ggufs.as_slice() {
        [only] => Ok((String::new(), vec![only.to_string()])),
        _ => Err(unsupported(format!(
            "{repo} has several GGUF files and none of {}: name one with {repo}:TAG",
            DEFAULT_QUANTS.join(", ")
        ))),
    }
}

/// The weight files of a safetensors repo: one file, or the index and every shard.
fn safetensors_files(repo: &str, listing: &[String]) -> LanternResult<Vec<String>> {
    if listing.iter().any(|f| f == "model.safetensors") {
        return Ok(vec!["model.safetensors".into()]);
    }
    if listing.iter().any(|f| f == "model.safetensors.index.json") {
        let mut files = vec!["model.safetensors.index.json".to_string()];
        files.extend(listing.iter().filter(|f| f.starts_with("model-") && f.ends_with(".safetensors")).cloned());
        return Ok(files);
    }
    Err(unsupported(format!("{repo} has no model.safetensors (only safetensors weights are loaded, never pickles)")))
}

impl ModelRegistry {
    /// Resolves `key`, which no catalog entry names, from its repo (see the module docs).
    pub(super) async fn detect(&self, key: &str) -> LanternResult<CatalogEntry> {
        if let Some(entry) = self.detected.lock().unwrap().get(key) {
            return Ok(entry.clone());
        }
        let (repo_id, tag) = match key.rsplit_once(':') {
            Some((repo, tag)) => (repo, Some(tag)),
            None => (key, None),
        };
        names::check_repo_id(repo_id).map_err(|_| {
            unsupported(format!("{key:?} is not in this host's model catalog (see `lantern models`) nor a Hub repo id"))
        })?;
        let repo = RepoRef::main(repo_id);
        let listing = self.hub.list_files(&repo).await.map_err(|error| match error {
            crate::hub::HubError::Http { message, .. } if message.contains("404") => {
                unsupported(format!("{key:?} is neither in this host's catalog nor a repo on the Hub"))
            }
            other => other.into(),
        })?;
        let entry = if listing.iter().any(|f| f.ends_with(".gguf")) {
            let (quant, files) = gguf_files(repo_id, &listing, tag)?;
            CatalogEntry {
                key: key.to_string(),
                repo,
                family: Family::GgufLlm,
                capabilities: vec![Capability::TextGeneration],
                files,
                other_repos: Vec::new(),
                gguf_quant: None,
                description: format!("GGUF model found in the repo{}", if quant.is_empty() { String::new() } else { format!(" ({quant})") }),
            }
        } else if tag.is_some() {
            return Err(unsupported(format!("{repo_id} has no GGUF files, so the tag in {key:?} means nothing")));
        } else if listing.iter().any(|f| f == "config.json") {
            let fetched = self.hub.fetch(&repo, &["config.json".to_string()], None).await?;
            let path = fetched.path("config.json")?.to_path_buf();
            let text = tokio::fs::read_to_string(&path).await.map_err(|e| LanternError::inference("reading config.json", e))?;
            let config: ModelConfig =
                serde_json::from_str(&text).map_err(|e| unsupported(format!("{repo_id}: config.json does not parse: {e}")))?;
            let family = config
                .architectures
                .iter()
                .find_map(|name| ARCHITECTURES.iter().find(|(known, _)| known == name).map(|(_, family)| *family))
                .ok_or_else(|| {
                    unsupported(format!(
                        "{repo_id}: architecture {:?} (model_type {:?}) is not one this host runs",
                        config.architectures,
                        config.model_type.as_deref().unwrap_or("?")
                    ))
                })?;
            let mut files = vec!["config.json".to_string()];
            files.extend(extra_files(family).iter().filter(|f| listing.iter().any(|l| l == *f)).map(|f| f.to_string()));
            files.extend(safetensors_files(repo_id, &listing)?);
            CatalogEntry {
                key: key.to_string(),
                repo,
                family,
                capabilities: family.capabilities().to_vec(),
                files,
                other_repos: Vec::new(),
                gguf_quant: None,
                description: format!("{} model found in the repo", family.name()),
            }
        } else {
            return Err(unsupported(format!("{repo_id} has neither GGUF files nor a config.json this host can read")));
        };
        tracing::info!(model = %key, family = entry.family.name(), files = entry.files.len(), "resolved from the repo");
        self.detected.lock().unwrap().insert(key.to_string(), entry.clone());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_quantisation_and_single_files() {
        let listing: Vec<String> = ["m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q2_K.gguf"].map(String::from).to_vec();
        assert_eq!(gguf_files("r", &listing, None).unwrap(), ("Q4_K_M".to_string(), vec!["m-Q4_K_M.gguf".to_string()]));
        let only = vec!["weird-name.gguf".to_string()];
        assert_eq!(gguf_files("r", &only, None).unwrap().1, only);
        let two = vec!["a-IQ2.gguf".to_string(), "a-IQ3.gguf".to_string()];
        assert!(matches!(gguf_files("r", &two, None), Err(LanternError::ModelNotSupported(_))));
    }

    #[test]
    fn sharded_safetensors_bring_their_index() {
        let listing: Vec<String> =
            ["config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
                .map(String::from)
                .to_vec();
        assert_eq!(safetensors_files("r", &listing).unwrap().len(), 3);
        assert!(safetensors_files("r", &["pytorch_model.bin".to_string()]).is_err());
    }
}
