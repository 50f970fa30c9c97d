"""Where the passages come from: paragraphs of the .txt/.md files in a granted
directory, and passages given on the command line."""

import os
from dataclasses import dataclass
from typing import List

from lantern_sdk import PluginError


@dataclass
class Passage:
    source: str
    text: str


def _paragraphs(text: str) -> List[str]:
    """Blank-line separated paragraphs, each with its whitespace collapsed."""
    paragraphs = (" ".join(block.split()) for block in text.split("\n\n"))
    return [paragraph for paragraph in paragraphs if paragraph]


def from_directory(directory: str) -> List[Passage]:
    """Every paragraph of every .txt/.md file directly under `directory`, files in name order.
    The plugin sees the directory only if the user granted it (`lantern run --dir`)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise PluginError(f"cannot read {directory}: {error.strerror or error} (grant it with lantern run --dir)")
    passages = []
    for name in names:
        if not name.endswith((".txt", ".md")):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise PluginError(f"cannot read {path}: {error}")
        passages.extend(Passage(source=name, text=paragraph) for paragraph in _paragraphs(text))
    return passages


def from_arguments(texts: List[str]) -> List[Passage]:
    return [Passage(source=f"arg {number}", text=" ".join(text.split())) for number, text in enumerate(texts, 1) if text.strip()]
