//! probe: a test plugin for the host's end-to-end tests. Its first argument names what to do;
//! results come back as JSON so tests can check them exactly.
//!
//! - `embed MODEL TEXT...`: the vectors, token count and truncation count.
//! - `embed-strict MODEL TEXT...`: the same with truncation off.
//! - `embed-query MODEL TEXT...`: the same for the query task.
//! - `embed-instruct MODEL INSTRUCTION TEXT...`: a query with a custom instruction.
//! - `embed-dims MODEL N TEXT...`: documents at N output dimensions.
//! - `prepare MODEL`: every preparation event.
//! - `info MODEL`, `allowed`: model facts.
//! - `generate MODEL [PROMPT] [--chat] [--system TEXT] [--max N] [--temp T] [--seed S] [--stop TEXT]...`:
//!   the streamed chunks, their text and how the generation finished.
//! - `generate-drop MODEL N [generate options]`: reads N chunks, then drops the stream (cancels).
//! - `image MODEL PROMPT [--width W] [--height H] [--steps N] [--seed S] [--guidance G] [--negative TEXT] [--strict]`:
//!   the step events and the image (PNG as hex), or the error.
//! - `image-drop MODEL PROMPT N [image options]`: reads N step events, then drops the generation.
//! - `clip-images MODEL IMAGE...` and `clip-texts MODEL TEXT...`: CLIP vectors; an IMAGE is a
//!   path in a granted directory, or `hex:` followed by the bytes in hex.
//! - `ask MODEL IMAGE QUESTION [generate options]`: the streamed answer about an image.
//! - `repeat N COMMAND ARGS...`: runs a command N times in one run; the list of answers
//!   (tests per-run limits).
//! - `hold N MODEL [generate options]`: opens N generations and keeps them all open; how many
//!   opened and the error that stopped it (tests the open-streams limit).
//! - `spin`: loops forever (tests the host's timeout and that other work goes on).
//! - `grow`: allocates until memory runs out (tests the memory limit).
//! - `read PATH`: reads a file (tests that only granted directories are visible).

use lantern_sdk::bindings::lantern::ai::generation::{Message, Prompt, Role, Sampling};
use lantern_sdk::embeddings::{embed_with, EmbedOptions, EmbedTask};
use lantern_sdk::generation::FinishReason;
use lantern_sdk::images::{ImageEvent, ImageParams};
use lantern_sdk::models::{self, PreparationEvent};
use lantern_sdk::Error;
use serde_json::{json, Value};

struct Probe;

fn error_json(error: &Error) -> Value {
    let (kind, message) = match error {
        Error::ModelNotAllowed(m) => ("model-not-allowed", m.as_str()),
        Error::ModelNotSupported(m) => ("model-not-supported", m.as_str()),
        Error::InvalidInput(m) => ("invalid-input", m.as_str()),
        Error::DownloadFailed(m) => ("download-failed", m.as_str()),
        Error::InferenceFailed(m) => ("inference-failed", m.as_str()),
        Error::LimitExceeded(m) => ("limit-exceeded", m.as_str()),
        Error::Cancelled => ("cancelled", ""),
    };
    json!({ "error": kind, "message": message })
}

/// The answer's JSON, written from the typed vectors: through `json!` each f32 would
/// become an f64 `Value` printed with 17 digits, which made this probe's answer, not the
/// host, the slowest part of a large batch (BENCHMARKS.md, "Embeddings").
fn embed(model: &str, texts: &[String], options: EmbedOptions) -> String {
    match embed_with(model, texts, &options) {
        Ok(batch) => format!(
            "{{\"vectors\":{},\"dimensions\":{},\"prompt_tokens\":{},\"truncated_inputs\":{}}}",
            serde_json::to_string(&batch.vectors).expect("f32 vectors serialize"),
            batch.dimensions,
            batch.prompt_tokens,
            batch.truncated_inputs,
        ),
        Err(error) => error_json(&error).to_string(),
    }
}

/// Parses `[PROMPT] [--chat] [--system TEXT] [--max N] [--temp T] [--seed S] [--stop TEXT]...`.
fn generation_request(args: &[String]) -> Result<(Prompt, Sampling), String> {
    let mut params = Sampling { temperature: Some(0.0), repeat_penalty: Some(1.0), ..Sampling::default() };
    let (mut prompt, mut chat, mut system) = ("Hello".to_string(), false, None);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--chat" => chat = true,
            "--system" => system = Some(value()?),
            "--max" => params.max_tokens = Some(value()?.parse().map_err(|_| "--max needs a number")?),
            "--temp" => params.temperature = Some(value()?.parse().map_err(|_| "--temp needs a number")?),
            "--seed" => params.seed = Some(value()?.parse().map_err(|_| "--seed needs a number")?),
            "--stop" => params.stop.push(value()?),
            _ => prompt = arg.clone(),
        }
    }
    let prompt = if chat {
        let mut messages: Vec<Message> = system.map(|content| Message { role: Role::System, content }).into_iter().collect();
        messages.push(Message { role: Role::User, content: prompt });
        Prompt::Chat(messages)
    } else {
        Prompt::Text(prompt)
    };
    Ok((prompt, params))
}

fn finish_name(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Eos => "eos",
        FinishReason::StopSequence => "stop-sequence",
        FinishReason::MaxTokens => "max-tokens",
        FinishReason::Cancelled => "cancelled",
    }
}

fn generate(model: &str, args: &[String], read_at_most: Option<usize>) -> Result<Value, String> {
    let (prompt, params) = generation_request(args)?;
    let mut generation = match lantern_sdk::generation::generate(model, &prompt, &params) {
        Ok(generation) => generation,
        Err(error) => return Ok(error_json(&error)),
    };
    let mut chunks = Vec::new();
    while read_at_most.is_none_or(|n| chunks.len() < n) {
        match generation.next() {
            Some(Ok(text)) => chunks.push(text),
            Some(Err(error)) => return Ok(json!({ "chunks": chunks, "failed": error_json(&error) })),
            None => break,
        }
    }
    let finished = generation.finished().map(|f| {
        json!({ "reason": finish_name(f.reason), "prompt_tokens": f.usage.prompt_tokens,
                "generated_tokens": f.usage.generated_tokens })
    });
    Ok(json!({ "text": chunks.concat(), "chunks": chunks, "finished": finished }))
}

fn prepare(model: &str) -> Value {
    let mut events = Vec::new();
    let outcome = models::prepare(model, |event| {
        events.push(match event {
            PreparationEvent::Downloading(p) => json!({
                "downloading": { "file": p.file, "bytes_done": p.bytes_done, "bytes_total": p.bytes_total,
                                 "files_done": p.files_done, "files_total": p.files_total }
            }),
            PreparationEvent::Loading => json!("loading"),
            PreparationEvent::Ready => json!("ready"),
        })
    });
    match outcome {
        Ok(()) => json!({ "events": events }),
        Err(error) => json!({ "events": events, "failed": error_json(&error) }),
    }
}

/// Parses `PROMPT [--width W] [--height H] [--steps N] [--seed S] [--guidance G] [--negative TEXT] [--strict]`.
fn image_request(args: &[String]) -> Result<(String, ImageParams), String> {
    let mut params = ImageParams::default();
    let mut prompt = String::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || args.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|_| format!("{arg} needs a number"));
        match arg.as_str() {
            "--width" => params.width = Some(number(value()?)? as u32),
            "--height" => params.height = Some(number(value()?)? as u32),
            "--steps" => params.steps = Some(number(value()?)? as u32),
            "--seed" => params.seed = Some(number(value()?)?),
            "--guidance" => params.guidance_scale = Some(value()?.parse().map_err(|_| "--guidance needs a number")?),
            "--negative" => params.negative_prompt = Some(value()?),
            "--strict" => params.truncate = Some(false),
            _ => prompt = arg.clone(),
        }
    }
    Ok((prompt, params))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An image argument: `hex:...` inline bytes, or a path in a granted directory.
fn image_bytes(arg: &str) -> Result<Vec<u8>, String> {
    if let Some(digits) = arg.strip_prefix("hex:") {
        return (0..digits.len() / 2)
            .map(|i| u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|e| e.to_string()))
            .collect();
    }
    std::fs::read(arg).map_err(|e| format!("{arg}: {e}"))
}

fn image(model: &str, args: &[String], read_at_most: Option<usize>) -> Result<Value, String> {
    let (prompt, params) = image_request(args)?;
    let generation = match lantern_sdk::images::generate(model, &prompt, &params) {
        Ok(generation) => generation,
        Err(error) => return Ok(error_json(&error)),
    };
    let mut steps = Vec::new();
    loop {
        if read_at_most.is_some_and(|n| steps.len() >= n) {
            return Ok(json!({ "steps": steps, "dropped": true }));
        }
        match generation.next_event() {
            Ok(Some(ImageEvent::Step(p))) => steps.push(json!([p.step, p.total])),
            Ok(Some(ImageEvent::Done(image))) => {
                return Ok(json!({ "steps": steps, "width": image.width, "height": image.height, "seed": image.seed,
                                  "truncated_tokens": image.truncated_tokens, "png": hex(&image.png) }))
            }
            Ok(None) => return Ok(json!({ "steps": steps, "ended": "without an image" })),
            Err(error) => return Ok(json!({ "steps": steps, "failed": error_json(&error) })),
        }
    }
}

fn vectors_or_error(result: Result<Vec<Vec<f32>>, Error>) -> Value {
    match result {
        Ok(vectors) => json!({ "vectors": vectors }),
        Err(error) => error_json(&error),
    }
}

fn ask(model: &str, args: &[String]) -> Result<Value, String> {
    let [image, question, rest @ ..] = args else { return Err("ask MODEL IMAGE QUESTION [options]".into()) };
    let bytes = image_bytes(image)?;
    let (_, params) = generation_request(rest)?;
    let mut answer = match lantern_sdk::vision::ask(model, &bytes, question, &params) {
        Ok(answer) => answer,
        Err(error) => return Ok(error_json(&error)),
    };
    let mut chunks = Vec::new();
    for chunk in answer.by_ref() {
        match chunk {
            Ok(text) => chunks.push(text),
            Err(error) => return Ok(json!({ "chunks": chunks, "failed": error_json(&error) })),
        }
    }
    let finished = answer.finished().map(|f| {
        json!({ "reason": finish_name(f.reason), "prompt_tokens": f.usage.prompt_tokens,
                "generated_tokens": f.usage.generated_tokens })
    });
    Ok(json!({ "text": chunks.concat(), "chunks": chunks, "finished": finished }))
}

impl lantern_sdk::Pipeline for Probe {
    fn run(args: Vec<String>) -> Result<String, String> {
        let (command, rest) = args.split_first().ok_or("usage: probe COMMAND ...")?;
        let model = || rest.first().cloned().ok_or_else(|| format!("{command} needs a model"));
        let answer = match command.as_str() {
            "embed" => return Ok(embed(&model()?, &rest[1..], EmbedOptions::document())),
            "embed-strict" => return Ok(embed(&model()?, &rest[1..], EmbedOptions { truncate: Some(false), ..EmbedOptions::document() })),
            "embed-query" => return Ok(embed(&model()?, &rest[1..], EmbedOptions::query())),
            "embed-instruct" => {
                let instruction = rest.get(1).cloned().ok_or("embed-instruct needs an instruction")?;
                let options = EmbedOptions { task: Some(EmbedTask::Instruction(instruction)), ..Default::default() };
                return Ok(embed(&model()?, rest.get(2..).unwrap_or_default(), options));
            }
            "embed-dims" => {
                let dims: u32 = rest.get(1).and_then(|n| n.parse().ok()).ok_or("embed-dims needs a number")?;
                let options = EmbedOptions { dimensions: Some(dims), ..EmbedOptions::document() };
                return Ok(embed(&model()?, rest.get(2..).unwrap_or_default(), options));
            }
            "prepare" => prepare(&model()?),
            "info" => match models::info(&model()?) {
                Ok(info) => json!({ "key": info.key, "family": info.family, "cached": info.cached, "loaded": info.loaded }),
                Err(error) => error_json(&error),
            },
            "allowed" => json!(models::allowed()),
            "generate" => generate(&model()?, &rest[1..], None)?,
            "generate-drop" => {
                let count = rest.get(1).and_then(|n| n.parse().ok()).ok_or("generate-drop MODEL N [options]")?;
                generate(&model()?, &rest[2..], Some(count))?
            }
            "image" => image(&model()?, &rest[1..], None)?,
            "image-drop" => {
                let count = rest.get(2).and_then(|n| n.parse().ok()).ok_or("image-drop MODEL PROMPT N [options]")?;
                let mut args = vec![rest.get(1).cloned().unwrap_or_default()];
                args.extend_from_slice(rest.get(3..).unwrap_or_default());
                image(&model()?, &args, Some(count))?
            }
            "clip-images" => {
                let images = rest[1..].iter().map(|arg| image_bytes(arg)).collect::<Result<Vec<_>, _>>()?;
                vectors_or_error(lantern_sdk::vision::embed_images(&model()?, &images))
            }
            "clip-texts" => vectors_or_error(lantern_sdk::vision::embed_texts(&model()?, &rest[1..])),
            "ask" => ask(&model()?, &rest[1..])?,
            "repeat" => {
                let count: usize = rest.first().and_then(|n| n.parse().ok()).ok_or("repeat N COMMAND ARGS...")?;
                let answers: Vec<Value> = (0..count)
                    .map(|_| match <Probe as lantern_sdk::Pipeline>::run(rest[1..].to_vec()) {
                        Ok(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                        Err(text) => json!({ "run-error": text }),
                    })
                    .collect();
                json!(answers)
            }
            "hold" => {
                let count: usize = rest.first().and_then(|n| n.parse().ok()).ok_or("hold N MODEL [options]")?;
                let model = rest.get(1).ok_or("hold N MODEL [options]")?;
                let (prompt, params) = generation_request(rest.get(2..).unwrap_or_default())?;
                let mut held = Vec::new();
                let mut stopped = Value::Null;
                while held.len() < count {
                    match lantern_sdk::generation::generate(model, &prompt, &params) {
                        Ok(generation) => held.push(generation),
                        Err(error) => {
                            stopped = error_json(&error);
                            break;
                        }
                    }
                }
                json!({ "opened": held.len(), "stopped": stopped })
            }
            "spin" => {
                let mut counter: u64 = 0;
                loop {
                    counter = std::hint::black_box(counter.wrapping_add(1));
                }
            }
            "grow" => {
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    blocks.push(vec![1u8; 16 << 20]);
                }
            }
            "read" => match std::fs::read_to_string(model()?) {
                Ok(text) => json!({ "read": text }),
                Err(error) => json!({ "io-error": error.to_string() }),
            },
            other => return Err(format!("unknown probe command {other:?}")),
        };
        Ok(answer.to_string())
    }
}

lantern_sdk::export!(Probe);
