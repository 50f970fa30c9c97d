//! The image capabilities end to end through the probe plugin: requests refused by
//! policy or the catalog before anything is downloaded, bad image bytes, and (with the
//! tiny checkpoints of tests/support/tiny_{sd35,flux,clip,llava}.rs served by a local
//! hub) generation, CLIP scoring and LLaVA answers through a real wasm plugin.

mod support;

use lantern::{Policy, Stdio};
use support::{guest, json};

const SD35: &str = "stabilityai/stable-diffusion-3.5-large-turbo";
const FLUX: &str = "black-forest-labs/FLUX.1-schnell";
const CLIP: &str = "openai/clip-vit-base-patch32";
const LLAVA: &str = "llava-hf/llava-1.5-7b-hf";

struct World {
    host: lantern::Host,
    plugin: lantern::Plugin,
    mirror: hubmirror::Mirror,
    _cache: tempfile::TempDir,
}

/// A host pointed at a hub that serves nothing: every request here must be refused
/// before a download is attempted.
async fn empty_world() -> World {
    let unrelated = tempfile::tempdir().unwrap();
    std::fs::write(unrelated.path().join("README.md"), "not a model").unwrap();
    let mirror = support::mirror_of("nobody/nothing", unrelated.path(), hubmirror::Faults::default()).await;
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    World { host, plugin, mirror, _cache: cache }
}

impl World {
    async fn probe(&self, policy: Policy, args: &[&str]) -> serde_json::Value {
        let args = args.iter().map(|s| s.to_string()).collect();
        let output = self.host.run(&self.plugin, policy, args, Stdio::Capture).await.unwrap();
        json(&output.result)
    }
}

fn error_kind(answer: &serde_json::Value) -> &str {
    answer["error"].as_str().or_else(|| answer["failed"]["error"].as_str()).unwrap_or_else(|| panic!("no error in {answer}"))
}

#[tokio::test]
async fn image_requests_outside_policy_are_refused_before_any_download() {
    let world = empty_world().await;
    let all = || Policy::default().allow_any_model();

    let answer = world.probe(Policy::default(), &["image", SD35, "a red cat"]).await;
    assert_eq!(error_kind(&answer), "model-not-allowed", "{answer}");

    let small = Policy { max_image_side: 512, max_image_steps: 8, ..all() };
    let answer = world.probe(small.clone(), &["image", FLUX, "a red cat", "--width", "1024", "--height", "512"]).await;
    assert_eq!(error_kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--max-image-side"), "{answer}");
    let answer = world.probe(small, &["image", FLUX, "a red cat", "--width", "64", "--height", "64", "--steps", "9"]).await;
    assert_eq!(error_kind(&answer), "limit-exceeded", "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("--max-image-steps"), "{answer}");

    // A text model asked for an image, an image model asked for vectors: the catalog says no.
    let answer = world.probe(all(), &["image", support::MINILM, "a red cat"]).await;
    assert_eq!(error_kind(&answer), "model-not-supported", "{answer}");
    let answer = world.probe(all(), &["clip-texts", SD35, "a red cat"]).await;
    assert_eq!(error_kind(&answer), "model-not-supported", "{answer}");

    let too_many = Policy { max_images_per_call: 2, ..all() };
    let answer = world.probe(too_many, &["clip-images", CLIP, "hex:00", "hex:00", "hex:00"]).await;
    assert_eq!(error_kind(&answer), "limit-exceeded", "{answer}");

    assert_eq!(world.mirror.stats().requests(), 0, "nothing may be downloaded for a refused request");
}

#[tokio::test]
async fn bad_image_bytes_are_invalid_input_before_any_download() {
    let world = empty_world().await;
    let all = || Policy::default().allow_any_model();
    // Not an image; a PNG signature with nothing after it; a GIF (not accepted).
    for bytes in ["hex:68656c6c6f", "hex:89504e470d0a1a0a", "hex:474946383961"] {
        let answer = world.probe(all(), &["clip-images", CLIP, bytes]).await;
        assert_eq!(error_kind(&answer), "invalid-input", "{bytes}: {answer}");
        let answer = world.probe(all(), &["ask", LLAVA, bytes, "What is this?"]).await;
        assert_eq!(error_kind(&answer), "invalid-input", "{bytes}: {answer}");
    }
    let big = Policy { max_image_bytes: 4, ..all() };
    let answer = world.probe(big, &["clip-images", CLIP, "hex:89504e470d0a1a0a"]).await;
    assert_eq!(error_kind(&answer), "limit-exceeded", "{answer}");
    assert_eq!(world.mirror.stats().requests(), 0, "nothing may be downloaded for a refused request");
}
