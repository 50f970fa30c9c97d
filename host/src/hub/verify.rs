//! What downloaded bytes are checked against: the Hub's ETag of the file. An LFS file's
//! (`X-Linked-Etag`) is the sha256 of its content; a regular file's (`ETag`) is its git
//! blob id, the sha1 of `"blob {size}\0"` followed by the content. Either way every byte
//! is checked, whatever the file's size; an ETag that is neither cannot be checked, so
//! such a file is refused rather than cached unverified.

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// How a file's content is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    Sha256,
    GitBlob,
}

impl DigestKind {
    /// The check an ETag allows: 64 hex digits are a sha256, 40 a git blob id.
    pub fn of_etag(etag: &str) -> Option<DigestKind> {
        if !etag.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        match etag.len() {
            64 => Some(DigestKind::Sha256),
            40 => Some(DigestKind::GitBlob),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DigestKind::Sha256 => "sha256",
            DigestKind::GitBlob => "git blob id (sha1)",
        }
    }
}

/// A content digest being computed, in the kind the ETag calls for.
pub enum ContentHasher {
    Sha256(Sha256),
    GitBlob(Sha1),
}

impl ContentHasher {
    /// A hasher for content of `size` bytes (a git blob id covers the size first).
    pub fn new(kind: DigestKind, size: u64) -> Self {
        match kind {
            DigestKind::Sha256 => ContentHasher::Sha256(Sha256::new()),
            DigestKind::GitBlob => {
                let mut hasher = Sha1::new();
                sha1::Digest::update(&mut hasher, format!("blob {size}\0").as_bytes());
                ContentHasher::GitBlob(hasher)
            }
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            ContentHasher::Sha256(hasher) => hasher.update(bytes),
            ContentHasher::GitBlob(hasher) => sha1::Digest::update(hasher, bytes),
        }
    }

    /// The digest as lowercase hex, comparable to the ETag.
    pub fn finish(self) -> String {
        match self {
            ContentHasher::Sha256(hasher) => hex::encode(hasher.finalize()),
            ContentHasher::GitBlob(hasher) => hex::encode(sha1::Digest::finalize(hasher)),
        }
    }
}

/// The digest of a whole file of the given kind, read in large blocks (blocking).
pub fn hash_file(path: &std::path::Path, kind: DigestKind) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = ContentHasher::new(kind, size);
    let mut buffer = vec![0u8; 4 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buffer[..n]);
    }
}

/// A quick fingerprint of bytes `[start, end)` of `file` (blocking). Two downloads of a
/// range that agree on it agree on the bytes, short of a deliberate collision; it tells
/// the good ranges of a file that failed verification from the bad one.
pub fn fingerprint(file: &std::fs::File, start: u64, end: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let mut hasher = crc32fast::Hasher::new();
    let mut buffer = vec![0u8; (1 << 20).min((end - start) as usize).max(1)];
    let mut position = start;
    while position < end {
        let n = buffer.len().min((end - position) as usize);
        file.read_exact_at(&mut buffer[..n], position)?;
        hasher.update(&buffer[..n]);
        position += n as u64;
    }
    Ok(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_name_their_digest_and_git_blob_ids_match_git() {
        assert_eq!(DigestKind::of_etag(&"a".repeat(64)), Some(DigestKind::Sha256));
        assert_eq!(DigestKind::of_etag(&"0".repeat(40)), Some(DigestKind::GitBlob));
        assert_eq!(DigestKind::of_etag("abc-123"), None);
        assert_eq!(DigestKind::of_etag(&"g".repeat(40)), None);
        // `printf 'hello\n' | git hash-object --stdin`
        let mut hasher = ContentHasher::new(DigestKind::GitBlob, 6);
        hasher.update(b"hello\n");
        assert_eq!(hasher.finish(), "ce013625030ba8dba906f756967f9e9ca394464a");
    }
}
