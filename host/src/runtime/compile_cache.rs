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
//!
//! Every rebuilt plugin and every wasmtime upgrade leaves entries nobody will load again,
//! so the cache has a size cap ([`DEFAULT_MAX_BYTES`] unless set): a hit touches its
//! entry's modification time, and after each store the least recently used entries are
//! removed until the rest fit (entries of an older engine are never touched, so they go
//! first). Temporary files that a killed writer left behind are removed once they are
//! [`STALE_TEMPORARY`] old; a younger one may be a live writer's. Only a store scans the
//! directory; a hit costs one extra metadata write.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// First bytes of every entry; the version changes with the layout.
const MAGIC: &[u8; 16] = b"lantern-cwasm-1\n";
/// Magic, payload sha256, payload length (little-endian u64).
const HEADER_LEN: usize = MAGIC.len() + 32 + 8;
/// The extension of entries; anything else in the directory but our temporary files is
/// left alone.
const ENTRY_EXTENSION: &str = "cwasm";
/// The size cap of a cache unless [`CompileCache::with_max_bytes`] sets another: about
/// 2,500 entries of a small Rust plugin (0.4 MB compiled), 30 of the Python one (36 MB).
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// A temporary file older than this is a dead writer's: writing an entry takes seconds.
pub const STALE_TEMPORARY: Duration = Duration::from_secs(60 * 60);

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

/// How many entries, and how many bytes: what the cache holds, or what was removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSize {
    pub entries: usize,
    pub bytes: u64,
}

/// Precompiled components under one directory.
#[derive(Debug, Clone)]
pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
}

impl CompileCache {
    /// A cache in `dir` capped at [`DEFAULT_MAX_BYTES`].
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CompileCache { dir: dir.into(), max_bytes: DEFAULT_MAX_BYTES }
    }

    /// Caps the entries at `bytes` in all; the least recently used go first. The entry
    /// just stored is kept even when it alone is larger.
    pub fn with_max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
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
                        Ok(component) => {
                            // Used now: the last entry the size cap evicts. A read-only
                            // cache cannot record it, and need not: nothing is stored there.
                            let _ = touch(&path);
                            return Ok((component, CacheOutcome::Hit));
                        }
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
            Ok(()) => {
                // The cache grew: the one time it may have gone over its cap.
                if let Err(error) = prune(&self.dir, self.max_bytes, Some(&path), SystemTime::now()) {
                    tracing::warn!("cannot prune the compile cache {}: {error}", self.dir.display());
                }
                found
            }
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

impl CompileCache {
    /// What the cache holds now (an absent directory holds nothing).
    pub fn size(&self) -> std::io::Result<CacheSize> {
        let scan = scan(&self.dir)?;
        Ok(CacheSize { entries: scan.entries.len(), bytes: scan.entries.iter().map(|e| e.bytes).sum() })
    }

    /// Removes the least recently used entries until the rest fit the cap, and stale
    /// temporary files; returns what was removed. A store does this by itself.
    pub fn prune(&self) -> std::io::Result<CacheSize> {
        prune(&self.dir, self.max_bytes, None, SystemTime::now())
    }

    /// Removes every entry (and stale temporary files; a live writer's are left to it).
    pub fn clear(&self) -> std::io::Result<CacheSize> {
        prune(&self.dir, 0, None, SystemTime::now())
    }
}

/// One file of the cache directory.
struct Found {
    path: PathBuf,
    bytes: u64,
    modified: SystemTime,
}

/// The entries and temporary files in `dir`.
struct Scan {
    entries: Vec<Found>,
    temporaries: Vec<Found>,
}

fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut scan = Scan { entries: Vec::new(), temporaries: Vec::new() };
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(scan),
        Err(error) => return Err(error),
    };
    for item in listing {
        let item = item?;
        let path = item.path();
        let name = item.file_name();
        let name = name.to_string_lossy();
        let is_entry = path.extension().is_some_and(|e| e == ENTRY_EXTENSION) && !name.starts_with('.');
        let is_temporary = name.starts_with('.') && name.ends_with(".tmp");
        if !is_entry && !is_temporary {
            continue;
        }
        // Gone since the listing (another process pruned it): nothing to count.
        let Ok(metadata) = item.metadata() else { continue };
        if !metadata.is_file() {
            continue;
        }
        let found = Found { path, bytes: metadata.len(), modified: metadata.modified()? };
        if is_entry {
            scan.entries.push(found);
        } else {
            scan.temporaries.push(found);
        }
    }
    Ok(scan)
}

/// Removes temporary files older than [`STALE_TEMPORARY`], then entries, least recently
/// used first, until the rest are at most `max_bytes`; `keep` (the entry just stored) is
/// never removed. Returns what was removed. Files another process removed first are
/// skipped: racing prunes are harmless.
fn prune(dir: &Path, max_bytes: u64, keep: Option<&Path>, now: SystemTime) -> std::io::Result<CacheSize> {
    let Scan { mut entries, temporaries } = scan(dir)?;
    let mut removed = CacheSize::default();
    for temporary in temporaries {
        // A clock step back makes the age an error: keep the file, it is not known to be old.
        let stale = now.duration_since(temporary.modified).is_ok_and(|age| age > STALE_TEMPORARY);
        if stale && remove(&temporary.path)? {
            removed.bytes += temporary.bytes;
        }
    }
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    entries.sort_by_key(|e| e.modified);
    for entry in entries {
        if total <= max_bytes {
            break;
        }
        if keep == Some(entry.path.as_path()) {
            continue;
        }
        if remove(&entry.path)? {
            removed.entries += 1;
            removed.bytes += entry.bytes;
        }
        total -= entry.bytes;
    }
    if removed != CacheSize::default() {
        tracing::debug!("compile cache {}: removed {} entries, {} bytes", dir.display(), removed.entries, removed.bytes);
    }
    Ok(removed)
}

/// `Ok(false)` when the file was already gone.
fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Sets `path`'s modification time to now: the cache's record of its last use.
fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::File::options().write(true).open(path)?.set_modified(SystemTime::now())
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

    /// A component that differs from another `n`'s by its exported constant.
    fn component(n: u32) -> Vec<u8> {
        format!(
            r#"(component
                (core module $m (func (export "f") (result i32) i32.const {n}))
                (core instance $i (instantiate $m))
                (func (export "f") (result u32) (canon lift (core func $i "f")))
            )"#
        )
        .into_bytes()
    }

    fn set_age(path: &Path, age: Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    fn file_size(path: &Path) -> u64 {
        std::fs::metadata(path).unwrap().len()
    }

    #[test]
    fn the_cap_evicts_the_least_recently_used_entries() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let unbounded = CompileCache::new(dir.path());
        let paths: Vec<PathBuf> = (0..4).map(|n| unbounded.entry_path(&engine, &component(n))).collect();
        // Stored one after another, a minute apart; the first was used (a hit) last.
        for n in 0..3 {
            assert_eq!(unbounded.load(&engine, &component(n)).unwrap().1, CacheOutcome::Miss);
            set_age(&paths[n as usize], Duration::from_secs(600 - 60 * n as u64));
        }
        assert_eq!(unbounded.load(&engine, &component(0)).unwrap().1, CacheOutcome::Hit);
        let sizes: Vec<u64> = paths[..3].iter().map(|p| file_size(p)).collect();

        // Room for three entries of about this size: storing a fourth evicts one, the
        // least recently used (the second stored), not the oldest stored (the first).
        let cap = sizes.iter().sum::<u64>() + sizes[0] / 2;
        let capped = CompileCache::new(dir.path()).with_max_bytes(cap);
        assert_eq!(capped.load(&engine, &component(3)).unwrap().1, CacheOutcome::Miss);
        let present: Vec<bool> = paths.iter().map(|p| p.exists()).collect();
        assert_eq!(present, [true, false, true, true]);
        assert!(capped.size().unwrap().bytes <= cap);

        // A cap below one entry keeps only the entry just stored: it is about to be used.
        let tiny = CompileCache::new(dir.path()).with_max_bytes(1);
        assert_eq!(tiny.load(&engine, &component(1)).unwrap().1, CacheOutcome::Miss);
        assert_eq!(tiny.size().unwrap().entries, 1);
        assert!(paths[1].exists());
        // And what was evicted compiles again, whole.
        assert_eq!(tiny.load(&engine, &component(0)).unwrap().1, CacheOutcome::Miss);
        assert_eq!(tiny.load(&engine, &component(0)).unwrap().1, CacheOutcome::Hit);
    }

    #[test]
    fn a_live_writer_s_temporary_file_is_left_and_a_dead_one_s_removed() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = dir.path().join(".4242.0.tmp");
        let stale = dir.path().join(".4343.7.tmp");
        let foreign = dir.path().join("notes.txt");
        for path in [&fresh, &stale, &foreign] {
            std::fs::write(path, b"half an entry").unwrap();
        }
        set_age(&stale, STALE_TEMPORARY + Duration::from_secs(60));
        set_age(&foreign, Duration::from_secs(30 * 24 * 3600));
        let engine = Engine::default();
        let cache = CompileCache::new(dir.path());
        // Any store prunes: the stale file goes, the fresh one may be a write in progress.
        assert_eq!(cache.load(&engine, &component(1)).unwrap().1, CacheOutcome::Miss);
        assert!(fresh.exists(), "a live writer's file was removed");
        assert!(!stale.exists(), "a dead writer's file was left");
        assert!(foreign.exists(), "a file that is not the cache's was removed");
        assert_eq!(cache.size().unwrap().entries, 1, "temporary files are not entries");

        // Clearing removes every entry, and still leaves the live writer's file.
        let cleared = cache.clear().unwrap();
        assert_eq!(cleared.entries, 1);
        assert_eq!(cache.size().unwrap(), CacheSize::default());
        assert!(fresh.exists() && foreign.exists());
        // An absent directory holds nothing and prunes to nothing.
        let absent = CompileCache::new(dir.path().join("absent"));
        assert_eq!(absent.size().unwrap(), CacheSize::default());
        assert_eq!(absent.prune().unwrap(), CacheSize::default());
    }
}
