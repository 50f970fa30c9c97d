//! Tiny random CLIP checkpoints for `openai/clip-vit-base-patch32` and
//! `openai/clip-vit-large-patch14-336`: the real repos' files (`config.json` with the
//! real keys, `model.safetensors` with HF's tensor names and f32 like the real ones,
//! `tokenizer.json`, `preprocessor_config.json` in the repos' old spelling) but two layers
//! of width 32 or 48, tiny images (32 px with 16 px patches; 28 px with 14 px patches for
//! the -336 key) and random weights from a fixed seed, so the files are identical on
//! every run. Their vectors mean nothing; they test the whole path against transformers.
//! Also the named-tensor writer that the tiny LLaVA reuses.

use super::splitmix::SplitMix64;
use super::tiny_tokenizers;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

pub const CLIP_BASE: &str = "openai/clip-vit-base-patch32";
pub const CLIP_LARGE_336: &str = "openai/clip-vit-large-patch14-336";

/// The CLIP mean and std of every CLIP preprocessor config.
pub const CLIP_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
pub const CLIP_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Named tensors filled from a seeded source in the order they are added.
pub struct Tensors {
    pub tensors: BTreeMap<String, Tensor>,
    rng: SplitMix64,
}

impl Tensors {
    pub fn new(seed: u64) -> Self {
        Tensors { tensors: BTreeMap::new(), rng: SplitMix64(seed) }
    }

    /// Uniform in ±`spread` around `center`.
    pub fn add(&mut self, name: impl Into<String>, shape: &[usize], center: f32, spread: f32) {
        let count: usize = shape.iter().product();
        let values: Vec<f32> = (0..count).map(|_| center + (self.rng.next_unit() - 0.5) * 2.0 * spread).collect();
        self.tensors.insert(name.into(), Tensor::from_vec(values, shape, &Device::Cpu).unwrap());
    }

    pub fn weight(&mut self, name: &str, shape: &[usize]) {
        self.add(name, shape, 0.0, 0.2);
    }

    pub fn linear(&mut self, prefix: &str, out: usize, inp: usize, bias: bool) {
        self.weight(&format!("{prefix}.weight"), &[out, inp]);
        if bias {
            self.weight(&format!("{prefix}.bias"), &[out]);
        }
    }

    pub fn layer_norm(&mut self, prefix: &str, width: usize) {
        self.add(format!("{prefix}.weight"), &[width], 1.0, 0.2);
        self.weight(&format!("{prefix}.bias"), &[width]);
    }

    /// Writes one `model.safetensors`.
    pub fn save(&self, path: &Path, dtype: DType) {
        let all: HashMap<&String, Tensor> = self.tensors.iter().map(|(k, v)| (k, v.to_dtype(dtype).unwrap())).collect();
        candle_core::safetensors::save(&all, path).unwrap();
    }

    /// Writes `shards` files named as the Hub names them (in name order) and their
    /// `model.safetensors.index.json`.
    pub fn save_sharded(&self, dir: &Path, shards: usize, dtype: DType) {
        let names: Vec<&String> = self.tensors.keys().collect();
        let per_shard = names.len().div_ceil(shards);
        let mut weight_map = serde_json::Map::new();
        let mut total = 0;
        for (index, chunk) in names.chunks(per_shard).enumerate() {
            let file = format!("model-{:05}-of-{shards:05}.safetensors", index + 1);
            let part: HashMap<&String, Tensor> =
                chunk.iter().map(|name| (*name, self.tensors[*name].to_dtype(dtype).unwrap())).collect();
            total += part.values().map(|t| t.elem_count() * dtype.size_in_bytes()).sum::<usize>();
            candle_core::safetensors::save(&part, dir.join(&file)).unwrap();
            for name in chunk {
                weight_map.insert((*name).clone(), json!(file));
            }
        }
        let index = json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
    }
}

/// Sizes of one tiny tower.
#[derive(Clone, Copy)]
pub struct Tower {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
}

/// A CLIP encoder's layers under `{prefix}encoder.layers.{i}`.
fn encoder(t: &mut Tensors, prefix: &str, tower: Tower) {
    for layer in 0..tower.layers {
        let p = format!("{prefix}encoder.layers.{layer}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            t.linear(&format!("{p}.self_attn.{proj}"), tower.hidden, tower.hidden, true);
        }
        t.layer_norm(&format!("{p}.layer_norm1"), tower.hidden);
        t.linear(&format!("{p}.mlp.fc1"), tower.intermediate, tower.hidden, true);
        t.linear(&format!("{p}.mlp.fc2"), tower.hidden, tower.intermediate, true);
        t.layer_norm(&format!("{p}.layer_norm2"), tower.hidden);
    }
}

/// A CLIP vision transformer under `prefix` (ending with `vision_model.`), HF's names
/// (`pre_layrnorm` included).
pub fn vision_tower(t: &mut Tensors, prefix: &str, tower: Tower, image_size: usize, patch: usize) {
    let positions = (image_size / patch).pow(2) + 1;
    t.add(format!("{prefix}embeddings.class_embedding"), &[tower.hidden], 0.0, 0.5);
    t.weight(&format!("{prefix}embeddings.patch_embedding.weight"), &[tower.hidden, 3, patch, patch]);
    t.add(format!("{prefix}embeddings.position_embedding.weight"), &[positions, tower.hidden], 0.0, 0.5);
    t.layer_norm(&format!("{prefix}pre_layrnorm"), tower.hidden);
    encoder(t, prefix, tower);
    t.layer_norm(&format!("{prefix}post_layernorm"), tower.hidden);
}

/// HF `CLIPVisionConfig` keys as the real repos write them, with tiny sizes.
pub fn vision_config(tower: Tower, image_size: usize, patch: usize, projection: usize) -> Value {
    json!({
        "hidden_act": "quick_gelu", "hidden_size": tower.hidden, "image_size": image_size,
        "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": tower.intermediate,
        "layer_norm_eps": 1e-05, "model_type": "clip_vision_model", "num_attention_heads": tower.heads,
        "num_channels": 3, "num_hidden_layers": tower.layers, "patch_size": patch, "projection_dim": projection
    })
}

/// What differs between the two tiny CLIP repos.
struct ClipShape {
    text: Tower,
    vision: Tower,
    image_size: usize,
    patch: usize,
    projection: usize,
    seed: u64,
}

fn clip_repo(dir: &Path, repo: &str, s: ClipShape) {
    std::fs::create_dir_all(dir).unwrap();
    let vocab = tiny_tokenizers::clip_vocab_size();
    let mut t = Tensors::new(s.seed);
    t.add("text_model.embeddings.token_embedding.weight", &[vocab, s.text.hidden], 0.0, 0.5);
    t.add("text_model.embeddings.position_embedding.weight", &[77, s.text.hidden], 0.0, 0.5);
    encoder(&mut t, "text_model.", s.text);
    t.layer_norm("text_model.final_layer_norm", s.text.hidden);
    vision_tower(&mut t, "vision_model.", s.vision, s.image_size, s.patch);
    t.weight("visual_projection.weight", &[s.projection, s.vision.hidden]);
    t.weight("text_projection.weight", &[s.projection, s.text.hidden]);
    t.tensors.insert("logit_scale".into(), Tensor::new(2.6592f32, &Device::Cpu).unwrap());
    t.save(&dir.join("model.safetensors"), DType::F32);

    let config = json!({
        "_name_or_path": repo, "architectures": ["CLIPModel"], "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592, "model_type": "clip", "projection_dim": s.projection,
        "text_config": {
            "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": s.text.hidden,
            "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": s.text.intermediate,
            "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
            "num_attention_heads": s.text.heads, "num_hidden_layers": s.text.layers, "pad_token_id": 1,
            "projection_dim": s.projection, "vocab_size": vocab
        },
        "torch_dtype": "float32", "transformers_version": "4.21.3",
        "vision_config": vision_config(s.vision, s.image_size, s.patch, s.projection)
    });
    std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&config).unwrap()).unwrap();
    let preprocessor = json!({
        "crop_size": s.image_size, "do_center_crop": true, "do_normalize": true, "do_resize": true,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": s.image_size
    });
    std::fs::write(dir.join("preprocessor_config.json"), serde_json::to_string_pretty(&preprocessor).unwrap()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string(&tiny_tokenizers::clip()).unwrap()).unwrap();
}

/// Tiny `openai/clip-vit-base-patch32`: 32 px images, 16 px patches, a 24-wide space.
pub fn clip_base(dir: &Path) {
    let tower = Tower { hidden: 32, intermediate: 64, layers: 2, heads: 2 };
    clip_repo(
        dir,
        CLIP_BASE,
        ClipShape { text: tower, vision: tower, image_size: 32, patch: 16, projection: 24, seed: 0xC11F_0032 },
    );
}

/// Tiny `openai/clip-vit-large-patch14-336`: 28 px images, 14 px patches, a 20-wide space.
pub fn clip_large_336(dir: &Path) {
    let text = Tower { hidden: 32, intermediate: 64, layers: 2, heads: 4 };
    let vision = Tower { hidden: 48, intermediate: 96, layers: 2, heads: 4 };
    clip_repo(dir, CLIP_LARGE_336, ClipShape { text, vision, image_size: 28, patch: 14, projection: 20, seed: 0xC11F_0336 });
}

/// Both tiny CLIP repos under `root`, as (repo id, folder).
pub fn all(root: &Path) -> Vec<(&'static str, PathBuf)> {
    type Maker = (&'static str, fn(&Path));
    let makers: [Maker; 2] = [(CLIP_BASE, clip_base), (CLIP_LARGE_336, clip_large_336)];
    makers
        .into_iter()
        .map(|(repo, make)| {
            let dir = root.join(repo.replace('/', "--"));
            make(&dir);
            (repo, dir)
        })
        .collect()
}

/// A deterministic test picture (the reference script draws the same one, integer math):
/// gradients plus a 3-px checkerboard, so resampling differences show. Needs 2x2 or more.
pub fn test_image(width: u32, height: u32) -> image::RgbImage {
    image::RgbImage::from_fn(width, height, |x, y| {
        let check = if (x / 3 + y / 3) % 2 == 0 { 60 } else { 0 };
        image::Rgb([(x * 255 / (width - 1)) as u8, (y * 255 / (height - 1)) as u8, ((x * 7 + y * 13) % 196 + check) as u8])
    })
}

/// Serves the tiny repos that `make` writes on a local hub and fetches the catalog
/// entries `keys` through a host pointed at it (the real download path), then shuts the
/// hub down. The folders (repos, cache) live as long as the returned guards.
pub fn fetch_through_hub(
    keys: &[&str],
    make: impl FnOnce(&Path) -> Vec<(&'static str, PathBuf)>,
) -> (Vec<lantern::hub::ModelFiles>, (tempfile::TempDir, tempfile::TempDir)) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let repos = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let mut builder = hubmirror::Mirror::builder();
        for (repo, dir) in make(repos.path()) {
            builder = builder.repo(repo, dir);
        }
        let mirror = builder.serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("starting the test hub");
        let host = super::host(&mirror.endpoint(), cache.path());
        let mut fetched = Vec::new();
        for key in keys {
            let entry = host.registry().catalog().get(key).unwrap_or_else(|| panic!("{key} is not in the catalog"));
            fetched
                .push(host.registry().hub().fetch_from_repos(&entry.all_repos(), None).await.expect("fetching through the hub"));
        }
        (fetched, (repos, cache))
    })
}

/// `openai/clip-vit-base-patch32` at its REAL sizes (text 512 wide, vision 768 wide, 12
/// layers each, 224 px, 32 px patches, 512-wide space) with random weights: for
/// benchmarks, where the cost of a real-sized forward pass matters and the values do not.
pub fn clip_base_full_size(dir: &Path) {
    let text = Tower { hidden: 512, intermediate: 2048, layers: 12, heads: 8 };
    let vision = Tower { hidden: 768, intermediate: 3072, layers: 12, heads: 12 };
    clip_repo(dir, CLIP_BASE, ClipShape { text, vision, image_size: 224, patch: 32, projection: 512, seed: 0xC11F_F011 });
}
