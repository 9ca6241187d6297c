"""The re-ranking loops, one object per family, registered once (`LOOPS`, keyed by a model card's `loop`):
AMES over pairs of descriptors (`ames`), AMES's scorer over stored entries (`ames-store`; a search shard's
`ames-store-encoded` takes the query encoded), LOCORE's sliding windows (`locore`). Everything that differs
between the families lives here, so the CLI, dataset re-ranking, evaluation, search, Triton's loop models
and the profiler ask a loop instead of branching on its name:

- its **run settings**, apart from the architecture: the settings a loop runs with (shortlist, fusion
  weight and temperature, pair batch, database descriptors, LOCORE's window, stride and order) are read
  from the sidecar as the released defaults, and any of them is overridden by name at run time
  (`settings`), never by re-exporting: a graph is the architecture alone (`architecture`);
- how it is built over entered backends (`reranker`: a scorer takes the encoder of its query side);
- what it reads of a dataset (`rerank_query`: a query's descriptors and its shortlist's, or their stored
  entries, or LOCORE's global tokens with the locals);
- its I/O as a Triton loop model (`io`) and the parameters that model runs with (`triton_params`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from rerankrt.runtime.feeds import IOSpec
from rerankrt.runtime.rerankers import AmesReranker, LocoreReranker


class Loop:
    """A re-ranking family. `run_config`: each run setting that the sidecar's config records, by setting
    name → config key; `fusion`: the names of its fusion weight and temperature."""

    name = ""
    fusion: tuple[str, str] = ("lam", "gamma")
    run_config: Mapping[str, str] = {}
    #: Triton serves `<model>_rerank` over the whole graph (the store loop is served per store instead)
    whole_model = True
    #: a scorer over stored entries: built with the encoder of its query side, re-ranks from a store
    stored = False
    #: a stored loop whose query comes encoded (its stored form): built without the encoder
    encoded = False
    #: reads the gallery's global vectors beside its locals (LOCORE's GLOBAL tokens)
    reads_globals = False
    #: the fusion weight and temperature of an evaluation against R1M distractors, where they differ
    plus1m_fusion: tuple[float, float] | None = None
    #: a run setting's name among its Triton model's parameters, where that differs from the setting's
    param_names: Mapping[str, str] = {}

    def names(self) -> tuple[str, ...]:
        """Its run settings' names: what `settings` takes."""
        return tuple(self.run_config)

    def released(self, meta: dict) -> dict:
        """The settings as released, from the sidecar (`meta`), fitted to the graph's profiles."""
        cfg = meta["config"]
        return {name: cfg[key] for name, key in self.run_config.items()}

    def settings(self, meta: dict, overrides: Mapping | None = None) -> dict:
        """The released settings with `overrides` (None: not given) by name; a name the loop does not take,
        or a value of the wrong type, is an error naming it."""
        out = self.released(meta)
        for name, value in (overrides or {}).items():
            if value is None:
                continue
            if name not in out:
                raise ValueError(f"{name}: not a setting of the {self.name} loop of {meta['model']} (its settings: "
                                 f"{', '.join(out)})")
            want = type(out[name])
            if want is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
                raise ValueError(f"{name}: expected a whole number, got {value!r}")
            if want is float and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            out[name] = want(value)
        return out

    def architecture(self, config: dict) -> dict:
        """The graph's configuration without the run settings: what two graphs must share to be the same."""
        run = set(self.run_config.values())
        return {k: v for k, v in config.items() if k not in run}

    def from_config(self, config: Mapping) -> dict:
        """The run settings that a configuration (a card's fields, as the profiler's cases give them) sets."""
        return {name: config[key] for name, key in self.run_config.items() if key in config}

    def reranker(self, backend, encoder=None, overrides: Mapping | None = None):
        """(the loop's re-ranker over the entered `backend`, its shortlist) at the released settings with
        `overrides`."""
        raise NotImplementedError

    def io(self, config: dict) -> tuple[list[IOSpec], list[IOSpec]]:
        """Its Triton loop model's I/O: one query per request (max_batch_size 0). `rerankrt triton` writes
        these into config.pbtxt (named dimensions become -1) and `--check` compares the config against them."""
        raise NotImplementedError

    def triton_params(self, meta: dict, max_batch_size: int) -> dict:
        """The parameters its Triton loop model runs with: the released settings."""
        raise NotImplementedError

    def from_params(self, meta: dict, params: Mapping[str, str]) -> dict:
        """The run settings that its Triton model's parameters (text, as config.pbtxt holds them) set, typed as
        the released ones: the overrides the model builds its re-ranker with."""
        return {name: type(value)(params[key]) for name, value in self.released(meta).items()
                if (key := self.param_names.get(name, name)) in params}

    def query_input(self) -> str:
        """The graph input whose last dimension is the local descriptors' (what a dataset's files must fit)."""
        raise NotImplementedError

    def rerank_query(self, files, reranker, q: int, top: np.ndarray, sims: np.ndarray,
                     settings: dict) -> tuple[np.ndarray, np.ndarray]:
        """Query `q` of a dataset's open files (`rerank_dataset.DatasetFiles`) and its shortlist `top` with
        their similarities re-ranked: (order, fused scores)."""
        raise NotImplementedError


class AmesPairs(Loop):
    """AMES over pairs: the query's descriptors repeated per pair, the gallery's first `db_descriptors`."""

    name = "ames"
    run_config = {"shortlist": "shortlist", "lam": "fusion_lambda", "gamma": "fusion_gamma",
                  "db_descriptors": "db_descriptors"}
    param_names = {"lam": "lambda"}

    def names(self) -> tuple[str, ...]:
        return (*super().names(), "batch")

    def released(self, meta: dict) -> dict:
        """AMES in batches of the `pairs` profile's opt size (what engines are tuned for, and what fits a
        CPU's memory)."""
        return {**super().released(meta), "batch": meta["profiles"]["pairs"]["opt"]}

    def reranker(self, backend, encoder=None, overrides: Mapping | None = None):
        s = self.settings(backend.meta, overrides)
        return AmesReranker(backend, s["lam"], s["gamma"], s["batch"], encoder), s["shortlist"]

    def io(self, config: dict) -> tuple[list[IOSpec], list[IOSpec]]:
        f32, flag, dim = np.dtype(np.float32), np.dtype(np.bool_), config["local_dim"]
        inputs = [IOSpec("q_desc", f32, ("query_descriptors", dim)), IOSpec("q_mask", flag, ("query_descriptors",)),
                  IOSpec("db_desc", f32, ("shortlist", "db_descriptors", dim)),
                  IOSpec("db_mask", flag, ("shortlist", "db_descriptors")), IOSpec("global_sim", f32, ("shortlist",))]
        return inputs, _outputs()

    def triton_params(self, meta: dict, max_batch_size: int) -> dict:
        """λ, γ and the pairs per BLS request: what the dynamic batcher merges across queries (a store scorer
        is not batched by Triton: max_batch_size 0, its own profile bounds the pairs)."""
        s = self.released(meta)
        batch = min(s["batch"], max_batch_size) if max_batch_size else s["batch"]
        return {self.param_names["lam"]: s["lam"], "gamma": s["gamma"], "batch": batch}

    def query_input(self) -> str:
        return "q_desc"

    def rerank_query(self, files, reranker, q, top, sims, settings):
        cfg = files.backend.config
        query = files.queries.read([q], n=min(cfg["query_descriptors"], files.queries.topk))
        db, db_mask = self.database(files, top, settings)
        result = reranker.rerank(query.desc[0], query.mask[0], db, db_mask, sims)
        return result.order, result.scores

    def database(self, files, top: np.ndarray, settings: dict) -> tuple[np.ndarray, np.ndarray]:
        """The shortlist's first `db_descriptors` local descriptors from the gallery file."""
        local = files.gallery.read(top, n=min(settings["db_descriptors"], files.gallery.topk))
        return local.desc, local.mask


class AmesFromStore(AmesPairs):
    """AMES's scorer over a database store (`search.store`): the query encoded once by the encoder, the
    shortlist's stored entries scored in pair batches. The entries' descriptor count is the store's."""

    name = "ames-store"
    run_config = {k: v for k, v in AmesPairs.run_config.items() if k != "db_descriptors"}
    whole_model = False
    stored = True

    def io(self, config: dict) -> tuple[list[IOSpec], list[IOSpec]]:
        inputs, outputs = super().io(config)
        shortlist = IOSpec("shortlist", np.dtype(np.int64), ("shortlist",))  # image indices into the store
        return [*inputs[:2], shortlist, inputs[4]], outputs

    def database(self, files, top, settings):
        return files.store.entries(top)


class AmesFromStoreEncoded(AmesFromStore):
    """A search shard's store loop: the query comes encoded (`q_encoded`, its stored form [Q,E]: the search
    front encodes it once for all its shards), so the loop calls the scorer alone."""

    name = "ames-store-encoded"
    encoded = True

    def io(self, config: dict) -> tuple[list[IOSpec], list[IOSpec]]:
        inputs, outputs = super().io(config)
        dtype = np.dtype(np.bool_ if config["binarized"] else np.float32)  # bool codes or (any float) tokens
        return [IOSpec("q_encoded", dtype, ("query_descriptors", config["model_dim"])), *inputs[1:]], outputs

    def reranker(self, backend, encoder=None, overrides: Mapping | None = None):
        s = self.settings(backend.meta, overrides)
        return AmesReranker(backend, s["lam"], s["gamma"], s["batch"], encoded=True), s["shortlist"]


class LocoreWindows(Loop):
    """LOCORE's sliding windows over the shortlist: one graph call per window of gallery images."""

    name = "locore"
    fusion = ("alpha", "temperature")
    run_config = {"shortlist": "shortlist", "window": "window", "stride": "stride", "order": "order",
                  "alpha": "fusion_alpha", "temperature": "fusion_temperature"}
    reads_globals = True
    plus1m_fusion = (0.5, 0.5)  # LOCORE's +1M evaluation: α = t = 0.5

    def released(self, meta: dict) -> dict:
        """The window clamped to the `images` profile, the stride to the window."""
        s = super().released(meta)
        s["window"] = min(s["window"], meta["profiles"]["images"]["max"])
        s["stride"] = min(s["stride"], s["window"])
        return s

    def reranker(self, backend, encoder=None, overrides: Mapping | None = None):
        if encoder is not None:
            raise ValueError(f"{backend.meta['model']}: LOCORE's windows take no encoder (they read the gallery's "
                             f"descriptors as they are)")
        s = self.settings(backend.meta, overrides)
        return LocoreReranker(backend, **s), s["shortlist"]

    def io(self, config: dict) -> tuple[list[IOSpec], list[IOSpec]]:
        f32, flag = np.dtype(np.float32), np.dtype(np.bool_)
        dim, n = config["local_dim"], config["local_descriptors"]
        inputs = [IOSpec("q_global", f32, (dim,)), IOSpec("q_local", f32, (n, dim)),
                  IOSpec("q_mask", flag, (n,)), IOSpec("g_global", f32, ("shortlist", dim)),
                  IOSpec("g_local", f32, ("shortlist", n, dim)), IOSpec("g_mask", flag, ("shortlist", n)),
                  IOSpec("global_sim", f32, ("shortlist",))]
        return inputs, _outputs()

    def triton_params(self, meta: dict, max_batch_size: int) -> dict:
        return self.released(meta)

    def query_input(self) -> str:
        return "q_local"

    def rerank_query(self, files, reranker, q, top, sims, settings):
        n = next(spec.shape for spec in files.backend.input_specs() if spec.name == "q_local")[1]  # 48 as released
        query, db = files.queries.read([q], n=n), files.gallery.read(top, n=n)
        q_global, g_global = np.asarray(files.globals["query"][q]), np.asarray(files.globals["gallery"][top])
        result = reranker.rerank(q_global, query.desc[0], query.mask[0], g_global, db.desc, db.mask, sims)
        return result.order, result.scores


def _outputs() -> list[IOSpec]:
    return [IOSpec("order", np.dtype(np.int64), ("shortlist",)), IOSpec("scores", np.dtype(np.float32), ("shortlist",))]


LOOPS: dict[str, Loop] = {loop.name: loop for loop in (AmesPairs(), AmesFromStore(), AmesFromStoreEncoded(),
                                                        LocoreWindows())}


def loop_of(meta: dict) -> Loop:
    """The loop that drives the exported model of sidecar `meta` (or a backend's `meta`)."""
    loop = LOOPS.get(meta.get("loop") or "")
    if loop is None:
        raise ValueError(f"{meta['model']}: not a re-ranker a loop drives (AMES or LOCORE)")
    return loop


def released_settings(meta: dict) -> dict:
    """The settings the loop of an exported model runs with as released (`Loop.released`): the one rule the
    CLI, dataset re-ranking, Triton's loop models and the profiler share."""
    return loop_of(meta).released(meta)


def architecture(meta: dict) -> dict:
    """An exported model's configuration without its loop's run settings (a model no loop drives: all of it)."""
    loop = LOOPS.get(meta.get("loop") or "")
    return loop.architecture(meta["config"]) if loop else dict(meta["config"])


def reranker_for(backend, weight: float | None = None, temperature: float | None = None,
                 shortlist: int | None = None, encoder=None, settings: Mapping | None = None):
    """The loop of the backend's model at its released settings, with the fusion weight (AMES λ, LOCORE α),
    temperature (AMES γ, LOCORE t), shortlist and any other run `settings` overridden where given; returns
    (re-ranker, shortlist). A scorer's loop takes the `encoder` of its query side."""
    loop = loop_of(backend.meta)
    overrides = dict(settings or {})
    for name, value in ((loop.fusion[0], weight), (loop.fusion[1], temperature), ("shortlist", shortlist)):
        if value is not None:
            overrides[name] = value
    return loop.reranker(backend, encoder, overrides)
