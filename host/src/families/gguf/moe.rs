//! The pieces every GGUF mixture-of-experts model shares on the CPU: SwiGLU feed-forwards
//! on quantized matrices (one routed expert, a shared expert, or a dense layer's FFN: the
//! same computation), the routed experts cut out of llama.cpp's stacked `*_exps` tensors,
//! and sending each token to the experts its router chose. How a token's experts are
//! chosen differs per architecture and stays in its module ([`super::qwen3_moe`]'s
//! softmax, [`super::deepseek2`]'s sigmoid with bias and groups).

use std::borrow::Cow;
use std::io::{Read, Seek};
use std::sync::Arc;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{Device, Module, Result, Tensor};
use candle_transformers::models::quantized_qwen3::Gguf;
use candle_transformers::models::with_tracing::QMatMul;

/// `down(silu(gate(x)) * up(x))`.
#[derive(Clone)]
pub struct SwiGlu {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

impl SwiGlu {
    /// `{prefix}.ffn_gate{suffix}.weight` and its `up`/`down` siblings: suffix `""` for a
    /// dense FFN, `"_shexp"` for a shared expert.
    pub fn load<R: Read + Seek>(gg: &mut Gguf<R>, prefix: &str, suffix: &str) -> Result<Self> {
        Ok(SwiGlu {
            gate: gg.qmatmul(&format!("{prefix}.ffn_gate{suffix}.weight"))?,
            up: gg.qmatmul(&format!("{prefix}.ffn_up{suffix}.weight"))?,
            down: gg.qmatmul(&format!("{prefix}.ffn_down{suffix}.weight"))?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gated = (candle_nn::ops::silu(&self.gate.forward(xs)?)? * self.up.forward(xs)?)?;
        self.down.forward(&gated)
    }
}

/// One expert's matrix out of a stacked (experts, rows, cols) tensor: the experts lie one
/// after the other in the file, each a whole number of quantization blocks.
fn split_experts(stacked: &QTensor, device: &Device) -> Result<Vec<QMatMul>> {
    let (experts, rows, cols) = stacked.shape().dims3()?;
    let data = stacked.data()?;
    let each = data.len() / experts;
    (0..experts)
        .map(|e| {
            let storage = QStorage::from_data(Cow::Borrowed(&data[e * each..(e + 1) * each]), device, stacked.dtype())?;
            QMatMul::from_weights(Arc::new(QTensor::new(storage, (rows, cols))?))
        })
        .collect()
}

/// The routed experts of one layer. Each expert's matrices are ordinary quantized
/// matmuls, because candle 0.11's fused `moe_gemm_gguf` exists only for CUDA.
#[derive(Clone)]
pub struct Experts(Vec<SwiGlu>);

/// The experts one token goes to, each with the weight of its answer.
pub type Route = Vec<(usize, f32)>;

impl Experts {
    /// `{prefix}.ffn_{gate,up,down}_exps.weight`.
    pub fn load<R: Read + Seek>(gg: &mut Gguf<R>, prefix: &str, device: &Device) -> Result<Self> {
        let mut stacked = |part: &str| -> Result<Vec<QMatMul>> {
            split_experts(&gg.tensor(&format!("{prefix}.ffn_{part}_exps.weight"))?, device)
        };
        let (gates, ups, downs) = (stacked("gate")?, stacked("up")?, stacked("down")?);
        if gates.len() != ups.len() || gates.len() != downs.len() {
            candle_core::bail!("{prefix}: the stacked gate, up and down tensors hold different numbers of experts");
        }
        let experts = gates.into_iter().zip(ups).zip(downs).map(|((gate, up), down)| SwiGlu { gate, up, down }).collect();
        Ok(Experts(experts))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Σ over each token's route of weight × expert(token), for `xs` (tokens, hidden):
    /// every expert runs once, on the rows routed to it.
    pub fn forward(&self, xs: &Tensor, routes: &[Route]) -> Result<Tensor> {
        let mut rows: Vec<Vec<u32>> = vec![Vec::new(); self.0.len()];
        let mut weights: Vec<Vec<f32>> = vec![Vec::new(); self.0.len()];
        for (token, route) in routes.iter().enumerate() {
            for &(expert, weight) in route {
                rows[expert].push(token as u32);
                weights[expert].push(weight);
            }
        }
        let mut out = xs.zeros_like()?;
        for (e, expert) in self.0.iter().enumerate() {
            if rows[e].is_empty() {
                continue;
            }
            let index = Tensor::new(rows[e].as_slice(), xs.device())?;
            let weight = Tensor::new(weights[e].as_slice(), xs.device())?.unsqueeze(1)?;
            let ys = expert.forward(&xs.index_select(&index, 0)?)?.broadcast_mul(&weight)?;
            out = out.index_add(&index, &ys, 0)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::GgmlDType;
    use candle_core::{DType, D};

    /// Splitting a stacked expert tensor gives each expert exactly its own matrix.
    #[test]
    fn experts_are_split_out_of_the_stacked_tensor() {
        let device = Device::Cpu;
        let stacked = Tensor::arange(0f32, 3.0 * 2.0 * 32.0, &device).unwrap().reshape((3, 2, 32)).unwrap();
        let quantized = QTensor::quantize(&stacked, GgmlDType::F32).unwrap();
        let experts = split_experts(&quantized, &device).unwrap();
        assert_eq!(experts.len(), 3);
        let ones = Tensor::ones((1, 32), DType::F32, &device).unwrap();
        for (e, expert) in experts.iter().enumerate() {
            let got = expert.forward(&ones).unwrap().to_vec2::<f32>().unwrap();
            let rows = stacked.get(e).unwrap().sum(D::Minus1).unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(got[0], rows, "expert {e}");
        }
    }
}
