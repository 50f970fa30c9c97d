//! Splitting a file into byte ranges, and the sidecar that records how far each got.
//!
//! `blobs/{etag}.incomplete.parts` holds the ranges of `blobs/{etag}.incomplete` and the
//! bytes of each already written, so a process that restarts after a crash or a dropped
//! connection asks only for what is missing. Counts are recorded only after the bytes
//! are written, so the sidecar never claims bytes the file lacks (a torn write after a
//! power cut is what the final sha256 check catches).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One byte range `[start, end)` of a file, and how many of its bytes are on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub start: u64,
    pub end: u64,
    pub done: u64,
}

impl Part {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The sidecar's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartsRecord {
    pub etag: String,
    pub size: u64,
    pub parts: Vec<Part>,
}

/// Most ranges one file is split into (bounds the sidecar and the requests).
const MAX_PARTS: u64 = 256;

/// The ranges a file of `size` bytes downloads as: one, up to `threshold` bytes; else at
/// least two per connection (so a slow connection's range does not hold up the end for
/// long), each of about `min_part` bytes where that gives more. Connections take them in
/// file order, so small ranges keep the file's written prefix, which the hasher follows,
/// close behind the newest bytes.
pub fn plan(size: u64, threshold: u64, min_part: u64, connections: usize) -> Vec<Part> {
    if size <= threshold || size == 0 {
        return vec![Part { start: 0, end: size, done: 0 }];
    }
    let wanted_parts = ((connections.max(1) as u64) * 2).max(size / min_part.max(1)).min(MAX_PARTS);
    let part_size = size.div_ceil(wanted_parts).max(min_part.max(1));
    (0..size)
        .step_by(part_size as usize)
        .map(|start| Part { start, end: (start + part_size).min(size), done: 0 })
        .collect()
}

impl PartsRecord {
    /// True when the parts cover `[0, size)` exactly, in order, with sane counts.
    fn is_consistent(&self) -> bool {
        let mut expected_start = 0;
        for part in &self.parts {
            if part.start != expected_start || part.end <= part.start || part.done > part.len() {
                return false;
            }
            expected_start = part.end;
        }
        expected_start == self.size && !self.parts.is_empty()
    }

    /// Bytes already on disk.
    pub fn bytes_done(&self) -> u64 {
        self.parts.iter().map(|p| p.done).sum()
    }
}

/// The sidecar at `path`, if it exists and describes this blob (same etag and size).
pub fn load(path: &Path, etag: &str, size: u64) -> Option<PartsRecord> {
    let text = std::fs::read(path).ok()?;
    let record: PartsRecord = serde_json::from_slice(&text).ok()?;
    (record.etag == etag && record.size == size && record.is_consistent()).then_some(record)
}

/// Writes the sidecar atomically (temporary file, then rename), so a crash mid-write
/// leaves the previous record.
pub fn save(path: &Path, record: &PartsRecord) -> std::io::Result<()> {
    let temporary = path.with_extension("parts.tmp");
    std::fs::write(&temporary, serde_json::to_vec(record).map_err(std::io::Error::other)?)?;
    std::fs::rename(&temporary, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_one_range_and_big_ones_cover_the_file_exactly() {
        assert_eq!(plan(10, 64, 16, 8), vec![Part { start: 0, end: 10, done: 0 }]);
        assert_eq!(plan(0, 64, 16, 8), vec![Part { start: 0, end: 0, done: 0 }]);
        let size = 80 * (1 << 20) + 7;
        let parts = plan(size, 64 << 20, 16 << 20, 8);
        assert_eq!(parts.len(), 6, "{parts:?}");
        assert!(parts.iter().all(|p| p.len() <= 16 << 20 || p.len() == parts[0].len()));
        let record = PartsRecord { etag: "e".into(), size, parts };
        assert!(record.is_consistent());
        let big = plan(1 << 30, 64 << 20, 16 << 20, 8);
        assert_eq!(big.len(), 64);
        assert!(big.iter().all(|p| p.len() == 16 << 20));
        assert_eq!(big.last().unwrap().end, 1 << 30);
    }

    #[test]
    fn a_sidecar_for_another_blob_or_with_gaps_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.incomplete.parts");
        let mut record = PartsRecord { etag: "abc".into(), size: 100, parts: plan(100, 10, 30, 1) };
        record.parts[1].done = 5;
        save(&path, &record).unwrap();
        assert_eq!(load(&path, "abc", 100), Some(record.clone()));
        assert_eq!(load(&path, "abd", 100), None);
        assert_eq!(load(&path, "abc", 101), None);
        record.parts[1].start += 1;
        save(&path, &record).unwrap();
        assert_eq!(load(&path, "abc", 100), None);
    }
}
