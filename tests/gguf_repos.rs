//! GGUF repos that hold one model in many quantisations, by their real ids: `KEY:TAG`
//! picks the file (or every part of a split file) from the repo's listing, the parts
//! download together and load as one model. The weights are a TINY RANDOM CHECKPOINT
//! (tests/support/tiny_gguf.rs, qwen3moe layout) written under unsloth's file names;
//! the split parts are made as llama.cpp's gguf-split makes them.

mod support;
#[path = "support/gguf_split.rs"]
mod gguf_split;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::net::SocketAddr;

use lantern::{Policy, Stdio};
use serde_json::Value;
use support::{guest, json};
use tiny_gguf::{Arch, Spec};

const REPO: &str = "unsloth/Qwen3-Coder-30B-A3B-Instruct-GGUF";
const STEM: &str = "Qwen3-Coder-30B-A3B-Instruct";

fn spec(seed: u64) -> Spec {
    Spec::qwen(Arch::Qwen3Moe, seed)
}

struct World {
    host: lantern::Host,
    plugin: lantern::Plugin,
    mirror: hubmirror::Mirror,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// The repo: Q4_K_M split in three parts (seed 1), Q8_0 as one file (seed 2), a UD-
/// variant of Q4_K_M as one file (seed 3, must not be picked for `Q4_K_M`), a README.
async fn world() -> World {
    let files = tempfile::tempdir().unwrap();
    let repo = files.path().join("repo");
    std::fs::create_dir_all(repo.join("Q4_K_M")).unwrap();
    let whole = files.path().join("whole.gguf");
    tiny_gguf::write(&spec(1), &whole);
    gguf_split::split(&whole, 3, &repo.join("Q4_K_M"), &format!("{STEM}-Q4_K_M"));
    tiny_gguf::write(&spec(2), &repo.join(format!("{STEM}-Q8_0.gguf")));
    tiny_gguf::write(&spec(3), &repo.join(format!("{STEM}-UD-Q4_K_M.gguf")));
    std::fs::write(repo.join("README.md"), "tiny test repo").unwrap();
    // The unsplit Q4_K_M file under a key of its own, to compare answers with.
    let single = files.path().join("single");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::rename(&whole, single.join("model.gguf")).unwrap();
    let mirror = hubmirror::Mirror::builder()
        .repo(REPO, &repo)
        .repo("test/unsplit", &single)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut catalog = lantern::Catalog::builtin();
    catalog.insert(lantern::CatalogEntry {
        key: "test/unsplit".into(),
        repo: lantern::hub::RepoRef::main("test/unsplit"),
        family: lantern::Family::GgufLlm,
        capabilities: vec![lantern::Capability::TextGeneration],
        files: vec!["model.gguf".into()],
        other_repos: Vec::new(),
        gguf_quant: None,
        description: "the Q4_K_M test checkpoint, unsplit".into(),
    });
    let host = lantern::Host::builder()
        .hub_config(support::hub_config(&mirror.endpoint(), cache.path()))
        .catalog(catalog)
        .build()
        .unwrap();
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    World { host, plugin, mirror, _dirs: (files, cache) }
}

impl World {
    async fn generate(&self, policy: Policy, model: &str) -> Value {
        let args = ["generate", model, "Hello there", "--max", "8"].map(String::from).to_vec();
        let output = self.host.run(&self.plugin, policy, args, Stdio::Capture).await.unwrap();
        json(&output.result)
    }
}

#[tokio::test]
async fn a_quantisation_tag_picks_its_files_and_split_parts_load_as_one_model() {
    let world = world().await;
    let reference = world.generate(Policy::default().allow_model("test/unsplit"), "test/unsplit").await;
    assert!(!reference["text"].as_str().unwrap_or_default().is_empty(), "{reference}");

    // The default tag (Q4_K_M) is the split file: three parts, loaded as one model.
    let answer = world.generate(Policy::default().allow_model(REPO), REPO).await;
    assert_eq!(answer["text"], reference["text"], "split parts must answer as the whole file: {answer}");
    for part in 1..=3 {
        let file = format!("Q4_K_M/{STEM}-Q4_K_M-{part:05}-of-00003.gguf");
        assert_eq!(world.mirror.stats().file_requests(REPO, &file), 1, "{file} downloaded once");
    }
    assert_eq!(world.mirror.stats().file_requests(REPO, &format!("{STEM}-UD-Q4_K_M.gguf")), 0, "UD- variant not picked");
    assert_eq!(world.mirror.stats().file_requests(REPO, &format!("{STEM}-Q8_0.gguf")), 0);

    // An explicit tag, allowed by allowing the repo's key.
    let q8 = world.generate(Policy::default().allow_model(REPO), &format!("{REPO}:Q8_0")).await;
    assert!(q8["text"].is_string(), "{q8}");
    assert_ne!(q8["text"], reference["text"], "Q8_0 is another checkpoint here");
    assert_eq!(world.mirror.stats().file_requests(REPO, &format!("{STEM}-Q8_0.gguf")), 1);

    // Allowing one quantisation does not allow another.
    let refused = world.generate(Policy::default().allow_model(format!("{REPO}:Q4_K_M")), &format!("{REPO}:Q8_0")).await;
    assert_eq!(refused["error"], "model-not-allowed", "{refused}");

    // A tag the repo lacks names the ones it has.
    let missing = world.generate(Policy::default().allow_model(REPO), &format!("{REPO}:Q2_K")).await;
    assert_eq!(missing["error"], "model-not-supported", "{missing}");
    let message = missing["message"].as_str().unwrap();
    assert!(message.contains("Q8_0") && message.contains("Q4_K_M"), "{message}");
}
