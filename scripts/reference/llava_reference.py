"""Reference answers for tests/llava.rs: transformers' LlavaForConditionalGeneration on the
tiny random LLaVA 1.5 checkpoint that tests/support/tiny_llava.rs writes.

Usage (see tests/llava.rs):
    LANTERN_VISION_REFERENCE_DIR=/tmp/llavaref cargo test -p lantern --test llava -- --ignored write_reference_inputs
    /work/refvenv/bin/python scripts/reference/llava_reference.py /tmp/llavaref tests/fixtures/llava_reference.json

Reads the repo and inputs.json (our prompt ids, the <image> token already repeated once per
image feature as LlavaProcessor does, and our preprocessed pixels) and greedily generates
`new_tokens` tokens in float32. The generated ids (end of sequence dropped) go into the
fixture. It also reports whether LlavaProcessor, given the same question and picture,
builds the same ids and how far its pixels are from ours.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, LlavaForConditionalGeneration, LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

sys.path.insert(0, str(Path(__file__).parent))
from clip_reference import test_image  # noqa: E402


def main(inputs_dir: str, fixture: str) -> None:
    root = Path(inputs_dir)
    inputs = json.loads((root / "inputs.json").read_text())
    folder = root / inputs["folder"]
    model = LlavaForConditionalGeneration.from_pretrained(folder, torch_dtype=torch.float32).eval()
    eos = model.generation_config.eos_token_id
    side = model.config.vision_config.image_size
    processor = None
    try:
        processor = LlavaProcessor(
            image_processor=CLIPImageProcessorPil.from_pretrained(folder),
            tokenizer=AutoTokenizer.from_pretrained(folder),
            patch_size=model.config.vision_config.patch_size,
            vision_feature_select_strategy=model.config.vision_feature_select_strategy,
            num_additional_image_tokens=1,
        )
    except Exception as error:  # noqa: BLE001 — only a diagnostic
        print("LlavaProcessor could not be built:", error)
    cases = []
    for case in inputs["cases"]:
        ids = torch.tensor([case["ids"]])
        pixels = torch.tensor(case["pixels"], dtype=torch.float32).reshape(1, 3, side, side)
        with torch.no_grad():
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=pixels,
                max_new_tokens=inputs["new_tokens"],
                do_sample=False,
                num_beams=1,
                repetition_penalty=1.0,
            )
        generated = output[0, ids.shape[1]:].tolist()
        if generated and generated[-1] == eos:
            generated = generated[:-1]
        entry = dict(case, generated=generated)
        if processor is not None:
            prompt = f"USER: <image>\n{case['question']} ASSISTANT:"
            theirs = processor(images=test_image(*case["image"]), text=prompt, return_tensors="pt")
            entry["processor_ids_equal"] = theirs["input_ids"][0].tolist() == case["ids"]
            entry["processor_pixels_max_abs_difference"] = float(
                np.abs(theirs["pixel_values"].numpy().reshape(-1) - np.asarray(case["pixels"])).max()
            )
        print(case["question"], "->", generated, {k: v for k, v in entry.items() if k.startswith("processor")})
        cases.append(entry)
    out = {"folder": inputs["folder"], "new_tokens": inputs["new_tokens"], "cases": cases}
    Path(fixture).write_text(json.dumps(out, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
