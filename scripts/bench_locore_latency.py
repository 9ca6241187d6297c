"""LOCORE CPU latency of one window: rerankrt's static tiled attention vs Hugging Face's Longformer.

The released setting: one query and K = 100 gallery images of 48 DINOv2 descriptors (L = 5050,
HF pads to 5120), identical random weights in both. The HF path is timed from its prepared inputs
(the Longformer and the classifier); ours from the six descriptor tensors. Prints medians, the ratio
and the largest score differences. Not a test: run it by hand,
`python scripts/bench_locore_latency.py [--name locore-small] [--k 100] [--repeat 5]` (the literal HF
reference lives in tests/literal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from literal.locore import HFLocore  # noqa: E402

from rerankrt.bench.timing import median_ms  # noqa: E402
from rerankrt.models import load_model, spec_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", default="locore-small", choices=["locore", "locore-small"])
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    model = load_model(args.name)
    cfg = model.config
    n = cfg.local_descriptors
    spec = spec_for(args.name, cfg)
    feeds = spec.feeds({"batch": 1, "images": args.k})
    x = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
    length = (args.k + 1) * (n + 2)
    hf = HFLocore(model.state_dict(), num_heads=cfg.heads, attention_window=cfg.attention_window)
    prepared = hf.prepare(*x)
    with torch.inference_mode():
        ours_tokens = model(*x, token_logits=True)
        ours = median_ms(lambda: model(*x), args.repeat)
    hf_tokens = hf.token_logits(prepared, length)
    theirs = median_ms(lambda: hf.token_logits(prepared, length), args.repeat)
    end = slice(None), slice(None), n
    ours_end = ours_tokens[..., 1].reshape(1, args.k + 1, n + 2)[:, 1:][end]
    hf_end = hf_tokens[..., 1].reshape(1, args.k + 1, n + 2)[:, 1:][end]
    print(f"{args.name}: K {args.k}, L {length}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"  rerankrt static tiled attention   {ours:9.1f} ms")
    print(f"  Hugging Face Longformer           {theirs:9.1f} ms   ratio {theirs / ours:5.2f}x")
    print(f"  max |difference|: token logits {float((ours_tokens - hf_tokens).abs().max()):.2e}, "
          f"max-end scores {float((ours_end - hf_end).abs().max()):.2e}")


if __name__ == "__main__":
    main()
