"""Model cards: every fact rerankrt needs about a registered model besides its network, one module per
model family, no torch.

A card holds the model's configuration dataclass and released configuration, its export spec builder,
its FLOP model, what it stores per database image, and one `ModelInfo` per registered name: the kind of
model, which runtime loop drives it, whether Triton may batch it dynamically. The network itself is the
card's `implementation` module (torch). `rerankrt.models.registry` lists the cards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rerankrt.models.specs import ExportSpec

#: What a model does per call, which decides how the runtime, the profiler and Triton drive it.
PAIR_WISE = "pair-wise"  #: scores (query, database image) pairs; the leading dimension is `pairs`
LIST_WISE = "list-wise"  #: scores a window of database images against one query in one call
IMAGE = "image"  #: encodes images; the leading dimension is `batch`
EXTRACTOR = "extractor"  #: an image → local descriptors, weights and global vectors
ENCODER = "encoder"  #: a database image's descriptors → what a store keeps of them; the leading dimension is `images`
FIRST_STAGE = "first-stage"  #: query global vectors against a gallery of them → each query's top k
KINDS = (PAIR_WISE, LIST_WISE, IMAGE, EXTRACTOR, ENCODER, FIRST_STAGE)
#: The runtime's re-ranking loops (`rerankrt.runtime.rerankers`): AMES's pair batches (from descriptors, or
#: from a database store through the scorer), LOCORE's sliding windows.
LOOPS = ("ames", "ames-store", "locore")


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: `rerankrt models`, the CLI's choices, export, the runtime's loops, the profiler
    and Triton read everything they need to know about it from here."""

    name: str
    kind: str  #: one of KINDS
    summary: str
    config: Any  #: the released configuration (a frozen dataclass of the card)
    #: the torch module with `build` (or `builder`), `init_weights`, `config_from_state_dict`, `identify` (and
    #: optionally `prepare_state_dict(sd, cfg, path)` and `check_meta(meta, cfg)`)
    implementation: str
    checkpoint_format: str  #: the official release's container, as `rerankrt models` shows it
    container_key: str | None  #: where the state_dict sits in the container (None: the file is the state_dict)
    spec: Callable[[Any, str], ExportSpec]  #: (config, name) → the export spec
    flops: Callable[[Any, dict[str, int]], int]  #: (config, symbolic sizes of one call) → FLOPs of the call
    storage: Callable[[Any], int]  #: (config) → bytes kept per database image
    dynamic_batching: bool  #: requests may be merged along the leading dimension (Triton's dynamic batcher)
    loop: str | None = None  #: the runtime loop that re-ranks a shortlist with it (one of LOOPS)
    baseline: bool = False  #: a profiler baseline: exported and timed, not served by a loop
    #: the profiler's name for the published code path of the same model and weights, where one is timed
    published_path: str | None = None
    #: the registered (encoder, scorer) that serve this model from a database store, where they exist
    store: tuple[str, str] | None = None
    builder: str = "build"  #: the implementation's function that builds the network from a configuration
    #: checkpoints of parts released as files of their own, by `load_model` keyword: (key prefix in the
    #: model's state_dict, container key in the file), e.g. the extractor's {"detector": ("detector.", "state")}
    parts: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"{self.name}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.loop is not None and self.loop not in LOOPS:
            raise ValueError(f"{self.name}: loop {self.loop!r} is not one of {', '.join(LOOPS)}")
