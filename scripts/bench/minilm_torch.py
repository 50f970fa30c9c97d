#!/usr/bin/env python3
"""PyTorch side of host/benches/embeddings.rs: sentence-transformers on the same MiniLM
files and the same sentences, CPU, the same thread count.

Prints one JSON line: {"versions": ..., "rates": {"1": sentences/s, "8": ..., ...}}, each the
median of --runs passes over all sentences in batches of that size (after a warm-up).
Needs torch and sentence-transformers (scripts/bench/peers.sh installs them).
"""
import argparse
import json
import statistics
import time

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="folder with the sentence-transformers files")
    parser.add_argument("--sentences-file", required=True, help="one sentence per line")
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--vectors-out", help="write the batch-32 vectors here (JSON), to compare")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    with open(args.sentences_file, encoding="utf-8") as f:
        sentences = [line.rstrip("\n") for line in f if line.strip()]
    model = SentenceTransformer(args.model, device="cpu")
    model.encode(sentences[:64], batch_size=32)  # warm-up

    rates = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        samples = []
        for _ in range(args.runs):
            start = time.perf_counter()
            for i in range(0, len(sentences), batch):
                model.encode(sentences[i : i + batch], batch_size=batch, normalize_embeddings=True)
            samples.append(len(sentences) / (time.perf_counter() - start))
        rates[str(batch)] = statistics.median(samples)
    if args.vectors_out:
        vectors = model.encode(sentences, batch_size=32, normalize_embeddings=True)
        with open(args.vectors_out, "w", encoding="utf-8") as f:
            json.dump(vectors.tolist(), f)
    versions = {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__, "threads": torch.get_num_threads()}
    print(json.dumps({"versions": versions, "rates": rates}))


if __name__ == "__main__":
    main()
