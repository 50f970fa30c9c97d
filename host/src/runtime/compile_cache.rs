//! An on-disk cache of precompiled components, so the second run of a plugin does not
//! compile it again (Cranelift takes from a tenth of a second for a small Rust plugin
//! to many seconds for a large one).
//!
//! An entry is keyed by the sha256 of the component's bytes and by the engine's
//! compatibility hash (wasmtime version, target, compiler settings), so a changed plugin,
//! a new wasmtime or another configuration never picks up a stale entry.
//!
//! Loading native code is `unsafe` in wasmtime: it trusts the bytes. So the host loads
//! only files it wrote itself, in its own format: a magic line, then the sha256 and the
//! length of the payload, then wasmtime's serialized component. A file that is short, has
//! another magic or whose payload does not hash to its header is a corrupt entry: it is
//! compiled again and replaced, never deserialized. Entries are written to a temporary
//! file and renamed into place, so a killed process or two racing processes leave either
//! no entry or a whole one. A cache that cannot be read or written (a read-only home, a
//! full disk) costs only the compile it would have saved.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// First bytes of every entry; the version changes with the layout.
const MAGIC: &[u8; 16] = b"lantern-cwasm-1\n";
/// Magic, payload sha256, payload length (little-endian u64).
const HEADER_LEN: usize = MAGIC.len() + 32 + 8;

/// Feeds wasmtime's `Hash` of its compatibility settings into sha256, so the key does not
/// depend on `DefaultHasher`, whose algorithm may change between Rust releases.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        // Only the full digest (`engine_key`) is used.
        0
    }
}

/// What a lookup found, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid entry was loaded; nothing was compiled.
    Hit,
    /// No entry: compiled and stored.
    Miss,
    /// An entry was there but damaged: compiled again and replaced.
    Corrupt,
    /// The cache could not be used (I/O error): compiled, not stored.
    Unavailable,
}

/// Precompiled components under one directory.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into() }
    }

    /// `$XDG_CACHE_HOME/lantern/components`, else `~/.cache/lantern/components`.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
        Some(base.join("lantern").join("components"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `bytes` compiled by `engine` lives.
    pub fn entry_path(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let wasm = hex::encode(Sha256::digest(bytes));
        self.dir.join(format!("{wasm}-{}.cwasm", &engine_key(engine)[..16]))
    }

    /// The component for `bytes`: from its entry when that is whole, else compiled (and stored).
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> anyhow::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, bytes);
        let found = match std::fs::read(&path) {
            Ok(entry) => match verified_payload(&entry) {
                Some(payload) => {
                    // SAFETY: the payload hashes to the header of an entry in the host's own
                    // format, which only `store` writes, from `precompile_component` output.
                    match unsafe { Component::deserialize(engine, payload) } {
                        Ok(component) => return Ok((component, CacheOutcome::Hit)),
                        Err(error) => {
                            tracing::warn!("compile cache entry {} refused by wasmtime ({error:#}); recompiling", path.display());
                            CacheOutcome::Corrupt
                        }
                    }
                }
                None => {
                    tracing::warn!("compile cache entry {} is damaged; recompiling", path.display());
                    CacheOutcome::Corrupt
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => CacheOutcome::Miss,
            Err(error) => {
                tracing::warn!("cannot read compile cache entry {}: {error}", path.display());
                CacheOutcome::Unavailable
            }
        };
        let payload = engine.precompile_component(bytes)?;
        let outcome = match store(&self.dir, &path, &payload) {
            Ok(()) => found,
            Err(error) => {
                tracing::warn!("cannot write compile cache entry {}: {error}", path.display());
                CacheOutcome::Unavailable
            }
        };
        // SAFETY: `payload` was produced by this engine's `precompile_component` just now.
        let component = unsafe { Component::deserialize(engine, &payload)? };
        Ok((component, outcome))
    }
}

/// Hex sha256 of the engine's compatibility hash.
fn engine_key(engine: &Engine) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finalize())
}

/// The payload of a whole entry; `None` for anything else.
fn verified_payload(entry: &[u8]) -> Option<&[u8]> {
    let (header, payload) = entry.split_at_checked(HEADER_LEN)?;
    let (magic, rest) = header.split_at(MAGIC.len());
    let (digest, length) = rest.split_at(32);
    let length = u64::from_le_bytes(length.try_into().ok()?);
    (magic == MAGIC && length == payload.len() as u64 && Sha256::digest(payload).as_slice() == digest).then_some(payload)
}

/// Writes an entry beside its final name and renames it into place. The temporary name
/// is unique to this process and write, so racing writers never share a file; the last
/// rename wins, and every candidate is whole.
fn store(dir: &Path, path: &Path, payload: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = dir.join(format!(".{}.{write}.tmp", std::process::id()));
    let written = (|| {
        // A leftover with this name is from a dead process that had our pid: overwrite it.
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(payload))?;
        file.write_all(&(payload.len() as u64).to_le_bytes())?;
        file.write_all(payload)?;
        file.sync_data()?;
        std::fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(payload: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&Sha256::digest(payload));
        bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn only_whole_entries_are_trusted() {
        let good = entry(b"native code");
        assert_eq!(verified_payload(&good), Some(&b"native code"[..]));
        assert_eq!(verified_payload(&good[..good.len() - 1]), None, "truncated");
        assert_eq!(verified_payload(&good[..10]), None, "shorter than the header");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(verified_payload(&flipped), None, "a flipped byte");
        let mut other_magic = good.clone();
        other_magic[0] = b'L';
        assert_eq!(verified_payload(&other_magic), None, "another format");
        let mut longer = good;
        longer.push(0);
        assert_eq!(verified_payload(&longer), None, "trailing bytes");
    }
}
