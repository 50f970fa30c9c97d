//! Native panics in model code never abort the host. Every family call runs behind a
//! panic boundary (`registry::run_blocking` for loads and one-shot calls, `catch_unwind` on
//! the worker of a text or image stream); this file proves the boundary holds for every
//! family the host has, each with a tiny checkpoint that makes that family's native code
//! panic. For each one:
//!
//! - the call fails with the typed `LanternError::InferenceFailed`, its message says the
//!   work "panicked" and names the boundary that caught it (the model load, a one-shot
//!   call, or the generation's stream);
//! - it fails the same way a second time (a failed load or generation is not kept);
//! - the same host then loads a sound checkpoint of the same family (sd3.5 and flux: of
//!   CLIP, see below) and answers exactly as a fresh host that never saw the panic does.
//!
//! | family | checkpoint field that makes it panic | panics in | caught by |
//! |---|---|---|---|
//! | bert (MiniLM) | tests/hostile.rs: `num_attention_heads: 0` | load | `run_blocking` |
//! | jina-bert | config.json `num_attention_heads: 0` (candle's `jina_bert` divides by it) | load | `run_blocking` |
//! | stella (400M and 1.5B) | config.json `num_attention_heads: 0` (`stella_en_v5`'s rotary table) | load | `run_blocking` |
//! | gte-qwen2 | config.json `num_attention_heads: 0` (candle's `qwen2` rotary table) | load | `run_blocking` |
//! | nv-embed | config.json `text_config.num_attention_heads: 0` (`nvembed_v2`'s rotary table) | load | `run_blocking` |
//! | GGUF llama (the host's dense decoder engine) | `llama.attention.key_length: 8` where the weights hold heads of 16: every load check passes, and the attention output, half as wide as `attn_output` reads, is sliced past its end (`gguf/linear.rs`) | first forward pass | the stream's `catch_unwind` |
//! | GGUF qwen2 (the same engine) | `qwen2.attention.key_length: 8`, as for llama (the engine refuses zero heads at load, typed) | first forward pass | the stream's `catch_unwind` |
//! | GGUF qwen3 (the same engine) | `qwen3.attention.key_length: 8` and head norms of 8 values, as for llama | first forward pass | the stream's `catch_unwind` |
//! | GGUF qwen3moe | `qwen3moe.attention.head_count: 0` (`gguf/qwen3_moe.rs`: `unwrap_or(hidden / heads)` divides even when `key_length` is there) | load | `run_blocking` |
//! | GGUF phi3 (the same engine) | tests/hostile.rs: `phi3.attention.key_length: 8` (and a rotary of 8), as for llama | first forward pass | the stream's `catch_unwind` |
//! | GGUF gemma3, deepseek2 | `tokenizer.ggml.token_type` one entry longer than the vocabulary, a control token (`gguf/tokenizer.rs` indexes the token list with it) | load | `run_blocking` |
//! | llava | `language_model.model.layers.0.input_layernorm.weight` stored as BOOL: the host checks its name and shape, candle's `Llama::load` unwraps the dtype error | load | `run_blocking` |
//! | clip | `text_config.max_position_embeddings: 0` with a 0-row position table: `max_positions - 1` overflows (see below) | embedding texts | `run_blocking` |
//! | sd3.5, flux | the shared `google/t5-v1_1-xxl` config.json `relative_attention_num_buckets: 1`, the T5 weights' bucket table cut to its one row: `buckets / 2 - 1` overflows (see below) | encoding the prompt | the image stream's `catch_unwind` |
//!
//! Where no field reaches a panic in the family's own code:
//! - gemma3 and deepseek2: their loaders refuse zero or inconsistent head counts, windows,
//!   key widths, experts and groups, and candle checks every shape and index; no metadata
//!   value reaches a panic inside `gguf/gemma3.rs` or `gguf/deepseek2/`. The panic is in the
//!   GGUF tokenizer that every GGUF architecture is loaded with, so loading a gemma3 or
//!   deepseek2 file still panics, behind the same boundary.
//! - clip: its config checks refuse zero or non-dividing heads, patch sizes and
//!   preprocessor sizes, and candle checks shapes and indices. The panic found is an
//!   unsigned underflow: it panics where overflow checks are on (test and debug builds, as
//!   here); a release build refuses the same texts as `invalid-input`, which the test
//!   expects there.
//! - sd3.5 and flux: every size is read from the checkpoints' shapes and checked
//!   (`sd35/config.rs`, `flux/config.rs`), every network is built over a weightless dry run
//!   at load, tokenizer truncation is turned off, token ids are checked against the
//!   encoders' vocabularies. Tried: zero and non-dividing heads, one joint block fewer than
//!   the width implies (refused at load), tensors of a dtype candle cannot load (candle
//!   returns errors and nothing here unwraps them), 0 text positions (refused); their tests
//!   prove the typed error and that the sound model still generates afterwards. The one
//!   native panic found is in the T5 both share: `relative_attention_num_buckets: 1` (a u32
//!   underflow in candle's bucket code while encoding the prompt, inside `generate`). It
//!   panics only under overflow checks (a release build wraps, and the model answers, which
//!   the tests expect there), and the T5 config comes from the shared `google/t5-v1_1-xxl`
//!   repo, whose id both loaders fix: no second model of the family in the same host can
//!   have a sound one, so the same host is then asked for a CLIP embedding.

mod support;
#[path = "support/tiny_gguf.rs"]
mod tiny_gguf;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lantern::capabilities::{EmbedRequest, FinishReason, GenerationEvent, ImageRequest, PromptInput, SamplingParams};
use lantern::hub::RepoRef;
use lantern::image_codec::DecodeLimits;
use lantern::registry::ImageEvent;
use lantern::{Capability, Catalog, CatalogEntry, Family, Host, LanternError, LanternResult};
use support::tiny;
use tiny_gguf::{Arch, Spec};

/// Every call must end within this; a hang fails the test instead of stalling the suite.
const BOUND: Duration = Duration::from_secs(60);
const GGUF_FILE: &str = "model.gguf";
const TEXTS: [&str; 2] = ["The cat sits outside", "A man is playing a guitar in the park"];

// ---- the calls, their answers and their failures ----

/// What is asked of a model: one per capability.
#[derive(Clone, Copy, Debug)]
enum Call {
    /// `registry.embed` of [`TEXTS`].
    Embed,
    /// `registry.generate`: four greedy tokens, read to the end of the stream.
    Generate,
    /// `registry.generate_image`: 64×64, two steps, read to the end of the stream.
    Image,
    /// CLIP: `embed_image_texts` of [`TEXTS`], then `embed_images` of one picture.
    Clip,
    /// LLaVA: `registry.ask` about one picture, four greedy tokens.
    Ask,
}

/// A model's answer, compared between a fresh host and the one that survived panics.
#[derive(Debug, PartialEq)]
enum Answer {
    Vectors(Vec<Vec<f32>>),
    Text { text: String, reason: FinishReason, tokens: usize },
    Png(Vec<u8>),
}

impl Answer {
    /// What any sound answer must be: unit vectors, four tokens, a 64×64 picture.
    fn assert_sound(&self, key: &str) {
        match self {
            Answer::Vectors(vectors) => {
                assert!(!vectors.is_empty(), "{key}: no vectors");
                for vector in vectors {
                    assert!(vector.len() >= 16 && vector.iter().all(|x| x.is_finite()), "{key}: {} components", vector.len());
                    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-4, "{key}: norm {norm}");
                }
            }
            Answer::Text { text, reason, tokens } => {
                assert_eq!((*tokens, *reason), (4, FinishReason::MaxTokens), "{key}: {text:?}");
                assert!(!text.is_empty(), "{key}: no text");
            }
            Answer::Png(png) => {
                let image = lantern::image_codec::decode(png, DecodeLimits::default()).unwrap();
                assert_eq!(image.dimensions(), (64, 64), "{key}");
            }
        }
    }
}

/// The boundary that must have caught a panic, by the words of the error it made.
#[derive(Clone, Copy, Debug)]
enum Boundary {
    /// `run_blocking("loading the model", …)` around the family's loader.
    Load,
    /// `run_blocking(what, …)` around a one-shot model call.
    Call(&'static str),
    /// `catch_unwind` on the worker thread of a text stream (`registry::stream_text`).
    Stream,
    /// `catch_unwind` on the worker thread of an image stream (`registry::generate_image`).
    ImageStream,
}

/// How the broken checkpoint must fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// A native panic caught at this boundary: `InferenceFailed`, "... panicked ...".
    Panic(Boundary),
    /// No native panic is reachable from a checkpoint: the family refuses it with this
    /// error kind, whose message contains this text.
    Refused(fn(&LanternError) -> bool, &'static str),
    /// None: the checkpoint answers soundly (a release build, where an overflow that
    /// panics under overflow checks wraps instead).
    Answers,
}

impl Failure {
    fn assert(self, key: &str, error: &LanternError) {
        match self {
            Failure::Panic(boundary) => {
                let LanternError::InferenceFailed(message) = error else {
                    panic!("{key}: a native panic must come back as inference-failed, got {error:?}");
                };
                let expected = match boundary {
                    Boundary::Load => "loading the model panicked: ".to_string(),
                    Boundary::Call(what) => format!("{what} panicked: "),
                    Boundary::Stream => format!("{key}: the generation panicked"),
                    Boundary::ImageStream => format!("{key}: the image generation panicked"),
                };
                assert!(message.contains(&expected), "{key}: expected {expected:?} in {message:?}");
            }
            Failure::Refused(kind, says) => {
                assert!(kind(error), "{key}: wrong error kind: {error:?}");
                assert!(error.to_string().contains(says), "{key}: expected {says:?} in {error}");
                assert!(!error.to_string().contains("panicked"), "{key}: {error}");
            }
            Failure::Answers => panic!("{key}: expected an answer, got {error:?}"),
        }
    }
}

async fn bounded<T>(what: &str, work: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, work).await.unwrap_or_else(|_| panic!("{what} did not end within {BOUND:?}"))
}

/// A small deterministic picture as PNG bytes.
fn picture() -> Vec<u8> {
    lantern::image_codec::encode_png(48, 40, support::tiny_clip::test_image(48, 40).into_raw()).unwrap()
}

/// Reads a text stream to its `Finished` event.
async fn read_text(mut stream: lantern::streaming::EventStream<GenerationEvent>) -> LanternResult<Answer> {
    let mut text = String::new();
    loop {
        match stream.next(|event| matches!(event, GenerationEvent::Finished { .. })).await? {
            Some(GenerationEvent::Text(piece)) => text.push_str(&piece),
            Some(GenerationEvent::Finished { reason, usage }) => {
                return Ok(Answer::Text { text, reason, tokens: usage.generated_tokens })
            }
            None => panic!("the stream ended without Finished or an error"),
        }
    }
}

/// Asks `key` for `call` through the host's native API.
async fn answer(host: &Host, call: Call, key: &str) -> LanternResult<Answer> {
    let registry = host.registry();
    let texts = || TEXTS.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    match call {
        Call::Embed => Ok(Answer::Vectors(registry.embed(key, EmbedRequest::new(texts())).await?.vectors)),
        Call::Generate => {
            let prompt = PromptInput::Text("Hello the sea".into());
            read_text(registry.generate(key, prompt, SamplingParams::greedy(4)).await?).await
        }
        Call::Image => {
            let model = registry.image_generator(key, None).await?;
            let request = ImageRequest {
                prompt: "a red cat".into(),
                negative_prompt: None,
                width: 64,
                height: 64,
                steps: 2,
                guidance_scale: 1.0,
                seed: 7,
                truncate: true,
            };
            let mut stream = registry.generate_image(key, model, request);
            loop {
                match stream.next(|event| matches!(event, ImageEvent::Done(_))).await? {
                    Some(ImageEvent::Step { .. }) => {}
                    Some(ImageEvent::Done(image)) => return Ok(Answer::Png(image.png)),
                    None => panic!("the image stream ended without Done or an error"),
                }
            }
        }
        Call::Clip => {
            let mut vectors = registry.embed_image_texts(key, texts()).await?;
            vectors.extend(registry.embed_images(key, vec![picture()], DecodeLimits::default()).await?);
            Ok(Answer::Vectors(vectors))
        }
        Call::Ask => {
            let question = "what is the color?".to_string();
            read_text(registry.ask(key, picture(), question, SamplingParams::greedy(4), DecodeLimits::default()).await?).await
        }
    }
}

// ---- tiny repos on a local hub, a catalog naming them ----

/// The repos of one test, written under a temporary folder, and the catalog naming them.
struct Setup {
    root: tempfile::TempDir,
    repos: Vec<(String, PathBuf)>,
    catalog: Catalog,
}

impl Setup {
    fn new() -> Self {
        Setup { root: tempfile::tempdir().unwrap(), repos: Vec::new(), catalog: Catalog::builtin() }
    }

    /// A folder under the test's root (for writers that lay out several repos at once).
    fn folder(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Serves `dir` as the repo `repo`.
    fn serve(&mut self, repo: &str, dir: PathBuf) {
        self.repos.push((repo.to_string(), dir));
    }

    /// Serves a folder that `make` fills as the repo `repo`.
    fn repo(&mut self, repo: &str, make: impl FnOnce(&Path)) {
        let dir = self.folder(&repo.replace('/', "--"));
        make(&dir);
        self.serve(repo, dir);
    }

    /// `twin` in the catalog: `sound`'s entry (same family and files) reading the repo
    /// `twin`, which `make` fills.
    fn twin(&mut self, sound: &str, twin: &str, make: impl FnOnce(&Path)) {
        let entry = self.catalog.get(sound).unwrap_or_else(|| panic!("{sound} is not in the catalog")).clone();
        self.catalog.insert(CatalogEntry { key: twin.into(), repo: RepoRef::main(twin), ..entry });
        self.repo(twin, make);
    }

    /// A GGUF model `key` whose one file `make` writes.
    fn gguf(&mut self, key: &str, make: impl FnOnce(&Path)) {
        self.catalog.insert(CatalogEntry {
            key: key.into(),
            repo: RepoRef::main(key),
            family: Family::GgufLlm,
            capabilities: vec![Capability::TextGeneration],
            files: vec![GGUF_FILE.into()],
            other_repos: Vec::new(),
            gguf_quant: None,
            description: "tiny random test checkpoint".into(),
        });
        self.repo(key, |dir| make(&dir.join(GGUF_FILE)));
    }

    /// Serves the repos. Then: `sound` in a fresh host (the reference answer); in another
    /// host `broken` fails twice as `failure` says, and `sound` answers there exactly as
    /// in the fresh host.
    async fn check(self, call: Call, sound: &str, broken: &str, failure: Failure) {
        self.check_calls((call, sound), (call, broken), failure).await;
    }

    /// [`Setup::check`] with a call of its own for each model (`sound` may be of another family).
    async fn check_calls(self, (sound_call, sound): (Call, &str), (call, broken): (Call, &str), failure: Failure) {
        let mirror = support::mirror_of_repos(&self.repos).await;
        let host = |cache: &Path| {
            Host::builder()
                .hub_config(support::hub_config(&mirror.endpoint(), cache))
                .catalog(self.catalog.clone())
                .build()
                .expect("building the host")
        };
        let (fresh_cache, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

        let reference = bounded(sound, answer(&host(fresh_cache.path()), sound_call, sound)).await;
        let reference = reference.unwrap_or_else(|e| panic!("{sound}: {e}"));
        reference.assert_sound(sound);

        let host = host(cache.path());
        for _ in 0..2 {
            match (bounded(broken, answer(&host, call, broken)).await, failure) {
                (Ok(answer), Failure::Answers) => answer.assert_sound(broken),
                (Ok(_), _) => panic!("{broken} answered"),
                (Err(error), failure) => failure.assert(broken, &error),
            }
        }
        bounded("the end of the failed streams", async {
            while host.registry().active_generations() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // The same host: the sound model loads and answers as in a fresh one.
        let after = bounded(sound, answer(&host, sound_call, sound)).await.unwrap_or_else(|e| panic!("{sound} after {broken}: {e}"));
        assert!(after == reference, "{sound}: the answer after {broken}'s failures differs from a fresh host's");
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
}

/// One tensor of a safetensors file, as stored.
struct Raw {
    dtype: String,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

/// Rewrites the safetensors file at `path` tensor by tensor (by hand, so that any dtype
/// can be written, even those candle cannot hold); `edit` returns None to drop one.
fn edit_safetensors(path: &Path, mut edit: impl FnMut(&str, Raw) -> Option<Raw>) {
    let file = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&file[8..8 + header_len]).unwrap();
    let data = &file[8 + header_len..];
    let (mut entries, mut out) = (serde_json::Map::new(), Vec::new());
    for (name, info) in header {
        if name == "__metadata__" {
            entries.insert(name, info);
            continue;
        }
        let [start, end]: [usize; 2] = serde_json::from_value(info["data_offsets"].clone()).unwrap();
        let raw = Raw {
            dtype: info["dtype"].as_str().unwrap().to_string(),
            shape: serde_json::from_value(info["shape"].clone()).unwrap(),
            bytes: data[start..end].to_vec(),
        };
        if let Some(raw) = edit(&name, raw) {
            let start = out.len();
            out.extend_from_slice(&raw.bytes);
            entries.insert(name, serde_json::json!({ "dtype": raw.dtype, "shape": raw.shape, "data_offsets": [start, out.len()] }));
        }
    }
    let mut header = serde_json::to_vec(&entries).unwrap();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header);
    bytes.extend(out);
    std::fs::write(path, bytes).unwrap();
}

// ---- GGUF checkpoints ----

type Metadata = HashMap<String, Value>;
type Tensors = BTreeMap<String, QTensor>;


/// Rewrites the GGUF at `path` with `edit` made to its metadata and tensors (kept in
/// their stored formats).
fn edit_gguf(path: &Path, edit: impl FnOnce(&mut Metadata, &mut Tensors)) {
    let (mut metadata, mut tensors) = {
        let mut file = std::fs::File::open(path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        let tensors: Tensors =
            names.into_iter().map(|name| (name.clone(), content.tensor(&mut file, &name, &Device::Cpu).unwrap())).collect();
        (content.metadata, tensors)
    };
    edit(&mut metadata, &mut tensors);
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(path).unwrap(), &metadata, &tensors).unwrap();
}

fn set(metadata: &mut Metadata, key: &str, value: Value) {
    metadata.insert(key.to_string(), value);
}

fn f32_tensor(values: Vec<f32>) -> QTensor {
    let len = values.len();
    QTensor::quantize(&Tensor::from_vec(values, len, &Device::Cpu).unwrap(), GgmlDType::F32).unwrap()
}

/// A tiny qwen3 checkpoint (tiny_gguf) turned into architecture `to`: the metadata keys
/// renamed, the per-head norms of queries and keys dropped unless `to` has them.
fn from_qwen3(path: &Path, to: &str, seed: u64, keep_head_norms: bool, edit: impl FnOnce(&mut Metadata, &mut Tensors)) {
    tiny_gguf::write(&Spec::qwen(Arch::Qwen3, seed), path);
    edit_gguf(path, |metadata, tensors| {
        let keys: Vec<String> = metadata.keys().filter(|key| key.starts_with("qwen3.")).cloned().collect();
        for key in keys {
            let value = metadata.remove(&key).unwrap();
            metadata.insert(format!("{to}.{}", &key["qwen3.".len()..]), value);
        }
        set(metadata, "general.architecture", Value::String(to.into()));
        if !keep_head_norms {
            tensors.retain(|name, _| !name.ends_with("attn_q_norm.weight") && !name.ends_with("attn_k_norm.weight"));
        }
        edit(metadata, tensors);
    });
}

/// Llama (dense: the host's own forward pass and kernels).
fn tiny_llama(path: &Path) {
    from_qwen3(path, "llama", 21, false, |_, _| {});
}

/// Qwen2: biases on the q, k and v projections.
fn tiny_qwen2(path: &Path) {
    use tiny_gguf::{HEAD_DIM, HIDDEN, KV_HEADS, LAYERS};
    from_qwen3(path, "qwen2", 22, false, |_, tensors| {
        for layer in 0..LAYERS {
            for (part, width) in [("q", HIDDEN), ("k", KV_HEADS * HEAD_DIM), ("v", KV_HEADS * HEAD_DIM)] {
                tensors.insert(format!("blk.{layer}.attn_{part}.bias"), f32_tensor(vec![0.01; width]));
            }
        }
    });
}

/// Gemma 3: the post-attention and post-FFN norms and a sliding window.
fn tiny_gemma3(path: &Path) {
    use tiny_gguf::{HIDDEN, LAYERS};
    from_qwen3(path, "gemma3", 23, true, |metadata, tensors| {
        set(metadata, "gemma3.attention.sliding_window", Value::U32(512));
        for layer in 0..LAYERS {
            for norm in ["post_attention_norm", "post_ffw_norm"] {
                tensors.insert(format!("blk.{layer}.{norm}.weight"), f32_tensor(vec![1.0; HIDDEN]));
            }
        }
    });
}

/// `tokenizer.ggml.token_type` one entry longer than the vocabulary, that entry a control
/// token: the GGUF tokenizer builder indexes the token list with it.
fn control_token_past_the_vocabulary(metadata: &mut Metadata) {
    let Some(Value::Array(types)) = metadata.get_mut("tokenizer.ggml.token_type") else { panic!("no token types") };
    types.push(Value::I32(3));
}

/// `make` writes a sound checkpoint; the broken one is it with `edit` made.
fn broken(make: fn(&Path), edit: impl FnOnce(&mut Metadata, &mut Tensors)) -> impl FnOnce(&Path) {
    move |path| {
        make(path);
        edit_gguf(path, edit);
    }
}

async fn check_gguf(
    sound_make: fn(&Path),
    sound: &str,
    broken_key: &str,
    edit: impl FnOnce(&mut Metadata, &mut Tensors),
    boundary: Boundary,
) {
    let mut setup = Setup::new();
    setup.gguf(sound, sound_make);
    setup.gguf(broken_key, broken(sound_make, edit));
    setup.check(Call::Generate, sound, broken_key, Failure::Panic(boundary)).await;
}

// ---- text embedding families (bert: tests/hostile.rs) ----

/// The tiny repo `make` writes as `sound`, and a twin whose config.json `edit` changes.
async fn check_embedder(make: fn(&Path), sound: &str, broken_key: &str, edit: fn(&mut serde_json::Value)) {
    let mut setup = Setup::new();
    setup.repo(sound, make);
    setup.twin(sound, broken_key, |dir| {
        make(dir);
        edit_json(&dir.join("config.json"), edit);
    });
    setup.check(Call::Embed, sound, broken_key, Failure::Panic(Boundary::Load)).await;
}

#[tokio::test]
async fn jina_bert_zero_heads() {
    check_embedder(tiny::jina, tiny::JINA, "panic/jina-zero-heads", |c| c["num_attention_heads"] = 0.into()).await;
}

#[tokio::test]
async fn stella_400m_zero_heads() {
    check_embedder(tiny::stella_400m, tiny::STELLA_400M, "panic/stella-400m-zero-heads", |c| c["num_attention_heads"] = 0.into())
        .await;
}

#[tokio::test]
async fn stella_1_5b_zero_heads() {
    check_embedder(tiny::stella_1_5b, tiny::STELLA_1_5B, "panic/stella-1.5b-zero-heads", |c| c["num_attention_heads"] = 0.into())
        .await;
}

#[tokio::test]
async fn gte_qwen2_zero_heads() {
    check_embedder(tiny::gte_qwen2, tiny::GTE_QWEN2, "panic/gte-qwen2-zero-heads", |c| c["num_attention_heads"] = 0.into()).await;
}

#[tokio::test]
async fn nv_embed_zero_heads() {
    check_embedder(tiny::nv_embed, tiny::NV_EMBED, "panic/nv-embed-zero-heads", |c| {
        c["text_config"]["num_attention_heads"] = 0.into()
    })
    .await;
}

// ---- GGUF architectures (phi3: tests/hostile.rs) ----

#[tokio::test]
async fn gguf_llama_narrow_heads_panic_while_generating() {
    // Heads of 8 where the weights hold heads of 16: every load check passes (the q, k, v
    // parts are at least as wide as the heads need), and the attention output, half the
    // width `attn_output` reads, is sliced past its end in the first forward pass.
    let edit = |md: &mut Metadata, _: &mut Tensors| set(md, "llama.attention.key_length", Value::U32(8));
    check_gguf(tiny_llama, "panic-test/tiny-llama", "panic-test/llama-narrow-heads", edit, Boundary::Stream).await;
}

// qwen2 and qwen3 run on the llama engine too: it refuses the zero head counts that made
// candle's modules panic at load (a typed error), so they panic the way llama does.
#[tokio::test]
async fn gguf_qwen2_narrow_heads_panic_while_generating() {
    let edit = |md: &mut Metadata, _: &mut Tensors| set(md, "qwen2.attention.key_length", Value::U32(8));
    check_gguf(tiny_qwen2, "panic-test/tiny-qwen2", "panic-test/qwen2-narrow-heads", edit, Boundary::Stream).await;
}

#[tokio::test]
async fn gguf_qwen3_narrow_heads_panic_while_generating() {
    // The head norms cut to 8 values too, so that they fit the narrower heads at load.
    let edit = |md: &mut Metadata, tensors: &mut Tensors| {
        set(md, "qwen3.attention.key_length", Value::U32(8));
        for (name, tensor) in tensors.iter_mut() {
            if name.ends_with("attn_q_norm.weight") || name.ends_with("attn_k_norm.weight") {
                *tensor = f32_tensor(vec![1.0; 8]);
            }
        }
    };
    let make: fn(&Path) = |path| {
        tiny_gguf::write(&Spec::qwen(Arch::Qwen3, 24), path);
    };
    check_gguf(make, "panic-test/tiny-qwen3", "panic-test/qwen3-narrow-heads", edit, Boundary::Stream).await;
}

#[tokio::test]
async fn gguf_qwen3_moe_zero_heads() {
    let edit = |md: &mut Metadata, _: &mut Tensors| set(md, "qwen3moe.attention.head_count", Value::U32(0));
    let make: fn(&Path) = |path| {
        tiny_gguf::write(&Spec::qwen(Arch::Qwen3Moe, 25), path);
    };
    check_gguf(make, "panic-test/tiny-qwen3moe", "panic-test/qwen3moe-zero-heads", edit, Boundary::Load).await;
}

#[tokio::test]
async fn gguf_gemma3_control_token_past_the_vocabulary() {
    let edit = |md: &mut Metadata, _: &mut Tensors| control_token_past_the_vocabulary(md);
    check_gguf(tiny_gemma3, "panic-test/tiny-gemma3", "panic-test/gemma3-bad-token-types", edit, Boundary::Load)
        .await;
}

#[tokio::test]
async fn gguf_deepseek2_control_token_past_the_vocabulary() {
    let make: fn(&Path) = |path| {
        tiny_gguf::write(&Spec::qwen(Arch::DeepSeek2, 26), path);
    };
    let edit = |md: &mut Metadata, _: &mut Tensors| control_token_past_the_vocabulary(md);
    check_gguf(make, "panic-test/tiny-deepseek2", "panic-test/deepseek2-bad-token-types", edit, Boundary::Load)
        .await;
}

// ---- image families ----

#[tokio::test]
async fn llava_language_model_weight_of_an_unloadable_dtype() {
    use support::tiny_llava::{llava_with, LLAVA};
    const BROKEN: &str = "panic/llava-bool-norm";
    const TENSOR: &str = "language_model.model.layers.0.input_layernorm.weight";
    let mut setup = Setup::new();
    setup.repo(LLAVA, |dir| llava_with(dir, None));
    setup.twin(LLAVA, BROKEN, |dir| {
        llava_with(dir, None);
        // The host checks every language-model tensor's name and shape (candle's
        // `Llama::load` unwraps what it reads), not its dtype: stored as BOOL, which
        // candle cannot convert, the tensor fails inside `Llama::load`, which panics.
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("model.safetensors.index.json")).unwrap()).unwrap();
        let shard = index["weight_map"][TENSOR].as_str().unwrap();
        edit_safetensors(&dir.join(shard), |name, raw| {
            Some(match name == TENSOR {
                true => Raw { dtype: "BOOL".into(), bytes: vec![1; raw.shape.iter().product()], shape: raw.shape },
                false => raw,
            })
        });
    });
    setup.check(Call::Ask, LLAVA, BROKEN, Failure::Panic(Boundary::Load)).await;
}

#[tokio::test]
async fn clip_text_tower_without_positions() {
    use support::tiny_clip::{clip_base, CLIP_BASE};
    const BROKEN: &str = "panic/clip-no-positions";
    let mut setup = Setup::new();
    setup.repo(CLIP_BASE, clip_base);
    setup.twin(CLIP_BASE, BROKEN, |dir| {
        clip_base(dir);
        edit_json(&dir.join("config.json"), |c| c["text_config"]["max_position_embeddings"] = 0.into());
        edit_safetensors(&dir.join("model.safetensors"), |name, raw| {
            Some(match name == "text_model.embeddings.position_embedding.weight" {
                true => Raw { shape: vec![0, raw.shape[1]], bytes: Vec::new(), dtype: raw.dtype },
                false => raw,
            })
        });
    });
    // Cutting a text to the tower's positions computes `positions - 1`: an overflow, which
    // panics where overflow checks are on (this test build); a release build refuses the
    // text as too long for the tower instead.
    let failure = match cfg!(debug_assertions) {
        true => Failure::Panic(Boundary::Call("embedding texts")),
        false => Failure::Refused(|e| matches!(e, LanternError::InvalidInput(_)), "token sequences must hold"),
    };
    setup.check(Call::Clip, CLIP_BASE, BROKEN, failure).await;
}

#[tokio::test]
async fn sd35_checkpoint_with_fewer_heads_than_its_width_is_refused() {
    use support::tiny_sd35::{self, REPO};
    const BROKEN: &str = "panic/sd35-one-block";
    let mut setup = Setup::new();
    for (repo, dir) in tiny_sd35::write(&setup.folder("sound")) {
        setup.serve(repo, dir);
    }
    let broken_repos = setup.folder("broken");
    setup.twin(REPO, BROKEN, move |dir| {
        // The MMDiT's head count is its number of joint blocks (width = 64 × heads): one
        // block dropped leaves a checkpoint whose width says two heads and whose blocks one.
        let (_, written) = tiny_sd35::write(&broken_repos).into_iter().find(|(repo, _)| *repo == REPO).unwrap();
        std::fs::remove_dir(dir).unwrap();
        std::fs::rename(written, dir).unwrap();
        edit_safetensors(&dir.join("sd3.5_large_turbo.safetensors"), |name, raw| {
            (!name.starts_with("model.diffusion_model.joint_blocks.1.")).then_some(raw)
        });
    });
    let refused = Failure::Refused(|e| matches!(e, LanternError::InferenceFailed(_)), "not an SD 3 MMDiT");
    setup.check(Call::Image, REPO, BROKEN, refused).await;
}

#[tokio::test]
async fn flux_checkpoint_with_heads_that_do_not_divide_its_width_is_refused() {
    use support::tiny_flux::{self, FLUX, GGUF};
    const BROKEN: &str = "panic/flux-gguf-odd-heads";
    let mut setup = Setup::new();
    let repos = tiny_flux::write(&setup.folder("sound"));
    let flux_dir = repos.iter().find(|(repo, _)| *repo == FLUX).unwrap().1.clone();
    for (repo, dir) in repos {
        setup.serve(repo, dir);
    }
    // The FLUX loaders read the autoencoder, T5 and CLIP from their fixed repos; the GGUF
    // entry's transformer comes from its own repo, which is where the twin differs.
    let broken_root = setup.folder("broken");
    setup.twin(GGUF, BROKEN, move |dir| {
        let (_, written) = tiny_flux::write_gguf(&broken_root, &flux_dir);
        std::fs::rename(written.join("flux1-schnell.gguf"), dir.join("flux1-schnell.gguf")).unwrap();
        // Heads of 48 (the query norm's width) in a transformer 64 wide.
        edit_gguf(&dir.join("flux1-schnell.gguf"), |_, tensors| {
            tensors.insert("double_blocks.0.img_attn.norm.query_norm.scale".into(), f32_tensor(vec![1.0; 48]));
        });
    });
    let refused = Failure::Refused(|e| matches!(e, LanternError::ModelNotSupported(_)), "is not a whole number of heads");
    setup.check(Call::Image, FLUX, BROKEN, refused).await;
}

/// The tiny image model `key` (its repos written by `write`) with a T5 of one relative
/// position bucket: `relative_attention_num_buckets: 1` in the shared `google/t5-v1_1-xxl`
/// config, and the bucket table of the T5 weights (`weights`: repo, file) cut to its one
/// row, so that the model loads. Encoding the prompt computes `buckets / 2 - 1` in u32: an
/// overflow, which panics where overflow checks are on (this test build) on the image
/// stream's worker; a release build wraps, stays in the table, and the model answers.
/// The shared repo is the whole host's, so the sound model asked after is CLIP's.
async fn check_one_bucket_t5(write: fn(&Path) -> Vec<(&'static str, PathBuf)>, key: &str, (repo, file): (&str, &str)) {
    use support::tiny_clip::{clip_base, CLIP_BASE};
    let t5_repo = lantern::catalog::text_encoder_repos::t5_xxl().repo;
    let mut setup = Setup::new();
    setup.repo(CLIP_BASE, clip_base);
    for (id, dir) in write(&setup.folder("image")) {
        if id == t5_repo {
            edit_json(&dir.join("config.json"), |c| c["relative_attention_num_buckets"] = 1.into());
        }
        if id == repo {
            edit_safetensors(&dir.join(file), |name, raw| {
                Some(match name.ends_with("relative_attention_bias.weight") {
                    true => Raw { bytes: raw.bytes[..raw.bytes.len() / raw.shape[0]].to_vec(), shape: vec![1, raw.shape[1]], dtype: raw.dtype },
                    false => raw,
                })
            });
        }
        setup.serve(id, dir);
    }
    let failure = match cfg!(debug_assertions) {
        true => Failure::Panic(Boundary::ImageStream),
        false => Failure::Answers,
    };
    setup.check_calls((Call::Clip, CLIP_BASE), (Call::Image, key), failure).await;
}

#[tokio::test]
async fn sd35_t5_with_one_bucket_panics_while_generating() {
    use support::tiny_sd35::REPO;
    check_one_bucket_t5(support::tiny_sd35::write, REPO, (REPO, "text_encoders/t5xxl_fp16.safetensors")).await;
}

#[tokio::test]
async fn flux_t5_with_one_bucket_panics_while_generating() {
    use support::tiny_flux::{FLUX, T5};
    check_one_bucket_t5(support::tiny_flux::write, FLUX, (T5, "model.safetensors")).await;
}
