//! The `deepseek2.*` metadata keys llama.cpp's converter writes (DeepSeek-V2/V2.5/V3,
//! Kimi-K2), read with llama.cpp's defaults and checked before any weight is loaded.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::Value;

use crate::error::{LanternError, LanternResult};

/// How router logits become expert scores (`deepseek2.expert_gating_func`, llama.cpp's
/// `llama_expert_gating_func_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gating {
    /// 1, and 0 or absent: DeepSeek-V2/V2.5 files written before the key existed.
    Softmax,
    /// 2: DeepSeek-V3 and Kimi-K2.
    Sigmoid,
}

/// YaRN context extension (`deepseek2.rope.scaling.*`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Yarn {
    /// `rope.scaling.factor`: how much longer than `original_context` the context is.
    pub factor: f64,
    /// `rope.scaling.original_context_length`.
    pub original_context: usize,
    /// `mscale_all_dim` of the Hugging Face config. The converter stores it as
    /// `rope.scaling.yarn_log_multiplier` = 0.1 × mscale_all_dim (llama.cpp divides the
    /// 0.1 back out, its `TAG_DEEPSEEK2_YARN_LOG_MUL_FIX`).
    pub mscale_all_dim: f64,
    /// Correction range in rotations; llama.cpp reads no keys for them on deepseek2 and
    /// uses 32 and 1 (DeepSeek-V3's values). Newer converters write
    /// `rope.scaling.yarn_beta_fast`/`_slow` from the model's config: those are used.
    pub beta_fast: f64,
    pub beta_slow: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub hidden: usize,
    pub blocks: usize,
    pub heads: usize,
    /// 0: queries come from one `attn_q` matrix (DeepSeek-V2-Lite), not `attn_q_a`/`attn_q_b`.
    pub q_lora_rank: usize,
    pub kv_lora_rank: usize,
    /// Per head: the part of query and key without position (`qk_nope_head_dim`) and the
    /// rotated part (`qk_rope_head_dim`), and the value width.
    pub nope_dims: usize,
    pub rope_dims: usize,
    pub value_dims: usize,
    pub context: usize,
    pub eps: f64,
    pub rope_base: f64,
    pub yarn: Option<Yarn>,
    /// The first `dense_blocks` layers have a plain SwiGLU FFN; the rest are MoE.
    pub dense_blocks: usize,
    pub experts: usize,
    pub experts_used: usize,
    pub shared_experts: usize,
    pub gating: Gating,
    /// `expert_weights_norm`: the chosen experts' scores are divided by their sum.
    pub weights_norm: bool,
    /// `expert_weights_scale` (routed_scaling_factor); 0 and 1 leave the weights as they are.
    pub weights_scale: f32,
    /// `expert_group_count` / `expert_group_used_count`: experts are chosen only from the
    /// best `groups_used` of `groups` equal groups (1 and 1: no grouping, as in Kimi-K2).
    pub groups: usize,
    pub groups_used: usize,
}

fn invalid(message: String) -> LanternError {
    LanternError::InferenceFailed(format!("deepseek2 GGUF metadata: {message}"))
}

struct Metadata<'a>(&'a HashMap<String, Value>);

impl Metadata<'_> {
    fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(&format!("deepseek2.{key}"))
    }

    fn count(&self, key: &str) -> LanternResult<Option<usize>> {
        let Some(value) = self.value(key) else { return Ok(None) };
        let number = match value {
            Value::U8(n) => Some(*n as u64),
            Value::U16(n) => Some(*n as u64),
            Value::U32(n) => Some(*n as u64),
            Value::U64(n) => Some(*n),
            Value::I8(n) => u64::try_from(*n).ok(),
            Value::I16(n) => u64::try_from(*n).ok(),
            Value::I32(n) => u64::try_from(*n).ok(),
            Value::I64(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        number
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(format!("deepseek2.{key} is {value:?}, not a count")))
    }

    fn required(&self, key: &str) -> LanternResult<usize> {
        self.count(key)?.ok_or_else(|| invalid(format!("deepseek2.{key} is missing")))
    }

    fn float(&self, key: &str) -> LanternResult<Option<f64>> {
        let Some(value) = self.value(key) else { return Ok(None) };
        match value {
            Value::F32(x) => Ok(Some(*x as f64)),
            Value::F64(x) => Ok(Some(*x)),
            other => Err(invalid(format!("deepseek2.{key} is {other:?}, not a number"))),
        }
    }

    fn flag(&self, key: &str) -> LanternResult<Option<bool>> {
        let Some(value) = self.value(key) else { return Ok(None) };
        value.to_bool().map(Some).map_err(|_| invalid(format!("deepseek2.{key} is {value:?}, not a boolean")))
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.value(key).and_then(|v| v.to_string().ok()).map(String::as_str)
    }
}

fn not_supported(what: String) -> LanternError {
    LanternError::ModelNotSupported(format!("deepseek2 GGUF: {what}"))
}

impl Config {
    pub fn from_metadata(metadata: &HashMap<String, Value>) -> LanternResult<Self> {
        let md = Metadata(metadata);
        let heads = md.required("attention.head_count")?;
        let rope_dims = md.required("rope.dimension_count")?;
        // Files converted since llama.cpp's MLA change (2025-04) store the compressed
        // widths under key_length/value_length and the per-head ones under `_mla`; older
        // files only the per-head ones.
        let (key_length, value_dims) = match (md.count("attention.key_length_mla")?, md.count("attention.value_length_mla")?) {
            (Some(k), Some(v)) if k > 0 && v > 0 => (k, v),
            _ => (md.required("attention.key_length")?, md.required("attention.value_length")?),
        };
        if key_length <= rope_dims || rope_dims == 0 || rope_dims % 2 != 0 {
            return Err(invalid(format!("a key of {key_length} dimensions cannot hold {rope_dims} rotated ones")));
        }
        let experts = md.count("expert_count")?.unwrap_or(0);
        let experts_used = md.count("expert_used_count")?.unwrap_or(0);
        let blocks = md.required("block_count")?;
        let dense_blocks = md.count("leading_dense_block_count")?.unwrap_or(0);
        let gating = match md.count("expert_gating_func")?.unwrap_or(0) {
            0 | 1 => Gating::Softmax,
            2 => Gating::Sigmoid,
            other => {
                return Err(not_supported(format!(
                    "expert_gating_func {other} (only 1, softmax, and 2, sigmoid, are implemented)"
                )))
            }
        };
        let groups = md.count("expert_group_count")?.unwrap_or(1).max(1);
        let groups_used = md.count("expert_group_used_count")?.unwrap_or(groups).max(1);
        let config = Config {
            hidden: md.required("embedding_length")?,
            blocks,
            heads,
            q_lora_rank: md.count("attention.q_lora_rank")?.unwrap_or(0),
            kv_lora_rank: md.required("attention.kv_lora_rank")?,
            nope_dims: key_length - rope_dims,
            rope_dims,
            value_dims,
            context: md.required("context_length")?,
            eps: md.float("attention.layer_norm_rms_epsilon")?.unwrap_or(1e-6),
            rope_base: md.float("rope.freq_base")?.unwrap_or(10_000.0),
            yarn: Self::yarn(&md)?,
            dense_blocks,
            experts,
            experts_used,
            shared_experts: md.count("expert_shared_count")?.unwrap_or(0),
            gating,
            weights_norm: md.flag("expert_weights_norm")?.unwrap_or(false),
            weights_scale: md.float("expert_weights_scale")?.unwrap_or(1.0) as f32,
            groups,
            groups_used,
        };
        config.check(&md)?;
        Ok(config)
    }

    fn yarn(md: &Metadata) -> LanternResult<Option<Yarn>> {
        let factor = md.float("rope.scaling.factor")?.unwrap_or(1.0);
        match md.text("rope.scaling.type") {
            None | Some("none") => return Ok(None),
            Some("yarn") if factor > 1.0 => {}
            Some("yarn") => return Ok(None),
            Some(other) => return Err(not_supported(format!("rope scaling {other:?} (only YaRN is implemented)"))),
        }
        Ok(Some(Yarn {
            factor,
            original_context: md.required("rope.scaling.original_context_length")?,
            mscale_all_dim: md.float("rope.scaling.yarn_log_multiplier")?.unwrap_or(0.0) / 0.1,
            beta_fast: md.float("rope.scaling.yarn_beta_fast")?.unwrap_or(32.0),
            beta_slow: md.float("rope.scaling.yarn_beta_slow")?.unwrap_or(1.0),
        }))
    }

    fn check(&self, md: &Metadata) -> LanternResult<()> {
        if md.float("attention.temperature_scale")?.is_some_and(|t| t != 0.0) {
            return Err(not_supported("attention temperature scaling (Mistral-Large style)".into()));
        }
        let zero = [
            ("embedding_length", self.hidden),
            ("block_count", self.blocks),
            ("attention.head_count", self.heads),
            ("attention.kv_lora_rank", self.kv_lora_rank),
            ("value_length", self.value_dims),
            ("context_length", self.context),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, n)| *n == 0) {
            return Err(invalid(format!("deepseek2.{key} is 0")));
        }
        if self.dense_blocks < self.blocks {
            if self.experts == 0 || self.experts_used == 0 || self.experts_used > self.experts {
                return Err(invalid(format!(
                    "{} MoE layers with expert_count {} and expert_used_count {}",
                    self.blocks - self.dense_blocks,
                    self.experts,
                    self.experts_used
                )));
            }
            if self.experts % self.groups != 0 || self.groups_used > self.groups {
                return Err(invalid(format!(
                    "{} experts cannot be chosen from {} of {} equal groups",
                    self.experts, self.groups_used, self.groups
                )));
            }
            if self.groups_used < self.groups && (self.experts / self.groups < 2 || self.experts_used > self.groups_used * (self.experts / self.groups)) {
                return Err(invalid(format!(
                    "{} of {} experts cannot come from {} groups of {}",
                    self.experts_used, self.experts, self.groups_used, self.experts / self.groups
                )));
            }
        }
        Ok(())
    }

    /// Query and key width per head.
    pub fn key_dims(&self) -> usize {
        self.nope_dims + self.rope_dims
    }

    /// The attention logit scale: 1/√(key width), times YaRN's mscale² where the context is
    /// extended (Hugging Face's `softmax_scale`, llama.cpp's `kq_scale`).
    pub fn attention_scale(&self) -> f64 {
        let mscale = self.yarn.map_or(1.0, |y| yarn_mscale(y.factor, y.mscale_all_dim));
        mscale * mscale / (self.key_dims() as f64).sqrt()
    }
}

/// YaRN's magnitude correction for `factor` (`yarn_get_mscale` in DeepSeek's code).
pub fn yarn_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}
