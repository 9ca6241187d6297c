#!/usr/bin/env bash
# Create (or reuse) .venv and install rerankrt with its export and dev extras; and .venv-serve, the Python
# backend's environment for a real Triton server (`rerankrt serve`): rerankrt with the serve extra, whose
# nvidia-pytriton bundles tritonserver and pins numpy<2 (Triton's Python-backend stub reads tensors wrong
# with numpy 2, so it cannot share .venv). RERANKRT_SERVE=0 skips it.
# The CPU build of torch goes in first and pinned: an unpinned torch resolves to a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC="${RERANKRT_TORCH:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH_SPEC"
.venv/bin/python -m pip install --quiet -e ".[export,dev]"
if [ "${RERANKRT_SERVE:-1}" != "0" ]; then
  if [ ! -x .venv-serve/bin/python ]; then
    python3 -m venv .venv-serve
  fi
  .venv-serve/bin/python -m pip install --quiet --upgrade pip
  .venv-serve/bin/python -m pip install --quiet -e ".[serve,images]"  # images: the search model decodes queries
fi
