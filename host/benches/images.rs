//! Image families on the CPU: seconds per denoising step and per image for SD 3.5 Large
//! Turbo and FLUX.1 schnell on their TINY RANDOM checkpoints (tests/support/tiny_*.rs;
//! the numbers show the host's own overhead and scaling, not real-model speed), and CLIP
//! images per second at batch 1 and 16 on the tiny checkpoint and on a random checkpoint
//! of ViT-B/32's REAL sizes, against transformers' CLIPModel on the same files in the same
//! run (when LANTERN_BENCH_PYTHON names a Python with torch and transformers).
//!
//! Run: `LANTERN_BENCH_PYTHON=/path/to/venv/bin/python cargo bench -p lantern --bench images`

// The tiny writers are shared with the tests, which use more of them.
#![allow(dead_code)]

#[path = "../../tests/support/splitmix.rs"]
mod splitmix;
#[path = "../../tests/support/tiny_clip.rs"]
mod tiny_clip;
#[path = "../../tests/support/tiny_flux.rs"]
mod tiny_flux;
#[path = "../../tests/support/tiny_sd35.rs"]
mod tiny_sd35;
#[path = "../../tests/support/tiny_tokenizers.rs"]
mod tiny_tokenizers;

/// A host pointed at `endpoint` with its cache in `cache` (the tiny writers' helpers use it).
fn host(endpoint: &str, cache: &std::path::Path) -> lantern::Host {
    let config = lantern::HubConfig {
        endpoint: endpoint.into(),
        cache_dir: cache.into(),
        token: None,
        offline: false,
        ..lantern::HubConfig::from_env()
    };
    lantern::Host::builder().hub_config(config).build().unwrap()
}

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lantern::capabilities::{ImageGenerator, ImageOptions, ImageRequest};

type Writer = fn(&Path) -> Vec<(&'static str, PathBuf)>;

/// Loads `key` through the registry from a local hub serving what `write` makes.
async fn generator(key: &str, write: Writer, dirs: &Path) -> std::sync::Arc<dyn ImageGenerator> {
    let mut builder = hubmirror::Mirror::builder();
    for (repo, dir) in write(&dirs.join("repos")) {
        builder = builder.repo(repo, dir);
    }
    let mirror = builder.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let host = host(&mirror.endpoint(), &dirs.join("cache"));
    host.registry().image_generator(key, None).await.unwrap()
}

/// Median seconds per step and per image of three generations.
fn time_generation(model: &dyn ImageGenerator, side: u32, steps: u32) -> (f64, f64) {
    let options = ImageOptions { width: Some(side), height: Some(side), steps: Some(steps), seed: Some(1), ..Default::default() };
    let request = ImageRequest::resolve("a red cat on the dog", &options, &model.limits()).unwrap();
    model.generate(&request, &mut |_, _| true).unwrap(); // warm-up
    let mut per_image = Vec::new();
    let mut per_step = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut last = started;
        let mut step_times = Vec::new();
        model
            .generate(&request, &mut |_, _| {
                step_times.push(last.elapsed());
                last = Instant::now();
                true
            })
            .unwrap();
        per_image.push(started.elapsed().as_secs_f64());
        // The first "step" also carries the text encoders; the steps after it are denoising alone.
        let denoise: Duration = step_times.iter().skip(1).sum();
        per_step.push(denoise.as_secs_f64() / (step_times.len() - 1).max(1) as f64);
    }
    per_image.sort_by(f64::total_cmp);
    per_step.sort_by(f64::total_cmp);
    (per_step[1], per_image[1])
}

fn clip_rate(model: &dyn lantern::capabilities::ImageEmbedder, side: u32, batch: usize) -> f64 {
    let images = vec![tiny_clip::test_image(side, side); batch];
    model.embed_images(&images).unwrap();
    let (mut runs, started) = (0, Instant::now());
    while runs < 3 || started.elapsed() < Duration::from_secs(2) {
        model.embed_images(&images).unwrap();
        runs += 1;
    }
    (runs * batch) as f64 / started.elapsed().as_secs_f64()
}

fn python_peer(folder: &Path, side: u32) -> Option<serde_json::Value> {
    let python = std::env::var("LANTERN_BENCH_PYTHON").ok()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench/clip_transformers.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(folder)
        .arg(side.to_string())
        .args(["1", "16"])
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("transformers peer failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

#[tokio::main]
async fn main() {
    let dirs = tempfile::tempdir().unwrap();
    println!("## Text to image (tiny random checkpoints, f32, CPU)\n");
    println!("| model | image | steps | s/step (denoising) | s/image (encode + steps + decode) |");
    println!("|---|---|---:|---:|---:|");
    let families: [(&str, Writer); 2] = [
        ("stabilityai/stable-diffusion-3.5-large-turbo", tiny_sd35::write),
        ("black-forest-labs/FLUX.1-schnell", tiny_flux::write),
    ];
    for (index, (key, write)) in families.into_iter().enumerate() {
        let model = generator(key, write, &dirs.path().join(index.to_string())).await;
        for side in [64, 128] {
            let model = model.clone();
            let (step, image) = tokio::task::spawn_blocking(move || time_generation(&*model, side, 4)).await.unwrap();
            println!("| {key} | {side}x{side} | 4 | {step:.4} | {image:.3} |");
        }
    }

    println!("\n## CLIP images per second (preprocessing included), same run as transformers\n");
    println!("| checkpoint | batch | lantern | transformers | ratio |");
    println!("|---|---:|---:|---:|---:|");
    type ClipWriter = fn(&Path);
    let clips: [(&str, ClipWriter, u32); 2] = [
        ("tiny (32 px, 2 layers)", tiny_clip::clip_base, 48),
        ("ViT-B/32 real sizes, random weights", tiny_clip::clip_base_full_size, 256),
    ];
    for (index, (name, write, side)) in clips.into_iter().enumerate() {
        let folder = dirs.path().join(format!("clip{index}"));
        write(&folder);
        let before = python_peer(&folder, side);
        let files = lantern::hub::ModelFiles::from_local(
            lantern::hub::RepoRef::main("openai/clip-vit-base-patch32"),
            ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"].map(|f| (f.to_string(), folder.join(f))),
        );
        let model = lantern::families::clip::load(&files, &candle_core::Device::Cpu).unwrap();
        let rates: Vec<(usize, f64)> = [1, 16].into_iter().map(|batch| (batch, clip_rate(&model, side, batch))).collect();
        let after = python_peer(&folder, side);
        for (batch, ours) in rates {
            let peer = [&before, &after]
                .iter()
                .filter_map(|run| run.as_ref()?.get(batch.to_string())?.as_f64())
                .fold(None, |best: Option<f64>, rate| Some(best.map_or(rate, |b| b.max(rate))));
            match peer {
                Some(peer) => println!("| {name} | {batch} | {ours:.1} | {peer:.1} | {:.2}x |", ours / peer),
                None => println!("| {name} | {batch} | {ours:.1} | (not run) | |"),
            }
        }
    }
}
