"""AMES's database store: what the scorer needs of every database image and nothing more, memory-mapped
(reference/models.md §2.5: 128-bit sign codes for `ames-dist`, ≈800 B an image at 50 descriptors; 128-d
fp16 tokens after `remap_local` for `ames`, 12.8 KB).

A store is a folder:

    manifest.json   format, model, variant, images, descriptors per image, descriptor and token
                    dimensions, the checkpoint's sha256 (null: the released configuration's deterministic
                    random weights), the configuration, the source file, the files and their layouts
    codes.u8        ames-dist: [images, T, E/8] uint8, the sign bits packed (np.packbits, big-endian)
    tokens.f16      ames: [images, T, E] float16
    masks.u8        [images, ceil(T/8)] uint8, the padding masks packed (1 = padding)

It is built in a hidden folder beside the target and renamed into place when complete, so an
interrupted build leaves nothing that opens as a store. Entries come back unpacked, as the scorer takes
them: bool codes [n, T, E] or fp16 tokens [n, T, E], and bool masks [n, T].
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import check_replaceable, staging_folder, swap_in
from rerankrt.core.errors import InputError, ModelFileError
from rerankrt.core.manifest import read_tagged_json
from rerankrt.data.descriptors import LocalDescriptorFile

FORMAT = "rerankrt-ames-store/1"
MANIFEST = "manifest.json"
MASKS = "masks.u8"
#: per variant: the file of the stored entries and its element type
ENTRIES = {"dist": ("codes.u8", np.uint8), "fp": ("tokens.f16", np.float16)}
#: images encoded per backend call while building (bounded memory, whatever the number of images)
CHUNK = 256


def _variant(config: dict) -> str:
    return "dist" if config["binarized"] else "fp"


def _entry_shape(variant: str, descriptors: int, token_dim: int) -> tuple[int, int]:
    return (descriptors, token_dim // 8) if variant == "dist" else (descriptors, token_dim)


def entry_bytes(config: dict, descriptors: int | None = None) -> float:
    """The bytes per image of a store of AMES `config` at `descriptors` per image (default released): its
    entries and packed masks (what a byte budget counts before the store is encoded)."""
    t = config["db_descriptors"] if descriptors is None else descriptors
    variant = _variant(config)
    rows, width = _entry_shape(variant, t, config["model_dim"])
    return rows * width * np.dtype(ENTRIES[variant][1]).itemsize + -(-t // 8)


def _checkpoint_sha(meta: dict) -> str | None:
    return (meta.get("checkpoint") or {}).get("sha256")


def read_manifest(path: Path, form: str) -> dict:
    """A store folder's manifest, of format `form`; a missing, unreadable or foreign one is a ModelFileError."""
    why = "no such folder" if not path.exists() else f"no {MANIFEST} (not a store, or an unfinished build)"
    return read_tagged_json(path / MANIFEST, (form,), f"store {path}", why, error=ModelFileError)


class AmesStore:
    """An open, validated store. `entries(indices)` reads any images, in any order."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        m = self.manifest = read_manifest(self.path, FORMAT)
        self.model, self.variant = m["model"], m["variant"]
        self.images, self.descriptors, self.token_dim = m["images"], m["descriptors_per_image"], m["token_dim"]
        file, dtype = ENTRIES[self.variant]
        self._entries = self._map(file, dtype, (self.images, *_entry_shape(self.variant, self.descriptors,
                                                                              self.token_dim)))
        self._masks = self._map(MASKS, np.uint8, (self.images, -(-self.descriptors // 8)))

    def _map(self, name: str, dtype, shape: tuple[int, ...]) -> np.memmap:
        path = self.path / name
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not path.is_file():
            raise ModelFileError(f"store {self.path}: {name} is missing")
        size = path.stat().st_size
        if size != expected:
            raise ModelFileError(f"store {self.path}: {name} holds {size} bytes, expected {expected} "
                                 f"({' × '.join(map(str, shape))} {np.dtype(dtype).name}): truncated or foreign")
        return np.memmap(path, dtype=dtype, mode="r", shape=shape)

    def entries(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(stored [n, T, E]: bool codes or fp16 tokens, mask [n, T] bool, True = padding) of `indices`."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        bad = idx[(idx < 0) | (idx >= self.images)]
        if bad.size:
            raise InputError(f"store {self.path}: image indices must be in [0, {self.images}), got "
                             f"{bad[:5].tolist()}")
        mask = np.unpackbits(self._masks[idx], axis=-1, count=self.descriptors).astype(bool)
        if self.variant == "dist":
            codes = np.unpackbits(self._entries[idx], axis=-1, count=self.token_dim).astype(bool)
            return codes, mask
        return np.asarray(self._entries[idx]), mask

    def check_scorer(self, meta: dict) -> None:
        """Refuse a scorer (its sidecar or backend `meta`) of another checkpoint, variant, descriptor count
        or dimension, naming both values."""
        profile = meta["profiles"]["db_descriptors"]
        extra = [] if profile["min"] <= self.descriptors <= profile["max"] else [
            f"descriptors: the store keeps {self.descriptors} per image, the scorer takes "
            f"{profile['min']}…{profile['max']}"]
        self._check(meta, "scorer", extra)

    def check_encoder(self, meta: dict) -> None:
        """Refuse an encoder of the query side with other weights, variant or dimensions than the store's."""
        self._check(meta, "encoder", [])

    def check_reranker(self, meta: dict) -> None:
        """A list-wise re-ranker does not read AMES's entries."""
        raise ModelFileError(f"store {self.path} holds {self.model}'s entries, scored by its encoder and scorer, "
                             f"not by {meta['model']}")

    def _check(self, meta: dict, role: str, problems: list[str]) -> None:
        cfg, m = meta["config"], self.manifest
        if _variant(cfg) != self.variant:
            problems.insert(0, f"variant: the store holds {self.variant} entries ({self.model}), the {role} "
                               f"{meta['model']} {_variant(cfg)}")
        if _checkpoint_sha(meta) != m["checkpoint_sha256"]:
            problems.append(f"checkpoint: the store was encoded with sha256 {m['checkpoint_sha256']}, the {role} "
                            f"holds {_checkpoint_sha(meta)} (null: the released configuration's random weights)")
        if cfg["local_dim"] != m["descriptor_dim"] or cfg["model_dim"] != self.token_dim:
            problems.append(f"dimension: the store encodes {m['descriptor_dim']}-d descriptors into {self.token_dim}-d "
                            f"tokens, the {role} {cfg['local_dim']}-d into {cfg['model_dim']}-d")
        if problems:
            raise ModelFileError(f"store {self.path} does not fit {role} {meta['model']}:\n  " + "\n  ".join(problems))


def store_info(path: str | os.PathLike) -> dict:
    """What `rerankrt index info` prints: the manifest's facts and the measured bytes per image (every file
    of the store, the manifest included, over the images)."""
    store = AmesStore(path)
    total = sum(f.stat().st_size for f in store.path.iterdir() if f.is_file())
    m = store.manifest
    return {"path": str(store.path), "model": store.model, "variant": store.variant, "images": store.images,
            "descriptors_per_image": store.descriptors, "descriptor_dim": m["descriptor_dim"],
            "token_dim": store.token_dim, "bytes": total, "bytes_per_image": total / max(store.images, 1),
            "checkpoint_sha256": m["checkpoint_sha256"], "source": m["source"], "built_at": m["built_at"]}


def build_store(encoder, gallery: str | os.PathLike, out: str | os.PathLike, descriptors: int | None = None,
                force: bool = False, log: Callable[[str], None] = lambda message: None,
                rows: range | None = None) -> Path:
    """Encode every image of a local-descriptor HDF5 file (`rows`: those rows only, a shard's) through an
    entered encoder backend (its first `descriptors` descriptors, default the released `db_descriptors`)
    into a store at `out`."""
    meta = encoder.meta
    cfg = meta["config"]
    if meta.get("kind") != "encoder":
        raise ValueError(f"{meta['model']}: not a store encoder (build with ames-encoder or ames-dist-encoder)")
    check_target(out, force)
    t = cfg["db_descriptors"] if descriptors is None else descriptors
    out_name = next(s.name for s in encoder.output_specs())
    dtype = encoder.float_dtype()
    profile = encoder.profiles()
    with LocalDescriptorFile(gallery, dim=cfg["local_dim"]) as f:
        if f.num_images == 0:
            raise InputError(f"{gallery}: holds no images")
        if not 1 <= t <= f.topk:
            raise InputError(f"expected 1 … {f.topk} (the file's topk), got {t}", param="db_descriptors")
        if not profile["descriptors"]["min"] <= t <= profile["descriptors"]["max"]:
            p = profile["descriptors"]
            raise InputError(f"{t} is outside the encoder's profile {p['min']}…{p['max']}", param="db_descriptors")
        rows = range(f.num_images) if rows is None else rows
        if rows.step != 1 or not 0 <= rows.start < rows.stop <= f.num_images:
            raise ValueError(f"build_store: rows {rows} are not a range of the file's {f.num_images} images")
        source = {"path": str(Path(gallery).resolve()), "topk": f.topk}
        if len(rows) != f.num_images:
            source["rows"] = [rows.start, rows.stop]
        with StoreWriter(out, meta["model"].removesuffix("-encoder"), cfg, len(rows), t, meta) as writer:
            chunk = min(CHUNK, profile["images"]["max"])
            for start in range(0, len(rows), chunk):
                batch = f.read(np.arange(rows.start + start, rows.start + min(start + chunk, len(rows))), n=t)
                encoded = encoder.infer({"desc": batch.desc.astype(dtype), "mask": batch.mask})[out_name]
                writer.write(start, encoded, batch.mask)
                log(f"encoded {start + len(encoded)}/{len(rows)} images")
            writer.finish(source)
    return Path(out)


def check_target(out: str | os.PathLike, force: bool) -> None:
    """A store may replace only a store, and only with `force`."""
    check_replaceable(out, force, MANIFEST, "a store")


class StoreWriter:
    """Writes a store of `images` images in a staging folder beside `out` (`core.atomic`); `finish` adds
    the manifest and swaps it in for the old store in one rename. Leaving the block without `finish` (an
    error, Ctrl-C) removes the staging folder, and a killed build's is removed by the next one: nothing
    half-built remains."""

    def __init__(self, out: str | os.PathLike, model: str, config: dict, images: int, descriptors: int,
                 meta: dict) -> None:
        self.out, self.model, self.config, self.meta = Path(out), model, config, meta
        self.variant, self.token_dim = _variant(config), config["model_dim"]
        self.images, self.descriptors = images, descriptors
        self.file, self.dtype = ENTRIES[self.variant]

    def __enter__(self) -> StoreWriter:
        self.staging = staging_folder(self.out)
        # plain sequential writes, not a memory map: the process's memory stays bounded by one chunk
        self.entries = open(self.staging / self.file, "wb")  # noqa: SIM115  (closed in finish / __exit__)
        self.masks = open(self.staging / MASKS, "wb")  # noqa: SIM115
        self.written = 0
        return self

    def write(self, start: int, encoded: np.ndarray, mask: np.ndarray, packed: bool = False) -> None:
        """Images start… (in order) of the encoder's output (bool codes or float tokens; `packed`: codes
        already packed to bytes) and their padding masks."""
        if start != self.written:
            raise ValueError(f"store writer: images come in order; expected image {self.written}, got {start}")
        if self.variant == "dist":
            entries = encoded if packed else np.packbits(encoded, axis=-1)
        else:
            entries = encoded.astype(np.float16)
        expected = (len(encoded), *_entry_shape(self.variant, self.descriptors, self.token_dim))
        if entries.shape != expected or mask.shape != (len(encoded), self.descriptors):
            raise ValueError(f"store writer: expected entries {list(expected)} and masks "
                             f"{[len(encoded), self.descriptors]}, got {list(entries.shape)} and {list(mask.shape)}")
        self.entries.write(np.ascontiguousarray(entries, dtype=self.dtype).tobytes())
        self.masks.write(np.packbits(mask, axis=-1).tobytes())
        self.written += len(encoded)

    def finish(self, source: dict) -> None:
        if self.written != self.images:
            raise ValueError(f"store writer: {self.written} of {self.images} images written")
        for f in (self.entries, self.masks):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        t, e = self.descriptors, self.token_dim
        manifest = {
            "format": FORMAT, "model": self.model, "variant": self.variant, "images": self.images,
            "descriptors_per_image": t, "descriptor_dim": self.config["local_dim"], "token_dim": e,
            "checkpoint_sha256": _checkpoint_sha(self.meta), "config": self.config, "source": source,
            "files": {self.file: f"[images, {t}, {_entry_shape(self.variant, t, e)[1]}] {np.dtype(self.dtype).name}",
                      MASKS: f"[images, {-(-t // 8)}] uint8, packed padding masks"},
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (self.staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        swap_in(self.staging, self.out)

    def __exit__(self, *exc) -> None:
        self.entries.close()
        self.masks.close()
        shutil.rmtree(self.staging, ignore_errors=True)  # gone already when finished
