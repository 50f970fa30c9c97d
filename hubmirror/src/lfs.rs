//! Which files of a repo the Hub stores in LFS, and the identities it gives files.
//!
//! The Hub keeps a file in LFS when the repo's `.gitattributes` routes it through the
//! `lfs` filter, when it is larger than the 10 MiB the Hub accepts as a regular git file,
//! or when it looks binary (a NUL byte near the start; the Hub's pre-upload check looks at
//! the first 512 bytes). A repo without a `.gitattributes` gets the one the Hub writes
//! into every new model repo. An LFS file is identified by the sha256 of its content
//! (`X-Linked-Etag`); a regular file by its git blob id (`ETag`), the sha1 of
//! `"blob {size}\0"` followed by the content.

use sha1::{Digest, Sha1};

/// The `.gitattributes` the Hub creates for a new model repo (its LFS lines).
pub const HUB_DEFAULT_LFS_PATTERNS: &[&str] = &[
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
    "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
    "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz",
    "*.zip", "*.zst", "*tfevents*",
];

/// Largest file the Hub accepts outside LFS.
pub const MAX_REGULAR_FILE: u64 = 10 << 20;

/// Bytes at the start of a file looked at to decide whether it is binary.
pub const BINARY_SAMPLE: usize = 512;

/// The LFS patterns of a `.gitattributes` text: the patterns of lines that set `filter=lfs`.
pub fn lfs_patterns(gitattributes: &str) -> Vec<String> {
    gitattributes
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let pattern = fields.next()?;
            fields.any(|attribute| attribute == "filter=lfs").then(|| pattern.to_string())
        })
        .collect()
}

/// Whether the Hub keeps `path` (of `size` bytes, starting with `sample`) in LFS.
pub fn is_lfs(path: &str, size: u64, sample: &[u8], patterns: &[String]) -> bool {
    size > MAX_REGULAR_FILE
        || sample.iter().take(BINARY_SAMPLE).any(|&b| b == 0)
        || patterns.iter().any(|pattern| matches_attribute(pattern, path))
}

/// Git's attribute matching, for the forms `.gitattributes` files use: a pattern without
/// a slash matches the file name at any depth; one with a slash matches the whole path.
/// `*` and `?` stop at slashes; `**` crosses them.
pub fn matches_attribute(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches('/');
    if pattern.contains('/') {
        glob(pattern.as_bytes(), path.as_bytes())
    } else {
        glob(pattern.as_bytes(), path.rsplit('/').next().unwrap_or(path).as_bytes())
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern {
        [] => text.is_empty(),
        [b'*', b'*', b'/', rest @ ..] => (0..=text.len()).any(|i| (i == 0 || text[i - 1] == b'/') && glob(rest, &text[i..])),
        [b'*', b'*', rest @ ..] => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        [b'*', rest @ ..] => {
            let limit = text.iter().position(|&b| b == b'/').unwrap_or(text.len());
            (0..=limit).any(|i| glob(rest, &text[i..]))
        }
        [b'?', rest @ ..] => text.first().is_some_and(|&b| b != b'/') && glob(rest, &text[1..]),
        [c, rest @ ..] => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// A git blob id being computed: sha1 over `"blob {size}\0"` and then the content.
pub fn git_blob_hasher(size: u64) -> Sha1 {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    hasher
}

/// The git blob id of an LFS pointer file, which is what git stores for an LFS file (the
/// Hub's plain `ETag` of one; clients must prefer `X-Linked-Etag`).
pub fn pointer_blob_id(sha256: &str, size: u64) -> String {
    let pointer = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n");
    let mut hasher = git_blob_hasher(pointer.len() as u64);
    hasher.update(pointer.as_bytes());
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_patterns() -> Vec<String> {
        HUB_DEFAULT_LFS_PATTERNS.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn the_hubs_default_attributes_route_weights_to_lfs_and_text_files_to_git() {
        let patterns = default_patterns();
        for path in ["model.safetensors", "sub/pytorch_model.bin", "saved_model/variables/x", "a.tar.gz", "events.out.tfevents.1"] {
            assert!(is_lfs(path, 10, b"text", &patterns), "{path}");
        }
        for path in ["config.json", "README.md", "tokenizer.json", "saved_model.json", "model.gguf"] {
            assert!(!is_lfs(path, 10, b"{\"a\": 1}", &patterns), "{path}");
        }
        assert!(is_lfs("model.gguf", MAX_REGULAR_FILE + 1, b"GGUF", &patterns), "big files go to LFS");
        assert!(is_lfs("weights.dat", 10, b"ab\0cd", &patterns), "binary files go to LFS");
    }

    #[test]
    fn gitattributes_lines_with_the_lfs_filter_give_the_patterns() {
        let text = "# comment\n*.gguf filter=lfs diff=lfs merge=lfs -text\n*.txt text\n\nweights/** filter=lfs\n";
        assert_eq!(lfs_patterns(text), vec!["*.gguf".to_string(), "weights/**".to_string()]);
        assert!(matches_attribute("weights/**", "weights/a/b.dat"));
        assert!(!matches_attribute("weights/**", "other/weights/a"));
        assert!(matches_attribute("*.gguf", "q/model.Q4_1.gguf"));
    }

    #[test]
    fn git_blob_ids_match_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        let mut hasher = git_blob_hasher(6);
        hasher.update(b"hello\n");
        assert_eq!(hex::encode(hasher.finalize()), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
