"""TensorRT optimisation profiles from an exported graph's sidecar (no TensorRT needed).

Every symbolic dimension has a min/opt/max in the sidecar; `--profile DIM:MIN,OPT,MAX` overrides one.
The per-input shapes follow from the inputs' dimension names.
"""

from __future__ import annotations


def dim_profiles(meta: dict, overrides: dict[str, tuple[int, int, int]] | None = None) -> dict[str, dict[str, int]]:
    """{symbolic dimension: {"min", "opt", "max"}}: the sidecar's profiles with `overrides` applied."""
    profiles = {d: dict(p) for d, p in meta["profiles"].items()}
    for dim, (lo, opt, hi) in (overrides or {}).items():
        if dim not in profiles:
            raise ValueError(f"profile: unknown dimension {dim!r}; the graph's symbolic dims are {sorted(profiles)}")
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"profile {dim}: expected 1 ≤ min ≤ opt ≤ max, got {lo}/{opt}/{hi}")
        profiles[dim] = {"min": lo, "opt": opt, "max": hi}
    return profiles


def profile_shapes(meta: dict, overrides: dict[str, tuple[int, int, int]] | None = None
                   ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """{input name: (min shape, opt shape, max shape)} for one optimisation profile."""
    profiles = {d: (p["min"], p["opt"], p["max"]) for d, p in dim_profiles(meta, overrides).items()}
    shapes = {}
    for tensor in meta["inputs"]:
        smallest, typical, largest = (tuple(d if isinstance(d, int) else profiles[d][level] for d in tensor["shape"])
                                      for level in range(3))
        shapes[tensor["name"]] = (smallest, typical, largest)
    return shapes
