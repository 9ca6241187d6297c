"""ONNX Runtime CPU vs PyTorch eager CPU on the exported FP32 graphs: same process, same inputs.

AMES (100 pairs, Q 600, T 50), RAML (224 px, batch 1 and 32), LOCORE-small (K 100), released
configurations with random weights. Prints the medians and the ratio (torch / ORT: above 1 means ONNX
Runtime is faster). Not a test: run it by hand, `python scripts/bench_ort_vs_torch.py [--repeat 5]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from rerankrt.bench.timing import median_ms
from rerankrt.export.onnx_export import export_model
from rerankrt.models import load_model, spec_for

CASES = [
    ("ames", {"pairs": 100, "query_descriptors": 600, "db_descriptors": 50}),
    ("raml", {"batch": 1, "height": 224, "width": 224}),
    ("raml", {"batch": 32, "height": 224, "width": 224}),
    ("locore-small", {"batch": 1, "images": 100}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in dict.fromkeys(n for n, _ in CASES):
            export_model(name, out_dir=tmp, precision="fp32")
        for name, shape in CASES:
            model, spec = load_model(name), spec_for(name)
            feeds = spec.feeds(shape)
            tensors = [torch.from_numpy(feeds[t.name]) for t in spec.inputs]
            session = ort.InferenceSession(str(Path(tmp) / f"{name}.onnx"), providers=["CPUExecutionProvider"])
            with torch.inference_mode():
                eager = median_ms(lambda: model(*tensors), args.repeat)  # noqa: B023
            onnx = median_ms(lambda: session.run(None, feeds), args.repeat)  # noqa: B023
            dims = " ".join(f"{k}={v}" for k, v in shape.items())
            print(f"{name:<13} {dims:<48} torch {eager:9.1f} ms   ORT {onnx:9.1f} ms   torch/ORT {eager / onnx:5.2f}")


if __name__ == "__main__":
    main()
