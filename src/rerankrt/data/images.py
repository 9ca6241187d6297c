"""RAML's published evaluation preprocessing and the query encoder over any backend (reference §4.2).

PIL RGB → shorter side to `size·8/7` with Lanczos (224 → 256) → centre crop `size` → [0, 1] →
ImageNet mean/std, channels first. The numbers come from the model's configuration (a backend's
`config`, i.e. the exported sidecar's). Pillow is imported on first use (`pip install rerankrt[images]`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rerankrt.core.errors import InputError
from rerankrt.core.optional import require


def preprocess(image, config: Mapping, size: int | None = None) -> np.ndarray:
    """A PIL image or an RGB uint8 array [H, W, 3] → float32 [3, size, size] as RAML's configuration
    (`resize_ratio`, `mean`, `std`) says; `size` defaults to the student's (`student_size`)."""
    pil = require("PIL.Image", "images", "RAML's preprocessing")
    size = config["student_size"] if size is None else size
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"image: expected an RGB uint8 array [H, W, 3], got {image.dtype} {list(image.shape)}")
        image = pil.fromarray(image)
    image = image.convert("RGB")
    w, h = image.size
    short = round(size * config["resize_ratio"])
    # torchvision's Resize(int): the shorter side becomes `short`, the other keeps the aspect ratio.
    new_w, new_h = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    image = image.resize((new_w, new_h), pil.Resampling.LANCZOS)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    normalised = (pixels - np.array(config["mean"], np.float32)) / np.array(config["std"], np.float32)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


class RamlEncoder:
    """`RamlEncoder(backend).encode(images) → [N, 512]` L2-normalised descriptors, batched to the
    backend's `batch` profile."""

    def __init__(self, backend, size: int | None = None) -> None:
        self.backend, self.config = backend, backend.config
        self.size = self.config["student_size"] if size is None else size
        self.batch = int(backend.profiles()["batch"]["max"])
        self.dtype = backend.float_dtype()

    def encode(self, images) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.config["output_dim"]), np.float32)
        pixels = np.stack([preprocess(im, self.config, self.size) for im in images])
        out = [self.backend.infer({"images": pixels[i:i + self.batch].astype(self.dtype)})["descriptors"]
               for i in range(0, len(pixels), self.batch)]
        return np.concatenate(out).astype(np.float32)
