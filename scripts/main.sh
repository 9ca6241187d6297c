#!/usr/bin/env bash
# Set up on a fresh machine and run the main job on the built-in default (released configurations
# with random weights): the environment, the registered models, and every model exported to FP32 and
# FP16 ONNX in artifacts/ with its validation ladder. Profiling joins when the profiler lands.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rerankrt info
.venv/bin/rerankrt models
for model in raml ames ames-dist locore-small locore; do
  .venv/bin/rerankrt export "$model" --out artifacts
done
