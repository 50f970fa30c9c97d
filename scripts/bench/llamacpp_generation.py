#!/usr/bin/env python3
"""llama.cpp side of host/benches/generation.rs: the same GGUF, the same prompt, greedy.

Prints one JSON line: prompt tokens, median time to first token (prompt processing plus
the first sampled token) and median decode rate over the following tokens.
Needs llama-cpp-python (see BENCHMARKS.md for how it is built here).
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama


def one_run(llm, tokens, max_tokens):
    llm.reset()  # no reuse of the previous run's KV cache for the shared prompt prefix
    start = time.perf_counter()
    first = None
    count = 0
    for token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
        count += 1
        if first is None:
            first = time.perf_counter()
        if token == llm.token_eos() or count >= max_tokens:
            break
    end = time.perf_counter()
    return (first - start) * 1000.0, (count - 1) / (end - first), count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    prompt = open(args.prompt_file, encoding="utf-8").read()
    llm = Llama(model_path=args.model, n_ctx=2048, n_batch=512, n_threads=args.threads,
                n_threads_batch=args.threads, verbose=False)
    tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
    one_run(llm, tokens, 8)  # warm-up
    runs = [one_run(llm, tokens, args.max_tokens) for _ in range(args.runs)]
    print(json.dumps({
        "prompt_tokens": len(tokens),
        "ttft_ms": statistics.median(r[0] for r in runs),
        "decode_tok_s": statistics.median(r[1] for r in runs),
        "generated_tokens": runs[0][2],
    }))


if __name__ == "__main__":
    main()
