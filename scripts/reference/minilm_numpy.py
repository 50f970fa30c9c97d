#!/usr/bin/env python3
"""Independent reference embeddings for sentence-transformers/all-MiniLM-L6-v2.

This is an independent implementation of the BERT encoder + mean pooling
written in pure NumPy (float64). It does NOT use candle, torch, or
sentence-transformers; it only uses `safetensors` to read the weights and
the HuggingFace `tokenizers` library to tokenize from tokenizer.json.
Its output is used as a test fixture to check the Rust (candle) implementation.

Usage:
    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install numpy safetensors tokenizers
    /tmp/refvenv/bin/python scripts/reference/minilm_numpy.py \
        <model_dir> tests/fixtures/minilm_reference.json

<model_dir> must contain model.safetensors (tensor names without a `bert.`
prefix), config.json, tokenizer.json and sentence_bert_config.json.

Method: tokenize each sentence alone ([CLS] ... [SEP], truncated to
max_seq_length, no padding); embeddings = word + position + token_type(0),
LayerNorm; N post-LN transformer layers (multi-head self-attention, exact erf
GELU); mean-pool over all tokens; L2-normalise. All math in float64.
"""
import json
import math
import os
import sys

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "The cat sits outside",
    "A kitten is sitting outdoors",
    "The new movie is awesome",
    "Stock markets fell sharply today",
    "How do I bake sourdough bread?",
    "Héllo wörld — naïve café 日本語",
]

_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def layer_norm(x, w, b, eps):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def linear(x, W, prefix):
    # PyTorch Linear layout: weight is (out, in)
    return x @ W[prefix + ".weight"].T + W[prefix + ".bias"]


def encode(ids, W, cfg):
    eps = cfg["layer_norm_eps"]
    H = cfg["hidden_size"]
    nh = cfg["num_attention_heads"]
    hd = H // nh
    n = len(ids)
    ids = np.asarray(ids, dtype=np.int64)
    x = (W["embeddings.word_embeddings.weight"][ids]
         + W["embeddings.position_embeddings.weight"][np.arange(n)]
         + W["embeddings.token_type_embeddings.weight"][np.zeros(n, dtype=np.int64)])
    x = layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q = linear(x, W, p + "attention.self.query").reshape(n, nh, hd).transpose(1, 0, 2)
        k = linear(x, W, p + "attention.self.key").reshape(n, nh, hd).transpose(1, 0, 2)
        v = linear(x, W, p + "attention.self.value").reshape(n, nh, hd).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)  # (nh, n, n)
        s = s - s.max(axis=-1, keepdims=True)
        a = np.exp(s)
        a = a / a.sum(axis=-1, keepdims=True)
        ctx = (a @ v).transpose(1, 0, 2).reshape(n, H)
        att = linear(ctx, W, p + "attention.output.dense")
        x = layer_norm(att + x, W[p + "attention.output.LayerNorm.weight"],
                       W[p + "attention.output.LayerNorm.bias"], eps)
        h = gelu(linear(x, W, p + "intermediate.dense"))
        h = linear(h, W, p + "output.dense")
        x = layer_norm(h + x, W[p + "output.LayerNorm.weight"],
                       W[p + "output.LayerNorm.bias"], eps)
    pooled = x.mean(axis=0)  # no padding -> plain mean over all tokens
    return pooled / np.linalg.norm(pooled)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model_dir, out_path = sys.argv[1], sys.argv[2]
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    with open(os.path.join(model_dir, "sentence_bert_config.json")) as f:
        max_len = json.load(f)["max_seq_length"]
    W = {k: v.astype(np.float64) for k, v in
         load_file(os.path.join(model_dir, "model.safetensors")).items()}
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_padding()  # tokenizer.json ships with fixed padding to 128
    tok.enable_truncation(max_length=max_len)

    token_ids, vectors = [], []
    for s in SENTENCES:
        ids = tok.encode(s, add_special_tokens=True).ids
        token_ids.append(list(ids))
        vectors.append([round(float(v), 7) for v in encode(ids, W, cfg)])

    out = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "method": ("independent pure-NumPy float64 BERT forward (erf GELU, post-LN, eps from "
                   "config), tokenizers lib w/ [CLS]/[SEP], trunc %d, no padding, mean pooling, "
                   "L2-normalised; scripts/reference/minilm_numpy.py" % max_len),
        "sentences": SENTENCES,
        "token_ids": token_ids,
        "vectors": vectors,
    }
    with open(out_path, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
