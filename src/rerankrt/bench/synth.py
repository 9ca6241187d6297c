"""`rerankrt data synth DIR`: a small dataset in the official layout with planted matches.

Each query is a set of unit local descriptors; its easy positives hold noisy copies of most of them,
its hard positives noisier copies of fewer, its junk images a few; the other database images are
unrelated. Globals are the L2-normalised mean of each image's locals plus noise, so the first-stage
shortlist (`nn_superglobal.pkl`, by global similarity) is good but not perfect. Written: the query and
gallery local HDF5 files, the raw global files, the shortlist and `gnd_synth.pkl` (revisited layout).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerankrt.core.atomic import atomic_output
from rerankrt.core.errors import InputError
from rerankrt.data.descriptors import write_global, write_local, write_nn


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


#: database images planted per query: 3 easy, 3 hard, 2 junk
PLANTED = 8


def synthesize(out: str | os.PathLike, queries: int = 6, database: int = 120, dim: int = 768,
               query_locals: int = 100, db_locals: int = 50, neighbours: int = 100, desc: str = "dinov2",
               seed: int = 0) -> Path:
    for param, value in (("queries", queries), ("dim", dim)):
        if value < 1:
            raise InputError(f"expected a positive integer, got {value}", param=param)
    if database < PLANTED * queries:
        raise InputError(f"{queries} queries plant {PLANTED} matches each in distinct images, so at "
                         f"least {PLANTED * queries} images; got {database}", param="database")
    rng = np.random.default_rng(seed)
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    q_local = _unit(rng.standard_normal((queries, query_locals, dim)))
    db_local = _unit(rng.standard_normal((database, db_locals, dim)))
    gnd = []
    free = list(rng.permutation(database))
    for q in range(queries):
        entry: dict[str, list] = {"easy": [], "hard": [], "junk": []}
        for kind, count, share, noise in (("easy", 3, 0.8, 0.3), ("hard", 3, 0.4, 0.6), ("junk", 2, 0.1, 0.6)):
            for _ in range(count):
                image = int(free.pop())
                n = int(share * db_locals)
                planted = q_local[q, rng.choice(query_locals, n, replace=False)]
                db_local[image, :n] = _unit(planted + noise * rng.standard_normal(planted.shape) / np.sqrt(dim) * 8)
                entry[kind].append(image)
        gnd.append({k: np.array(sorted(v), dtype=np.int64) for k, v in entry.items()} | {"bbx": [0, 0, 1, 1]})
    q_valid = rng.integers(query_locals // 2, query_locals + 1, queries)
    db_valid = rng.integers(db_locals // 2, db_locals + 1, database)
    q_mask = np.arange(query_locals) >= q_valid[:, None]
    db_mask = np.arange(db_locals) >= db_valid[:, None]
    q_local[q_mask], db_local[db_mask] = 0.0, 0.0
    write_local(root / f"{desc}_query_local.hdf5", q_local, q_mask)
    write_local(root / f"{desc}_gallery_local.hdf5", db_local, db_mask)
    q_global = _unit(q_local.sum(1) + 0.5 * rng.standard_normal((queries, dim)) / np.sqrt(dim) * 8)
    db_global = _unit(db_local.sum(1) + 0.5 * rng.standard_normal((database, dim)) / np.sqrt(dim) * 8)
    write_global(root / f"{desc}_query_global.pt", q_global)
    write_global(root / f"{desc}_gallery_global.pt", db_global)
    sims = q_global @ db_global.T
    k = min(neighbours, database)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    write_nn(root / "nn_superglobal.pkl", np.take_along_axis(sims, idx, axis=1), idx)
    with atomic_output(root / "gnd_synth.pkl") as tmp, open(tmp, "wb") as f:
        pickle.dump({"gnd": gnd, "imlist": [f"db{i}" for i in range(database)],
                     "qimlist": [f"q{i}" for i in range(queries)]}, f)
    return root


#: the first-stage scale runs' globals: a `LATENT`-d Gaussian latent space embedded in D dims, plus noise
LATENT, NOISE = 64, 0.3


def low_rank_globals(images: int, dim: int = 768, latent: int = LATENT, noise: float = NOISE, seed: int = 0,
                     start: int = 0) -> np.ndarray:
    """Rows `start` … `start + images` of a synthetic gallery of unit global vectors with a realistic low
    intrinsic dimension: z ~ N(0, I_latent) mapped by one fixed random [latent, dim] matrix (the seed's),
    plus isotropic noise of `noise` × the signal's per-dimension scale, L2-normalised. Each block of rows is
    drawn from its own generator (seed, start), so a gallery is written block by block in bounded memory."""
    embed = np.random.default_rng(seed).standard_normal((latent, dim)).astype(np.float32) / np.sqrt(latent)
    rng = np.random.default_rng([seed, start])
    z = rng.standard_normal((images, latent), dtype=np.float32)
    return _unit(z @ embed + noise * rng.standard_normal((images, dim), dtype=np.float32))


@dataclass(frozen=True)
class Clustered:
    """Landmark-like global vectors: image globals of landmarks are strongly clustered (many photos of few
    places, a few places photographed very often), so an inverted file finds its lists full of one
    landmark's images — the easy case, beside `low_rank_globals`' unclustered worst case.

    `clusters` centres drawn N(0, I_latent) in a `latent`-d space, of power-law sizes (cluster c holds a
    share ∝ (c + 1)^-`alpha` of the gallery), each image its centre plus `spread` × N(0, I_latent), mapped
    into `dim` dims by one fixed random matrix, plus isotropic `noise`, L2-normalised (the scales of
    `low_rank_globals`). The queries (`queries`) are not gallery images: each is an image of a cluster
    drawn the same way, seen through `query_noise` (more than the gallery's, as a query encoder at another
    resolution sees it), and the gallery's first `queries` × `positives` rows are its planted positives
    (query q's: rows q·positives …), its latent point plus `positive_spread` × N(0, I_latent)."""

    dim: int = 768
    latent: int = LATENT
    clusters: int = 1000
    alpha: float = 1.0
    spread: float = 0.35
    noise: float = NOISE
    queries: int = 100
    positives: int = 5
    positive_spread: float = 0.15
    query_noise: float = 0.5
    seed: int = 0

    def _structure(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1])
        embed = rng.standard_normal((self.latent, self.dim), dtype=np.float32) / np.float32(np.sqrt(self.latent))
        centres = rng.standard_normal((self.clusters, self.latent), dtype=np.float32)
        share = (np.arange(1, self.clusters + 1) ** -self.alpha)
        return embed, centres, share / share.sum()

    def _query_latents(self) -> np.ndarray:
        _, centres, share = self._structure()
        rng = np.random.default_rng([self.seed, 2])
        cluster = rng.choice(self.clusters, size=self.queries, p=share)
        return centres[cluster] + self.spread * rng.standard_normal((self.queries, self.latent), dtype=np.float32)

    def gallery(self, images: int, start: int = 0) -> np.ndarray:
        """Gallery rows `start` … `start + images` (each block from its own generator: bounded memory)."""
        embed, centres, share = self._structure()
        rng = np.random.default_rng([self.seed, 3, start])
        rows = np.arange(start, start + images)
        z = centres[rng.choice(self.clusters, size=images, p=share)]
        z = z + self.spread * rng.standard_normal((images, self.latent), dtype=np.float32)
        planted = rows < self.queries * self.positives
        if planted.any():
            owner = self._query_latents()[rows[planted] // self.positives]
            z[planted] = owner + self.positive_spread * rng.standard_normal(owner.shape, dtype=np.float32)
        return _unit(z @ embed + self.noise * rng.standard_normal((images, self.dim), dtype=np.float32))

    def query_vectors(self) -> np.ndarray:
        embed, _, _ = self._structure()
        rng = np.random.default_rng([self.seed, 4])
        return _unit(self._query_latents() @ embed
                     + self.query_noise * rng.standard_normal((self.queries, self.dim), dtype=np.float32))

    def positives_of(self, query: int) -> np.ndarray:
        return np.arange(query * self.positives, (query + 1) * self.positives)
