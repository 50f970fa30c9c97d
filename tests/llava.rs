//! The LLaVA 1.5 family on its tiny random checkpoint (tests/support/tiny_llava.rs),
//! fetched through a local hub: greedy answers equal to transformers'
//! `LlavaForConditionalGeneration` on the same files, ids and pixels
//! (tests/fixtures/llava_reference.json, written by scripts/reference/llava_reference.py),
//! then streaming, limits, stop sequences, cancellation and broken checkpoints.
//!
//! Regenerating the fixture:
//!   LANTERN_VISION_REFERENCE_DIR=/tmp/llavaref cargo test -p lantern --test llava -- --ignored write_reference_inputs
//!   /work/refvenv/bin/python scripts/reference/llava_reference.py /tmp/llavaref tests/fixtures/llava_reference.json

mod support;

use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use lantern::capabilities::{FinishReason, GenerationEvent, GenerationSink, SamplingParams, VisionLanguageModel, VisionPrompt};
use lantern::families::llava::Llava;
use lantern::LanternError;
use serde_json::{json, Value};
use support::tiny_clip::{fetch_through_hub, test_image};
use support::tiny_llava::{self, IMAGE_FEATURES, IMAGE_TOKEN, LLAVA};

const QUESTIONS: [&str; 3] = ["What is the color of the cat?", "what?", "Is the sky red? Tell me."];
const IMAGES: [(u32, u32); 3] = [(50, 44), (30, 60), (42, 42)];
const NEW_TOKENS: usize = 10;

struct Loaded {
    model: Llava,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

fn model() -> &'static Llava {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    &LOADED
        .get_or_init(|| {
            let (files, dirs) = fetch_through_hub(&[LLAVA], |root| vec![tiny_llava::llava(root)]);
            Loaded { model: lantern::families::llava::load(&files[0], &Device::Cpu).expect("loading LLaVA"), _dirs: dirs }
        })
        .model
}

/// Collects what a generation streams.
#[derive(Default)]
struct Collect {
    events: Vec<GenerationEvent>,
    /// Stop listening after this many text pieces.
    cancel_after: Option<usize>,
}

impl Collect {
    fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                GenerationEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
    fn pieces(&self) -> usize {
        self.events.iter().filter(|e| matches!(e, GenerationEvent::Text(_))).count()
    }
}

impl GenerationSink for Collect {
    fn emit(&mut self, event: GenerationEvent) -> bool {
        self.events.push(event);
        self.cancel_after.is_none_or(|limit| self.pieces() < limit)
    }
    fn keep_going(&self) -> bool {
        self.cancel_after.is_none_or(|limit| self.pieces() < limit)
    }
}

fn prompt(index: usize) -> VisionPrompt {
    let (w, h) = IMAGES[index];
    model().prepare(&test_image(w, h), QUESTIONS[index]).unwrap()
}

fn answer(prompt: &VisionPrompt, params: &SamplingParams) -> (lantern::capabilities::Generated, Collect) {
    let mut sink = Collect::default();
    let generated = model().generate(prompt, params, &mut sink).unwrap();
    (generated, sink)
}

fn reference() -> Value {
    let path = support::workspace_root().join("tests/fixtures/llava_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect()
}

/// Writes the tiny repo and our inputs (prompt ids, preprocessed pixels) for the
/// reference script.
#[test]
#[ignore]
fn write_reference_inputs() {
    let dir = std::path::PathBuf::from(std::env::var("LANTERN_VISION_REFERENCE_DIR").expect("LANTERN_VISION_REFERENCE_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let (_, folder) = tiny_llava::llava(&dir);
    let cases: Vec<Value> = (0..QUESTIONS.len())
        .map(|index| {
            let prompt = prompt(index);
            let pixels: Vec<f32> = prompt.pixels.flatten_all().unwrap().to_vec1().unwrap();
            json!({"question": QUESTIONS[index], "image": IMAGES[index], "ids": prompt.ids, "pixels": pixels})
        })
        .collect();
    let inputs = json!({"folder": folder.file_name().unwrap().to_str().unwrap(), "new_tokens": NEW_TOKENS, "cases": cases});
    std::fs::write(dir.join("inputs.json"), serde_json::to_string(&inputs).unwrap()).unwrap();
}

#[test]
fn greedy_answers_equal_transformers() {
    let reference = reference();
    for (index, case) in reference["cases"].as_array().unwrap().iter().enumerate() {
        let ours = prompt(index);
        assert_eq!(ours.ids, ids(&case["ids"]), "case {index}: prompt ids changed since the fixture was written");
        let pixels: Vec<f32> = case["pixels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        let our_pixels: Vec<f32> = ours.pixels.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(our_pixels, pixels, "case {index}: preprocessing changed since the fixture was written");
        let fixture = VisionPrompt {
            ids: ids(&case["ids"]),
            pixels: Tensor::from_vec(pixels, (1, 3, tiny_llava::IMAGE_SIZE, tiny_llava::IMAGE_SIZE), &Device::Cpu).unwrap(),
            image_size: IMAGES[index],
        };
        let (generated, _) = answer(&fixture, &SamplingParams::greedy(NEW_TOKENS));
        assert_eq!(generated.tokens, ids(&case["generated"]), "case {index}: greedy tokens differ from transformers");
    }
}

#[test]
fn the_prompt_is_the_llava_template_with_one_image_token_per_feature() {
    let prompt = prompt(0);
    assert_eq!(prompt.ids[0], 1, "BOS first");
    let image_positions: Vec<usize> = (0..prompt.ids.len()).filter(|&i| prompt.ids[i] == IMAGE_TOKEN).collect();
    assert_eq!(image_positions.len(), IMAGE_FEATURES);
    assert_eq!(image_positions.last().unwrap() - image_positions[0] + 1, IMAGE_FEATURES, "contiguous");
    assert_eq!(prompt.pixels.dims(), &[1, 3, tiny_llava::IMAGE_SIZE, tiny_llava::IMAGE_SIZE]);
    assert_eq!(prompt.image_size, IMAGES[0]);
    let question = "<image> twice";
    assert!(matches!(model().prepare(&test_image(8, 8), question), Err(LanternError::InvalidInput(_))));
    let long = vec!["what"; 300].join(" ");
    assert!(matches!(model().prepare(&test_image(8, 8), &long), Err(LanternError::InvalidInput(_))));
}

#[test]
fn the_answer_streams_and_ends_with_finished() {
    let (generated, sink) = answer(&prompt(0), &SamplingParams::greedy(NEW_TOKENS));
    assert_eq!(generated.reason, FinishReason::MaxTokens);
    assert_eq!(generated.tokens.len(), NEW_TOKENS);
    assert!(sink.pieces() >= 2, "{:?}", sink.events);
    assert!(sink.events[..sink.events.len() - 1].iter().all(|e| matches!(e, GenerationEvent::Text(t) if !t.is_empty())));
    match sink.events.last() {
        Some(GenerationEvent::Finished { reason, usage }) => {
            assert_eq!(*reason, FinishReason::MaxTokens);
            assert_eq!(usage.generated_tokens, NEW_TOKENS);
            assert_eq!(usage.prompt_tokens, generated_prompt_len(0));
        }
        other => panic!("last event {other:?}"),
    }
}

fn generated_prompt_len(index: usize) -> usize {
    prompt(index).ids.len()
}

#[test]
fn max_tokens_cuts_the_same_answer_short() {
    let (full, _) = answer(&prompt(1), &SamplingParams::greedy(NEW_TOKENS));
    let (short, sink) = answer(&prompt(1), &SamplingParams::greedy(3));
    assert_eq!(short.reason, FinishReason::MaxTokens);
    assert_eq!(short.tokens, full.tokens[..3]);
    assert!(matches!(sink.events.last(), Some(GenerationEvent::Finished { reason: FinishReason::MaxTokens, .. })));
}

#[test]
fn a_stop_sequence_ends_the_answer_before_it() {
    let (_, full) = answer(&prompt(0), &SamplingParams::greedy(NEW_TOKENS));
    let text = full.text();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 4, "the tiny model's answer is too short to test stops: {text:?}");
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
    let before = &text[..text.find(&stop).unwrap()];
    let params = SamplingParams { stop: vec![stop.clone()], ..SamplingParams::greedy(NEW_TOKENS) };
    let (generated, sink) = answer(&prompt(0), &params);
    assert_eq!(generated.reason, FinishReason::StopSequence, "stop {stop:?} in {text:?}");
    assert_eq!(sink.text(), before);
    assert!(matches!(sink.events.last(), Some(GenerationEvent::Finished { reason: FinishReason::StopSequence, .. })));
}

#[test]
fn a_sink_that_stops_listening_cancels() {
    let mut sink = Collect { cancel_after: Some(1), ..Default::default() };
    let generated = model().generate(&prompt(2), &SamplingParams::greedy(NEW_TOKENS), &mut sink).unwrap();
    assert_eq!(generated.reason, FinishReason::Cancelled);
    assert!(generated.tokens.len() < NEW_TOKENS);
    assert_eq!(sink.pieces(), 1);
    assert!(matches!(sink.events.last(), Some(GenerationEvent::Finished { reason: FinishReason::Cancelled, .. })));
    // Not listening from the start: nothing is generated.
    let mut sink = Collect { cancel_after: Some(0), ..Default::default() };
    let generated = model().generate(&prompt(2), &SamplingParams::greedy(NEW_TOKENS), &mut sink).unwrap();
    assert_eq!((generated.reason, generated.tokens.len()), (FinishReason::Cancelled, 0));
}

/// The tiny repo written locally with one tensor left out.
fn load_without(tensor: &str) -> Result<Llava, LanternError> {
    let dir = tempfile::tempdir().unwrap();
    tiny_llava::llava_with(dir.path(), Some(tensor));
    let catalog = lantern::Catalog::builtin();
    let files = &catalog.get(LLAVA).unwrap().files;
    let files = lantern::hub::ModelFiles::from_local(
        lantern::hub::RepoRef::main(LLAVA),
        files.iter().map(|f| (f.clone(), dir.path().join(f))),
    );
    lantern::families::llava::load(&files, &Device::Cpu)
}

#[test]
fn a_checkpoint_without_a_needed_tensor_is_a_typed_error() {
    for tensor in [
        "language_model.model.layers.1.mlp.down_proj.weight",
        "language_model.lm_head.weight",
        "multi_modal_projector.linear_2.weight",
        "vision_tower.vision_model.embeddings.class_embedding",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
    ] {
        match load_without(tensor) {
            Err(LanternError::ModelNotSupported(message)) => {
                assert!(message.contains(tensor) || message.contains("fc1"), "{message}")
            }
            Err(other) => panic!("{tensor}: wrong error {other}"),
            Ok(_) => panic!("{tensor}: loaded without it"),
        }
    }
}
