//! FLUX.1 schnell on tiny random checkpoints (tests/support/tiny_flux.rs), fetched through
//! the real download path from a local hub and checked against diffusers/transformers
//! (tests/fixtures/flux_reference.json, written by scripts/reference/flux_reference.py
//! from the same files: run `FLUX_TINY_DIR=/some/dir cargo test -p lantern --test flux
//! -- --ignored write_tiny_repos` first, then the script). The `lmz/candle-flux` entry (the
//! transformer as a Q8_0 GGUF) is checked against the same reference, with quantisation's
//! looser tolerance.

mod support;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use candle_core::{Device, Tensor};
use candle_transformers::models::flux::sampling::State;
use hubmirror::{Faults, Mirror};
use lantern::capabilities::{ImageGenerator, ImageRequest, ImageSink};
use lantern::families::diffusion::noise;
use lantern::families::flux::{self, Flux};
use lantern::hub::{ModelFiles, RepoRef};
use lantern::{Catalog, LanternError};
use serde_json::Value;
use support::tiny_flux;

const KEY: &str = "black-forest-labs/FLUX.1-schnell";
/// Each file request waits this long at the hub, so downloads that run one after another
/// cannot overlap.
const DELAY: Duration = Duration::from_millis(300);
const PROMPT: &str = "a red cat on the dog";

/// The tiny repos, downloaded once through a delayed hub, and the model loaded from them.
struct Setup {
    _dir: tempfile::TempDir,
    files: ModelFiles,
    flux: Flux,
    most_concurrent_requests: u64,
    transfers: u64,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let repos = tiny_flux::write(&dir.path().join("repos"));
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        let (files, most_concurrent_requests, transfers) = runtime.block_on(async {
            let mut builder = Mirror::builder().faults(Faults { response_delay: DELAY, ..Faults::default() });
            for (repo, folder) in &repos {
                builder = builder.repo(*repo, folder);
            }
            let mirror = builder.serve(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub");
            let host = support::host(&mirror.endpoint(), &dir.path().join("cache"));
            let entry = Catalog::builtin().get(KEY).expect("FLUX is in the catalog").clone();
            let files = host.registry().hub().fetch_from_repos(&entry.all_repos(), None).await.expect("fetching FLUX");
            (files, mirror.stats().most_concurrent_requests(), mirror.stats().total_file_requests())
        });
        let flux = flux::load(&files, &Device::Cpu).expect("loading tiny FLUX");
        Setup { _dir: dir, files, flux, most_concurrent_requests, transfers }
    })
}

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = support::workspace_root().join("tests/fixtures/flux_reference.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("the FLUX reference fixture")).unwrap()
    })
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().expect("an array").iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("an array").iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// A reference tensor `{shape, values}` of the fixture.
fn tensor(value: &Value) -> Tensor {
    let shape: Vec<usize> = value["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    Tensor::from_vec(floats(&value["values"]), shape, &Device::Cpu).unwrap()
}

/// Largest difference relative to the reference's largest magnitude, and the cosine.
fn compare(what: &str, ours: &Tensor, reference: &Value) -> f32 {
    let reference = tensor(reference);
    assert_eq!(ours.dims(), reference.dims(), "{what}: shape");
    let (a, b) = (ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(), reference.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let relative = max_diff / scale;
    eprintln!("{what}: max |diff| {max_diff:.3e}, relative {relative:.3e}, cosine {:.7}", support::cosine(&a, &b));
    assert!(relative <= 1e-3, "{what}: relative error {relative}");
    relative
}

fn request(seed: u64) -> ImageRequest {
    ImageRequest {
        prompt: PROMPT.into(),
        negative_prompt: None,
        width: 64,
        height: 64,
        steps: 4,
        guidance_scale: 0.0,
        seed,
        truncate: true,
    }
}

fn rgb(png: &[u8]) -> image::RgbImage {
    lantern::image_codec::decode(png, lantern::image_codec::DecodeLimits::default()).unwrap()
}

/// Writes the tiny repos and the inputs the reference script needs into `$FLUX_TINY_DIR`.
#[test]
#[ignore = "writes the reference script's inputs; run by hand"]
fn write_tiny_repos() {
    let root = std::path::PathBuf::from(std::env::var("FLUX_TINY_DIR").expect("set FLUX_TINY_DIR"));
    let repos = tiny_flux::write(&root);
    let repo_dirs: serde_json::Map<String, Value> =
        repos.iter().map(|(repo, dir)| (repo.to_string(), Value::from(dir.to_string_lossy().to_string()))).collect();
    let model = flux::load(&local_files(&repos), &Device::Cpu).unwrap();
    let tokens = model.tokenize(PROMPT, true).unwrap();
    let noise = |seed: u64, side: u32| noise::latents(seed, 16, side, side, &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let inputs = serde_json::json!({
        "repos": repo_dirs,
        "prompt": PROMPT, "t5_ids": tokens.t5_ids, "clip_ids": tokens.clip_ids,
        "transformer": {"seed": 11, "side": 64, "sigma": 0.75, "latents": noise(11, 64)},
        "decoder": {"seed": 13, "side": 32, "latents": noise(13, 32)},
        "run": {"seed": 7, "side": 64, "steps": 4, "latents": noise(7, 64)},
    });
    std::fs::write(root.join("inputs.json"), inputs.to_string()).unwrap();
}

/// The seven files of a set of tiny repos, put together by hand.
fn local_files(repos: &[(&'static str, std::path::PathBuf)]) -> ModelFiles {
    local_files_of(KEY, repos)
}

/// The files of catalog entry `key` from a set of tiny repos.
fn local_files_of(key: &str, repos: &[(&'static str, std::path::PathBuf)]) -> ModelFiles {
    let entry = Catalog::builtin().get(key).unwrap().clone();
    let mut parts = entry.all_repos().into_iter();
    let (own, own_files) = parts.next().unwrap();
    let folder = |repo: &str| repos.iter().find(|(r, _)| *r == repo).unwrap().1.clone();
    let listed = |repo: &str, files: &[String]| files.iter().map(|f| (f.clone(), folder(repo).join(f))).collect::<Vec<_>>();
    let mut files = ModelFiles::from_local(RepoRef::main(key), listed(&own.repo, &own_files));
    for (repo, names) in parts {
        files = files.with_local_repo(&repo.repo, listed(&repo.repo, &names));
    }
    files
}

#[test]
fn the_seven_files_download_at_once() {
    let setup = setup();
    eprintln!("{} transfers, at most {} requests in flight at once", setup.transfers, setup.most_concurrent_requests);
    assert_eq!(setup.transfers, 7, "each of the seven files is transferred once");
    assert!(
        setup.most_concurrent_requests >= 7,
        "the hub saw at most {} requests at once; the seven files should all be in flight together",
        setup.most_concurrent_requests
    );
    let config = setup.flux.transformer_config();
    assert_eq!((config.hidden_size, config.num_heads, config.depth, config.depth_single_blocks), (64, 2, 1, 1));
    assert_eq!((config.context_in_dim, config.vec_in_dim, config.axes_dim.clone()), (32, 128, vec![4, 14, 14]));
    assert!(config.qkv_bias && !config.guidance_embed && config.mlp_ratio == 4.0);
    let ae = setup.flux.autoencoder_config();
    assert_eq!((ae.ch, ae.ch_mult.clone(), ae.num_res_blocks, ae.z_channels), (32, vec![1, 1, 2, 2], 1, 16));
}

#[test]
fn tokens_encoders_transformer_and_decoder_match_the_reference() {
    let (flux, reference) = (&setup().flux, fixture());
    let tokens = flux.tokenize(PROMPT, true).unwrap();
    assert_eq!(tokens.t5_ids, ids(&reference["t5_ids"]), "T5 ids");
    assert_eq!(tokens.clip_ids, ids(&reference["clip_ids"]), "CLIP ids");
    assert_eq!(tokens.truncated, 0);

    compare("T5 hidden states", &flux.encode_t5(&tokens.t5_ids).unwrap(), &reference["t5_hidden"]);
    compare("CLIP pooled", &flux.encode_clip(&tokens.clip_ids).unwrap(), &reference["clip_pooled"]);

    // The transformer alone, on the reference's own encodings.
    let case = &reference["transformer"];
    let latents = noise::latents(case["seed"].as_u64().unwrap(), 16, 64, 64, &Device::Cpu).unwrap();
    let state = State::new(&tensor(&reference["t5_hidden"]), &tensor(&reference["clip_pooled"]), &latents).unwrap();
    let velocity = flux.load_transformer().unwrap().velocity(&state.img, &state, case["sigma"].as_f64().unwrap()).unwrap();
    compare("transformer velocity", &velocity, &case["velocity"]);

    let case = &reference["decoder"];
    let latents = noise::latents(case["seed"].as_u64().unwrap(), 16, 32, 32, &Device::Cpu).unwrap();
    compare("AE decoder", &flux.decode(&latents).unwrap(), &case["image"]);
}

#[test]
fn a_whole_run_matches_the_reference_image() {
    let (flux, reference) = (&setup().flux, fixture());
    let run = &reference["run"];
    let mut sink = |_: u32, _: u32| true;
    let image = flux.generate(&request(run["seed"].as_u64().unwrap()), &mut sink).unwrap();
    let ours = rgb(&image.png).into_raw();
    let theirs: Vec<u8> = ids(&run["rgb"]).into_iter().map(|v| v as u8).collect();
    assert_eq!(ours.len(), theirs.len());
    let diffs: Vec<u32> = ours.iter().zip(&theirs).map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs()).collect();
    let max = diffs.iter().max().copied().unwrap();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let spread = theirs.iter().max().unwrap() - theirs.iter().min().unwrap();
    eprintln!("4-step run: max grey-level difference {max}, mean {mean:.4}, reference spans {spread} levels");
    assert!(spread > 32, "the reference image should not be flat");
    assert!(max <= 3, "the image differs from the reference by up to {max} grey levels");
}

#[test]
fn the_seed_fixes_the_image() {
    let flux = &setup().flux;
    let mut sink = |_: u32, _: u32| true;
    let first = flux.generate(&request(1), &mut sink).unwrap();
    let again = flux.generate(&request(1), &mut sink).unwrap();
    let other = flux.generate(&request(2), &mut sink).unwrap();
    assert_eq!(first.png, again.png, "same seed, same bytes");
    assert_ne!(first.png, other.png, "another seed, another image");
    assert_eq!((first.seed, first.truncated_tokens), (1, 0));
    let wide = flux.generate(&ImageRequest { width: 96, height: 64, ..request(1) }, &mut sink).unwrap();
    let decoded = rgb(&wide.png);
    assert_eq!((decoded.width(), decoded.height(), wide.width, wide.height), (96, 64, 96, 64));
    let refused = flux.generate(&ImageRequest { width: 72, ..request(1) }, &mut sink);
    assert!(matches!(refused, Err(LanternError::InvalidInput(_))), "{refused:?}");
}

#[test]
fn steps_are_reported_and_cancellation_stops_the_run() {
    let flux = &setup().flux;
    let mut steps = Vec::new();
    let mut sink = |step: u32, total: u32| {
        steps.push((step, total));
        true
    };
    flux.generate(&request(3), &mut sink).unwrap();
    assert_eq!(steps, vec![(1, 4), (2, 4), (3, 4), (4, 4)]);

    let mut calls = 0;
    let mut stop_at_two = |step: u32, _: u32| {
        calls += 1;
        step < 2
    };
    assert_eq!(flux.generate(&request(3), &mut stop_at_two).unwrap_err(), LanternError::Cancelled);
    assert_eq!(calls, 2);

    /// Gone before the first encoder runs.
    struct Gone;
    impl ImageSink for Gone {
        fn step(&mut self, _: u32, _: u32) -> bool {
            panic!("no step should run")
        }
        fn keep_going(&self) -> bool {
            false
        }
    }
    assert_eq!(flux.generate(&request(3), &mut Gone).unwrap_err(), LanternError::Cancelled);
}

#[test]
fn long_prompts_are_cut_and_counted_or_refused() {
    let setup = setup();
    let prompt = "the red cat sat on the dog in the sun ".repeat(40);
    let count = |repo: &str, file: &str| {
        let tokenizer = tokenizers::Tokenizer::from_file(setup.files.path_in(repo, file).unwrap()).unwrap();
        tokenizer.encode(prompt.as_str(), true).unwrap().get_ids().len()
    };
    let t5_cut = count(KEY, "tokenizer_2/tokenizer.json").saturating_sub(flux::T5_LENGTH);
    let clip_cut = count(tiny_flux::CLIP_L, "tokenizer.json").saturating_sub(77);
    assert!(t5_cut > 0 && clip_cut > 0, "the prompt should be too long for both ({t5_cut}, {clip_cut})");
    let mut sink = |_: u32, _: u32| true;
    let long = ImageRequest { prompt: prompt.clone(), steps: 1, ..request(5) };
    let image = setup.flux.generate(&long, &mut sink).unwrap();
    assert_eq!(image.truncated_tokens as usize, t5_cut.max(clip_cut));
    let refused = setup.flux.generate(&ImageRequest { truncate: false, ..long }, &mut sink);
    assert!(matches!(refused, Err(LanternError::InvalidInput(_))), "{refused:?}");
}

/// A copy of the tiny repos where `break_it` spoils one file.
fn broken(break_it: impl FnOnce(&[(&'static str, std::path::PathBuf)])) -> Result<Flux, LanternError> {
    let dir = tempfile::tempdir().unwrap();
    let repos = tiny_flux::write(dir.path());
    break_it(&repos);
    flux::load(&local_files(&repos), &Device::Cpu)
}

fn folder(repos: &[(&'static str, std::path::PathBuf)], repo: &str) -> std::path::PathBuf {
    repos.iter().find(|(r, _)| *r == repo).unwrap().1.clone()
}

#[test]
fn broken_checkpoints_fail_to_load_with_typed_errors() {
    // Cut short: the header promises bytes the file does not have.
    let cut = broken(|repos| {
        let path = folder(repos, KEY).join("flux1-schnell.safetensors");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(matches!(cut, Err(LanternError::InferenceFailed(ref m)) if m.contains("flux1-schnell")), "{:?}", cut.err());
    // Not a safetensors file at all.
    let garbage = broken(|repos| std::fs::write(folder(repos, tiny_flux::T5).join("model.safetensors"), b"not a checkpoint").unwrap());
    assert!(matches!(garbage, Err(LanternError::InferenceFailed(_))), "{:?}", garbage.err());
    // A tensor missing: found by building the network over the header's shapes.
    let missing = broken(|repos| {
        let path = folder(repos, tiny_flux::CLIP_L).join("model.safetensors");
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        tensors.remove("text_model.encoder.layers.1.mlp.fc2.weight").unwrap();
        candle_core::safetensors::save(&tensors, &path).unwrap();
    });
    assert!(matches!(missing, Err(LanternError::ModelNotSupported(ref m)) if m.contains("fc2")), "{:?}", missing.err());
    // An autoencoder whose channels candle's 32-group norms cannot take.
    let odd = broken(|repos| {
        let path = folder(repos, KEY).join("ae.safetensors");
        let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        tensors.insert("decoder.up.0.block.0.conv1.weight".into(), Tensor::zeros((48, 32, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap());
        candle_core::safetensors::save(&tensors, &path).unwrap();
    });
    assert!(matches!(odd, Err(LanternError::ModelNotSupported(ref m)) if m.contains("multiple of 32")), "{:?}", odd.err());
    // A GGUF transformer cut short.
    let dir = tempfile::tempdir().unwrap();
    let mut repos = tiny_flux::write(dir.path());
    repos.push(tiny_flux::write_gguf(dir.path(), &folder(&repos, KEY)));
    let path = folder(&repos, tiny_flux::GGUF).join("flux1-schnell.gguf");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let cut = flux::load(&local_files_of(tiny_flux::GGUF, &repos), &Device::Cpu);
    assert!(matches!(cut, Err(LanternError::InferenceFailed(ref m)) if m.contains("flux1-schnell.gguf")), "{:?}", cut.err());
}

/// The `lmz/candle-flux` entry: the same model with its transformer quantized to Q8_0.
#[test]
fn the_gguf_transformer_runs_close_to_the_full_one() {
    let (setup, reference) = (setup(), fixture());
    let dir = tempfile::tempdir().unwrap();
    let mut repos = tiny_flux::write(dir.path());
    let flux_dir = folder(&repos, KEY);
    repos.push(tiny_flux::write_gguf(dir.path(), &flux_dir));
    std::fs::remove_file(flux_dir.join("flux1-schnell.safetensors")).unwrap();
    let quantized = flux::load(&local_files_of(tiny_flux::GGUF, &repos), &Device::Cpu).expect("loading the GGUF entry");
    let full = setup.flux.transformer_config();
    let config = quantized.transformer_config();
    assert_eq!((config.hidden_size, config.num_heads, config.axes_dim.clone()), (full.hidden_size, full.num_heads, full.axes_dim.clone()));

    let case = &reference["transformer"];
    let latents = noise::latents(case["seed"].as_u64().unwrap(), 16, 64, 64, &Device::Cpu).unwrap();
    let state = State::new(&tensor(&reference["t5_hidden"]), &tensor(&reference["clip_pooled"]), &latents).unwrap();
    let velocity = quantized.load_transformer().unwrap().velocity(&state.img, &state, case["sigma"].as_f64().unwrap()).unwrap();
    let ours = velocity.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let theirs = floats(&case["velocity"]["values"]);
    let cosine = support::cosine(&ours, &theirs);
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let relative = ours.iter().zip(&theirs).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    eprintln!("Q8_0 transformer velocity vs the f32 reference: relative {relative:.3e}, cosine {cosine:.6}");
    assert!(cosine > 0.999 && relative < 0.05, "cosine {cosine}, relative {relative}");

    let run = &reference["run"];
    let mut sink = |_: u32, _: u32| true;
    let image = quantized.generate(&request(run["seed"].as_u64().unwrap()), &mut sink).unwrap();
    let ours = rgb(&image.png).into_raw();
    let theirs: Vec<u8> = ids(&run["rgb"]).into_iter().map(|v| v as u8).collect();
    let diffs: Vec<u32> = ours.iter().zip(&theirs).map(|(a, b)| (*a as i32 - *b as i32).unsigned_abs()).collect();
    let mean = diffs.iter().sum::<u32>() as f64 / diffs.len() as f64;
    let max = diffs.iter().max().copied().unwrap();
    eprintln!("Q8_0 4-step run vs the f32 reference image: max grey-level difference {max}, mean {mean:.3}");
    assert!(mean < 1.0 && max <= 8, "mean {mean}, max {max}");
}
