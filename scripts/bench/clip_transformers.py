"""Peer for host/benches/images.rs: transformers' CLIPModel on the same checkpoint folder,
images per second at the given batch sizes, preprocessing (CLIPImageProcessor) included,
as the Rust side includes its own. Prints one JSON object {"batch": images_per_second}.

    python scripts/bench/clip_transformers.py MODEL_DIR IMAGE_SIDE 1 16
"""
import json
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel


def test_image(width, height):
    """The same deterministic picture as tests/support/tiny_clip.rs::test_image."""
    x = np.arange(width)[None, :]
    y = np.arange(height)[:, None]
    check = np.where(((x // 3 + y // 3) % 2) == 0, 60, 0)
    r = np.broadcast_to(x * 255 // (width - 1), (height, width))
    g = np.broadcast_to(y * 255 // (height - 1), (height, width))
    b = (x * 7 + y * 13) % 196 + check
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8))


def main():
    folder, side = sys.argv[1], int(sys.argv[2])
    batches = [int(b) for b in sys.argv[3:]]
    torch.set_num_threads(2)
    model = CLIPModel.from_pretrained(folder).eval()
    processor = CLIPImageProcessor.from_pretrained(folder)
    image = test_image(side, side)
    rates = {}
    with torch.inference_mode():
        for batch in batches:
            images = [image] * batch
            model.get_image_features(**processor(images=images, return_tensors="pt"))  # warm-up
            runs, started = 0, time.perf_counter()
            while runs < 3 or time.perf_counter() - started < 2.0:
                model.get_image_features(**processor(images=images, return_tensors="pt"))
                runs += 1
            rates[str(batch)] = runs * batch / (time.perf_counter() - started)
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
