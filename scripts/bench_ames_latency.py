"""AMES CPU latency: rerankrt's block attention vs the literal references, side by side, one process.

The released evaluation setting: 100 pairs, 600 query and 50 database descriptors (some padding).
Prints medians, the ratios and the largest logit difference. Not a test: run it by hand,
`python scripts/bench_ames_latency.py [--pairs 100 --q 600 --t 50 --repeat 7]` (the literal references
live in tests/literal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import unit_descriptors  # noqa: E402
from literal.ames import PublishedStyle, per_pair  # noqa: E402
from weights import perturb  # noqa: E402

from rerankrt.bench.timing import median_ms  # noqa: E402
from rerankrt.models import load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--q", type=int, default=600)
    parser.add_argument("--t", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--name", default="ames", choices=["ames", "ames-dist"])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    qd, qm = unit_descriptors(rng, (args.pairs, args.q, 768), rng.integers(args.q // 2, args.q + 1, args.pairs))
    dd, dm = unit_descriptors(rng, (args.pairs, args.t, 768), rng.integers(args.t // 2, args.t + 1, args.pairs))
    inputs = [torch.from_numpy(a) for a in (qd, qm, dd, dm)]
    model = perturb(load_model(args.name), gain=2.0, spread=0.1)
    dense = PublishedStyle(model.state_dict(), binarized=args.name == "ames-dist")
    sd = model.state_dict()
    with torch.inference_mode():
        ours_out, dense_out = model(*inputs), dense(*inputs)
        literal_out = per_pair(sd, *inputs, binarized=args.name == "ames-dist")
        ours = median_ms(lambda: model(*inputs), args.repeat)
        published = median_ms(lambda: dense(*inputs), args.repeat)
        literal = median_ms(lambda: per_pair(sd, *inputs, binarized=args.name == "ames-dist"), max(3, args.repeat // 2))
    print(f"{args.name}: {args.pairs} pairs, Q {args.q}, T {args.t}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"  rerankrt block attention         {ours:9.1f} ms")
    print(f"  published-style dense MHA        {published:9.1f} ms   ratio {published / ours:5.2f}x")
    print(f"  literal per-pair reference       {literal:9.1f} ms   ratio {literal / ours:5.2f}x")
    print(f"  max |logit difference| vs dense {float((ours_out - dense_out).abs().max()):.2e}, "
          f"vs literal {float((ours_out - literal_out).abs().max()):.2e}")


if __name__ == "__main__":
    main()
