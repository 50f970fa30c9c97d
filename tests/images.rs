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
    // A truncated PNG, a truncated JPEG, and a decompression bomb (a 1x1 PNG whose header
    // claims 60000x60000 pixels): refused from the bytes, nothing allocated for them.
    let picture = support::tiny_clip::test_image(40, 30);
    let mut png = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let mut jpeg = Vec::new();
    picture.write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg).unwrap();
    let mut bomb = Vec::new();
    image::RgbImage::new(1, 1).write_to(&mut std::io::Cursor::new(&mut bomb), image::ImageFormat::Png).unwrap();
    bomb[16..20].copy_from_slice(&60000u32.to_be_bytes());
    bomb[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let hex = |bytes: &[u8]| format!("hex:{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    for (name, bytes) in [("truncated PNG", &png[..png.len() / 2]), ("truncated JPEG", &jpeg[..jpeg.len() / 2]), ("bomb", &bomb[..])] {
        let answer = world.probe(all(), &["clip-images", CLIP, &hex(bytes)]).await;
        let kind = error_kind(&answer);
        assert!(kind == "invalid-input" || kind == "limit-exceeded", "{name}: {answer}");
    }
    let big = Policy { max_image_bytes: 4, ..all() };
    let answer = world.probe(big, &["clip-images", CLIP, "hex:89504e470d0a1a0a"]).await;
    assert_eq!(error_kind(&answer), "limit-exceeded", "{answer}");
    assert_eq!(world.mirror.stats().requests(), 0, "nothing may be downloaded for a refused request");
}

/// A host serving one tiny text-to-image family (SD 3.5 and FLUX each bring their own
/// tiny T5 and CLIP-L repos, so each gets a hub of its own).
async fn diffusion_world(write: fn(&std::path::Path) -> Vec<(&'static str, std::path::PathBuf)>) -> (World, tempfile::TempDir) {
    let repos = tempfile::tempdir().unwrap();
    let mut builder = hubmirror::Mirror::builder();
    for (repo, dir) in write(repos.path()) {
        builder = builder.repo(repo, dir);
    }
    let mirror = builder.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    let host = support::host(&mirror.endpoint(), cache.path());
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    (World { host, plugin, mirror, _cache: cache }, repos)
}

fn png_of(answer: &serde_json::Value) -> Vec<u8> {
    let hex = answer["png"].as_str().unwrap_or_else(|| panic!("no image in {answer}"));
    (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()).collect()
}

#[tokio::test]
async fn sd35_generates_through_a_plugin_reproducibly_with_steps() {
    let (world, _repos) = diffusion_world(support::tiny_sd35::write).await;
    let allow = || Policy::default().allow_model(SD35);
    let args = ["image", SD35, "a red cat", "--width", "64", "--height", "64", "--seed", "42"];
    let first = world.probe(allow(), &args).await;
    assert_eq!(first["steps"], serde_json::json!([[1, 4], [2, 4], [3, 4], [4, 4]]), "{first}");
    assert_eq!((first["width"].as_u64(), first["height"].as_u64(), first["seed"].as_u64()), (Some(64), Some(64), Some(42)));
    let png = png_of(&first);
    let decoded = lantern::image_codec::decode(&png, Default::default()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));

    // Another host with its own cache: the same bytes.
    let (other, _other_repos) = diffusion_world(support::tiny_sd35::write).await;
    assert_eq!(png_of(&other.probe(allow(), &args).await), png, "same seed, prompt and size must give the same PNG");
    let different = world.probe(allow(), &["image", SD35, "a red cat", "--width", "64", "--height", "64", "--seed", "43"]).await;
    assert_ne!(png_of(&different), png);

    // No seed: the host picks one and reports it; asking for it again reproduces the image.
    let chosen = world.probe(allow(), &["image", SD35, "a red cat", "--width", "64", "--height", "64", "--steps", "2"]).await;
    let seed = chosen["seed"].as_u64().unwrap().to_string();
    let again = world.probe(allow(), &["image", SD35, "a red cat", "--width", "64", "--height", "64", "--steps", "2", "--seed", &seed]).await;
    assert_eq!(png_of(&again), png_of(&chosen));

    // What the model itself refuses: sizes, steps, long prompts in strict mode.
    for bad in [
        vec!["--width", "72", "--height", "64"],
        vec!["--width", "64", "--height", "32"],
        vec!["--width", "64", "--height", "64", "--steps", "0"],
    ] {
        let mut args = vec!["image", SD35, "a red cat"];
        args.extend(bad.iter().copied());
        let answer = world.probe(allow(), &args).await;
        assert_eq!(error_kind(&answer), "invalid-input", "{bad:?}: {answer}");
    }
    let empty = world.probe(allow(), &["image", SD35, "  ", "--width", "64", "--height", "64"]).await;
    assert_eq!(error_kind(&empty), "invalid-input", "{empty}");
    let long = "a red cat ".repeat(40);
    let strict = world.probe(allow(), &["image", SD35, &long, "--width", "64", "--height", "64", "--strict"]).await;
    assert_eq!(error_kind(&strict), "invalid-input", "{strict}");
    let cut = world.probe(allow(), &["image", SD35, &long, "--width", "64", "--height", "64", "--steps", "1"]).await;
    assert!(cut["truncated_tokens"].as_u64().unwrap() > 0, "{cut}");
}

#[tokio::test]
async fn dropping_an_image_generation_stops_the_work() {
    let repos = tempfile::tempdir().unwrap();
    let mut builder = hubmirror::Mirror::builder();
    for (repo, dir) in support::tiny_sd35::write(repos.path()) {
        builder = builder.repo(repo, dir);
    }
    let mirror = builder.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let cache = tempfile::tempdir().unwrap();
    // The host's observer counts the denoising steps that actually ran.
    let steps = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = steps.clone();
    let observer: lantern::registry::ActivityObserver = std::sync::Arc::new(move |activity| {
        if let lantern::Activity::ImageStep { .. } = activity {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let host = lantern::Host::builder()
        .hub_config(support::hub_config(&mirror.endpoint(), cache.path()))
        .observer(observer)
        .build()
        .unwrap();
    let plugin = host.load_plugin(&guest("probe")).unwrap();
    let args = ["image-drop", SD35, "a red cat", "1", "--width", "128", "--height", "128", "--steps", "50"];
    let output = host.run(&plugin, Policy::default().allow_model(SD35), args.map(String::from).to_vec(), Stdio::Capture).await.unwrap();
    assert_eq!(json(&output.result)["dropped"], true);
    // The worker sees the dropped stream at its next step and ends, far short of 50 steps.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while host.registry().active_generations() > 0 {
        assert!(std::time::Instant::now() < deadline, "the generation went on after its stream was dropped");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let ran = steps.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=20).contains(&ran), "{ran} of 50 steps ran after the plugin dropped the generation at step 1");
}

/// Generation runs on worker threads: on a one-thread runtime, a 10 ms ticker keeps
/// ticking while a plugin waits for an image.
#[tokio::test(flavor = "current_thread")]
async fn the_runtime_keeps_ticking_while_an_image_is_generated() {
    let (world, _repos) = diffusion_world(support::tiny_sd35::write).await;
    // Download and load first, so that what is timed is the generation itself.
    world.probe(Policy::default().allow_model(SD35), &["prepare", SD35]).await;
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Generate until at least 300 ms have passed, so that a fast machine still gives the
    // ticker time enough to show whether the runtime was free.
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_millis(300) {
        let args = ["image", SD35, "a red cat", "--width", "128", "--height", "128", "--steps", "12"];
        let answer = world.probe(Policy::default().allow_model(SD35), &args).await;
        assert!(answer["png"].is_string(), "{answer}");
    }
    let elapsed = started.elapsed();
    ticker.abort();
    let ticks = ticks.load(std::sync::atomic::Ordering::Relaxed);
    let expected = elapsed.as_millis() as u64 / 10;
    assert!(ticks * 3 >= expected, "{ticks} ticks in {elapsed:?}: the runtime was blocked");
}

#[tokio::test]
async fn flux_downloads_its_seven_files_and_generates_through_a_plugin() {
    let (world, _repos) = diffusion_world(support::tiny_flux::write).await;
    let allow = || Policy::default().allow_model(FLUX);
    let prepared = world.probe(allow(), &["prepare", FLUX]).await;
    let events = prepared["events"].as_array().unwrap_or_else(|| panic!("{prepared}"));
    let last_download = events.iter().rev().find_map(|e| e.get("downloading")).unwrap_or_else(|| panic!("{prepared}"));
    assert_eq!(last_download["files_total"], 7, "{prepared}");
    assert_eq!(events.last().unwrap(), "ready", "{prepared}");
    let answer = world.probe(allow(), &["image", FLUX, "a red cat", "--width", "64", "--height", "64", "--seed", "1"]).await;
    assert_eq!(answer["steps"].as_array().map(Vec::len), Some(4), "{answer}");
    let png = png_of(&answer);
    assert_eq!(lantern::image_codec::decode(&png, Default::default()).unwrap().width(), 64);
    let refused = world.probe(allow(), &["image", FLUX, "a red cat", "--width", "64", "--height", "64", "--negative", "dogs"]).await;
    assert_eq!(error_kind(&refused), "invalid-input", "FLUX schnell takes no negative prompt: {refused}");
}

/// SD 3.5, both CLIPs and LLaVA on one hub (their tiny repos do not overlap): what the
/// image-workflow plugin needs.
fn write_workflow_repos(root: &std::path::Path) -> Vec<(&'static str, std::path::PathBuf)> {
    let mut repos = support::tiny_sd35::write(&root.join("sd"));
    repos.extend(support::tiny_clip::all(&root.join("clip")));
    repos.push(support::tiny_llava::llava(&root.join("llava")));
    repos
}

fn png_file(dir: &std::path::Path, width: u32, height: u32) -> std::path::PathBuf {
    let image = support::tiny_clip::test_image(width, height);
    let path = dir.join(format!("picture-{width}x{height}.png"));
    image.save(&path).unwrap();
    path
}

#[tokio::test]
async fn clip_and_llava_answer_through_a_plugin() {
    let (world, _repos) = diffusion_world(write_workflow_repos).await;
    let pictures = tempfile::tempdir().unwrap();
    let (wide, tall) = (png_file(pictures.path(), 48, 40), png_file(pictures.path(), 40, 90));
    let grant = || lantern::DirGrant { host_path: pictures.path().into(), guest_path: "/pictures".into(), writable: false };
    let policy = || Policy { dirs: vec![grant()], ..Policy::default().allow_model(CLIP).allow_model(LLAVA) };
    let wide_guest = format!("/pictures/{}", wide.file_name().unwrap().to_str().unwrap());
    let tall_guest = format!("/pictures/{}", tall.file_name().unwrap().to_str().unwrap());

    let images = world.probe(policy(), &["clip-images", CLIP, &wide_guest, &tall_guest]).await;
    let image_vectors = support::vectors(&images);
    let texts = world.probe(policy(), &["clip-texts", CLIP, "a red cat", "the dog"]).await;
    let text_vectors = support::vectors(&texts);
    assert_eq!((image_vectors.len(), text_vectors.len()), (2, 2));
    assert_eq!(image_vectors[0].len(), text_vectors[0].len(), "one space for both towers");
    for vector in image_vectors.iter().chain(&text_vectors) {
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // Through the plugin, the same numbers as the family called directly.
    let model = world.host.registry().image_embedder(CLIP, None).await.unwrap();
    let direct = model.embed_images(&[image::open(&wide).unwrap().to_rgb8()]).unwrap();
    assert!(support::cosine(&direct[0], &image_vectors[0]) > 0.99999);

    let answer = world.probe(policy(), &["ask", LLAVA, &wide_guest, "What is in the picture?", "--max", "6"]).await;
    assert_eq!(answer["finished"]["reason"], "max-tokens", "{answer}");
    assert_eq!(answer["finished"]["generated_tokens"], 6, "{answer}");
    let again = world.probe(policy(), &["ask", LLAVA, &wide_guest, "What is in the picture?", "--max", "6"]).await;
    assert_eq!(again["text"], answer["text"], "greedy answers repeat");
    let empty = world.probe(policy(), &["ask", LLAVA, &wide_guest, "   "]).await;
    assert_eq!(error_kind(&empty), "invalid-input", "{empty}");
}

/// The image-workflow plugin from the CLI, as a user runs it: it writes a PNG a person
/// can open and a JSON report into the granted directory, and the CLI shows the steps.
#[tokio::test]
async fn the_image_workflow_plugin_runs_from_the_cli() {
    let repos = tempfile::tempdir().unwrap();
    let mut builder = hubmirror::Mirror::builder();
    for (repo, dir) in write_workflow_repos(repos.path()) {
        builder = builder.repo(repo, dir);
    }
    let mirror = builder.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let plugin = guest("image_workflow");
    let grant = format!("{}::/out", out.path().display());
    let args = [
        "run", plugin.to_str().unwrap(), "--dir-rw", &grant,
        "--allow-model", SD35, "--allow-model", CLIP, "--allow-model", LLAVA, "--",
        "a red cat on the dog", "--alt", "a bowl of fruit", "--alt", "the sea", "--size", "64", "--seed", "9",
    ];
    let output = support::lantern(&args, &mirror.endpoint(), home.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}\n{}", String::from_utf8_lossy(&output.stdout));
    assert!(stderr.contains(&format!("{SD35}: step 4/4")), "the CLI shows each step: {stderr}");
    let png = std::fs::read(out.path().join("image.png")).unwrap();
    let decoded = lantern::image_codec::decode(&png, Default::default()).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (64, 64));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["seed"], 9, "{report}");
    assert_eq!(report["scores"].as_array().map(Vec::len), Some(3), "{report}");
    assert!(report["scores"][0]["clip_score"].as_f64().is_some_and(|s| (-1.0..=1.0).contains(&s)), "{report}");
    assert!(report["description"].is_string(), "{report}");
}

/// Writes the tiny image repos for scripts/image-demo.sh: `LANTERN_TINY_REPOS=DIR cargo
/// test -p lantern --test images -- --ignored write_tiny_image_repos` prints `repo=folder`
/// lines for hubmirror.
#[test]
#[ignore]
fn write_tiny_image_repos() {
    let root = std::path::PathBuf::from(std::env::var("LANTERN_TINY_REPOS").expect("set LANTERN_TINY_REPOS to a folder"));
    for (repo, dir) in write_workflow_repos(&root) {
        println!("REPO {repo}={}", dir.display());
    }
}
