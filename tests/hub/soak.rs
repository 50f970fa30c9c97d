//! The fault soak: several users pull a repo of many small regular files and big LFS files
//! (in many ranges) at once from a hub that fails 30 % of requests at random, every way a
//! link or hub fails. Every file must end verified in the cache or with a typed error, and
//! the cache must hold no byte that does not match its name, in the layout huggingface_hub
//! reads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hubmirror::{Faults, RandomFaults};
use lantern::hub::{Hub, HubError, RepoRef};
use sha1::Digest as _;

use super::support::{mirror_of, quick_hub_config, random_bytes};
use super::REPO;

const SMALL_FILES: usize = 48;
const BIG_FILES: usize = 8;
const USERS: usize = 4;
/// Every one of them must be injected at least once, and this many in all.
const FAULT_KINDS: [&str; 6] = ["reset", "5xx", "429", "truncated", "flipped byte", "stall"];
const LEAST_FAULTS: u64 = 200;

/// Text that is not binary (no NUL), so the Hub keeps it as a regular git file.
fn text(len: usize, seed: u64) -> Vec<u8> {
    random_bytes(len, seed).into_iter().map(|b| b' ' + b % 95).collect()
}

/// The repo: small regular files (configs, tokenizers, docs) and big LFS weights.
fn write_repo(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for index in 0..SMALL_FILES {
        let name = match index % 3 {
            0 => format!("configs/config-{index}.json"),
            1 => format!("tokenizer-{index}.txt"),
            _ => format!("docs/README-{index}.md"),
        };
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text(300 + index * 2_500, index as u64)).unwrap();
        files.push(name);
    }
    for index in 0..BIG_FILES {
        let name = format!("weights/model-{index}.safetensors");
        let path = dir.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, random_bytes((3 << 20) + index * 300_000, 1000 + index as u64)).unwrap();
        files.push(name);
    }
    files
}

/// The digest a blob's name says it has, computed from its bytes.
fn digest_like_its_name(blob: &Path) -> String {
    let name = blob.file_name().unwrap().to_string_lossy().into_owned();
    let bytes = std::fs::read(blob).unwrap();
    match name.len() {
        64 => {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        }
        40 => {
            let mut hasher = sha1::Sha1::new();
            hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
            hasher.update(&bytes);
            hex::encode(hasher.finalize())
        }
        _ => panic!("{}: a blob named by neither a sha256 nor a git blob id", blob.display()),
    }
}

/// Checks one user's cache: every blob's bytes match its name; nothing but blobs and the
/// leftovers of failed files (partial file, resume sidecar) in blobs/; the snapshot of
/// the commit links each fetched file to its blob with a relative link; refs/main names
/// the commit. Returns the number of blobs checked.
fn check_cache(cache: &Path, commit: &str, fetched: &BTreeMap<String, String>, failed_etags: &[String]) -> usize {
    let root = cache.join("models--test-org--test-model");
    let blobs = root.join("blobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&blobs).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let path = blobs.join(&name);
        if let Some(blob) = name.strip_suffix(".unsynced") {
            assert!(blobs.join(blob).exists(), "a sync marker without its blob: {name}");
            continue;
        }
        if let Some(etag) = name.strip_suffix(".incomplete").or_else(|| name.strip_suffix(".incomplete.parts")) {
            assert!(failed_etags.iter().any(|e| e == etag), "a partial download of a file that completed: {name}");
            continue;
        }
        assert!(!name.ends_with(".lock") && !name.contains(".tmp"), "left behind: {name}");
        assert_eq!(digest_like_its_name(&path), name, "a corrupt blob in the cache");
        checked += 1;
    }
    assert_eq!(std::fs::read_to_string(root.join("refs/main")).unwrap(), commit);
    for (file, etag) in fetched {
        let link = root.join("snapshots").join(commit).join(file);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{file}: not a link ({e})"));
        assert!(target.is_relative(), "{file}: links to {}", target.display());
        assert_eq!(std::fs::canonicalize(&link).unwrap(), std::fs::canonicalize(blobs.join(etag)).unwrap(), "{file}");
    }
    checked
}

/// One user's pull: the listing, then every file fetched at once, each on its own, so
/// that one file's failure does not hide the others' outcomes.
async fn pull(hub: Hub, files: Vec<String>) -> Vec<(String, Result<PathBuf, HubError>)> {
    let fetches = files.into_iter().map(|file| {
        let hub = hub.clone();
        async move {
            let fetched = hub.fetch(&RepoRef::main(REPO), std::slice::from_ref(&file), None).await;
            let path = fetched.map(|model| model.path(&file).unwrap().to_path_buf());
            (file, path)
        }
    });
    futures::future::join_all(fetches).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_soak_leaves_every_file_verified_or_a_typed_error_and_no_corrupt_byte_in_the_cache() {
    let source = tempfile::tempdir().unwrap();
    let files = write_repo(source.path());
    let random = RandomFaults { rate: 0.3, seed: 0x50a4, stall: Duration::from_secs(1), retry_after_secs: 1 };
    let mirror = mirror_of(REPO, source.path(), Faults { random: Some(random), ..Faults::default() }).await;
    let served = mirror.repo(REPO).unwrap().clone();
    assert!(served.files.values().filter(|f| f.lfs).count() == BIG_FILES, "the big files are LFS files");

    let caches: Vec<tempfile::TempDir> = (0..USERS).map(|_| tempfile::tempdir().unwrap()).collect();
    let pulls = caches.iter().map(|cache| {
        // Small ranges, so the big files come in many of them (and many faults hit ranges).
        let config = lantern::HubConfig {
            parallel_threshold: 1 << 20,
            min_part_size: 256 << 10,
            ..quick_hub_config(&mirror.endpoint(), cache.path())
        };
        let hub = Hub::new(config).unwrap();
        let files = files.clone();
        async move {
            let listed = hub.list_files(&RepoRef::main(REPO)).await.unwrap();
            assert_eq!(listed.len(), files.len());
            let outcomes = pull(hub.clone(), listed).await;
            hub.wait_until_synced().await;
            outcomes
        }
    });
    let started = std::time::Instant::now();
    let outcomes = futures::future::join_all(pulls).await;
    let elapsed = started.elapsed();

    let stats = mirror.stats();
    let injected = stats.injected_faults();
    let total_injected = stats.total_injected_faults();
    let (mut verified, mut failed, mut blobs) = (0, Vec::new(), 0);
    for (cache, outcome) in caches.iter().zip(outcomes) {
        let mut fetched = BTreeMap::new();
        let mut failed_etags = Vec::new();
        for (file, result) in outcome {
            let served_file = &served.files[&file];
            match result {
                Ok(path) => {
                    let bytes = std::fs::read(&path).unwrap();
                    assert!(bytes == std::fs::read(source.path().join(&file)).unwrap(), "{file}: wrong bytes");
                    fetched.insert(file, served_file.etag().to_string());
                    verified += 1;
                }
                Err(error) => {
                    // Typed by construction; it must say why, and name the tries.
                    assert!(
                        matches!(&error, HubError::Verification { attempts, .. } if *attempts >= 2)
                            || error.to_string().contains("gave up after"),
                        "{file}: {error}"
                    );
                    failed_etags.push(served_file.etag().to_string());
                    failed.push(format!("{file}: {error}"));
                }
            }
        }
        blobs += check_cache(cache.path(), &served.commit, &fetched, &failed_etags);
    }
    eprintln!(
        "fault soak: {USERS} users x {} files in {:.1} s; {} requests, {total_injected} faults injected {injected:?}; \
         {verified} files verified, {} typed errors, {blobs} blobs re-hashed, 0 corrupt",
        files.len(),
        elapsed.as_secs_f64(),
        stats.requests(),
        failed.len(),
    );
    for failure in &failed {
        eprintln!("  typed error: {failure}");
    }
    assert!(total_injected >= LEAST_FAULTS, "only {total_injected} faults were injected: {injected:?}");
    for kind in FAULT_KINDS {
        assert!(injected.get(kind).is_some_and(|n| *n > 0), "no {kind} fault was injected: {injected:?}");
    }
    // A file gives up only after its retries ran out with no progress, which at a 30 %
    // fault rate is rare; most of a pull must come through.
    let all = USERS * files.len();
    assert!(failed.len() * 20 <= all, "{} of {all} files failed: {failed:#?}", failed.len());
    assert_eq!(verified + failed.len(), all);
}
