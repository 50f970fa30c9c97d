//! `LANTERN_GGUF_REQUANTIZE=q8_0` on the real SmolLM2 Q4_1 GGUF: the re-quantised model
//! still answers the reference prompt that has a clear answer (tests/fixtures, case 0)
//! word for word. Its own test binary: the variable is read when a model loads.

mod support;

use lantern::capabilities::{FinishReason, PromptInput, SamplingParams};
use support::{host, smollm2_mirror, SMOLLM2};

#[tokio::test]
async fn requantized_smollm2_answers_the_france_question() {
    std::env::set_var("LANTERN_GGUF_REQUANTIZE", "q8_0");
    std::env::remove_var("CANDLE_DEQUANTIZE_ALL");
    let mirror = smollm2_mirror().await;
    let cache = tempfile::tempdir().unwrap();
    let host = host(&mirror.endpoint(), cache.path());
    let model = host.registry().text_generator(SMOLLM2, None).await.unwrap();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(support::workspace_root().join("tests/fixtures/smollm2_reference.json")).unwrap(),
    )
    .unwrap();
    let case = &reference["cases"][0];
    let prompt = model.prepare(&PromptInput::Text(case["prompt"].as_str().unwrap().into())).unwrap();
    let mut text = String::new();
    let mut sink = |event| {
        if let lantern::capabilities::GenerationEvent::Text(piece) = event {
            text.push_str(&piece);
        }
        true
    };
    let generated = model.generate(&prompt, &SamplingParams::greedy(32), &mut sink).unwrap();
    assert_eq!(generated.reason, FinishReason::Eos);
    assert_eq!(text, "The capital of France is Paris.");
}
