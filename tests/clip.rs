//! The CLIP family on its tiny random checkpoints (tests/support/tiny_clip.rs), fetched
//! through a local hub: vectors against transformers' `CLIPModel` on the same files
//! (tests/fixtures/clip_reference.json, written by scripts/reference/clip_reference.py),
//! our preprocessing against `CLIPImageProcessor`, unit norms, batching, truncation.
//!
//! Regenerating the fixture:
//!   LANTERN_VISION_REFERENCE_DIR=/tmp/clipref cargo test -p lantern --test clip -- --ignored write_reference_inputs
//!   /work/refvenv/bin/python scripts/reference/clip_reference.py /tmp/clipref tests/fixtures/clip_reference.json

mod support;

use std::sync::OnceLock;

use lantern::capabilities::ImageEmbedder;
use lantern::families::clip::Clip;
use lantern::LanternError;
use serde_json::{json, Value};
use support::cosine;
use support::tiny_clip::{self, test_image, CLIP_BASE, CLIP_LARGE_336};

const TEXTS: [&str; 4] = ["a cat", "The red dog on the mat", "", "A photo of a CAT sitting in the sun!"];
/// (width, height) of the test pictures: wider, upscaled, square, tall.
const IMAGES: [(u32, u32); 4] = [(48, 40), (20, 24), (64, 64), (40, 90)];

struct Loaded {
    models: Vec<(&'static str, Clip)>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| {
        let keys = [CLIP_BASE, CLIP_LARGE_336];
        let (files, dirs) = tiny_clip::fetch_through_hub(&keys, tiny_clip::all);
        let models = keys
            .iter()
            .zip(&files)
            .map(|(key, files)| (*key, lantern::families::clip::load(files, &candle_core::Device::Cpu).expect("loading CLIP")))
            .collect();
        Loaded { models, _dirs: dirs }
    })
}

fn model(key: &str) -> &'static Clip {
    &loaded().models.iter().find(|(k, _)| *k == key).unwrap().1
}

fn long_text(words: usize, tail: &str) -> String {
    let mut text = vec!["the cat"; words].join(" ");
    text.push(' ');
    text.push_str(tail);
    text
}

fn reference() -> Value {
    let path = support::workspace_root().join("tests/fixtures/clip_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    value.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

fn images() -> Vec<image::RgbImage> {
    IMAGES.iter().map(|(w, h)| test_image(*w, *h)).collect()
}

fn texts() -> Vec<String> {
    let mut texts: Vec<String> = TEXTS.iter().map(|t| t.to_string()).collect();
    texts.push(long_text(60, "on the mat"));
    texts
}

/// The side of the tower's input (upscaled test pictures are exact too).
fn tiny_side(clip: &Clip) -> u32 {
    clip.preprocessor().output_size().0
}

fn flat(tensor: &candle_core::Tensor) -> Vec<f32> {
    tensor.flatten_all().unwrap().to_vec1().unwrap()
}

/// Writes the tiny repos and our inputs (token ids, preprocessed pixels) for the
/// reference script.
#[test]
#[ignore]
fn write_reference_inputs() {
    let dir = std::path::PathBuf::from(std::env::var("LANTERN_VISION_REFERENCE_DIR").expect("LANTERN_VISION_REFERENCE_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    tiny_clip::all(&dir);
    let mut keys = serde_json::Map::new();
    for (key, clip) in &loaded().models {
        let token_ids: Vec<Vec<u32>> = texts().iter().map(|t| clip.token_ids(t).unwrap()).collect();
        let pixels: Vec<Vec<f32>> = images()
            .iter()
            .map(|image| flat(&clip.preprocessor().preprocess(image, &candle_core::Device::Cpu).unwrap()))
            .collect();
        keys.insert(
            key.to_string(),
            json!({"folder": key.replace('/', "--"), "texts": texts(), "token_ids": token_ids, "images": IMAGES, "pixels": pixels}),
        );
    }
    std::fs::write(dir.join("inputs.json"), serde_json::to_string(&Value::Object(keys)).unwrap()).unwrap();
}

#[test]
fn vectors_match_transformers() {
    let reference = reference();
    for (key, clip) in &loaded().models {
        let expected = &reference[*key];
        let token_ids: Vec<Vec<u32>> = expected["token_ids"].as_array().unwrap().iter().map(ids).collect();
        // Our tokenization is what the fixture was made from.
        let ours: Vec<Vec<u32>> = texts().iter().map(|t| clip.token_ids(t).unwrap()).collect();
        assert_eq!(ours, token_ids, "{key}: token ids changed since the fixture was written");
        let text_vectors = clip.embed_token_ids(&token_ids).unwrap();
        for (index, (got, want)) in text_vectors.iter().zip(expected["text_vectors"].as_array().unwrap()).enumerate() {
            let similarity = cosine(got, &floats(want));
            eprintln!("{key}: text {index} cosine {similarity:.7}");
            assert!(similarity >= 0.9999, "{key}: text {index} cosine {similarity}");
        }
        let side = clip.preprocessor().output_size().0 as usize;
        let pixels: Vec<f32> = expected["pixels"].as_array().unwrap().iter().flat_map(floats).collect();
        let batch = candle_core::Tensor::from_vec(pixels, (IMAGES.len(), 3, side, side), &candle_core::Device::Cpu).unwrap();
        let image_vectors = clip.embed_pixels(&batch).unwrap();
        for (index, (got, want)) in image_vectors.iter().zip(expected["image_vectors"].as_array().unwrap()).enumerate() {
            let similarity = cosine(got, &floats(want));
            eprintln!("{key}: image {index} cosine {similarity:.7}");
            assert!(similarity >= 0.9999, "{key}: image {index} cosine {similarity}");
        }
    }
}

/// Our resize/crop/normalise against transformers' CLIP processors on the same pictures.
/// We resize with Pillow's algorithm, so the wide, square and upscaled pictures come out
/// equal to the PIL-backed processor's; on the tall one the Pillow build that wrote the
/// fixture (13.0) rounds its two passes differently and some pixels are up to ~7 levels
/// off. The torchvision-backed processor, where the fixture has it, is a few levels off.
#[test]
fn preprocessing_matches_clip_image_processor() {
    let reference = reference();
    for (key, clip) in &loaded().models {
        let expected = &reference[*key];
        for (index, image) in images().iter().enumerate() {
            let ours = flat(&clip.preprocessor().preprocess(image, &candle_core::Device::Cpu).unwrap());
            assert_eq!(ours, floats(&expected["pixels"][index]), "{key}: image {index} preprocessing changed since the fixture");
            // One 8-bit level is 1/255/std ≈ 0.015 after normalising.
            let exact = IMAGES[index].0 >= IMAGES[index].1 || IMAGES[index].0 < tiny_side(clip);
            for (backend, bound) in [("processor_pil_pixels", if exact { 1e-5 } else { 0.15 }), ("processor_pixels", 0.15)] {
                if expected[backend].is_null() {
                    continue; // the torchvision processor, where the fixture was written without torchvision
                }
                let theirs = floats(&expected[backend][index]);
                let differences: Vec<f32> = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).collect();
                let worst = differences.iter().copied().fold(0f32, f32::max);
                let mean = differences.iter().sum::<f32>() / differences.len() as f32;
                eprintln!("{key}: image {:?} vs {backend}: max {worst:.5}, mean {mean:.6}", IMAGES[index]);
                assert!(worst < bound && mean < 0.01, "{key}: image {index} vs {backend}: max {worst}, mean {mean}");
            }
        }
    }
}

#[test]
fn vectors_are_unit_length_and_in_one_space() {
    for (key, clip) in &loaded().models {
        let texts = clip.embed_texts(&texts()).unwrap();
        let images = clip.embed_images(&images()).unwrap();
        for vector in texts.iter().chain(&images) {
            assert_eq!(vector.len(), clip.dimensions(), "{key}");
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{key}: norm {norm}");
        }
        assert!(cosine(&texts[0], &texts[1]) < 0.9999, "{key}: different texts gave the same vector");
        assert!(cosine(&images[0], &images[1]) < 0.9999, "{key}: different images gave the same vector");
    }
    assert_eq!(model(CLIP_BASE).dimensions(), 24);
    assert_eq!(model(CLIP_LARGE_336).dimensions(), 20);
}

#[test]
fn a_batch_gives_what_each_input_gives_alone() {
    let clip = model(CLIP_BASE);
    let texts = texts();
    let batch = clip.embed_texts(&texts).unwrap();
    for (text, in_batch) in texts.iter().zip(&batch) {
        let alone = clip.embed_texts(std::slice::from_ref(text)).unwrap();
        assert!(cosine(&alone[0], in_batch) > 0.99999, "{text:?} alone vs padded in a batch");
    }
    let images = images();
    let batch = clip.embed_images(&images).unwrap();
    for (image, in_batch) in images.iter().zip(&batch) {
        let alone = clip.embed_images(std::slice::from_ref(image)).unwrap();
        assert!(cosine(&alone[0], in_batch) > 0.99999, "an image alone vs in a batch");
    }
}

#[test]
fn a_long_thin_picture_is_cropped_not_blown_up() {
    let clip = model(CLIP_BASE);
    // Resized whole it would be 32 x 48000 pixels; only the centre crop is computed.
    let started = std::time::Instant::now();
    let vectors = clip.embed_images(&[test_image(2, 3000), test_image(3000, 2)]).unwrap();
    assert_eq!(vectors.len(), 2);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn a_long_text_is_cut_to_77_positions_ending_with_end_of_text() {
    let clip = model(CLIP_BASE);
    let ids = clip.token_ids(&long_text(100, "on the mat")).unwrap();
    assert_eq!(ids.len(), 77);
    assert_eq!(*ids.last().unwrap(), support::tiny_tokenizers::clip_eos_id());
    // What lies beyond the cut does not matter.
    let vectors = clip.embed_texts(&[long_text(100, "on the mat"), long_text(100, "in the red sky")]).unwrap();
    assert!(cosine(&vectors[0], &vectors[1]) > 0.99999);
    // A text that fits keeps its own end.
    assert!(clip.token_ids("a cat").unwrap().len() < 77);
}

#[test]
fn a_checkpoint_without_class_embedding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    tiny_clip::clip_base(dir.path());
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    tensors.remove("vision_model.embeddings.class_embedding").unwrap();
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let files = ["config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"];
    let files = lantern::hub::ModelFiles::from_local(
        lantern::hub::RepoRef::main(CLIP_BASE),
        files.iter().map(|f| (f.to_string(), dir.path().join(f))),
    );
    match lantern::families::clip::load(&files, &candle_core::Device::Cpu) {
        Err(LanternError::ModelNotSupported(message)) => assert!(message.contains("class_embedding"), "{message}"),
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("a checkpoint without class_embedding loaded"),
    }
}
