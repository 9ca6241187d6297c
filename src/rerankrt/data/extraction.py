"""The host side of the DINOv2 extractor (reference/extraction.md §4–§6): images in, the official files out.

- `read_image`: OpenCV's `imread`, as published: 3-channel BGR whatever the file (grayscale and RGBA
  included); an unreadable file is an error that names it.
- `preprocess`: the scale from the full image's longer side, the query crop to its `bbx` after it, each
  axis quantised to whole 14-pixel patches, OpenCV's INTER_AREA when shrinking and INTER_LINEAR otherwise,
  ImageNet normalisation, RGB, channels first. OpenCV rounds each resized side itself; pixels past the last
  whole patch are dropped, as DINOv2's stride-14 patch embedding drops them.
- `select`: the top-k tokens by descending weight (stable among equal weights; no NMS) as rows of the
  local HDF5 layout, [y, x, scale 0, mask 0, weight, descriptor], padded to topk with zero rows of mask 1.
- `extract`: images through any backend in size buckets (one batch is one H × W), a window at a time
  (bounded memory), written to `{desc}_{split}_local.hdf5`, `{desc}_{split}_global.pt` and
  `{desc}_cls_{split}_global.pt` (raw float32) atomically, optionally RAML's vectors beside them, and
  `{desc}_{split}_images.json` (`extraction_record`): the image names and which extractor described them
  at which settings, what a search index records so that a query is described the same way.

OpenCV is imported on first use (`pip install 'rerankrt[images]'`).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import atomic_outputs
from rerankrt.core.errors import InputError
from rerankrt.core.optional import require
from rerankrt.data.dataset_layout import DatasetLayout
from rerankrt.data.descriptors import META_COLUMNS

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: images read, preprocessed and bucketed together: memory stays bounded whatever the number of images
WINDOW = 64


def _cv2():
    return require("cv2", "images", "reading and resizing images (OpenCV)")


def image_list(source: str | os.PathLike) -> list[Path]:
    """A folder's images in sorted file-name order, a list file's paths (one per line, relative to the
    list file's folder when not absolute) in its order, or one image file (by its suffix)."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() in IMAGE_SUFFIXES:
        return [source]
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{source} holds no image files ({', '.join(IMAGE_SUFFIXES)})", param="images")
        return files
    if not source.is_file():
        raise InputError(f"{source}: no such folder or list file", param="images")
    lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
    if not lines:
        raise InputError(f"the list {source} is empty", param="images")
    return [p if p.is_absolute() else source.parent / p for p in map(Path, lines)]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """BGR uint8 [H, W, 3], as `cv2.imread` reads any image (grayscale and RGBA become 3-channel BGR).

    OpenCV decodes a truncated JPEG without an error (libjpeg pads it with grey and warns on stderr), so a
    JPEG is refused when no end-of-image marker follows its last start-of-scan marker: a scan's entropy-coded
    bytes never hold 0xFFD9 (0xFF is stuffed), and an EXIF thumbnail's markers come before the main scans."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"image {path}: cannot read it ({e.strerror or e})") from e
    return decode_image(data, f"image {path}")


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """`read_image` of an encoded file's bytes (what a server receives): `cv2.imdecode`, as `imread` decodes."""
    cv2 = _cv2()
    if not data:
        raise InputError(f"{name}: the file is empty (0 bytes)")
    if data[:3] == b"\xff\xd8\xff" and data.rfind(b"\xff\xd9") < data.rfind(b"\xff\xda"):
        raise InputError(f"{name}: a truncated JPEG (it ends inside its image data)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise InputError(f"{name}: OpenCV cannot read it (truncated, corrupt or not an image)")
    return image


@dataclass(frozen=True)
class Prepared:
    """An image as the extractor sees it, and what maps its patches back to the full image."""

    pixels: np.ndarray  #: [3, H, W] float32, RGB, ImageNet-normalised, H and W multiples of the patch
    full: tuple[int, int]  #: the full image's (height, width)
    crop: tuple[int, int, int, int]  #: (y0, x0, height, width) of the region read, in full-image pixels


def preprocess(image: np.ndarray, imsize: int, config: dict, bbx: Sequence[float] | None = None,
               name: str = "image") -> Prepared:
    """§4: `s = imsize / max(H, W)` of the full image, the crop to `bbx` = (x0, y0, x1, y1), each axis to
    whole patches, OpenCV's resize, ImageNet normalisation, RGB, CHW."""
    cv2 = _cv2()
    if imsize <= 0:
        raise InputError(f"expected a positive number of pixels, got {imsize}", param="imsize")
    height, width = image.shape[:2]
    s = imsize / max(height, width)
    y0, x0 = 0, 0
    if bbx is not None:
        x0, y0, x1, y1 = (int(v) for v in bbx)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InputError(f"{name}: bbx {list(bbx)} is outside its {width} × {height} image (x0 y0 x1 y1)")
        image = image[y0:y1, x0:x1]
    crop = (y0, x0, image.shape[0], image.shape[1])
    p = config["patch_size"]
    factors = []
    for side in (image.shape[1], image.shape[0]):  # x, then y: cv2's (fx, fy)
        n = max(round(side * s / p), 1)
        factors.append(s / ((side * s / p) / n))
    fx, fy = factors
    if fx != 1 or fy != 1:
        interpolation = cv2.INTER_AREA if fx < 1 or fy < 1 else cv2.INTER_LINEAR
        image = cv2.resize(image, (0, 0), fx=fx, fy=fy, interpolation=interpolation)
    h, w = image.shape[0] // p * p, image.shape[1] // p * p  # ≥ one patch: every axis has n ≥ 1 above
    rgb = image[:h, :w, ::-1].astype(np.float32) / np.float32(255.0)
    normalised = (rgb - np.array(config["mean"], np.float32)) / np.array(config["std"], np.float32)
    return Prepared(np.ascontiguousarray(normalised.transpose(2, 0, 1)), (height, width), crop)


def select(weights: np.ndarray, tokens: np.ndarray, grid: tuple[int, int], topk: int, prepared: Prepared
           ) -> np.ndarray:
    """The rows of the local HDF5 layout [topk, 5 + D] for one image's N = h·w tokens: the min(N, topk)
    highest weights first; locations are patch centres over the resized sides, mapped through the crop
    into full-image coordinates (no model reads them)."""
    h, w = grid
    d = tokens.shape[-1]
    k = min(len(weights), topk)
    order = np.argsort(-weights.astype(np.float64), kind="stable")[:k]
    rows = np.zeros((topk, META_COLUMNS + d), np.float32)
    patch_h, patch_w = prepared.pixels.shape[1] / h, prepared.pixels.shape[2] / w
    y = (patch_h * (order // w) + patch_h / 2) / prepared.pixels.shape[1]
    x = (patch_w * (order % w) + patch_w / 2) / prepared.pixels.shape[2]
    (full_h, full_w), (y0, x0, crop_h, crop_w) = prepared.full, prepared.crop
    rows[:k, 0] = (y * crop_h + y0) / full_h
    rows[:k, 1] = (x * crop_w + x0) / full_w
    rows[:k, 4] = weights[order]
    rows[:k, META_COLUMNS:] = tokens[order]
    rows[k:, 3] = 1.0  # padding
    return rows


@dataclass
class Extracted:
    """One window of images: rows [n, topk, 5 + D], `global` [n, D], `cls` [n, D] in image order."""

    rows: np.ndarray
    global_: np.ndarray
    cls: np.ndarray


def extract_window(backend, prepared: list[Prepared], topk: int, batch: int) -> Extracted:
    """Run a window of prepared images through an entered extractor backend, one batch per image size."""
    n, d = len(prepared), backend.config["embed_dim"]
    p = backend.config["patch_size"]
    out = Extracted(np.zeros((n, topk, META_COLUMNS + d), np.float32), np.zeros((n, d), np.float32),
                    np.zeros((n, d), np.float32))
    buckets: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(prepared):
        buckets.setdefault(image.pixels.shape[1:], []).append(i)
    dtype = backend.float_dtype()
    profile = backend.profiles()
    for (height, width), members in buckets.items():
        for name, size in (("height", height), ("width", width)):
            if not profile[name]["min"] <= size <= profile[name]["max"]:
                raise InputError(f"images of {height} × {width} px: {name} {size} is outside the extractor's "
                                 f"profile {profile[name]['min']}…{profile[name]['max']} (`imsize`, or export and "
                                 f"build with `profile` {name}:…)")
        limit = min(batch, profile["batch"]["max"])
        for start in range(0, len(members), limit):
            chosen = members[start:start + limit]
            images = np.stack([prepared[i].pixels for i in chosen]).astype(dtype)
            result = backend.infer({"images": images})  # outputs checked finite by every backend
            for j, i in enumerate(chosen):
                out.rows[i] = select(result["weights"][j].astype(np.float32), result["tokens"][j].astype(np.float32),
                                     (height // p, width // p), topk, prepared[i])
                out.global_[i] = result["global"][j]
                out.cls[i] = result["cls"][j]
    return out


def output_paths(out: str | os.PathLike, split: str, desc: str = "dinov2", raml: bool = False) -> dict[str, Path]:
    """The files an extraction writes: the official names (models.md §1.4), and RAML's vectors if asked."""
    layout = DatasetLayout(Path(out), desc)
    paths = {"local": layout.local(split), "global": layout.global_(split), "cls": layout.cls(split)}
    if raml:
        paths["raml"] = DatasetLayout(Path(out), "raml").global_(split)
    return paths | {"images": layout.images(split)}


#: the format tag of `{desc}_{split}_images.json`
RECORD_FORMAT = "rerankrt-extraction/1"


def weights_record(meta: dict) -> dict:
    """Which weights a backend (its `meta`) runs: the model and the sha256 of its checkpoint and parts
    (None: the released configuration's deterministic random weights). Two backends describe images alike
    only when these are equal, whatever the backend or the file's path."""
    recorded = meta.get("checkpoint") or {}
    return {"model": meta["model"], "checkpoint_sha256": recorded.get("sha256"),
            "parts": {name: part["sha256"] for name, part in recorded.get("parts", {}).items()}}


def extraction_record(backend, split: str, names: Sequence[str], imsize: int, topk: int, raml=None) -> dict:
    """What `{desc}_{split}_images.json` holds: the images in file order and how they were described."""
    return {"format": RECORD_FORMAT, "split": split, "images": list(names),
            "extractor": weights_record(backend.meta) | {"imsize": imsize, "topk": topk,
                                                         "precision": backend.precision},
            "raml": weights_record(raml.backend.meta) | {"imsize": raml.size} if raml is not None else None}


def extract(backend, images: Sequence[Path], out: str | os.PathLike, split: str, imsize: int, topk: int,
            bboxes: Sequence[Sequence[float] | None] | None = None, batch: int = 8, desc: str = "dinov2",
            raml=None, progress: Callable[[int, int], None] = lambda done, total: None) -> dict[str, Path]:
    """Extract every image through an entered backend into the official files in `out` (written to
    temporary files first, renamed when all images are done). `raml`: an optional `RamlEncoder` whose
    vectors go to `raml_{split}_global.pt`. The images' file names and the extractor go to
    `{desc}_{split}_images.json`. Returns the files written."""
    import h5py

    if topk <= 0:
        raise InputError(f"expected a positive number of descriptors, got {topk}", param="topk")
    if bboxes is not None and len(bboxes) != len(images):
        raise InputError(f"{len(bboxes)} query boxes for {len(images)} images", param="gnd")
    paths = output_paths(out, split, desc, raml is not None)
    d = backend.config["embed_dim"]
    names = list(paths)
    with atomic_outputs([paths[k] for k in names]) as temps, contextlib.ExitStack() as files:
        tmp = dict(zip(names, temps, strict=True))
        features = files.enter_context(h5py.File(tmp["local"], "w")).create_dataset(
            "features", (len(images), topk, META_COLUMNS + d), dtype=np.float32, chunks=(1, topk, META_COLUMNS + d))
        vectors = {k: files.enter_context(open(tmp[k], "wb")) for k in names if k not in ("local", "images")}
        for start in range(0, len(images), WINDOW):
            window = list(range(start, min(start + WINDOW, len(images))))
            read = [read_image(images[i]) for i in window]
            prepared = [preprocess(image, imsize, backend.config, bboxes[i] if bboxes else None, str(images[i]))
                        for image, i in zip(read, window, strict=True)]
            done = extract_window(backend, prepared, topk, batch)
            features[window[0]:window[-1] + 1] = done.rows
            vectors["global"].write(done.global_.astype("<f4").tobytes())
            vectors["cls"].write(done.cls.astype("<f4").tobytes())
            if raml is not None:
                vectors["raml"].write(raml.encode(_raml_images(read, bboxes, window)).astype("<f4").tobytes())
            progress(window[-1] + 1, len(images))
        record = extraction_record(backend, split, [Path(p).name for p in images], imsize, topk, raml)
        tmp["images"].write_text(json.dumps(record, indent=2) + "\n")
    return paths


def _raml_images(read: list[np.ndarray], bboxes, window: list[int]) -> list[np.ndarray]:
    """The RGB arrays RAML's preprocessing takes, queries cropped to their boxes as for DINOv2."""
    out = []
    for image, i in zip(read, window, strict=True):
        if bboxes and bboxes[i] is not None:
            x0, y0, x1, y1 = (int(v) for v in bboxes[i])
            image = image[y0:y1, x0:x1]
        out.append(np.ascontiguousarray(image[:, :, ::-1]))
    return out


def query_boxes(gnd: dict, images: Iterable[Path]) -> list[Sequence[float] | None]:
    """Each query image's `bbx` from a revisited ground truth, matched by file stem to `qimlist`."""
    boxes = {name: entry.get("bbx") for name, entry in zip(gnd["qimlist"], gnd["gnd"], strict=True)}
    out = []
    for path in images:
        if path.stem not in boxes:
            raise InputError(f"{path.name} is not one of its {len(boxes)} queries (qimlist)", param="gnd")
        out.append(boxes[path.stem])
    return out
