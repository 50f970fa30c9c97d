//! Keys the catalog does not know, resolved from the repo itself when the policy allows
//! them: a safetensors repo by its `config.json` (real MiniLM weights served under
//! another id), a GGUF repo by its files (a TINY RANDOM GGUF, tests/support/tiny_gguf.rs),
//! and clear refusals for architectures this host does not run.

mod support;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::net::SocketAddr;

use lantern::{Policy, Stdio};
use serde_json::Value;
use support::{guest, json, minilm_dir, vectors, MINILM};

struct World {
    host: lantern::Host,
    plugin: lantern::Plugin,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _mirror: hubmirror::Mirror,
}

async fn world() -> World {
    let files = tempfile::tempdir().unwrap();
    let gguf = files.path().join("gguf");
    std::fs::create_dir_all(&gguf).unwrap();
    let spec = tiny_gguf::Spec { experts: 0, experts_used: 0, ..tiny_gguf::Spec::qwen(tiny_gguf::Arch::Qwen3, 11) };
    tiny_gguf::write(&spec, &gguf.join("tiny-qwen3-Q8_0.gguf"));
    let mamba = files.path().join("mamba");
    std::fs::create_dir_all(&mamba).unwrap();
    std::fs::write(mamba.join("config.json"), r#"{"architectures": ["MambaForCausalLM"], "model_type": "mamba"}"#).unwrap();
    std::fs::write(mamba.join("model.safetensors"), b"not read").unwrap();
    let mirror = hubmirror::Mirror::builder()
        .repo(MINILM, minilm_dir())
        .repo("someone/minilm-copy", minilm_dir())
        .repo("someone/tiny-qwen3-GGUF", &gguf)
        .repo("someone/mamba-130m", &mamba)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    World { host, plugin, _dirs: (files, cache), _mirror: mirror }
}

impl World {
    async fn probe(&self, policy: Policy, args: &[&str]) -> Value {
        let args = args.iter().map(|s| s.to_string()).collect();
        json(&self.host.run(&self.plugin, policy, args, Stdio::Capture).await.unwrap().result)
    }
}

#[tokio::test]
async fn allowed_repos_outside_the_catalog_resolve_by_their_files() {
    let world = world().await;
    let texts = ["The cat sits outside", "Stocks fell"];

    // A sentence-transformers repo under an id the catalog lacks: BERT from config.json.
    let copy = world.probe(Policy::default().allow_model("someone/minilm-copy"), &["embed", "someone/minilm-copy", texts[0], texts[1]]).await;
    let original = world.probe(Policy::default().allow_model(MINILM), &["embed", MINILM, texts[0], texts[1]]).await;
    assert_eq!(vectors(&copy), vectors(&original), "{copy}");

    // A GGUF repo: the architecture comes from inside the file.
    let answer = world.probe(Policy::default().allow_model("someone/tiny-qwen3-GGUF"), &["generate", "someone/tiny-qwen3-GGUF", "Hi", "--max", "4"]).await;
    assert!(!answer["text"].as_str().unwrap_or_default().is_empty(), "{answer}");
    let info = world.probe(Policy::default().allow_model("someone/tiny-qwen3-GGUF"), &["info", "someone/tiny-qwen3-GGUF"]).await;
    assert_eq!(info["family"], "gguf-llm", "{info}");

    // Not allowed: refused before the repo is even looked at.
    let refused = world.probe(Policy::default(), &["embed", "someone/minilm-copy", "x"]).await;
    assert_eq!(refused["error"], "model-not-allowed", "{refused}");

    // An architecture this host does not run is named.
    let mamba = world.probe(Policy::default().allow_model("someone/mamba-130m"), &["generate", "someone/mamba-130m", "Hi"]).await;
    assert_eq!(mamba["error"], "model-not-supported", "{mamba}");
    assert!(mamba["message"].as_str().unwrap().contains("MambaForCausalLM"), "{mamba}");

    // A repo that does not exist.
    let missing = world.probe(Policy::default().allow_model("nobody/nothing"), &["embed", "nobody/nothing", "x"]).await;
    assert_eq!(missing["error"], "model-not-supported", "{missing}");
}
