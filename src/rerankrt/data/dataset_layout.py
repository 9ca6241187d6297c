"""The published layout of a dataset folder (reference §1.3–1.4): which file holds what, by split and
descriptor prefix. Read by dataset re-ranking, evaluation, extraction, the first stage and the index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    desc: str = "dinov2"
    nn: str = "nn_superglobal.pkl"

    def local(self, split: str) -> Path:
        return self.root / f"{self.desc}_{split}_local.hdf5"

    def global_(self, split: str) -> Path:
        return self.root / f"{self.desc}_{split}_global.pt"

    def cls(self, split: str) -> Path:
        """The class-token vectors the extractor writes beside the globals (no re-ranker reads them)."""
        return self.root / f"{self.desc}_cls_{split}_global.pt"

    def images(self, split: str) -> Path:
        """What `rerankrt extract` records of a split: its image names, the extractor and its settings (a
        folder of the published files has none; an index built from it gets null names)."""
        return self.root / f"{self.desc}_{split}_images.json"
