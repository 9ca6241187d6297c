"""Readers and writers of the official descriptor files (reference/models.md §1.3–1.4).

- local HDF5 `{desc}_{split}_local.hdf5`: dataset `features` [N, topk, 5 + D], columns
  (x, y, scale index, mask 1 = padding, detector weight, descriptor…); virtual datasets included;
- global raw float32 files `{desc}_{split}_global.pt` [N, D] (not torch pickles), memory-mapped;
- kNN shortlists `nn_*.pkl` [2, n_queries, K]: similarities, then database indices stored as float;
- revisited ground truth `gnd_*.pkl`.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import atomic_output
from rerankrt.core.errors import DescriptorFileError
from rerankrt.data.pickles import load_pickle

#: columns before the descriptor in the local HDF5 layout
META_COLUMNS = 5
COL_XY, COL_SCALE, COL_MASK, COL_WEIGHT = slice(0, 2), 2, 3, 4


@dataclass(frozen=True)
class LocalDescriptors:
    """Local descriptors of a set of images, in the models' input layout."""

    desc: np.ndarray  #: [N, n, D] float32, L2-normalised; padded rows are zero
    mask: np.ndarray  #: [N, n] bool, True = padding
    scale: np.ndarray  #: [N, n] int64 scale index (0 for DINOv2)
    weight: np.ndarray  #: [N, n] float32 detector weight, rows sorted by it
    xy: np.ndarray  #: [N, n, 2] float32 locations (unused by the models)


def _dataset_problem(dataset, path: Path) -> str | None:
    """Why an HDF5 dataset cannot be read as descriptors: not floating point, or a virtual dataset (the
    +1M gallery) with a source file that is missing (HDF5 would read its rows as zeros)."""
    if dataset.dtype.kind != "f":
        return f"has dtype {dataset.dtype}, expected floating point"
    if dataset.is_virtual:
        for source in dataset.virtual_sources():
            file = Path(source.file_name)
            file = file if file.is_absolute() else path.parent / file
            if source.file_name != "." and not file.is_file():
                return f"is a virtual dataset whose source {file} is missing"
    return None


class LocalDescriptorFile:
    """An open `*_local.hdf5` file; reads a set of images and their first n descriptors only.

    >>> with LocalDescriptorFile("dinov2_gallery_local.hdf5", dim=768) as f:
    ...     batch = f.read([3, 1, 3], n=50)   # any order, repeats allowed
    """

    def __init__(self, path: str | os.PathLike, dim: int | None = None) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DescriptorFileError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise DescriptorFileError(f"{self.path}: not a readable HDF5 file ({e})") from e
        if not isinstance(self._file.get("features"), h5py.Dataset):
            keys = sorted(self._file.keys())
            self._file.close()
            what = "a group" if "features" in keys else f"{keys}"
            raise DescriptorFileError(f"{self.path}: expected a dataset 'features' [N, topk, 5 + D], found {what}")
        self._features = self._file["features"]
        problem = _dataset_problem(self._features, self.path)
        if problem:
            self._file.close()
            raise DescriptorFileError(f"{self.path}: 'features' {problem}")
        shape = self._features.shape
        if len(shape) != 3 or shape[2] <= META_COLUMNS:
            self._file.close()
            raise DescriptorFileError(
                f"{self.path}: 'features' must be [N, topk, 5 + D] with D ≥ 1 (x, y, scale, mask, weight, "
                f"descriptor), got shape {list(shape)}"
            )
        self.num_images, self.topk, self.dim = shape[0], shape[1], shape[2] - META_COLUMNS
        if dim is not None and dim != self.dim:
            self._file.close()
            raise DescriptorFileError(f"{self.path}: expected descriptors of dimension {dim}, the file has {self.dim}")

    def check_globals(self, globals_: np.ndarray, path: str | os.PathLike) -> None:
        """The global vectors of the same images: one row per image of this file."""
        if len(globals_) != self.num_images:
            raise DescriptorFileError(f"{path}: {len(globals_)} global vectors for the {self.num_images} images of "
                                      f"{self.path} (files of different extractions?)")

    def read(self, images, n: int | None = None) -> LocalDescriptors:
        """Descriptors of `images` (indices in any order), the first `n` (default: all topk) each."""
        idx = np.asarray(images, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_images):
            bad = idx[(idx < 0) | (idx >= self.num_images)]
            raise DescriptorFileError(
                f"{self.path}: image indices must be in [0, {self.num_images}), got {bad[:5].tolist()}"
            )
        n = self.topk if n is None else n
        if not 1 <= n <= self.topk:
            raise DescriptorFileError(f"{self.path}: n must be in [1, {self.topk}], got {n}")
        unique, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing indices
        rows = np.asarray(self._features[unique.tolist(), :n, :], dtype=np.float32)[inverse]
        desc = np.ascontiguousarray(rows[..., META_COLUMNS:])
        finite = np.isfinite(desc).all(axis=(1, 2))
        if not finite.all():
            raise DescriptorFileError(
                f"{self.path}: NaN or infinite descriptors in images {idx[~finite][:5].tolist()}"
            )
        return LocalDescriptors(
            desc=desc,
            mask=rows[..., COL_MASK] != 0,
            scale=rows[..., COL_SCALE].astype(np.int64),
            weight=np.ascontiguousarray(rows[..., COL_WEIGHT]),
            xy=np.ascontiguousarray(rows[..., COL_XY]),
        )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LocalDescriptorFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_local(path: str | os.PathLike, desc: np.ndarray, mask: np.ndarray, *, scale=None, weight=None,
                xy=None, dtype=np.float32) -> None:
    """Write `features` [N, topk, 5 + D] atomically; padded rows are written as zeros with mask 1."""
    import h5py

    desc = np.asarray(desc, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if desc.ndim != 3 or mask.shape != desc.shape[:2]:
        raise DescriptorFileError(
            f"write_local: expected desc [N, topk, D] and mask [N, topk], got {list(desc.shape)} and {list(mask.shape)}"
        )
    features = np.zeros(desc.shape[:2] + (META_COLUMNS + desc.shape[2],), dtype=np.float32)
    features[..., META_COLUMNS:] = np.where(mask[..., None], 0.0, desc)
    features[..., COL_MASK] = mask
    for col, values in ((COL_SCALE, scale), (COL_WEIGHT, weight), (COL_XY, xy)):
        if values is not None:
            features[..., col] = values
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("features", data=features.astype(dtype))


def read_global(path: str | os.PathLike, dim: int) -> np.memmap:
    """Memory-map a raw float32 global descriptor file as [N, dim] (read-only)."""
    path = Path(path)
    if not path.is_file():
        raise DescriptorFileError(f"{path}: no such file")
    size = path.stat().st_size
    row = 4 * dim
    if size == 0 or size % row:
        raise DescriptorFileError(
            f"{path}: a raw float32 [N, {dim}] file must hold a positive multiple of {row} bytes, it holds {size}"
        )
    return np.memmap(path, dtype=np.float32, mode="r", shape=(size // row, dim))


def write_global(path: str | os.PathLike, vectors: np.ndarray) -> None:
    """Write [N, D] vectors as raw little-endian float32, atomically."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2:
        raise DescriptorFileError(f"write_global: expected [N, D] vectors, got shape {list(vectors.shape)}")
    with atomic_output(path) as tmp:
        vectors.tofile(tmp)


def read_nn(path: str | os.PathLike, num_db: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A kNN shortlist file → (similarities float32 [nq, K], database indices int64 [nq, K]).

    Indices are stored as floats; they must be whole numbers in [0, num_db) when num_db is given.
    """
    path = Path(path)
    data = load_pickle(path)
    arr = np.asarray(data)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise DescriptorFileError(
            f"{path}: expected a [2, n_queries, K] array (similarities, indices), got shape {list(arr.shape)}"
        )
    if not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
        raise DescriptorFileError(f"{path}: expected numbers, got an array of {arr.dtype}")
    wide, raw = arr[0].astype(np.float64), arr[1].astype(np.float64)
    bad = np.argwhere(~(np.abs(wide) <= np.finfo(np.float32).max))  # NaN fails the comparison too
    if bad.size:
        raise DescriptorFileError(f"{path}: similarity (row 0) of query {bad[0][0]} is {wide[tuple(bad[0])]}, "
                                  f"expected finite float32 values")
    sims = wide.astype(np.float32)
    if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
        raise DescriptorFileError(f"{path}: database indices (row 1) must be whole numbers")
    if raw.size and raw.min() < 0:
        raise DescriptorFileError(f"{path}: negative database index {raw.min():.0f}")
    limit = 2**53 if num_db is None else num_db  # past 2**53 a float index is not a whole number any more
    if raw.size and raw.max() >= limit:
        raise DescriptorFileError(
            f"{path}: database index {raw.max():.0f} is out of range for a database of {limit} images")
    idx = raw.astype(np.int64)
    ordered = np.sort(idx, axis=1)
    repeats = np.argwhere(ordered[:, 1:] == ordered[:, :-1])
    if repeats.size:
        q, k = repeats[0]
        raise DescriptorFileError(f"{path}: query {q} lists database image {ordered[q, k]} more than once "
                                  f"(a shortlist ranks each image once)")
    return sims, idx


def write_nn(path: str | os.PathLike, sims: np.ndarray, idx: np.ndarray) -> None:
    """Write a [2, nq, K] shortlist as a pickled numpy array (indices stored as float, as released)."""
    sims = np.asarray(sims, dtype=np.float32)
    idx = np.asarray(idx)
    if sims.ndim != 2 or idx.shape != sims.shape:
        raise DescriptorFileError(
            f"write_nn: expected similarities and indices of one shape [nq, K], got "
            f"{list(sims.shape)} and {list(idx.shape)}"
        )
    data = np.stack([sims, idx.astype(np.float32)])
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(data, f)


def read_gnd(path: str | os.PathLike) -> dict:
    """Revisited ground truth: {'gnd': [{'easy', 'hard', 'junk', 'bbx'} …], 'imlist', 'qimlist'}.

    Index lists are checked against the database size and returned as int64 arrays.
    """
    path = Path(path)
    data = load_pickle(path)
    if not isinstance(data, dict) or not {"gnd", "imlist", "qimlist"} <= set(data):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DescriptorFileError(f"{path}: expected a dict with 'gnd', 'imlist' and 'qimlist', found {found}")
    for key in ("gnd", "imlist", "qimlist"):
        if not isinstance(data[key], (list, tuple)):
            raise DescriptorFileError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    num_db = len(data["imlist"])
    if len(data["gnd"]) != len(data["qimlist"]):
        raise DescriptorFileError(
            f"{path}: {len(data['gnd'])} ground-truth entries for {len(data['qimlist'])} queries"
        )
    queries = []
    for q, entry in enumerate(data["gnd"]):
        if not isinstance(entry, dict):
            raise DescriptorFileError(f"{path}: query {q} is a {type(entry).__name__}, expected a dict of index lists")
        lists = {k: v for k, v in entry.items() if k in ("easy", "hard", "junk", "ok")}
        if not lists:
            raise DescriptorFileError(f"{path}: query {q} has none of 'easy', 'hard', 'junk', 'ok'")
        out = dict(entry)
        for key, values in lists.items():
            try:
                raw = np.asarray(values, dtype=np.float64)
                if raw.ndim == 0:  # a bare number is no list (a reader that took it as one hid the malformed file)
                    raise ValueError
                raw = raw.reshape(-1)
            except (TypeError, ValueError):
                raise DescriptorFileError(f"{path}: query {q} '{key}' is not a list of image indices") from None
            if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
                wrong = raw[~np.isfinite(raw) | (raw != np.round(raw))][0]
                raise DescriptorFileError(f"{path}: query {q} '{key}' holds {wrong:g}, expected whole image indices")
            bad = raw[(raw < 0) | (raw >= num_db)]
            if bad.size:
                raise DescriptorFileError(f"{path}: query {q} '{key}' holds index {bad[0]:.0f} outside [0, {num_db})")
            out[key] = raw.astype(np.int64)
        if "bbx" in entry and entry["bbx"] is not None:
            box = np.asarray(entry["bbx"], dtype=object).reshape(-1)
            if len(box) != 4 or not all(isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in box):
                raise DescriptorFileError(f"{path}: query {q} 'bbx' is {entry['bbx']!r}, expected 4 numbers "
                                          f"(x0, y0, x1, y1)")
        queries.append(out)
    return {**data, "gnd": queries}
