"""`load_model`: a registered model in eval mode, from random weights or an official checkpoint."""

from __future__ import annotations

import dataclasses
import importlib
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from rerankrt.core.errors import CheckpointError
from rerankrt.core.optional import require
from rerankrt.models.cards import ModelInfo
from rerankrt.models.registry import MODELS, get_info

#: seed of the deterministic random weights (the same module for the same name and config, every run).
RANDOM_WEIGHTS_SEED = 0


def layer_count(sd: dict, prefix: str) -> int:
    """Layers `prefix + "N."` of a state_dict: one past the highest N any key has, so that a key missing
    from a middle layer is reported as missing by the strict load, not as a shallower model."""
    found = [int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))]
    return max(found) + 1 if found else 0


def _implementation(info: ModelInfo):
    return importlib.import_module(info.implementation)


def _build(info: ModelInfo, cfg):
    """The network of `info` in configuration `cfg` (its implementation's `info.builder`)."""
    return getattr(_implementation(info), info.builder)(cfg)


def read_state_dict(path: str | os.PathLike, weights_only: bool = True) -> tuple[dict, object]:
    """Read a checkpoint file → (state_dict, container).

    torch files are read with `weights_only=True` unless the caller trusts the file (unpickling can run
    code); safetensors files are recognised by their header. A truncated or foreign file raises
    CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    with path.open("rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{":
        SafetensorError = require("safetensors", "export", f"checkpoint {path}").SafetensorError  # noqa: N806
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file (truncated?): {e}") from e
        return sd, sd
    try:
        container = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as e:
        if weights_only:
            raise CheckpointError(
                f"checkpoint {path}: holds Python objects beyond tensors and plain containers; "
                f"if you trust the file, load it with weights_only=False ({e})"
            ) from e
        raise CheckpointError(f"checkpoint {path}: not a torch checkpoint ({e})") from e
    except Exception as e:  # torch.load raises many kinds on a foreign or cut file (KeyError, EOFError, …)
        raise CheckpointError(
            f"checkpoint {path}: not a readable torch or safetensors file (truncated or corrupt?): {e}"
        ) from e
    return _find_state_dict(path, container), container


def _container_keys() -> list[str]:
    return sorted({info.container_key for info in MODELS.values() if info.container_key})


def _find_state_dict(path: Path, container: object) -> dict:
    if isinstance(container, dict):
        for key in _container_keys():
            inner = container.get(key)
            if isinstance(inner, dict):
                return inner
        if container and all(isinstance(v, torch.Tensor) for v in container.values()):
            return container
    keys = list(container)[:8] if isinstance(container, dict) else []
    raise CheckpointError(
        f"checkpoint {path}: expected a state_dict, or a dict holding one under "
        f"{_container_keys()}; got {type(container).__name__} with keys {keys}"
    )


def identify(sd: dict) -> str | None:
    """Which registered model a state_dict looks like, in words (None if none)."""
    seen = set()
    for info in MODELS.values():
        if info.implementation in seen:
            continue
        seen.add(info.implementation)
        found = _implementation(info).identify(sd)
        if found:
            return found
    return None


def _check_keys(name: str, model: nn.Module, sd: dict, path: Path) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [
        f"{k}: expected {list(v.shape)}, got {list(sd[k].shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    lines = [f"checkpoint {path} does not fit model {name!r}:"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            shown = ", ".join(items[:10]) + (f", … ({len(items) - 10} more)" if len(items) > 10 else "")
            lines.append(f"  {title} ({len(items)}): {shown}")
    looks_like = identify(sd)
    if looks_like:
        lines.append(f"  the file looks like a checkpoint of {looks_like}")
    raise CheckpointError("\n".join(lines))


def _config(info: ModelInfo, overrides: dict, from_checkpoint: dict | None, path: Path | None):
    fields = {f.name for f in dataclasses.fields(info.config)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"{info.name}: unknown config {unknown}; valid: {sorted(fields)}")
    if from_checkpoint:
        for k, v in overrides.items():
            if k in from_checkpoint and from_checkpoint[k] != v:
                raise CheckpointError(
                    f"checkpoint {path} has {k}={from_checkpoint[k]}, but {k}={v} was asked for model "
                    f"{info.name!r}"
                )
    return dataclasses.replace(info.config, **{**overrides, **(from_checkpoint or {})})


def load_model(name: str, checkpoint: str | os.PathLike | None = None, *, weights_only: bool = True,
               **config) -> nn.Module:
    """A registered model (`rerankrt.models.MODELS`) in eval mode.

    Without `checkpoint`: the released configuration (overridable through `config`) with deterministic
    random weights. With one: the official release's container, loaded strictly; the dimensions come
    from the checkpoint, and an error lists missing/unexpected keys and shape mismatches and says which
    registered model the file looks like.
    """
    info = get_info(name)
    impl = _implementation(info)
    parts = {k: config.pop(k) for k in list(config) if k in info.parts}
    if checkpoint is None:
        if parts:
            raise CheckpointError(f"{', '.join(f'{k}={v}' for k, v in parts.items())}: model {name!r} loads its "
                                  f"parts beside a checkpoint ({info.checkpoint_format}), got none")
        cfg = _config(info, config, None, None)
        with torch.random.fork_rng(devices=[]):  # the caller's random stream is left untouched
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model = _build(info, cfg)
            impl.init_weights(model)
        return model.eval()
    path = Path(checkpoint)
    sd, container = read_state_dict(path, weights_only=weights_only)
    if container is not sd and info.container_key is None:
        raise CheckpointError(
            f"checkpoint {path}: model {name!r} expects a plain state_dict ({info.checkpoint_format}), "
            f"the file is a container with keys {sorted(container) if isinstance(container, dict) else []}"
            + (f"; it looks like a checkpoint of {identify(sd)}" if identify(sd) else "")
        )
    if isinstance(container, dict) and info.container_key not in container and container is not sd:
        looks_like = identify(sd)
        raise CheckpointError(
            f"checkpoint {path}: model {name!r} expects its state_dict under {info.container_key!r}, "
            f"the file has keys {sorted(container)}"
            + (f"; it looks like a checkpoint of {looks_like}" if looks_like else "")
        )
    for part, file in parts.items():  # e.g. the extractor's detector, released as a file of its own
        sd = {**sd, **_read_part(name, info, part, Path(file), weights_only)}
    if impl.identify(sd) is None:
        with torch.device("meta"):
            reference = _build(info, info.config)
        _check_keys(name, reference, sd, path)  # raises, naming what the file is
    if hasattr(impl, "check_parts"):
        impl.check_parts(sd, path)
    if hasattr(impl, "prepare_state_dict"):  # e.g. LOCORE-small keeps the first 6 layers
        sd = impl.prepare_state_dict(sd, _config(info, config, None, None), path)
    try:
        inferred = impl.config_from_state_dict(sd)
    except KeyError:  # a key the dimensions are read from is missing: name every missing key
        with torch.device("meta"):
            reference = _build(info, info.config)
        _check_keys(name, reference, sd, path)
        raise
    cfg = _config(info, config, inferred, path)
    if hasattr(impl, "check_meta") and isinstance(container, dict) and container is not sd:
        impl.check_meta(container.get("meta"), cfg)
    model = _build(info, cfg)
    _check_keys(name, model, sd, path)
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {path}: NaN or infinite values in {len(bad)} tensor(s): "
                              f"{', '.join(bad[:5])}" + (", …" if len(bad) > 5 else ""))
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _read_part(name: str, info: ModelInfo, part: str, path: Path, weights_only: bool) -> dict:
    """A part's state_dict from its own file, its keys under the part's prefix."""
    prefix, key = info.parts[part]
    sd, container = read_state_dict(path, weights_only=weights_only)
    if key is not None and (not isinstance(container, dict) or key not in container):
        looks_like = identify(sd)
        raise CheckpointError(f"{part} {path}: model {name!r} expects the {part}'s state_dict under {key!r}"
                              + (f"; the file looks like a checkpoint of {looks_like}" if looks_like else ""))
    return {prefix + k: v for k, v in sd.items()}


def parameter_count(name: str, **config) -> int:
    """Parameters of a registered model in its released configuration, built on the meta device
    (no memory is allocated, no weights are initialised)."""
    info = get_info(name)
    with torch.device("meta"):
        model = _build(info, _config(info, config, None, None))
    return sum(p.numel() for p in model.parameters())
