#!/usr/bin/env bash
# Set up on a fresh machine and run the main job on the built-in default (released configurations
# with random weights): the environment, the registered models, the five released models, the DINOv2
# extractor and the exact first stage exported to FP32 and FP16 ONNX in artifacts/ (with their forms fused
# for ONNX Runtime) and their validation ladders, the re-rankers AMES and LOCORE-small quantized to INT8 on a
# synthetic dataset (kept only where they keep the FP32 ranking), evaluated on it through ONNX Runtime, and
# profiled (the quick preset: AMES and LOCORE-small in every deployed form beside the pair-wise re-rankers
# RRT, R2Former and CVNet-Rerank, and RAML, on torch and ONNX Runtime).
# --force: a second run replaces the first one's outputs (every command refuses to without it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/rerankrt info
.venv/bin/rerankrt models
.venv/bin/rerankrt data synth artifacts/synth --force
for model in raml ames ames-dist locore-small locore dinov2-extractor first-stage; do
  .venv/bin/rerankrt export "$model" --out artifacts --force
done
for model in ames locore-small; do
  .venv/bin/rerankrt export "$model" --precision int8 --calibration artifacts/synth --out artifacts --force
done
.venv/bin/rerankrt eval --data artifacts/synth --dataset synth --model ames --backend ort --shortlist 50 \
  --compare fp32,int8 --out artifacts/eval_ames.json --force
.venv/bin/rerankrt eval --data artifacts/synth --dataset synth --model locore-small --backend ort --shortlist 100 \
  --out artifacts/eval_locore_small.json --force
.venv/bin/rerankrt bench --preset quick --artifacts artifacts --out artifacts/bench --force
