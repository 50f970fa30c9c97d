"""The Python SDK for Lantern plugins: thin helpers over the bindings that
componentize-py generates from `wit/` (the `wit_world` package), mirroring the Rust SDK
in guests/sdk.

A plugin is a module (usually `app.py`) that defines

    class WitWorld(wit_world.WitWorld):
        def run(self, args: list[str]) -> str: ...

A returned string is the plugin's `ok` result; raising `componentize_py_types.Err(text)`
(or `PluginError`, which is turned into one by `entry_point`) is its `err`.
"""

import sys
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from componentize_py_types import Err
from wit_world.imports import embeddings, generation, logging, types

# The error variant's cases and how each reads when printed, as in the Rust SDK's
# `Display`, so a Python and a Rust plugin report the same failure the same way.
_ERROR_PREFIXES = {
    types.Error_ModelNotAllowed: "model not allowed",
    types.Error_ModelNotSupported: "model not supported",
    types.Error_InvalidInput: "invalid input",
    types.Error_DownloadFailed: "download failed",
    types.Error_InferenceFailed: "inference failed",
    types.Error_LimitExceeded: "limit exceeded",
}


class PluginError(Exception):
    """A failure the plugin reports as its `err` result (usage errors, missing files)."""


def describe(error: types.Error) -> str:
    """A host error (the WIT `error` variant) as one readable line."""
    if isinstance(error, types.Error_Cancelled):
        return "cancelled"
    return f"{_ERROR_PREFIXES[type(error)]}: {error.value}"


def entry_point(run: Callable[[List[str]], str]) -> Callable[[object, List[str]], str]:
    """Wraps a plugin's `run` so that a host error or a `PluginError` becomes the plugin's
    `err` result with a readable message, instead of an exception that traps the plugin."""

    def wrapped(self: object, args: List[str]) -> str:
        try:
            return run(list(args))
        except PluginError as error:
            raise Err(str(error))
        except Err as error:
            # Host calls raise `Err(types.Error)`; the plugin's own `err` is a string.
            raise Err(error.value if isinstance(error.value, str) else describe(error.value))

    return wrapped


def log(level: logging.Level, message: str) -> None:
    logging.log(level, message)


def info(message: str) -> None:
    logging.log(logging.Level.INFO, message)


def embed(model: str, inputs: Sequence[str], task: embeddings.EmbedTask) -> List[List[float]]:
    """One vector per input (L2-normalised, the host's default), for `task`."""
    options = embeddings.EmbedOptions(task=task, dimensions=None, normalize=None, truncate=None)
    return embeddings.embed(model, list(inputs), options).vectors


def embed_documents(model: str, texts: Sequence[str]) -> List[List[float]]:
    return embed(model, texts, embeddings.EmbedTask_Document())


def embed_query(model: str, text: str) -> List[float]:
    return embed(model, [text], embeddings.EmbedTask_Query())[0]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = (sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5)
    return dot / norm if norm else 0.0


def rank(query: Sequence[float], candidates: Sequence[Sequence[float]]) -> List[Tuple[int, float]]:
    """Indices of `candidates` by cosine similarity to `query`, best first, with scores."""
    scored = [(index, cosine(query, candidate)) for index, candidate in enumerate(candidates)]
    return sorted(scored, key=lambda pair: pair[1], reverse=True)


def sampling(
    max_tokens: Optional[int] = None,
    temperature: Optional[float] = None,
    repeat_penalty: Optional[float] = None,
    seed: Optional[int] = None,
    stop: Sequence[str] = (),
) -> generation.Sampling:
    """Sampling parameters; `None` leaves a field to the host's default."""
    return generation.Sampling(
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=None,
        top_p=None,
        repeat_penalty=repeat_penalty,
        repeat_last_n=None,
        seed=seed,
        stop=list(stop),
    )


def system(content: str) -> generation.Message:
    return generation.Message(role=generation.Role.SYSTEM, content=content)


def user(content: str) -> generation.Message:
    return generation.Message(role=generation.Role.USER, content=content)


def chat(model: str, messages: Sequence[generation.Message], params: generation.Sampling) -> Iterator[str]:
    """The answer's text pieces as the model produces them. The stream is released
    when the iteration ends or is abandoned (`with`), which cancels the work on the host."""
    stream = generation.generate(model, generation.Prompt_Chat(list(messages)), params)
    with stream:
        while (chunk := stream.next()) is not None:
            yield chunk.text
            if chunk.finished is not None:
                return


def stream_to_stdout(pieces: Iterator[str]) -> str:
    """Writes each piece to stdout as it arrives (flushed, so the user sees it stream)
    and returns the whole text."""
    text = []
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
        text.append(piece)
    return "".join(text)
