//! The SD 3.5 family on its tiny random checkpoint (tests/support/tiny_sd35.rs), fetched
//! through the real download path from a local test hub: the text encoders, one MMDiT
//! step and the VAE against diffusers/transformers run on the same files
//! (scripts/reference/sd35_reference.py → tests/fixtures/sd35_reference.json), a whole
//! 4-step run against the reference image, and the generation contract (seeds, steps,
//! cancellation, truncation, bad files).
//!
//! To regenerate the fixture: `SD35_REFERENCE_DIR=/tmp/sd35 cargo test -p lantern --test
//! sd35 -- --ignored write_reference_inputs`, then
//! `/work/refvenv/bin/python scripts/reference/sd35_reference.py /tmp/sd35`.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use hubmirror::Mirror;
use lantern::capabilities::{ImageGenerator, ImageRequest, ImageSink};
use lantern::families::diffusion::noise;
use lantern::families::sd35::{self, Sd35};
use lantern::hub::ModelFiles;
use lantern::LanternError;
use serde_json::Value;
use support::tiny_sd35;

const PROMPT: &str = "a red cat on the dog";
const NEGATIVE: &str = "the dog";
const SEED: u64 = 7;
const SIDE: u32 = 64;

struct Fixture {
    model: Sd35,
    files: ModelFiles,
    reference: Value,
    _dirs: Vec<tempfile::TempDir>,
}

fn long_prompt() -> String {
    "a red cat on the dog in the sky ".repeat(12)
}

fn reference() -> Value {
    let path = support::workspace_root().join("tests/fixtures/sd35_reference.json");
    serde_json::from_slice(&std::fs::read(&path).expect("reading the SD 3.5 fixture")).unwrap()
}

/// Fetches the catalog entry's files from a test hub serving the tiny repos.
async fn fetch(repos: &[(&'static str, PathBuf)], cache: &Path) -> ModelFiles {
    let mut builder = Mirror::builder();
    for (id, dir) in repos {
        builder = builder.repo(*id, dir);
    }
    let mirror = builder.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub");
    let host = support::host(&mirror.endpoint(), cache);
    let entry = lantern::Catalog::builtin().get(tiny_sd35::REPO).expect("SD 3.5 is in the catalog").clone();
    host.registry().hub().fetch_from_repos(&entry.all_repos(), None).await.expect("fetching the tiny SD 3.5")
}

/// The tiny model, downloaded and loaded once for all tests of this file.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (repos_dir, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let repos = tiny_sd35::write(repos_dir.path());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let files = runtime.block_on(fetch(&repos, cache.path()));
        let model = sd35::load(&files, &Device::Cpu).expect("loading the tiny SD 3.5");
        Fixture { model, files, reference: reference(), _dirs: vec![repos_dir, cache] }
    })
}

fn request(prompt: &str, seed: u64) -> ImageRequest {
    ImageRequest {
        prompt: prompt.into(),
        negative_prompt: None,
        width: SIDE,
        height: SIDE,
        steps: 4,
        guidance_scale: 1.0,
        seed,
        truncate: true,
    }
}

fn values(v: &Value) -> Vec<f32> {
    v.as_array().expect("an array").iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("an array").iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Every `step`-th value of the flattened tensor (as the reference samples it).
fn sampled(t: &Tensor, step: usize) -> Vec<f32> {
    let all = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    all.into_iter().step_by(step).collect()
}

/// Compares against the reference: max |a - b| relative to max |b| at most 1e-3.
fn assert_close(what: &str, got: &[f32], expected: &Value) {
    let expected = values(expected);
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let max_err = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = expected.iter().map(|b| b.abs()).fold(0f32, f32::max);
    let relative = max_err / scale;
    println!("{what}: max abs error {max_err:.3e}, relative {relative:.3e} (scale {scale:.3})");
    assert!(relative <= 1e-3, "{what}: max abs error {max_err:e}, relative {relative:e} (scale {scale})");
}

fn tokens_match(model: &Sd35, prompt: &str, expected: &Value) -> usize {
    let tokens = model.tokenize(prompt, true).unwrap();
    assert_eq!(tokens.clip_l, ids(&expected["clip_l"]), "CLIP-L ids of {prompt:?}");
    assert_eq!(tokens.clip_g, ids(&expected["clip_g"]), "CLIP-G ids of {prompt:?}");
    assert_eq!(tokens.t5, ids(&expected["t5"]), "T5 ids of {prompt:?}");
    tokens.truncated
}

fn reference_latents(r: &Value) -> Tensor {
    let latents = noise::latents(SEED, 16, SIDE, SIDE, &Device::Cpu).unwrap();
    assert_eq!(latents.flatten_all().unwrap().to_vec1::<f32>().unwrap(), values(&r["latents"]), "the seeded noise changed");
    latents
}

#[test]
fn text_encoders_mmdit_and_vae_match_the_reference() {
    let Fixture { model, reference: r, .. } = fixture();
    tokens_match(model, PROMPT, &r["tokens"]["prompt"]);
    tokens_match(model, &long_prompt(), &r["tokens"]["long"]);

    let tokens = model.tokenize(PROMPT, true).unwrap();
    let never_stop = |_: u32, _: u32| true;
    let cond = model.encode(&[&tokens], &never_stop).unwrap().remove(0);
    assert_eq!(cond.context.dims(), [1, 154, tiny_sd35::T5_WIDTH]);
    let step = r["sample_step"].as_u64().unwrap() as usize;
    assert_close("context", &sampled(&cond.context, step), &r["context"]);
    assert_close("pooled y", &sampled(&cond.y, 1), &r["y"]);

    let latents = reference_latents(r);
    for probe in r["velocities"].as_array().unwrap() {
        let sigma = probe["sigma"].as_f64().unwrap();
        let v = model.velocity(&latents, sigma, &cond).unwrap();
        assert_close(&format!("MMDiT velocity at sigma {sigma}"), &sampled(&v, 1), &probe["velocity"]);
    }

    let image = model.decode(&latents).unwrap();
    assert_eq!(image.dims(), [1, 3, SIDE as usize, SIDE as usize]);
    assert_close("VAE decode", &sampled(&image, step), &r["vae_decode"]);
}

fn pixels(png: &[u8]) -> Vec<u8> {
    let image = lantern::image_codec::decode(png, Default::default()).unwrap();
    assert_eq!(image.dimensions(), (SIDE, SIDE));
    image.into_raw()
}

fn assert_image(what: &str, png: &[u8], expected: &Value) {
    let got = pixels(png);
    let expected: Vec<u8> = ids(expected).into_iter().map(|v| v as u8).collect();
    let diffs: Vec<u32> = got.iter().zip(&expected).map(|(a, b)| a.abs_diff(*b) as u32).collect();
    let max = diffs.iter().copied().max().unwrap();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    println!("{what}: max pixel difference {max}, mean {mean:.4}");
    assert!(max <= 3, "{what}: max pixel difference {max}, mean {mean}");
}

#[test]
fn a_whole_run_matches_the_reference_image() {
    let Fixture { model, reference: r, .. } = fixture();
    let mut never_stop = |_: u32, _: u32| true;
    let image = model.generate(&request(PROMPT, SEED), &mut never_stop).unwrap();
    assert_image("4 steps, guidance 1", &image.png, &r["image"]);

    let guided = ImageRequest { guidance_scale: 3.0, negative_prompt: Some(NEGATIVE.into()), ..request(PROMPT, SEED) };
    let image = model.generate(&guided, &mut never_stop).unwrap();
    assert_image("4 steps, guidance 3 with a negative prompt", &image.png, &r["guided_image"]);
}

#[test]
fn the_seed_fixes_the_image() {
    let model = &fixture().model;
    let mut never_stop = |_: u32, _: u32| true;
    let first = model.generate(&request(PROMPT, 1), &mut never_stop).unwrap();
    let again = model.generate(&request(PROMPT, 1), &mut never_stop).unwrap();
    let other = model.generate(&request(PROMPT, 2), &mut never_stop).unwrap();
    assert_eq!(first.png, again.png, "same seed, same bytes");
    assert_ne!(first.png, other.png, "another seed, another image");
    assert_eq!((first.width, first.height, first.seed, first.truncated_tokens), (SIDE, SIDE, 1, 0));
    assert_eq!(pixels(&first.png).len(), (SIDE * SIDE * 3) as usize);

    let wide = model.generate(&ImageRequest { width: 128, height: 64, steps: 2, ..request(PROMPT, 1) }, &mut never_stop).unwrap();
    let decoded = lantern::image_codec::decode(&wide.png, Default::default()).unwrap();
    assert_eq!((decoded.dimensions(), wide.width, wide.height), ((128, 64), 128, 64));
}

#[test]
fn steps_are_reported_and_cancellation_stops_the_run() {
    let model = &fixture().model;
    let mut steps = Vec::new();
    let mut record = |step: u32, total: u32| {
        steps.push((step, total));
        true
    };
    model.generate(&request(PROMPT, 3), &mut record).unwrap();
    assert_eq!(steps, [(1, 4), (2, 4), (3, 4), (4, 4)]);

    let mut seen = Vec::new();
    let mut stop_at_two = |step: u32, _: u32| {
        seen.push(step);
        step < 2
    };
    assert_eq!(model.generate(&request(PROMPT, 3), &mut stop_at_two).unwrap_err(), LanternError::Cancelled);
    assert_eq!(seen, [1, 2]);

    struct Gone;
    impl ImageSink for Gone {
        fn step(&mut self, _: u32, _: u32) -> bool {
            panic!("no step may run once the caller is gone")
        }
        fn keep_going(&self) -> bool {
            false
        }
    }
    assert_eq!(model.generate(&request(PROMPT, 3), &mut Gone).unwrap_err(), LanternError::Cancelled);
}

#[test]
fn long_prompts_are_cut_and_counted_or_refused() {
    let Fixture { model, reference: r, .. } = fixture();
    let expected = r["tokens"]["long"]["truncated"].as_u64().unwrap() as u32;
    assert!(expected > 0);
    let mut never_stop = |_: u32, _: u32| true;
    let image = model.generate(&request(&long_prompt(), 5), &mut never_stop).unwrap();
    assert_eq!(image.truncated_tokens, expected);
    let refused = ImageRequest { truncate: false, ..request(&long_prompt(), 5) };
    assert!(matches!(model.generate(&refused, &mut never_stop), Err(LanternError::InvalidInput(_))));
}

#[test]
fn limits_follow_the_checkpoint() {
    let limits = fixture().model.limits();
    assert_eq!((limits.default_steps, limits.default_guidance_scale, limits.size_multiple), (4, 1.0, 16));
    let max = (tiny_sd35::POS_EMBED_MAX * tiny_sd35::PATCH * 8) as u32;
    assert_eq!((limits.max_side, limits.default_width, limits.min_side), (max, max, 64));
    assert!(limits.negative_prompt);
    let mut never_stop = |_: u32, _: u32| true;
    let too_big = ImageRequest { width: max + 16, ..request(PROMPT, 1) };
    assert!(matches!(fixture().model.generate(&too_big, &mut never_stop), Err(LanternError::InvalidInput(_))));
}

/// The fetched files with `file` of the SD repo replaced by `replacement`.
fn with_replaced(files: &ModelFiles, file: &str, replacement: PathBuf) -> ModelFiles {
    let own: Vec<(String, PathBuf)> = files
        .iter()
        .map(|(name, path)| (name.to_string(), if name == file { replacement.clone() } else { path.to_path_buf() }))
        .collect();
    let mut out = ModelFiles::from_local(files.repo.clone(), own);
    for (label, path) in files.iter_all() {
        if let Some((repo, name)) = [tiny_sd35::T5_REPO, tiny_sd35::T5_TOKENIZER_REPO, tiny_sd35::CLIP_L_REPO, tiny_sd35::CLIP_G_REPO]
            .iter()
            .find_map(|repo| label.strip_prefix(&format!("{repo}/")).map(|name| (*repo, name)))
        {
            out = out.with_local_repo(repo, [(name.to_string(), path.to_path_buf())]);
        }
    }
    out
}

#[test]
fn bad_checkpoints_fail_to_load_with_typed_errors() {
    let files = &fixture().files;
    let dir = tempfile::tempdir().unwrap();
    assert!(sd35::load(&with_replaced(files, "sd3.5_large_turbo.safetensors", files.path("sd3.5_large_turbo.safetensors").unwrap().to_path_buf()), &Device::Cpu).is_ok());

    // A download cut short.
    let checkpoint = std::fs::read(files.path("sd3.5_large_turbo.safetensors").unwrap()).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &checkpoint[..checkpoint.len() / 2]).unwrap();
    // A checkpoint missing one tensor the MMDiT needs, and one missing a VAE tensor.
    let all = candle_core::safetensors::load(files.path("sd3.5_large_turbo.safetensors").unwrap(), &Device::Cpu).unwrap();
    let without = |name: &str, file: &str| {
        let mut tensors = all.clone();
        assert!(tensors.remove(name).is_some(), "{name}");
        let path = dir.path().join(file);
        candle_core::safetensors::save(&tensors, &path).unwrap();
        path
    };
    let no_qkv = without("model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "no_qkv.safetensors");
    let no_vae = without("first_stage_model.decoder.up.1.upsample.conv.weight", "no_vae.safetensors");
    for (what, file, path) in [
        ("truncated checkpoint", "sd3.5_large_turbo.safetensors", truncated),
        ("missing MMDiT tensor", "sd3.5_large_turbo.safetensors", no_qkv),
        ("missing VAE tensor", "sd3.5_large_turbo.safetensors", no_vae),
        ("T5 weights that are not safetensors", "text_encoders/t5xxl_fp16.safetensors", files.path_in(tiny_sd35::T5_REPO, "config.json").unwrap().to_path_buf()),
    ] {
        match sd35::load(&with_replaced(files, file, path), &Device::Cpu) {
            Err(LanternError::InferenceFailed(message)) => println!("{what}: {message}"),
            Err(other) => panic!("{what}: unexpected error {other:?}"),
            Ok(_) => panic!("{what}: loaded"),
        }
    }
}

/// Writes the tiny repos and the fixed inputs for scripts/reference/sd35_reference.py
/// into `$SD35_REFERENCE_DIR`.
#[test]
#[ignore]
fn write_reference_inputs() {
    let dir = PathBuf::from(std::env::var_os("SD35_REFERENCE_DIR").expect("set SD35_REFERENCE_DIR"));
    let repos = tiny_sd35::write(&dir);
    let latents = noise::latents(SEED, 16, SIDE, SIDE, &Device::Cpu).unwrap();
    let inputs = serde_json::json!({
        "repos": repos.iter().map(|(id, path)| (id.to_string(), Value::from(path.to_string_lossy().to_string()))).collect::<serde_json::Map<_, _>>(),
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "long_prompt": long_prompt(),
        "side": SIDE,
        "latents": latents.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
    });
    std::fs::write(dir.join("inputs.json"), serde_json::to_vec(&inputs).unwrap()).unwrap();
}

/// The measurement behind the family's dtype choice (module doc of `sd35`): the tiny MMDiT
/// and one matmul of the real MMDiT's size (4096 image + 154 text tokens, width 2432), in
/// f32 and f16 on the CPU. `cargo test -p lantern --test sd35 -- --ignored --nocapture f16`
#[test]
#[ignore]
fn f16_against_f32_on_the_cpu() {
    use candle_core::DType;
    use lantern::families::diffusion::weights::{mmap, Shapes};
    use std::time::Instant;
    let Fixture { model, files, .. } = fixture();
    let path = files.path("sd3.5_large_turbo.safetensors").unwrap();
    let config = sd35::config::mmdit(&Shapes::read(path, "checkpoint").unwrap()).unwrap();
    let tokens = model.tokenize(PROMPT, true).unwrap();
    let cond = model.encode(&[&tokens], &|_: u32, _: u32| true).unwrap().remove(0);
    let latents = noise::latents(SEED, 16, 128, 128, &Device::Cpu).unwrap();
    let t = Tensor::new(&[1000f32], &Device::Cpu).unwrap();
    let mut outputs = Vec::new();
    for dtype in [DType::F32, DType::F16] {
        let vb = mmap(&[path], dtype, &Device::Cpu, "checkpoint").unwrap().pp("model.diffusion_model");
        let mmdit = sd35::mmdit::Mmdit::new(&config, vb).unwrap();
        let start = Instant::now();
        let mut out = None;
        for _ in 0..20 {
            out = Some(mmdit.forward(&latents, &t, &cond.y, &cond.context).unwrap());
        }
        println!("tiny MMDiT at 128x128, {dtype:?}: {:.2} ms a forward", start.elapsed().as_secs_f64() * 1000.0 / 20.0);
        outputs.push(out.unwrap());
    }
    let err = (&outputs[0] - &outputs[1]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    println!("tiny MMDiT f16 against f32: max abs difference {err:.3e}");
    for dtype in [DType::F32, DType::F16] {
        let a = Tensor::ones((4250, 2432), dtype, &Device::Cpu).unwrap();
        let b = Tensor::ones((2432, 2432), dtype, &Device::Cpu).unwrap();
        let start = Instant::now();
        for _ in 0..3 {
            a.matmul(&b).unwrap();
        }
        println!("4250x2432 @ 2432x2432, {dtype:?}: {:.0} ms", start.elapsed().as_secs_f64() * 1000.0 / 3.0);
    }
}
