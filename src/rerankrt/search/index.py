"""A search index: everything a search reads of the gallery, in one folder (numpy only).

    manifest.json   format, images, the first stage (cosine over the globals, exact or through faiss: their
                    prefix, dimension, file and the weights that made them: DINOv2's, or RAML's teacher's; a
                    faiss one adds its factory string, training sample, search knobs and measured recall@S
                    (`search.first_stage`)), the extractor that
                    described the gallery (model, checkpoint and part hashes, imsize, topk, precision; null
                    when the folder had no `{desc}_gallery_images.json`),
                    the re-ranker (model, store folder, checkpoint hash), the source folder, built_at
    globals.f32     [images, D] float32, the gallery's L2-normalised global vectors, row = gallery index
                    (an exact first stage), or first_stage.faiss (an approximate one: no raw vectors)
    names.json      [images] the gallery's image names (null each when the extraction recorded none)
    store/          the re-ranker's database side: an AMES store (`search.store`) or LOCORE's FP16 globals
                    and locals (`search.locore_store`)

The rows of every part are the rows of the gallery files it was built from, so a hit's `index` is a
position in `{desc}_gallery_*` as `rerankrt rerank` reports it. An index is built in a staging folder
beside the target and swapped in when complete (`core.atomic`): a killed build leaves the previous
index or nothing, never a folder that opens. The first stage and the store are checked against each other
on open, so an index whose parts disagree on the images is refused instead of searched.

The AMES stores that `rerankrt index build` wrote before (a folder with the store's own manifest) still
open for `rerank --index` and Triton's loops (`index_shards.open_store`); a search refuses them with the command that
rebuilds them as an index.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import check_replaceable, staging_folder, swap_in
from rerankrt.core.errors import DescriptorFileError, InputError, ModelFileError, TargetNotMetError
from rerankrt.core.manifest import read_tagged_json
from rerankrt.data.dataset_layout import DatasetLayout
from rerankrt.data.descriptors import LocalDescriptorFile, read_global
from rerankrt.data.extraction import RECORD_FORMAT
from rerankrt.runtime.loops import LOOPS
from rerankrt.search import store as ames_store
from rerankrt.search.first_stage import (
    AUTO,
    EXACT,
    EXACT_UP_TO,
    FAISS_FILE,
    GLOBALS,
    FaissBuild,
    RecallProbe,
    faiss_module,
    normalised,
    open_first_stage,
)
from rerankrt.search.first_stage_choice import Selection, choose, confirm, table_lines
from rerankrt.search.locore_store import FORMAT as LOCORE_FORMAT
from rerankrt.search.locore_store import LocoreStore, build_locore_store
from rerankrt.search.locore_store import entry_bytes as locore_entry_bytes
from rerankrt.search.protocols import FirstStage, RerankStore

FORMAT = "rerankrt-search-index/1"
#: a shard set: indexes over consecutive gallery rows (`index build --shards N`, `index_shards`)
SHARDS_FORMAT = "rerankrt-search-shards/1"
MANIFEST = "manifest.json"
NAMES = "names.json"
STORE = "store"
#: gallery vectors copied per step while building (bounded memory)
CHUNK = 65536
#: what a budget sets aside for the manifest (its record of the candidates tried included)
MANIFEST_BYTES = 16_384
#: the shortlist an index of globals alone measures its recall at
SHORTLIST = 100


def rebuild_hint(model: str = "MODEL") -> str:
    return f"rebuild it with `rerankrt index build --model {model} --data DATA --out INDEX`"


def open_rerank_store(path: Path) -> RerankStore:
    """The re-ranker's store of an index, AMES's or LOCORE's by its manifest's format."""
    manifest = path / MANIFEST
    try:
        found = json.loads(manifest.read_text()).get("format") if manifest.is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        found = None
    return LocoreStore(path) if found == LOCORE_FORMAT else ames_store.AmesStore(path)


def read_index_manifest(path: Path) -> dict:
    """The manifest of an index or a store folder; a missing or foreign one is an error that says how to
    rebuild."""
    why = "no such folder" if not path.exists() else f"no {MANIFEST} (not an index, or an unfinished build)"
    return read_tagged_json(path / MANIFEST, (FORMAT, SHARDS_FORMAT, ames_store.FORMAT), f"index {path}", why,
                            f": {rebuild_hint()}", error=ModelFileError)


class SearchIndex:
    """An open, validated index: `first_stage` (`.search(queries, k, nprobe=, ef_search=)`), `globals` [N, D]
    memory-mapped (an exact first stage; else None), `names`, `store` (or None), `extractor`.
    `first_stage=False` leaves the first stage unopened (None): a faiss index is read whole into memory, which
    a process that searches through another (the Triton search model's shard models) must not pay."""

    def __init__(self, path: str | os.PathLike, first_stage: bool = True) -> None:
        self.path = Path(path)
        m = self.manifest = read_index_manifest(self.path)
        if m["format"] == ames_store.FORMAT:
            raise ModelFileError(f"index {self.path}: an AMES store, not a search index (no first stage): "
                                 f"{rebuild_hint(m['model'])}")
        if m["format"] == SHARDS_FORMAT:
            raise ModelFileError(f"index {self.path}: a shard set, not one index (open it with "
                                 f"rerankrt.search.shards.open_index)")
        self.images, first = int(m["images"]), m["first_stage"]
        self.dim, self.desc = int(first["dim"]), first["desc"]
        self.globals: np.ndarray | None = None
        if first["kind"] == EXACT:
            globals_path = self.path / first["file"]
            expected = self.images * self.dim * 4
            size = globals_path.stat().st_size if globals_path.is_file() else None
            if size != expected:
                found = "is missing" if size is None else f"holds {size} bytes"
                raise ModelFileError(f"index {self.path}: {first['file']} {found}, expected {expected} "
                                     f"({self.images} × {self.dim} float32): {rebuild_hint()}")
            self.globals = np.memmap(globals_path, dtype=np.float32, mode="r", shape=(self.images, self.dim))
        self.first_stage: FirstStage | None
        try:
            self.first_stage = open_first_stage(self.path, first, self.images, self.globals) if first_stage else None
        except ModelFileError as e:
            raise ModelFileError(f"index {self.path}: {e}: {rebuild_hint()}") from None
        self.names = json.loads((self.path / m["names"]).read_text())
        if not isinstance(self.names, list) or len(self.names) != self.images:
            raise ModelFileError(f"index {self.path}: {m['names']} names {len(self.names)} images, the first stage "
                                 f"holds {self.images}: {rebuild_hint()}")
        self.extractor: dict | None = m["extractor"]
        self.store: RerankStore | None = None
        if m["rerank"] is not None:
            self.store = open_rerank_store(self.path / m["rerank"]["store"])
            if self.store.images != self.images:
                raise ModelFileError(f"index {self.path}: the first stage holds {self.images} images, its store "
                                     f"{self.store.images}: {rebuild_hint(self.store.model)}")

    @property
    def model(self) -> str | None:
        """The re-ranker whose database side the index holds."""
        return None if self.store is None else self.store.model


def index_info(path: str | os.PathLike) -> dict:
    """What `rerankrt index info` prints of an index (or of an older store folder): the manifest's facts and
    the bytes per image of each part and in total, measured from the files (manifests included)."""
    path = Path(path)
    if read_index_manifest(path)["format"] == ames_store.FORMAT:
        return ames_store.store_info(path)
    index = SearchIndex(path)
    m = index.manifest

    def size(folder: Path) -> int:
        return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())

    parts = {"first_stage": (path / m["first_stage"]["file"]).stat().st_size,
             "store": size(path / STORE) if index.store is not None else 0,
             "names": (path / m["names"]).stat().st_size, "manifest": (path / MANIFEST).stat().st_size}
    total = size(path)
    store = index.store and {"descriptors_per_image": index.store.descriptors,
                             "checkpoint_sha256": index.store.manifest["checkpoint_sha256"]}
    return {"path": str(path), "format": FORMAT, "images": index.images,
            "first_stage": {k: v for k, v in m["first_stage"].items() if k != "choice"},
            "recall": m["first_stage"].get("recall"), "choice": m["first_stage"].get("choice"), "model": index.model,
            "descriptors_per_image": store and store["descriptors_per_image"],
            "named_images": sum(n is not None for n in index.names), "extractor": index.extractor,
            "checkpoint_sha256": store and store["checkpoint_sha256"], "bytes": total,
            "bytes_per_image": total / max(index.images, 1),
            "bytes_per_image_by_part": {k: v / max(index.images, 1) for k, v in parts.items()},
            "source": m["source"], "built_at": m["built_at"]}


def read_record(layout: DatasetLayout, split: str, images: int) -> dict | None:
    """A split's extraction record (`rerankrt extract`), checked against its `images` rows; None when the
    folder has none (the published files)."""
    path = layout.images(split)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DescriptorFileError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise DescriptorFileError(f"{path}: expected format {RECORD_FORMAT!r}")
    if len(record["images"]) != images:
        raise DescriptorFileError(f"{path}: names {len(record['images'])} images, {layout.local(split)} holds "
                                  f"{images} (files of different extractions?)")
    return record


def check_target(out: str | os.PathLike, force: bool) -> None:
    """An index may replace only an index or a store, and only with `force`."""
    check_replaceable(out, force, MANIFEST, "an index")


def _gallery_vectors(path: Path, images: int, dim: int | None) -> np.memmap:
    """The raw float32 globals of the gallery's `images` images; `dim` None: read off the file's size (RAML's
    512-d beside DINOv2's 768-d locals)."""
    if dim is None:
        size = path.stat().st_size if path.is_file() else 0
        if size == 0 or size % (4 * images):
            raise DescriptorFileError(f"{path}: {size} bytes are no [{images}, D] float32 global vectors of the "
                                      f"gallery's {images} images" if path.is_file() else f"{path}: no such file")
        dim = size // (4 * images)
    vectors = read_global(path, dim)
    if len(vectors) != images:
        raise DescriptorFileError(f"{path}: {len(vectors)} global vectors for the gallery's {images} images (files "
                                  f"of different extractions?)")
    return vectors


def build_index(reranker, data: str | os.PathLike, out: str | os.PathLike, desc: str = "dinov2",
                descriptors: int | None = None, force: bool = False,
                log: Callable[[str], None] = lambda message: None, globals_desc: str | None = None,
                first_stage: str = "auto", shards: int = 1, selection: Selection | None = None,
                recall_queries: str | os.PathLike | None = None, **faiss_settings) -> Path:
    """An index of the gallery of the dataset folder `data`: its globals as the first stage (`globals_desc`:
    another prefix's, e.g. RAML's teacher vectors `raml_gallery_global.pt`; default `desc`; `first_stage`:
    exact, a faiss factory string or auto, with `faiss_settings` train_sample, nprobe, ef_search), the
    re-ranker's store of its locals: encoded by an entered AMES encoder `reranker` (its first `descriptors`
    each, default released), or, for an entered LOCORE backend, its globals and first locals in FP16
    (`locore_store`), and its names and extractor from the extraction record; `reranker` None: an index of
    the globals alone (no store). An approximate first stage's recall is measured at the re-ranker's released
    shortlist, on `recall_queries` (a dataset folder: its `{globals_desc}_query_global.pt`) when given;
    `selection`: how `auto` chooses (`first_stage_choice.Selection`). `shards` > 1: a shard set (`SHARDS_FORMAT`)
    of that many indexes over consecutive gallery rows, each with its own first stage (`first_stage`
    resolved at the shard's size, trained on its rows) and store, opened as one by `index_shards.open_index`."""
    layout = DatasetLayout(Path(data), desc)
    check_target(out, force)
    with LocalDescriptorFile(layout.local("gallery")) as f:
        images, dim = f.num_images, f.dim
    if images == 0:
        raise InputError(f"{layout.local('gallery')}: holds no images")
    if isinstance(shards, bool) or not isinstance(shards, int) or not 1 <= shards <= images:
        raise InputError(f"expected 1 to the gallery's {images} images, got {shards!r}", param="shards")
    globals_desc = globals_desc or desc
    if reranker is None and descriptors is not None:
        raise InputError("an index without `model` holds no re-ranker's store", param="db_descriptors")
    locore = reranker is not None and bool(reranker.meta["loop"]) and LOOPS[reranker.meta["loop"]].reads_globals
    if locore and (globals_desc != desc or descriptors is not None):
        param = "globals_desc" if globals_desc != desc else "db_descriptors"
        raise InputError(f"{reranker.meta['model']} reads the gallery's own {desc} globals and its first "
                         f"{reranker.config['local_descriptors']} locals (an AMES setting)", param=param)
    globals_path = DatasetLayout(Path(data), globals_desc).global_("gallery")
    vectors = _gallery_vectors(globals_path, images, dim if globals_desc == desc else None)
    record = read_record(layout, "gallery", images)
    encoded_by = (record or {}).get("extractor" if globals_desc == desc else globals_desc)
    names = record["images"] if record else [None] * images
    source = {"path": str(layout.root.resolve()), "desc": desc}
    shortlist = SHORTLIST if reranker is None else reranker.config.get("shortlist", SHORTLIST)
    selection = selection or Selection()
    if recall_queries is not None:
        queries_path = DatasetLayout(Path(recall_queries), globals_desc).global_("query")
        queries, _ = normalised(np.asarray(read_global(queries_path, vectors.shape[1]), np.float32),
                                f"`recall_queries` {queries_path}")
        selection = dataclasses.replace(selection, recall_queries=queries, recall_source=str(queries_path))
    store_bytes = 0.0 if reranker is None else (
        locore_entry_bytes(reranker.meta) if locore else ames_store.entry_bytes(reranker.config, descriptors))

    def write(target: Path, rows: range) -> Path:
        def make_store(path: Path) -> Path:
            if locore:
                return build_locore_store(reranker.meta, layout.local("gallery"), layout.global_("gallery"), path,
                                          rows, log)
            return ames_store.build_store(reranker, layout.local("gallery"), path, descriptors, log=log, rows=rows)

        return write_index(target, vectors[rows.start:rows.stop], make_store if reranker is not None else None,
                           names[rows.start:rows.stop],
                           record["extractor"] if record else None,
                           source | ({"rows": [rows.start, rows.stop]} if shards > 1 else {}), globals_desc,
                           str(globals_path), encoded_by, first_stage, shortlist, log, selection, store_bytes,
                           **faiss_settings)

    if shards == 1:
        return write(Path(out), range(images))
    bounds = np.linspace(0, images, shards + 1).round().astype(int).tolist()
    staging = staging_folder(out)
    try:
        entries = []
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds)):
            log(f"shard {i + 1}/{shards}: gallery rows {lo}…{hi - 1}")
            write(staging / f"shard-{i:03d}", range(lo, hi))
            entries.append({"path": f"shard-{i:03d}", "rows": [lo, hi]})
        manifest = {"format": SHARDS_FORMAT, "images": images, "shards": entries, "source": source,
                    "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when swapped in
    return Path(out)


def write_index(out: str | os.PathLike, vectors: np.ndarray, make_store: Callable[[Path], Path] | None,
                names: list | None = None, extractor: dict | None = None, source: dict | None = None,
                desc: str = "dinov2", what: str = "global vectors", encoded_by: dict | None = None,
                first_stage: str = "auto", shortlist: int = 100, log: Callable[[str], None] = lambda message: None,
                selection: Selection | None = None, store_bytes: float = 0.0, **faiss_settings) -> Path:
    """An index at `out` from gallery `vectors` [N, D] (copied in chunks, checked finite, L2-normalised where
    they are not, which is said; `desc`: their prefix, `encoded_by`: the weights record of what made them),
    the first stage `first_stage` over them (its recall measured at `shortlist` on held-out queries;
    `auto` with a `selection` budget or above `EXACT_UP_TO` images: chosen by `first_stage_choice`), the
    store that `make_store(path)` writes at `path` (for the same N images; None: an index of globals alone),
    of `store_bytes` per image (what the budget counts before it is built), the gallery's names and
    extractor record; assembled in a staging folder and swapped in."""
    images, dim = vectors.shape
    selection = selection or Selection()
    names = names if names is not None else [None] * images
    first_budget = selection.first_stage_budget(store_bytes, (len(json.dumps(names)) + MANIFEST_BYTES) / images)
    measured = first_stage == AUTO and (selection.budget_bytes is not None or images > EXACT_UP_TO)
    kind = EXACT if first_stage == AUTO and not measured else first_stage
    if measured and any(v is not None for k, v in faiss_settings.items() if k != "train_sample"):
        given = next(k for k, v in faiss_settings.items() if v is not None and k != "train_sample")
        raise InputError("`first_stage` auto tunes the search knobs itself (give a factory string to set them)",
                         param=given)
    faiss_build = FaissBuild(kind, images, dim, **faiss_settings) if kind not in (EXACT, AUTO) else None
    if kind == EXACT and any(v is not None for v in faiss_settings.values()):
        given = next(k for k, v in faiss_settings.items() if v is not None)
        raise InputError(f"the first stage is exact (it takes no {given})", param=given)
    staging = staging_folder(out)
    try:
        scaled = 0
        with open(staging / GLOBALS, "wb") as g:
            for start in range(0, images, CHUNK):
                block = np.asarray(vectors[start:start + CHUNK], "<f4")
                if not np.isfinite(block).all():
                    bad = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                    raise DescriptorFileError(f"{what}: NaN or infinite values in image {bad}")
                block, changed = normalised(block, what, start)
                scaled += changed
                g.write(block.tobytes())
        if scaled:
            log(f"{what}: not L2-normalised; normalised them (the first stage is a cosine similarity)")
        entry = {"kind": EXACT, "metric": "cosine", "desc": desc, "dim": dim, "file": GLOBALS,
                 "encoded_by": encoded_by}
        unit = np.memmap(staging / GLOBALS, dtype=np.float32, mode="r", shape=(images, dim))
        choice = None
        if measured:
            choice = choose(unit, shortlist, first_budget, selection.target_recall, selection.recall_queries, log,
                            selection.candidates)
            for line in table_lines(choice.table()):
                log(line)
            log(choice.reason)
            tried = "; ".join(f"{t['factory']} {t['bytes_per_image']:.0f} B "
                              f"{'–' if t['recall'] is None else format(t['recall'], '.3f')}" for t in choice.table())
            if not choice.factory:  # nothing measured: no best one to build below the target
                raise TargetNotMetError(f"{choice.reason}; tried: {tried}", param="budget_bytes")
            if not choice.reaches and not selection.allow_below_target:
                raise TargetNotMetError(f"{choice.reason} (`allow_below_target` builds the best one); tried: {tried}",
                                        param="target_recall")
            kind = choice.factory
            if kind != EXACT:
                faiss_build = FaissBuild(kind, images, dim, tuned=choice.params, **faiss_settings)
        if faiss_build is not None:
            faiss_build.write(unit, staging / FAISS_FILE, log)
            entry |= faiss_build.entry
            probe = RecallProbe(unit, shortlist, selection.recall_queries, source=selection.recall_source)
            if choice is not None:
                trial = next(t for t in choice.trials if t.factory == kind)
                entry["params"], entry["recall"] = confirm(faiss_build.index, probe, trial.front,
                                                           selection.target_recall)
                faiss_module().write_index(faiss_build.index, str(staging / FAISS_FILE))
            else:
                stage = open_first_stage(staging, entry, images, None)
                entry["recall"] = probe.measure(lambda q, k: stage.search(q, k)[1])
                del stage
            recall = entry["recall"]
            log(f"first stage {kind}: recall@{recall['at']} {recall['value']:.3f} against the exact scan "
                f"({recall['queries']} held-out queries: {recall['held_out']})")
            if choice is not None and recall["value"] < selection.target_recall and not selection.allow_below_target:
                raise TargetNotMetError(f"{kind} keeps recall {recall['value']:.3f} over the whole "
                                        f"gallery at its best knobs, below {selection.target_recall} (it kept "
                                        f"{trial.recall:.3f} on the tuning sample; `allow_below_target` builds it)",
                                        param="target_recall")
        del unit
        if faiss_build is not None:
            (staging / GLOBALS).unlink()
        if choice is not None:
            entry["choice"] = selection.record(choice, first_budget)
        store = open_rerank_store(make_store(staging / STORE)) if make_store is not None else None
        if store is not None and store.images != images:
            raise ValueError(f"index: {images} global vectors, but the store holds {store.images} images")
        (staging / NAMES).write_text(json.dumps(names) + "\n")
        manifest = {
            "format": FORMAT, "images": images, "first_stage": entry,
            "names": NAMES, "extractor": extractor,
            "rerank": store and {"model": store.model, "store": STORE,
                                 "checkpoint_sha256": store.manifest["checkpoint_sha256"]},
            "source": source,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        built = sum(f.stat().st_size for f in staging.rglob("*") if f.is_file()) / images
        if selection.budget_bytes is not None and built > selection.budget_bytes:
            raise TargetNotMetError(f"the index as built takes {built:,.0f} B per image, over the "
                                    f"budget of {selection.budget_bytes:,.0f}", param="budget_bytes")
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when swapped in
    return Path(out)
