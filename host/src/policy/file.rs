//! Policy files: the same [`Policy`] as the CLI flags build, written in TOML.
//!
//! ```toml
//! [models]
//! allow = ["sentence-transformers/all-MiniLM-L6-v2", "QuantFactory/*"]   # keys, KEY:TAG, org/*
//! # allow_all = true                                                     # any model
//!
//! [[dirs]]
//! host = "docs"        # relative to the policy file
//! guest = "/docs"      # default: the host path as written
//! writable = false     # default: read-only
//!
//! [env]
//! LANG = "C.UTF-8"
//!
//! [limits]             # every key is optional; see `examples/policy.toml` for all of them
//! timeout_seconds = 120
//! max_generated_tokens_per_run = 20000
//! ```
//!
//! Anything the host does not know is an error naming the key and its line, so a typo
//! never silently leaves a limit at its default.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;
use toml::Spanned;

use super::{check_model_pattern, DirGrant, Policy};

/// Why a policy file could not be used: where, and what is wrong.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{origin}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct PolicyFileError {
    /// The file's path, or `policy` for text.
    pub origin: String,
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    models: ModelsSection,
    #[serde(default)]
    dirs: Vec<Spanned<DirEntry>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsSection {
    #[serde(default)]
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    allow_all: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DirEntry {
    host: String,
    guest: Option<String>,
    #[serde(default)]
    writable: bool,
}

/// Each key is named as the CLI flag it mirrors (`max_image_side` ↔ `--max-image-side`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    max_memory_mib: Option<usize>,
    timeout_seconds: Option<Spanned<f64>>,
    cpu_budget_seconds: Option<Spanned<f64>>,
    max_embed_inputs: Option<usize>,
    max_embed_inputs_per_run: Option<u64>,
    max_input_bytes: Option<usize>,
    max_log_bytes: Option<usize>,
    max_generated_tokens: Option<usize>,
    max_generated_tokens_per_run: Option<u64>,
    max_open_generations: Option<usize>,
    max_image_side: Option<u32>,
    max_image_steps: Option<u32>,
    max_images_per_call: Option<usize>,
    max_image_bytes: Option<usize>,
    max_decoded_side: Option<u32>,
    max_host_calls: Option<u64>,
}

/// Line (1-based) of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// A positive, finite number of seconds.
fn seconds(value: &Spanned<f64>, key: &str, at: impl Fn(usize) -> PolicyFileError) -> Result<Duration, PolicyFileError> {
    let seconds = *value.get_ref();
    Duration::try_from_secs_f64(seconds).ok().filter(|d| !d.is_zero()).ok_or_else(|| PolicyFileError {
        message: format!("{key} must be a positive number of seconds, not {seconds}"),
        ..at(value.span().start)
    })
}

/// Parses a policy file's text. `origin` names it in errors; relative `dirs` are
/// resolved against `base` (the file's folder; the current directory for text).
pub(super) fn parse(text: &str, origin: &str, base: &Path) -> Result<Policy, PolicyFileError> {
    let at = |offset: usize| PolicyFileError { origin: origin.to_string(), line: Some(line_of(text, offset)), message: String::new() };
    let file: PolicyFile = toml::from_str(text).map_err(|error| PolicyFileError {
        origin: origin.to_string(),
        line: error.span().map(|span| line_of(text, span.start)),
        message: error.message().to_string(),
    })?;

    let mut policy = Policy::default();
    if file.models.allow_all {
        policy = policy.allow_any_model();
    }
    for key in &file.models.allow {
        check_model_pattern(key.get_ref())
            .map_err(|message| PolicyFileError { message: format!("models.allow: {message}"), ..at(key.span().start) })?;
        policy = policy.allow_model(key.get_ref().as_str());
    }
    for dir in &file.dirs {
        let entry = dir.get_ref();
        let host_path = base.join(&entry.host);
        if !host_path.is_dir() {
            return Err(PolicyFileError {
                message: format!("dirs: {} is not a directory", host_path.display()),
                ..at(dir.span().start)
            });
        }
        let guest_path = entry.guest.clone().unwrap_or_else(|| entry.host.clone());
        policy.dirs.push(DirGrant { host_path, guest_path, writable: entry.writable });
    }
    for (name, value) in &file.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(PolicyFileError { message: format!("env: {name:?} is not a variable name"), ..at(value.span().start) });
        }
        policy.env.push((name.clone(), value.get_ref().clone()));
    }

    let limits = file.limits;
    if let Some(mib) = limits.max_memory_mib {
        policy.max_memory_bytes = mib.saturating_mul(1 << 20);
    }
    if let Some(value) = &limits.timeout_seconds {
        policy.timeout = Some(seconds(value, "limits.timeout_seconds", at)?);
    }
    if let Some(value) = &limits.cpu_budget_seconds {
        policy.cpu_budget = Some(seconds(value, "limits.cpu_budget_seconds", at)?);
    }
    let set = |field: &mut usize, value: Option<usize>| *field = value.unwrap_or(*field);
    set(&mut policy.max_embed_inputs, limits.max_embed_inputs);
    set(&mut policy.max_input_bytes, limits.max_input_bytes);
    set(&mut policy.max_log_bytes, limits.max_log_bytes);
    set(&mut policy.max_generated_tokens, limits.max_generated_tokens);
    set(&mut policy.max_open_generations, limits.max_open_generations);
    set(&mut policy.max_images_per_call, limits.max_images_per_call);
    set(&mut policy.max_image_bytes, limits.max_image_bytes);
    let set = |field: &mut u64, value: Option<u64>| *field = value.unwrap_or(*field);
    set(&mut policy.max_embed_inputs_per_run, limits.max_embed_inputs_per_run);
    set(&mut policy.max_generated_tokens_per_run, limits.max_generated_tokens_per_run);
    set(&mut policy.max_host_calls, limits.max_host_calls);
    let set = |field: &mut u32, value: Option<u32>| *field = value.unwrap_or(*field);
    set(&mut policy.max_image_side, limits.max_image_side);
    set(&mut policy.max_image_steps, limits.max_image_steps);
    set(&mut policy.max_decoded_side, limits.max_decoded_side);
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> PolicyFileError {
        parse(text, "p.toml", Path::new(".")).expect_err("must be refused")
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let typo = error("[limits]\nmax_generated_tokens = 10\nmax_tokens_per_run = 5\n");
        assert_eq!(typo.line, Some(3), "{typo}");
        assert!(typo.message.contains("unknown field `max_tokens_per_run`"), "{typo}");
        assert!(typo.to_string().starts_with("p.toml line 3: "), "{typo}");
        let section = error("[model]\nallow = []\n");
        assert!(section.message.contains("unknown field `model`") && section.line == Some(1), "{section}");
        let in_dirs = error("[[dirs]]\nhost = \".\"\nmode = \"rw\"\n");
        assert!(in_dirs.message.contains("unknown field `mode`") && in_dirs.line == Some(3), "{in_dirs}");
    }

    #[test]
    fn bad_values_are_named_with_their_line() {
        let negative = error("[limits]\n\nmax_host_calls = -1\n");
        assert_eq!(negative.line, Some(3), "{negative}");
        let zero = error("[limits]\ntimeout_seconds = 0\n");
        assert!(zero.message.contains("limits.timeout_seconds must be a positive") && zero.line == Some(2), "{zero}");
        let pattern = error("[models]\nallow = [\n  \"a/b\",\n  \"a/b*\",\n]\n");
        assert!(pattern.message.contains("models.allow") && pattern.line == Some(4), "{pattern}");
        let missing = error("[[dirs]]\nhost = \"/no/such/dir\"\n");
        assert!(missing.message.contains("not a directory") && missing.line == Some(1), "{missing}");
    }

    #[test]
    fn an_empty_file_is_the_default_policy() {
        let policy = parse("", "p.toml", Path::new(".")).unwrap();
        assert_eq!(format!("{policy:?}"), format!("{:?}", Policy::default()));
    }
}
