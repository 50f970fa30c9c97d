"""Reference numbers for tests/clip.rs: transformers' CLIPModel and CLIP image processors
on the tiny random CLIP checkpoints that tests/support/tiny_clip.rs writes.

Usage (see tests/clip.rs):
    LANTERN_VISION_REFERENCE_DIR=/tmp/clipref cargo test -p lantern --test clip -- --ignored write_reference_inputs
    /work/refvenv/bin/python scripts/reference/clip_reference.py /tmp/clipref tests/fixtures/clip_reference.json

Reads the repos and inputs.json (our token ids and our preprocessed pixels), runs
`get_text_features` / `get_image_features` (each text alone, unpadded; all images in one
batch), L2-normalises, and also preprocesses the same test pictures (drawn here with the
same integer formula as `tiny_clip::test_image`) with `CLIPImageProcessor` (torchvision
backend, transformers' default) and `CLIPImageProcessorPil` (PIL bicubic), so the test can
measure how far our `image`-crate preprocessing is from each (the torchvision one only
where torchvision is installed; the fixture then has null for it).
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import CLIPModel, CLIPTokenizerFast
from transformers.utils import is_torchvision_available
from transformers.models.clip.image_processing_clip import CLIPImageProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil


def test_image(width: int, height: int) -> Image.Image:
    """tests/support/tiny_clip.rs `test_image`, pixel for pixel."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            check = 60 if (x // 3 + y // 3) % 2 == 0 else 0
            pixels[y, x] = [x * 255 // (width - 1), y * 255 // (height - 1), (x * 7 + y * 13) % 196 + check]
    return Image.fromarray(pixels, "RGB")


def features(output) -> torch.Tensor:
    """transformers 5 returns a model output whose pooler_output is projected; 4 a tensor."""
    tensor = output.pooler_output if hasattr(output, "pooler_output") else output
    return torch.nn.functional.normalize(tensor, dim=-1)


def rounded(values) -> list:
    return [round(float(v), 7) for v in np.asarray(values).reshape(-1)]


def main(inputs_dir: str, fixture: str) -> None:
    root = Path(inputs_dir)
    inputs = json.loads((root / "inputs.json").read_text())
    out = {}
    for key, case in inputs.items():
        folder = root / case["folder"]
        model = CLIPModel.from_pretrained(folder, torch_dtype=torch.float32).eval()
        with torch.no_grad():
            text_vectors = [
                rounded(features(model.get_text_features(input_ids=torch.tensor([ids])))[0])
                for ids in case["token_ids"]
            ]
            side = model.config.vision_config.image_size
            pixels = torch.tensor(case["pixels"], dtype=torch.float32).reshape(-1, 3, side, side)
            image_vectors = [rounded(v) for v in features(model.get_image_features(pixel_values=pixels))]
        images = [test_image(w, h) for w, h in case["images"]]
        pil = CLIPImageProcessorPil.from_pretrained(folder)
        processor_pil_pixels = [rounded(pil(images=[im], return_tensors="np")["pixel_values"][0]) for im in images]
        processor_pixels = None
        if is_torchvision_available():
            torchvision = CLIPImageProcessor.from_pretrained(folder)
            processor_pixels = [rounded(torchvision(images=[im], return_tensors="pt")["pixel_values"][0]) for im in images]
        ours = [np.asarray(p) for p in case["pixels"]]
        worst = {
            name: max(float(np.abs(np.asarray(theirs) - mine).max()) for theirs, mine in zip(values, ours))
            for name, values in (("torchvision", processor_pixels), ("pil", processor_pil_pixels))
            if values is not None
        }
        tokenizer = CLIPTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
        hf_ids = [tokenizer(text, truncation=True, max_length=77)["input_ids"] for text in case["texts"]]
        out[key] = {
            "texts": case["texts"],
            "token_ids": case["token_ids"],
            "transformers_tokenizer_ids_equal": [a == b for a, b in zip(hf_ids, case["token_ids"])],
            "images": case["images"],
            "pixels": case["pixels"],
            "text_vectors": text_vectors,
            "image_vectors": image_vectors,
            "processor_pixels": processor_pixels,
            "processor_pil_pixels": processor_pil_pixels,
            "preprocessing_max_abs_difference": worst,
        }
        print(key, "preprocessing max |ours - theirs|:", worst, "tokenizer ids equal:", out[key]["transformers_tokenizer_ids_equal"])
    Path(fixture).write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
