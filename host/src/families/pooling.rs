//! Pooling of (batch, tokens, hidden) states into one row per input.

use candle_core::{DType, IndexOp, Tensor};

/// Mean over the tokens where `mask` (batch, tokens) is 1.
pub fn mean(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(hidden.dtype())?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    summed.broadcast_div(&mask.sum(1)?)
}

/// The first token's state ([CLS]).
pub fn first_token(hidden: &Tensor) -> candle_core::Result<Tensor> {
    hidden.narrow(1, 0, 1)?.squeeze(1)
}

/// Each row's last real token (right padding: index `length - 1`), as decoder
/// embedders such as GTE-Qwen2 pool.
pub fn last_token(hidden: &Tensor, lengths: &[usize]) -> candle_core::Result<Tensor> {
    let rows = lengths
        .iter()
        .enumerate()
        .map(|(row, &length)| hidden.i((row, length.saturating_sub(1)))?.unsqueeze(0))
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&rows, 0)?.to_dtype(DType::F32)
}
