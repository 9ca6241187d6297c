#!/usr/bin/env bash
# Set up on a fresh machine and run the main job on the built-in default (released configurations
# with random weights): the environment, the registered models, the five released models, the DINOv2
# extractor and the exact first stage exported to FP32 and FP16 ONNX in artifacts/ with their validation
# ladders, evaluated on a synthetic dataset through ONNX Runtime, and profiled (the quick preset: AMES and LOCORE-small beside
# the pair-wise re-rankers RRT, R2Former and CVNet-Rerank at reduced sizes, and RAML, on torch and ONNX
# Runtime).
# --force: a second run replaces the first one's outputs (every command refuses to without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rerankrt info
.venv/bin/rerankrt models
for model in raml ames ames-dist locore-small locore dinov2-extractor first-stage; do
  .venv/bin/rerankrt export "$model" --out artifacts --force
done
.venv/bin/rerankrt data synth artifacts/synth --force
.venv/bin/rerankrt eval --data artifacts/synth --dataset synth --model ames --backend ort --shortlist 50 \
  --compare fp32,fp16 --out artifacts/eval_ames.json --force
.venv/bin/rerankrt eval --data artifacts/synth --dataset synth --model locore-small --backend ort --shortlist 100 \
  --out artifacts/eval_locore_small.json --force
.venv/bin/rerankrt bench --preset quick --artifacts artifacts --out artifacts/bench --force
